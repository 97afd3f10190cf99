"""Checks a resolved config before anything expensive happens.

ml_collections already rejects unknown `--config.x=` overrides and values of
the wrong type; this catches what it cannot: missing keys, non-positive
counts, and bad combinations. Every failure is a ConfigError with the fix.
"""

from __future__ import annotations

import ml_collections

from genjax.errors import ConfigError

REQUIRED_INTS = ("seed", "batch_size", "total_steps", "log_every", "eval_every",
                 "checkpoint_every", "keep_checkpoints")
REQUIRED_STRS = ("family", "dataset", "data_dir")


def validate_config(config: ml_collections.ConfigDict) -> None:
  for key in REQUIRED_INTS + REQUIRED_STRS + ("ema_decay", "optim", "eval", "model"):
    if key not in config:
      raise ConfigError(f"config is missing required key {key!r} (build configs on "
                        f"configs/common.py:base_config)")
  for key in REQUIRED_INTS:
    if not isinstance(config[key], int) or isinstance(config[key], bool):
      raise ConfigError(f"config.{key} must be an int, got {config[key]!r}")
    if key == "eval_every" and config[key] == 0:
      continue  # 0: never evaluate while training (throughput runs, probes)
    if key != "seed" and config[key] <= 0:
      raise ConfigError(f"config.{key} must be > 0, got {config[key]}")
  for key in REQUIRED_STRS:
    if not isinstance(config[key], str):
      raise ConfigError(f"config.{key} must be a string, got {config[key]!r}")
  if not 0.0 <= config.ema_decay < 1.0:
    raise ConfigError(f"config.ema_decay must be in [0, 1), got {config.ema_decay}")
  if config.optim.learning_rate <= 0:
    raise ConfigError(f"config.optim.learning_rate must be > 0, got {config.optim.learning_rate}")
  for name, source in (config.get("stages") or {}).items():
    if not isinstance(source, str) or not source:
      raise ConfigError(f"config.stages.{name} must be 'pretrained:NAME' or a workdir path, got {source!r}")
  if config.get("text") and config.text.tokenizer and config.text.max_length < 2:
    raise ConfigError(f"config.text.max_length must be >= 2 ([CLS] and [SEP]), got {config.text.max_length}")
  if config.eval.get("clip_score") and config.eval.clip_samples < config.eval.clip_r:
    raise ConfigError(f"config.eval.clip_samples={config.eval.clip_samples} must be >= "
                      f"config.eval.clip_r={config.eval.clip_r} (R-precision's candidates)")
  if config.eval.grid_size <= 0 or config.eval.batch_size <= 0:
    raise ConfigError("config.eval.grid_size and config.eval.batch_size must be > 0")
