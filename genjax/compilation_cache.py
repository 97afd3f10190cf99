"""XLA's persistent compilation cache, on by default.

A restarted run (after preemption, a crash, or just the next experiment with
the same shapes) loads its compiled steps from disk instead of recompiling
them, which on small models is most of the start-up time.
"""

import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "genjax", "xla")


def enable(directory: str | None = None) -> str | None:
  """Uses $GENJAX_COMPILATION_CACHE (or DEFAULT_DIR); the value "off" disables it."""
  directory = directory or os.environ.get("GENJAX_COMPILATION_CACHE") or DEFAULT_DIR
  if directory == "off":
    return None
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  return directory
