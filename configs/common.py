"""What every genjax config shares.

A config file `configs/<family>.py` defines `get_config(arg)` where `arg` is the
text after the colon in `--config=configs/<family>.py:dataset=mnist5k,size=smoke`.
It calls `parse_arg` for its own keys, then `base_config(...)` and overrides the
family-specific parts. Sizes are presets chosen by name; `smoke` trains in
seconds and is what the tests use.
"""

from __future__ import annotations

import ml_collections

from genjax.errors import ConfigError

# Keys every `get_config(arg)` understands; a family adds its own.
COMMON_ARG_DEFAULTS = {"dataset": "mnist5k", "size": "small"}


def parse_arg(arg: str | None, defaults: dict) -> ml_collections.ConfigDict:
  """Parses "k1=v1,k2=v2" into a ConfigDict whose keys and types come from `defaults`.

  Unknown keys and values of the wrong type raise ConfigError naming the
  accepted keys, instead of being silently ignored.
  """
  out = ml_collections.ConfigDict(dict(defaults))
  if not arg:
    return out
  for item in arg.split(","):
    if not item.strip():
      continue
    if "=" not in item:
      raise ConfigError(f"config argument {item!r} is not key=value; accepted keys: "
                        f"{', '.join(sorted(defaults))}")
    key, value = (s.strip() for s in item.split("=", 1))
    if key not in defaults:
      raise ConfigError(f"unknown config argument {key!r}; accepted keys: "
                        f"{', '.join(sorted(defaults))}")
    kind = type(defaults[key])
    try:
      if kind is bool:
        if value.lower() not in ("true", "false", "1", "0"):
          raise ValueError(value)
        out[key] = value.lower() in ("true", "1")
      else:
        out[key] = kind(value)
    except ValueError:
      raise ConfigError(f"config argument {key}={value!r} is not a valid {kind.__name__}") from None
  return out


def pick_size(size: str, presets: dict):
  if size not in presets:
    raise ConfigError(f"unknown size {size!r}; choose one of: {', '.join(presets)}")
  return presets[size]


def shrink_eval_for_smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `size=smoke` evaluation: two small test batches and a 4x4 grid."""
  c.eval.num_batches = 2
  c.eval.batch_size = 32
  c.eval.grid_size = 16
  return c


def set_cadence(c: ml_collections.ConfigDict, preset: dict) -> ml_collections.ConfigDict:
  """Run length and how often the loop logs, evaluates and saves, from a size preset with keys
  batch_size, total_steps, log_every, eval_every, checkpoint_every and, optionally,
  fid_samples and fid_reference (the FID evaluator's sample and reference counts).
  Other keys of the preset (model sizes) are left to the family's config."""
  for key in ("batch_size", "total_steps", "log_every", "eval_every", "checkpoint_every"):
    c[key] = preset[key]
  c.eval.fid_samples = preset.get("fid_samples", c.eval.fid_samples)
  c.eval.fid_reference_count = preset.get("fid_reference", c.eval.fid_reference_count)
  return c


def base_config(family: str, dataset: str) -> ml_collections.ConfigDict:
  """Fields the loop reads. Families put their own under `model` (and `optim*`)."""
  c = ml_collections.ConfigDict()
  c.family = family
  c.dataset = dataset
  c.data_dir = ""  # "" -> $GENJAX_DATA_DIR or ~/tensorflow_datasets
  c.seed = 0
  c.batch_size = 64  # global batch, split over all devices and hosts
  c.total_steps = 1000
  c.log_every = 50
  c.eval_every = 500  # 0: never evaluate while training (the last step included)
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.ema_decay = 0.999

  # Parallelism (genjax/train/sharding.py): batches are split over every device; fsdp = F > 1
  # also splits the parameters, optimizer state and EMA over F devices (FSDP / ZeRO-3), for
  # models too big to replicate. Arrays under min_shard_size elements stay replicated.
  c.sharding = ml_collections.ConfigDict()
  c.sharding.fsdp = 1
  c.sharding.min_shard_size = 2**14

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"  # adam | adamw
  c.optim.learning_rate = 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.warmup_steps = 0
  c.optim.schedule = "constant"  # constant | cosine
  c.optim.grad_clip = 0.0  # global-norm clip; 0 disables

  c.eval = ml_collections.ConfigDict()
  c.eval.split = "test"
  c.eval.batch_size = 256
  c.eval.num_batches = -1  # -1: the whole split, every example counted
  c.eval.grid_size = 64  # samples in the PNG grid
  c.eval.statistics_batches = 0  # > 0: Family.train_statistics over that many training batches
  c.eval.fid_samples = 0  # 0 disables the FID/KID evaluator (genjax/train/fid_evaluator.py)
  c.eval.fid_reference_count = -1  # first N images of the eval split as the reference; -1: all
  c.eval.fid_mode = "default"  # default (pytorch-fid) | tf1 | clean
  # CLIP score / R-precision of samples under their captions (genjax/train/clip_evaluator.py):
  # "" disables; else a genjax clip run or an OpenAI / open_clip checkpoint file.
  c.eval.clip_score = ""
  c.eval.clip_activation = ""  # quick_gelu | gelu: open_clip state dicts only
  c.eval.clip_samples = 500
  c.eval.clip_r = 100

  # Captions -> token ids in every batch (cond["tokens"], cond["token_mask"]); "" = none.
  c.text = ml_collections.ConfigDict()
  c.text.tokenizer = ""  # "" | minilm (MiniLM's WordPiece vocabulary, genjax.data.tokenizer)
  c.text.max_length = 32  # tokens per caption incl. [CLS]/[SEP]; longer captions are truncated

  # Frozen stages (genjax.train.stages): name -> "pretrained:NAME" or a trained run's workdir.
  # A config whose model needs a stage defines its key here, e.g. stages.text_encoder.
  c.stages = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict()
  c.model.conditional = False
  return c
