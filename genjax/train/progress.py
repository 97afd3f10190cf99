"""Console progress: step, metrics, steps/s, images/s and ETA on one line."""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:

  def __init__(self, total_steps: int, batch_size: int, start_step: int):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self._t0 = time.perf_counter()
    self._last_time = self._t0
    self._last_step = start_step

  def line(self, step: int, scalars: dict) -> str:
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
    eta_text = format_duration(eta) if eta != float("inf") else "?"
    return (f"[step {step}/{self.total_steps}] {shown} | {rate:.2f} steps/s "
            f"{rate * self.batch_size:.0f} img/s | ETA {eta_text}")
