"""One run, built once: the config, its data, its family, its frozen stages and its jitted
functions. Every mode of `launch.py` (train, eval, sample, sweep) goes through this API:

    run = Run.create(config, workdir)     # a run about to train (config from the command line)
    run = Run.from_workdir(workdir)       # a trained run, rebuilt from WORKDIR/config.json
    state, step = run.restore_latest()    # or run.init_state() for fresh parameters
    images = run.sample(state, num, cond=run.conditions(num))
    cond = run.prompt_conditions(["a red sneaker on the left"])

Stages, conditions and restores are handled here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genjax import data, multihost, paths
from genjax.errors import CheckpointError, ConfigError
from genjax.families import DataSpec, TextSpec, build_family
from genjax.train import sharding, stages as stages_lib, steps
from genjax.train.checkpoint import Checkpointer
from genjax.train.config_check import validate_config
from genjax.train.state import TrainState

# fold_in constants separating the run's RNG streams from the per-step ones.
(INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM, FID_STREAM, PROMPT_STREAM, STATISTICS_STREAM,
 CLIP_STREAM) = range(8)


def tokenizer_for(config):
  """The caption tokenizer `config.text.tokenizer` names, or None (a model without captions)."""
  name = config.get("text", {}).get("tokenizer", "")
  if not name:
    return None
  from genjax.data.tokenizer import Tokenizer  # pylint: disable=import-outside-toplevel
  if name != "minilm":
    raise ConfigError(f"unknown text.tokenizer {name!r}; choose 'minilm' or '' (no captions)")
  return Tokenizer.minilm(max_length=config.text.max_length)


@dataclasses.dataclass
class Run:
  """Everything built once per run (no arrays that change during training)."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  data_dir: str
  info: data.DatasetInfo
  family: Any
  base_rng: jax.Array
  tokenizer: Any  # genjax.data.tokenizer.Tokenizer or None
  stages: dict  # name -> genjax.train.stages.Stage (host params + record)
  frozen: dict  # name -> the stage's params, replicated on the mesh
  _compiled: dict = dataclasses.field(default_factory=dict)

  # ---- construction ---------------------------------------------------------------------------
  @classmethod
  def create(cls, config: ml_collections.ConfigDict, workdir: str) -> "Run":
    validate_config(config)
    data_dir = config.data_dir or data.default_data_dir()
    info = multihost.main_first(lambda: data.prepare(config.dataset, data_dir), "prepare-data")
    tokenizer = tokenizer_for(config)
    text = None
    if tokenizer is not None:
      if not info.has_captions:
        raise ConfigError(f"text.tokenizer={config.text.tokenizer!r} needs a captioned dataset; "
                          f"{config.dataset!r} has no captions (try scenes32 or captioned_folder:PATH)")
      null_ids, null_mask = tokenizer([""])
      text = TextSpec(tokenizer.vocab_size, tokenizer.max_length, tuple(int(i) for i in null_ids[0]),
                      tuple(bool(m) for m in null_mask[0]))
    spec = DataSpec(tuple(info.image_shape), info.num_classes, text)
    family = build_family(config, spec, stages_lib.stage_infos(config))
    stages_lib.check_required(config, family.required_stages())
    stages = stages_lib.load_stages(config)
    if stages:  # built again with what loading resolved: each stage's step and statistics
      family = build_family(config, spec, {name: s.info for name, s in stages.items()})
    mesh = sharding.mesh_for(config)
    frozen = {name: sharding.replicate(s.params, mesh) for name, s in stages.items()}
    return cls(config=config, workdir=workdir, mesh=mesh, data_dir=data_dir, info=info,
               family=family, base_rng=jax.random.PRNGKey(config.seed), tokenizer=tokenizer,
               stages=stages, frozen=frozen)

  @classmethod
  def from_workdir(cls, workdir: str) -> "Run":
    """The run as it was trained: rebuilt from WORKDIR/config.json, not the command line."""
    return cls.create(stages_lib.read_run_config(workdir), workdir)

  @property
  def stage_records(self) -> dict:
    return {name: s.record for name, s in self.stages.items()}

  # ---- data -------------------------------------------------------------------------------------
  def to_model_batch(self, local: dict) -> dict:
    """A process-local pipeline batch -> the global {"image", "cond", ["mask"]} the family sees."""
    batch = {"image": local["image"], "cond": self._cond_of(local)}
    if "mask" in local:
      batch["mask"] = local["mask"]
    return sharding.global_batch(batch, self.mesh)

  def first_train_batch(self) -> dict:
    """The first global training batch (the iterator is opened and closed again)."""
    iterator = self.train_iterator()
    try:
      return self.to_model_batch(next(iterator))
    finally:
      iterator.close()

  def train_iterator(self):
    return data.train_iterator(
        self.config.dataset, batch_size=sharding.per_process_batch_size(self.config.batch_size),
        seed=self.config.seed, data_dir=self.data_dir)

  def eval_batches(self, split: Optional[str] = None, **kwargs):
    """Global, masked batches of the eval split (all of it unless num_batches is given), in
    order; `split` reads another split the same way."""
    cfg = self.config.eval
    kwargs.setdefault("num_batches", cfg.num_batches)
    local_batch = sharding.per_process_batch_size(cfg.batch_size)
    batches = data.eval_batches(self.config.dataset, batch_size=local_batch, split=split or cfg.split,
                                data_dir=self.data_dir, **kwargs)
    try:  # also when the caller stops early (next(run.eval_batches()) closes it on release)
      for b in batches:
        yield self.to_model_batch(b)
    finally:
      batches.close()

  def eval_rows(self, num: int, keys=("label", "caption")) -> dict:
    """Host arrays `keys` of the first `num` examples of the eval split, cycled if it is
    smaller (read identically on every process)."""
    parts, have = [], 0
    while have < num:
      with data.eval_batches(self.config.dataset, batch_size=min(num, 1024),
                             split=self.config.eval.split, data_dir=self.data_dir,
                             process_index=0, process_count=1) as batches:
        for b in batches:
          keep = min(int(b["mask"].sum()), num - have)
          parts.append({k: b[k][:keep] for k in keys if k in b})
          have += keep
          if have >= num:
            break
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def host_conditions(self, num: int) -> Optional[dict]:
    """Conditions of the first `num` eval examples as host arrays: what a model is sampled and
    scored under (a text model: the captions of those test images). None without conditions."""
    if not self.conditioned:
      return None
    with_images = self.family.conditions_on_images
    rows = self.eval_rows(num, ("label", "caption", "image") if with_images else ("label", "caption"))
    return dict(self._cond_of(rows), **({"image": rows["image"]} if with_images else {}))

  def host_captions(self, num: int) -> np.ndarray:
    """The captions of the first `num` eval examples (the ones `conditions(num)` encodes)."""
    return self.eval_rows(num, ("caption",))["caption"]

  def _cond_of(self, local: dict) -> dict:
    size = len(next(iter(local.values())))
    cond = {"label": np.asarray(local["label"] if "label" in local else np.zeros(size), np.int32)}
    if self.tokenizer is not None:
      cond["tokens"], cond["token_mask"] = self.tokenizer(list(local["caption"]))
    return cond

  @property
  def conditioned(self) -> bool:
    return self.family.conditional or self.tokenizer is not None or self.family.conditions_on_images

  def conditions(self, num: int, offset: int = 0, host: Optional[dict] = None):
    """`num` conditions replicated on the mesh: rows offset.. of `host` (default: the eval
    split's, see host_conditions), cycled. None for a model without conditions."""
    if not self.conditioned:
      return None
    host = self.host_conditions(offset + num) if host is None else host
    n = len(host["label"])
    rows = (offset + np.arange(num)) % n
    return sharding.replicate({k: v[rows] for k, v in host.items()}, self.mesh)

  def prompt_conditions(self, prompts: Sequence[str]):
    """Conditions for user prompts (a text-conditioned model)."""
    if self.tokenizer is None:
      raise ConfigError("--prompt needs a text-conditioned model (this run has no text.tokenizer)")
    if not prompts or any(not p.strip() for p in prompts):
      raise ConfigError("prompts must be non-empty text")
    return sharding.replicate(self._cond_of({"caption": np.asarray(list(prompts), object)}), self.mesh)

  # ---- state ------------------------------------------------------------------------------------
  def _init(self):
    """(init function, its arguments, the state's placement by `config.sharding`: replicated,
    or split FSDP-style: genjax.train.sharding)."""
    init_batch = self.first_train_batch()
    family = self.family

    def init_fn(rng, batch, frozen):
      params, opt_state = family.init(rng, batch, frozen)
      ema = jax.tree.map(jnp.copy, family.ema_view(params))
      return TrainState.create(params, opt_state, ema, jax.random.fold_in(self.base_rng, TRAIN_STREAM))

    args = (jax.random.fold_in(self.base_rng, INIT_STREAM), init_batch, self.frozen)
    min_size = self.config.get("sharding", {}).get("min_shard_size", sharding.DEFAULT_MIN_SHARD_SIZE)
    shapes = jax.eval_shape(init_fn, *args)
    return init_fn, args, shapes, sharding.state_shardings(shapes, self.mesh, min_size)

  def init_state(self) -> TrainState:
    """Fresh parameters from the first training batch (the same batch on every
    (re)start, so data-dependent initialisation is reproducible), placed by
    `config.sharding`."""
    init_fn, args, _, layout = self._init()
    return jax.jit(init_fn, out_shardings=layout)(*args)

  def abstract_state(self) -> TrainState:
    """The state's shapes, dtypes and placement without computing it: what a checkpoint is
    restored into (a resumed or evaluated run never compiles nor runs the initialiser)."""
    _, _, shapes, layout = self._init()
    return jax.tree.map(lambda s, where: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where),
                        shapes, layout)

  def checkpointer(self, read_only: bool = False) -> Checkpointer:
    """The run's checkpoints. `read_only` (eval, sample, scripts) never creates folders nor
    cleans up unfinished saves, so it is safe beside a run that is still training."""
    return Checkpointer(paths.resolve(self.workdir) / "checkpoints",
                        keep=self.config.keep_checkpoints, create=not read_only)

  def restore(self, checkpointer: Checkpointer, step: int, like: TrainState):
    """Restores `step`, refusing a checkpoint trained with other frozen stages.
    Returns (state, data-iterator state)."""
    state, data_state, records = checkpointer.restore(step, like)
    stages_lib.check_records(records, self.stages, checkpointer.directory)
    return state, data_state

  def restore_latest(self, step: Optional[int] = None) -> tuple[TrainState, int]:
    """(state, step) of the latest checkpoint, or of checkpoint `step` when given."""
    checkpointer = self.checkpointer(read_only=True)
    try:
      step = checkpointer.latest_step() if step is None else step
      if step is None:
        raise CheckpointError(f"no checkpoint in {checkpointer.directory}; train first "
                              f"(python launch.py --config=... --workdir={self.workdir})")
      state, _ = self.restore(checkpointer, step, self.abstract_state())
    finally:
      checkpointer.close()
    return state, step

  # ---- sampling ---------------------------------------------------------------------------------
  def sample(self, state: TrainState, num: int, cond=None, rng=None, sharded: bool = False,
             **options) -> jax.Array:
    """`num` images in [0, 1] from the EMA parameters under `cond`. `options` go to the
    family's `sample_with` (e.g. guidance_scale, steps) where it has one.

    The images come back replicated (readable on every host), unless `sharded`: then they
    are split over the devices along the batch (when `num` divides evenly), each device
    drawing its own share instead of all of them, and each host can read only its rows
    (`genjax.multihost.local_rows`), as the FID evaluator does."""
    rng = jax.random.fold_in(self.base_rng, SAMPLE_STREAM) if rng is None else rng
    sharded = sharded and num % self.mesh.devices.size == 0
    key = (sharded,) + tuple(sorted(options.items()))
    if key not in self._compiled:
      self._compiled[key] = steps.make_sample_fn(self.family, self.mesh, sharded=sharded, **options)
    return self._compiled[key](state.ema_params, rng, cond, num, self.frozen)
