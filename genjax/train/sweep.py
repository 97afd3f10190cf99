"""Sweeps: a config file's `get_hyper(h)` returns a list of override dicts,
built with the helpers below (`h` is this module), e.g.

    def get_hyper(h):
      return h.product([h.sweep("model.beta", [0.5, 1.0]),
                        h.sweep("optim.learning_rate", [1e-3, 2e-3])])

Each dict maps dotted config keys to values; `apply_overrides` sets them with
ml_collections' type checks, so a typo fails before anything trains.
"""

from __future__ import annotations

import itertools

import ml_collections

from genjax.errors import ConfigError


def sweep(key: str, values) -> list[dict]:
  return [{key: v} for v in values]


def product(axes: list[list[dict]]) -> list[dict]:
  out = []
  for combo in itertools.product(*axes):
    merged = {}
    for d in combo:
      merged.update(d)
    out.append(merged)
  return out


def zipit(axes: list[list[dict]]) -> list[dict]:
  if len({len(a) for a in axes}) > 1:
    raise ConfigError("zipit needs sweeps of equal length")
  return [dict(kv for d in combo for kv in d.items()) for combo in zip(*axes)]


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for p in parents:
      if p not in node:
        raise ConfigError(f"sweep key {dotted!r}: config has no {p!r}")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"sweep key {dotted!r}: config has no {leaf!r}")
    try:
      node[leaf] = value
    except TypeError as e:
      raise ConfigError(f"sweep key {dotted!r}: {e}") from None
  return config


def run_name(overrides: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in sorted(overrides.items())) or "base"
