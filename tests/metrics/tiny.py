"""A tiny stand-in feature network for fast tests of the FID plumbing (not of the features)."""

import flax.linen as nn
import jax
import numpy as np

DIM = 16


class TinyFeatures(nn.Module):
  """[N, 299, 299, 3] -> [N, 16]: one strided conv, a mean, a dense layer."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(4, (13, 13), strides=(13, 13))(x)
    return nn.Dense(DIM)(nn.relu(x).mean(axis=(1, 2)))


def tiny_params(seed=0):
  return TinyFeatures().init(jax.random.key(seed), np.zeros((1, 299, 299, 3), np.float32))["params"]


def tiny_features(batch_size=4, devices=None):
  from genjax.metrics.features import InceptionFeatures
  return InceptionFeatures(tiny_params(), model=TinyFeatures(), batch_size=batch_size,
                           devices=devices)
