"""SIGTERM (TPU/cluster preemption) -> save a checkpoint at the next step and exit cleanly."""

from __future__ import annotations

import logging
import signal

import jax


class PreemptionWatcher:

  def __init__(self):
    self._requested = False
    self.stopped = False  # should_stop has said True: the run saved and stopped
    self._previous = None
    if jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
      except ValueError:  # not the main thread (e.g. in some test runners): no handler
        self._previous = None

  def _on_signal(self, signum, frame):
    del frame
    logging.warning("received signal %d: will checkpoint and stop after this step", signum)
    self._requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All hosts must agree on the step at which they stop; JAX's preemption
      # sync manager (set up by jax.distributed.initialize) coordinates it.
      from jax.experimental import multihost_utils
      self.stopped = multihost_utils.reached_preemption_sync_point(step)
    else:
      self.stopped = self._requested
    return self.stopped

  def close(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
