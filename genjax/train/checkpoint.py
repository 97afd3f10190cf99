"""One orbax checkpoint per save: the TrainState, the data iterator position and the
record of the frozen stages the run was trained with (genjax.train.stages).

Orbax writes each step into a temporary directory and renames it only when
complete, so a crash or `kill -9` mid-save leaves the previous checkpoint as
the latest one; the unfinished temporary directory is never restored.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from genjax.errors import CheckpointError


class Checkpointer:

  def __init__(self, directory: str, keep: int, create: bool = True):
    # create=False opens for reading: nothing is created and, above all, unfinished saves are not
    # cleaned up (they may be a training process's save in flight).
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, cleanup_tmp_directories=create,
        enable_async_checkpointing=True)
    self.directory = directory
    # Handlers named up front, so that reading metadata (restore_ema_params) knows every item.
    handlers = dict(state=ocp.StandardCheckpointHandler(), data=ocp.JsonCheckpointHandler(),
                    stages=ocp.JsonCheckpointHandler())
    self._manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)

  def latest_step(self) -> Optional[int]:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict, stage_records: dict | None = None) -> None:
    """Starts an asynchronous save (device arrays are copied before returning,
    so the caller may donate `state` to the next step right away)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        stages=ocp.args.JsonSave(stage_records or {})), force=True)

  def _has_item(self, step: int, item: str) -> bool:
    return (self._manager.directory / str(step) / item).exists()

  def restore(self, step: int, like_state: Any) -> tuple[Any, dict, dict]:
    """Restores into the shapes, dtypes and shardings of `like_state`. Returns (state,
    data-iterator state, stage records); checkpoints from before stages existed have none."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like_state)
    items = dict(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
    if self._has_item(step, "stages"):
      items["stages"] = ocp.args.JsonRestore()
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # orbax raises many types for unreadable/mismatched files
      raise CheckpointError(
          f"cannot restore checkpoint step {step} in {self.directory}: {type(e).__name__}: "
          f"{str(e).splitlines()[0] if str(e) else ''}. If it is corrupt, move that step's folder "
          f"aside to resume from an earlier checkpoint; if the config changed (model size, "
          f"family), use a new --workdir.") from e
    logging.info("restored checkpoint step %d from %s", step, self.directory)
    return restored["state"], restored["data"], dict(restored.get("stages") or {})

  def restore_ema_params(self, step: int) -> Any:
    """The EMA parameters of a checkpoint as host arrays, without knowing the model that
    wrote them (for loading an earlier run as a frozen stage)."""
    try:
      # Onto this process's first device, whatever the topology that saved it (several hosts,
      # FSDP-split arrays): without a target orbax refuses a checkpoint of another topology.
      metadata = self._manager.item_metadata(step)["state"]
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
      restored = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target)))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"cannot read checkpoint step {step} in {self.directory}: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    state = restored["state"]
    ema = state["ema_params"] if isinstance(state, dict) else state.ema_params
    return jax.tree.map(np.asarray, ema)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
