"""The contract between a model family and genjax's one training loop.

A family (VAE, diffusion, GAN, flow, ...) says *what* to compute; the loop
(`genjax.train.loop`) owns *how*: jit, sharding over the device mesh, per-step
RNG, EMA, NaN detection, evaluation cadence, logging, checkpoints and
preemption. A family never imports the loop.

Everything a family returns from `init` must be a pytree of arrays so the loop
can shard, checkpoint and restore it. All methods below are traced inside
`jax.jit` by the loop: no Python side effects, no host syncs.

Data convention: batches reach the family as
    {"image": uint8[B, H, W, C], "label": int32[B]}
and, for evaluation only, a float32 `"mask"` [B] that is 0 for padding
examples (so the last partial batch is counted exactly, never dropped).
Families convert uint8 to whatever range they model (see genjax.nn.images).

Sampling convention: `sample` returns float32 images in [0, 1], [N, H, W, C].
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, Optional

import jax
import ml_collections

PyTree = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a family needs to know about the data it will model."""

  image_shape: tuple[int, int, int]  # (H, W, C)
  num_classes: int  # 0 when the dataset has no labels


class Family(abc.ABC):
  """Base class of every model family.

  Subclasses are constructed once per run as `Family(config, data_spec)` and
  must be cheap to construct (no arrays, no compilation).

  State split:
    * `params`    - everything trained (for a GAN: {"generator":..., "discriminator":...}).
    * `opt_state` - the state(s) of the family's optax optimizer(s), any structure.
  The loop keeps an exponential moving average of `ema_view(params)` and hands
  that EMA view to `sample` and `eval_metrics`.
  """

  def __init__(self, config: ml_collections.ConfigDict, data: DataSpec):
    self.config = config
    self.data = data

  # ---- training -----------------------------------------------------------------
  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
    """Returns (params, opt_state). `batch` is a real training batch, so
    data-dependent initialisation (e.g. a flow's actnorm) is possible."""

  @abc.abstractmethod
  def train_step(self, params: PyTree, opt_state: PyTree, batch: Batch,
                 rng: jax.Array, step: jax.Array) -> tuple[PyTree, PyTree, Metrics]:
    """One optimisation step. Returns (new_params, new_opt_state, metrics).

    May run several optimizers (a GAN's generator and discriminator updates).
    `metrics` holds scalars averaged over the global batch and MUST contain
    "loss": the loop stops the run if any metric stops being finite.
    """

  def ema_view(self, params: PyTree) -> PyTree:
    """The part of `params` that sampling and evaluation need (default: all)."""
    return params

  # ---- evaluation -----------------------------------------------------------------
  @abc.abstractmethod
  def sample(self, ema_params: PyTree, rng: jax.Array, num: int,
             labels: Optional[jax.Array]) -> jax.Array:
    """Draws `num` images, float32 in [0, 1]. `labels` is int32[num] for
    class-conditional models, else None. `num` is static."""

  def eval_metrics(self, ema_params: PyTree, batch: Batch, rng: jax.Array) -> Metrics:
    """Per-example metrics on a test batch, each shaped [B] (the loop applies
    `batch["mask"]` and averages over the whole split). Default: none."""
    del ema_params, batch, rng
    return {}

  def eval_images(self, ema_params: PyTree, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """Extra image sets logged at eval time, e.g. {"reconstructions": x} as
    float32 [N, H, W, C] in [0, 1]. Default: none."""
    del ema_params, batch, rng
    return {}

  def health_message(self, metrics: Mapping[str, float]) -> Optional[str]:
    """Called on the host at every log with the averaged training metrics.
    Returns a description of a failure the metrics show (e.g. a GAN's mode
    collapse) or None. The loop stops the run, keeping its checkpoints, after
    `HEALTH_PATIENCE` consecutive logs report a problem. Default: healthy."""
    del metrics
    return None

  # ---- helpers ----------------------------------------------------------------------
  @property
  def conditional(self) -> bool:
    return bool(self.config.model.get("conditional", False)) and self.data.num_classes > 0
