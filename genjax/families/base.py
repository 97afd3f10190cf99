"""The contract between a model family and genjax's one training loop.

A family (VAE, diffusion, GAN, flow, ...) says *what* to compute; the loop
(`genjax.train.loop`) owns *how*: jit, sharding over the device mesh, per-step
RNG, EMA, NaN detection, evaluation cadence, logging, checkpoints and
preemption. A family never imports the loop.

Everything a family returns from `init` must be a pytree of arrays so the loop
can shard, checkpoint and restore it. All methods below are traced inside
`jax.jit` by the loop: no Python side effects, no host syncs.

Data convention: batches reach the family as
    {"image": uint8[B, H, W, C], "cond": {...}}
where `cond` is the condition pytree of the batch (see `DataSpec.cond_keys`):
    "label":       int32[B]          class id (0 when the dataset has no labels)
    "tokens":      int32[B, L]       caption token ids (when `config.text.tokenizer` is set)
    "token_mask":  bool[B, L]        True on real tokens, False on padding
and, for evaluation only, a float32 `"mask"` [B] that is 0 for padding
examples (so the last partial batch is counted exactly, never dropped).
Families convert uint8 to whatever range they model (see genjax.nn.images).
`sample` receives a condition pytree of the same form with leading size `num`
(drawn by the loop from the eval split), or None when there are no conditions.

Frozen stages. A family may depend on earlier trained runs or pretrained weights
(`config.stages`, see genjax.train.stages). The loop restores them once, places
them on the mesh and passes their parameters as `frozen` (a dict: stage name ->
params, empty when there are none) to every method below; they are never
trained, EMA'd or saved in checkpoints. What each stage *is* (its config) is
given to the constructor as `stages`.

Sampling convention: `sample` returns float32 images in [0, 1], [N, H, W, C].
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping, Optional

import jax
import ml_collections

PyTree = Any
Batch = Mapping[str, Any]
Cond = Optional[Mapping[str, jax.Array]]
Frozen = Mapping[str, PyTree]
Metrics = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class TextSpec:
  """Caption tokens in the batch: ids in [0, vocab_size), padded to max_length.
  `null_ids`/`null_mask` encode the empty caption (the classifier-free guidance null)."""

  vocab_size: int
  max_length: int
  null_ids: tuple[int, ...]
  null_mask: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a family needs to know about the data it will model."""

  image_shape: tuple[int, int, int]  # (H, W, C)
  num_classes: int  # 0 when the dataset has no labels
  text: Optional[TextSpec] = None  # set when batches carry caption tokens

  @property
  def cond_keys(self) -> tuple[str, ...]:
    return ("label",) + (("tokens", "token_mask") if self.text else ())


@dataclasses.dataclass(frozen=True)
class StageInfo:
  """What a frozen stage is: its source ("pretrained:NAME" or a workdir) and, for a
  workdir, the source run's own resolved config (None for pretrained weights). Once the stage
  is loaded, `step` is its checkpoint step and `statistics` what that run stored for that step
  (WORKDIR/statistics/step_S.json, e.g. an autoencoder's latent moments), or None."""

  name: str
  source: str
  config: Optional[ml_collections.ConfigDict] = None
  step: Optional[int] = None
  statistics: Optional[Mapping[str, float]] = None


class Family(abc.ABC):
  """Base class of every model family.

  Subclasses are constructed once per run as `Family(config, data, stages)` and
  must be cheap to construct (no arrays, no compilation).

  State split:
    * `params`    - everything trained (for a GAN: {"generator":..., "discriminator":...}).
    * `opt_state` - the state(s) of the family's optax optimizer(s), any structure.
  The loop keeps an exponential moving average of `ema_view(params)` and hands
  that EMA view to `sample` and `eval_metrics`.
  """

  # False for a family that makes no images (the contrastive CLIP family): the loop then skips
  # sample grids and FID and evaluates only `eval_metrics`.
  generates_images = True

  # Keyword options of the family's `sample_with(params, rng, num, cond, frozen=None, **options)`
  # (sampler settings such as guidance_scale or steps) that --mode=sample may set.
  sampling_options: tuple[str, ...] = ()

  # True for a family whose `sample` maps condition images to images (an autoencoder's
  # reconstructions): the loop then adds the eval images as cond["image"] (uint8) to the
  # conditions it samples under, so grids and FID (rFID) use the reference images themselves.
  conditions_on_images = False

  def __init__(self, config: ml_collections.ConfigDict, data: DataSpec,
               stages: Optional[Mapping[str, StageInfo]] = None):
    self.config = config
    self.data = data
    self.stages = dict(stages or {})

  def required_stages(self) -> tuple[str, ...]:
    """Names of the frozen stages this configuration needs in `config.stages`."""
    return ()

  # ---- training -----------------------------------------------------------------
  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch, frozen: Frozen = None) -> tuple[PyTree, PyTree]:
    """Returns (params, opt_state). `batch` is a real training batch, so
    data-dependent initialisation (e.g. a flow's actnorm) is possible."""

  @abc.abstractmethod
  def train_step(self, params: PyTree, opt_state: PyTree, batch: Batch,
                 rng: jax.Array, step: jax.Array,
                 frozen: Frozen = None) -> tuple[PyTree, PyTree, Metrics]:
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
  def sample(self, ema_params: PyTree, rng: jax.Array, num: int, cond: Cond,
             frozen: Frozen = None) -> jax.Array:
    """Draws `num` images, float32 in [0, 1]. `cond` is a condition pytree with
    leading size `num` (see the module docstring) or None. `num` is static."""

  def eval_metrics(self, ema_params: PyTree, batch: Batch, rng: jax.Array,
                   frozen: Frozen = None) -> Metrics:
    """Per-example metrics on a test batch, each shaped [B] (the loop applies
    `batch["mask"]` and averages over the whole split). Default: none."""
    del ema_params, batch, rng, frozen
    return {}

  def summarize_eval(self, averages: Mapping[str, jax.Array]) -> Metrics:
    """The eval metrics reported, from the split-wide averages of `eval_metrics`. A
    per-example metric may be a vector [B, K], averaged over the split to [K], for what no
    average of per-image numbers gives (how many of a tokenizer's codes the whole split
    uses); this hook turns such vectors into scalars. Default: the averages unchanged."""
    return dict(averages)

  def train_statistics(self, ema_params: PyTree, batch: Batch, rng: jax.Array,
                       frozen: Frozen = None) -> Metrics:
    """Per-example statistics of the model on TRAINING images, each [B] (e.g. an
    autoencoder's latent moments, which a later stage needs). With `eval.statistics_batches`
    = N > 0 the loop averages them over the first N training batches at every evaluation and
    stores them in WORKDIR/statistics/step_S.json. Default: none."""
    del ema_params, batch, rng, frozen
    return {}

  def eval_images(self, ema_params: PyTree, batch: Batch, rng: jax.Array,
                  frozen: Frozen = None) -> dict[str, jax.Array]:
    """Extra image sets logged at eval time, e.g. {"reconstructions": x} as
    float32 [N, H, W, C] in [0, 1]. Default: none."""
    del ema_params, batch, rng, frozen
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
    """Class-conditional: `model.conditional` on a labelled dataset."""
    return bool(self.config.model.get("conditional", False)) and self.data.num_classes > 0

  def class_labels(self, cond: Cond) -> Optional[jax.Array]:
    """int32 class ids of `cond` for a class-conditional family, else None."""
    if not self.conditional or not cond or "label" not in cond:
      return None
    return cond["label"].astype("int32")
