"""Console progress: step, metrics, steps/s, images/s and ETA on one line."""

from __future__ import annotations

import time


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
  """Steps/s over each log window and the run's training seconds so far (resumed runs start
  from the seconds their metrics recorded; evaluation time is excluded)."""

  def __init__(self, total_steps: int, batch_size: int, start_step: int, train_seconds: float = 0.0):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.train_seconds = train_seconds
    self.rate = 0.0
    self._last_time = time.perf_counter()
    self._last_step = start_step
    self._excluded = 0.0

  def exclude(self, seconds: float) -> None:
    """Time spent since the last line on something else than training (evaluation)."""
    self._excluded += seconds

  def line(self, step: int, scalars: dict) -> str:
    now = time.perf_counter()
    elapsed = max(now - self._last_time - self._excluded, 1e-9)
    self.train_seconds += elapsed
    self.rate = (step - self._last_step) / elapsed
    self._last_time, self._last_step, self._excluded = now, step, 0.0
    eta = (self.total_steps - step) / self.rate if self.rate > 0 else float("inf")
    shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
    eta_text = format_duration(eta) if eta != float("inf") else "?"
    return (f"[step {step}/{self.total_steps}] {shown} | {self.rate:.2f} steps/s "
            f"{self.rate * self.batch_size:.0f} img/s | ETA {eta_text}")
