"""One orbax checkpoint per save: the TrainState and the data iterator position.

Orbax writes each step into a temporary directory and renames it only when
complete, so a crash or `kill -9` mid-save leaves the previous checkpoint as
the latest one; the unfinished temporary directory is never restored.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp

from genjax.errors import CheckpointError


class Checkpointer:

  def __init__(self, directory: str, keep: int):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True,
        enable_async_checkpointing=True)
    self.directory = directory
    self._manager = ocp.CheckpointManager(directory, options=options, item_names=("state", "data"))

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Starts an asynchronous save (device arrays are copied before returning,
    so the caller may donate `state` to the next step right away)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def restore(self, step: int, like_state: Any) -> tuple[Any, dict]:
    """Restores into the shapes, dtypes and shardings of `like_state`."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like_state)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types for unreadable/mismatched files
      raise CheckpointError(
          f"cannot restore checkpoint step {step} in {self.directory}: {type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else ''}. If it is corrupt, move that step's folder "
          f"aside to resume from an earlier checkpoint; if the config changed (model size, "
          f"family), use a new --workdir.") from e
    logging.info("restored checkpoint step %d from %s", step, self.directory)
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
