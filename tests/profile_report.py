"""Sums a GENJAX_SUITE_PROFILE directory (tests/conftest.py): seconds of tracing, lowering and
XLA compilation per test file and per compiled function, largest first.

  GENJAX_SUITE_PROFILE=/tmp/prof .venv/bin/python -m pytest tests -n 2 --dist loadfile
  .venv/bin/python -m tests.profile_report /tmp/prof
"""

import collections
import glob
import json
import os
import sys


def main(directory: str, top: int = 40) -> None:
  rows = [json.loads(line) for path in glob.glob(os.path.join(directory, "*.jsonl"))
          for line in open(path)]
  by_file = collections.defaultdict(collections.Counter)
  by_fun = collections.Counter()
  calls = collections.Counter()
  for r in rows:
    file = r["test"].split("::")[0]
    by_file[file][r["event"]] += r["secs"]
    if r["event"] == "backend_compile_duration":
      by_fun[file, r["fun"]] += r["secs"]
      calls[file, r["fun"]] += 1
  events = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")
  total = {e: sum(c[e] for c in by_file.values()) for e in events}
  print(f"{len(rows)} events; trace {total[events[0]]:.0f} s, lower {total[events[1]]:.0f} s, "
        f"XLA compile {total[events[2]]:.0f} s (a persistent-cache hit is counted\n"
        f"as the seconds it took to load: ~1/3 of a compile for a large CPU program)\n")
  print(f"{'file':58s} {'trace':>7s} {'lower':>7s} {'compile':>8s}")
  for name, c in sorted(by_file.items(), key=lambda kv: -sum(kv[1].values()))[:top]:
    print(f"{name:58s} {c[events[0]]:7.1f} {c[events[1]]:7.1f} {c[events[2]]:8.1f}")
  print(f"\n{'file':58s} {'function':32s} {'n':>3s} {'compile s':>9s}")
  for (name, fun), secs in by_fun.most_common(top):
    print(f"{name:58s} {fun[:32]:32s} {calls[name, fun]:3d} {secs:9.1f}")


if __name__ == "__main__":
  main(sys.argv[1])
