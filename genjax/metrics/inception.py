"""The FID Inception-v3 (TF `inception-2015-12-05` graph, pool3 features) in Flax linen.

This is not torchvision's Inception-v3: the FID graph differs in three pooling details,
all reproduced here because they change the features:

* the average pools inside blocks A, C and E1 divide by the number of *valid* pixels
  (TF `SAME` avg pool == torch `count_include_pad=False`);
* the last block (`mixed_10`, Mixed_7c) uses a 3x3 *max* pool in its pool branch,
  where torchvision uses an average pool;
* there is no 1008-way logits layer: the output is the 8x8 average pool ("pool3"),
  2048 numbers per image.

The input is a float32 NHWC batch of 299x299 images already scaled to the network's
range ((x - 128) / 128 for uint8 x, or pytorch-fid's 2x/255 - 1); see preprocess.py.

Batch norm carries no parameters of its own: `inception_weights` folds it into each
conv's kernel and bias when converting the weights, so a layer is conv + bias + relu.
Every conv is described once, in `conv_specs()`, which both this module and the
weight converter use.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 2048
INPUT_SIZE = 299


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  cin: int
  cout: int
  kernel: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)

  @property
  def kernel_shape(self):
    return (*self.kernel, self.cin, self.cout)


def _same(kh, kw):
  return ((kh - 1) // 2, (kw - 1) // 2)


def _c(cin, cout, kh, kw, stride=1, same=True):
  return ConvSpec(cin, cout, (kh, kw), stride, _same(kh, kw) if same else (0, 0))


def _block_a(cin, pool_features):
  return {"conv": _c(cin, 64, 1, 1),
          "tower/conv": _c(cin, 48, 1, 1), "tower/conv_1": _c(48, 64, 5, 5),
          "tower_1/conv": _c(cin, 64, 1, 1), "tower_1/conv_1": _c(64, 96, 3, 3),
          "tower_1/conv_2": _c(96, 96, 3, 3),
          "tower_2/conv": _c(cin, pool_features, 1, 1)}


def _block_b(cin):
  return {"conv": _c(cin, 384, 3, 3, 2, same=False),
          "tower/conv": _c(cin, 64, 1, 1), "tower/conv_1": _c(64, 96, 3, 3),
          "tower/conv_2": _c(96, 96, 3, 3, 2, same=False)}


def _block_c(cin, c7):
  return {"conv": _c(cin, 192, 1, 1),
          "tower/conv": _c(cin, c7, 1, 1), "tower/conv_1": _c(c7, c7, 1, 7),
          "tower/conv_2": _c(c7, 192, 7, 1),
          "tower_1/conv": _c(cin, c7, 1, 1), "tower_1/conv_1": _c(c7, c7, 7, 1),
          "tower_1/conv_2": _c(c7, c7, 1, 7), "tower_1/conv_3": _c(c7, c7, 7, 1),
          "tower_1/conv_4": _c(c7, 192, 1, 7),
          "tower_2/conv": _c(cin, 192, 1, 1)}


def _block_d(cin):
  return {"tower/conv": _c(cin, 192, 1, 1), "tower/conv_1": _c(192, 320, 3, 3, 2, same=False),
          "tower_1/conv": _c(cin, 192, 1, 1), "tower_1/conv_1": _c(192, 192, 1, 7),
          "tower_1/conv_2": _c(192, 192, 7, 1),
          "tower_1/conv_3": _c(192, 192, 3, 3, 2, same=False)}


def _block_e(cin):
  return {"conv": _c(cin, 320, 1, 1),
          "tower_conv": _c(cin, 384, 1, 1), "tower_mixed_conv": _c(384, 384, 1, 3),
          "tower_mixed_conv_1": _c(384, 384, 3, 1),
          "tower_1_conv": _c(cin, 448, 1, 1), "tower_1_conv_1": _c(448, 384, 3, 3),
          "tower_1_mixed_conv": _c(384, 384, 1, 3), "tower_1_mixed_conv_1": _c(384, 384, 3, 1),
          "tower_2_conv": _c(cin, 192, 1, 1)}


_BLOCKS = (("mixed", "A", _block_a(192, 32)), ("mixed_1", "A", _block_a(256, 64)),
           ("mixed_2", "A", _block_a(288, 64)), ("mixed_3", "B", _block_b(288)),
           ("mixed_4", "C", _block_c(768, 128)), ("mixed_5", "C", _block_c(768, 160)),
           ("mixed_6", "C", _block_c(768, 160)), ("mixed_7", "C", _block_c(768, 192)),
           ("mixed_8", "D", _block_d(768)), ("mixed_9", "E", _block_e(1280)),
           ("mixed_10", "E", _block_e(2048)))
_STEM = {"conv": _c(3, 32, 3, 3, 2, same=False), "conv_1": _c(32, 32, 3, 3, same=False),
         "conv_2": _c(32, 64, 3, 3), "conv_3": _c(64, 80, 1, 1),
         "conv_4": _c(80, 192, 3, 3, same=False)}


@functools.cache
def conv_specs() -> dict[str, ConvSpec]:
  """Every conv of the network by its TF-graph path, e.g. 'mixed_10/tower_2_conv' (94 in all)."""
  specs = dict(_STEM)
  for block, _, convs in _BLOCKS:
    specs.update({f"{block}/{name}": spec for name, spec in convs.items()})
  return specs


def _window_slices(x, window, stride):
  """The window*window strided slices whose elementwise max/sum is a pool over `x` (VALID).
  XLA:CPU fuses such slices into one loop. Its reduce_window took 30 ms of a 624 ms batch of 16
  for the first stem max pool alone; the slice form made the whole network ~6% faster for the
  max pools and ~5% more for the average pools (measured on 2 CPU cores)."""
  _, h, w, _ = x.shape
  oh, ow = (h - window) // stride + 1, (w - window) // stride + 1
  return [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
          for i in range(window) for j in range(window)]


def max_pool(x, window, stride, pad=0):
  """Max pool (padding never wins: -inf). Exactly reduce_window's numbers: max is exact."""
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-jnp.inf)
  return functools.reduce(jnp.maximum, _window_slices(x, window, stride))


def avg_pool_valid(x):
  """3x3 stride-1 average over the pixels inside the image (TF SAME, no zero padding counted).
  Summing the 9 slices rounds in a fixed order, reduce_window in its own: ~1e-7 apart."""
  _, h, w, _ = x.shape
  total = functools.reduce(jnp.add, _window_slices(
      jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 1))
  # The count of valid pixels depends only on the shape: a numpy constant.
  count = sum(_window_slices(np.pad(np.ones((1, h, w, 1), np.float32),
                                    ((0, 0), (1, 1), (1, 1), (0, 0))), 3, 1))
  return total / count


def conv2d(x, kernel, stride, padding):
  """NHWC x HWIO convolution with symmetric `padding` (ph, pw).

  XLA:CPU runs unpadded ("VALID") convolutions 2.5-3x slower than padded ones (measured
  on the stem and stride-2 convs here). A VALID conv is therefore computed with one
  extra zero row/column at the bottom/right and the output cropped to the VALID size:
  the kept windows never touch that zero, so the result is the same numbers.
  """
  n, h, w, _ = x.shape
  kh, kw = kernel.shape[:2]
  conv = functools.partial(jax.lax.conv_general_dilated,
                           dimension_numbers=("NHWC", "HWIO", "NHWC"),
                           precision=jax.lax.Precision.HIGHEST)
  if padding != (0, 0) or (kh, kw) == (1, 1):
    return conv(x, kernel, (stride, stride), [(padding[0],) * 2, (padding[1],) * 2])
  y = conv(x, kernel, (stride, stride), [(0, 1), (0, 1)])
  return y[:, :(h - kh) // stride + 1, :(w - kw) // stride + 1]


def conv_relu(p, spec: ConvSpec, x):
  """conv (batch norm folded in) + bias + relu."""
  return jax.nn.relu(conv2d(x, p["kernel"], spec.stride, spec.padding) + p["bias"])


def _get(tree, path):
  for part in path.split("/"):
    tree = tree[part]
  return tree


def _pointwise_group(p, specs, names, x, pooled=()):
  """Several 1x1 convs of the same input as ONE conv with their kernels concatenated.

  `pooled` names 1x1 convs that follow the block's 3x3 average pool: avg-pool and a
  1x1 conv are both linear, so pool(x) @ W == pool(x @ W) and those convs join the
  group too, their (fewer) output channels pooled afterwards, before bias and relu.
  Same arithmetic up to float rounding order; a bigger, better-shaped matmul.
  """
  names = list(names) + list(pooled)
  kernel = jnp.concatenate([_get(p, n)["kernel"] for n in names], axis=-1)
  y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   precision=jax.lax.Precision.HIGHEST)
  sizes = [specs[n].cout for n in names]
  parts = jnp.split(y, np.cumsum(sizes)[:-1], axis=-1)
  out = {}
  for n, part in zip(names, parts):
    if n in pooled:
      part = avg_pool_valid(part)
    out[n] = jax.nn.relu(part + _get(p, n)["bias"])
  return out


def _block(p, kind, specs, x, last=False):
  conv = lambda name, h: conv_relu(_get(p, name), specs[name], h)  # noqa: E731
  if kind in ("A", "C"):
    towers = ("tower/conv", "tower/conv_1", "tower/conv_2", "tower/conv_3", "tower/conv_4")
    towers_1 = tuple(t.replace("tower/", "tower_1/") for t in towers)
    g = _pointwise_group(p, specs, ["conv", "tower/conv", "tower_1/conv"], x,
                         pooled=["tower_2/conv"])
    a = g["tower/conv"]
    for name in towers[1:]:
      if name in specs:
        a = conv(name, a)
    b = g["tower_1/conv"]
    for name in towers_1[1:]:
      if name in specs:
        b = conv(name, b)
    return jnp.concatenate([g["conv"], a, b, g["tower_2/conv"]], -1)
  if kind == "B":
    a = conv("tower/conv_2", conv("tower/conv_1", conv("tower/conv", x)))
    return jnp.concatenate([conv("conv", x), a, max_pool(x, 3, 2)], -1)
  if kind == "D":
    g = _pointwise_group(p, specs, ["tower/conv", "tower_1/conv"], x)
    a = conv("tower/conv_1", g["tower/conv"])
    b = g["tower_1/conv"]
    for name in ("tower_1/conv_1", "tower_1/conv_2", "tower_1/conv_3"):
      b = conv(name, b)
    return jnp.concatenate([a, b, max_pool(x, 3, 2)], -1)
  # E. The last block (mixed_10) max-pools its pool branch, which does not commute with
  # the conv, so there the pool-branch conv stays separate.
  group = ["conv", "tower_conv", "tower_1_conv"]
  g = _pointwise_group(p, specs, group, x, pooled=[] if last else ["tower_2_conv"])
  pool_branch = conv("tower_2_conv", max_pool(x, 3, 1, pad=1)) if last else g["tower_2_conv"]
  a = g["tower_conv"]
  b = conv("tower_1_conv_1", g["tower_1_conv"])
  return jnp.concatenate([g["conv"], conv("tower_mixed_conv", a),
                          conv("tower_mixed_conv_1", a), conv("tower_1_mixed_conv", b),
                          conv("tower_1_mixed_conv_1", b), pool_branch], -1)


def inception_forward(params, x):
  """The network as a pure function of the nested params (see FIDInceptionV3)."""
  x = conv_relu(params["conv"], _STEM["conv"], x)
  x = conv_relu(params["conv_1"], _STEM["conv_1"], x)
  x = conv_relu(params["conv_2"], _STEM["conv_2"], x)
  x = max_pool(x, 3, 2)
  x = conv_relu(params["conv_3"], _STEM["conv_3"], x)
  x = conv_relu(params["conv_4"], _STEM["conv_4"], x)
  x = max_pool(x, 3, 2)
  for name, kind, specs in _BLOCKS:
    x = _block(params[name], kind, specs, x, last=name == "mixed_10")
  # pool3: the graph's 8x8 VALID average pool, i.e. the spatial mean at 299x299 input.
  return jnp.mean(x, axis=(1, 2))


def _init_convs(specs):
  def init(key):
    tree = {}
    for i, (name, spec) in enumerate(sorted(specs.items())):
      node = tree
      for part in name.split("/"):
        node = node.setdefault(part, {})
      node["kernel"] = nn.initializers.lecun_normal()(jax.random.fold_in(key, i),
                                                      spec.kernel_shape, jnp.float32)
      node["bias"] = jnp.zeros((spec.cout,), jnp.float32)
    return tree
  return init


class FIDInceptionV3(nn.Module):
  """[N, 299, 299, 3] float32 (network range) -> pool3 features [N, 2048] float32.

  One param per top-level layer of the graph (conv .. conv_4, mixed .. mixed_10), each
  a nested dict named like the graph: params["mixed_10"]["tower_2_conv"]["kernel"].
  The forward pass is the pure function `inception_forward`, which groups 1x1 convs.
  """

  @nn.compact
  def __call__(self, x):
    params = {}
    for name, spec in _STEM.items():
      params[name] = self.param(name, lambda key, s=spec: _init_convs({"c": s})(key)["c"])
    for name, _, specs in _BLOCKS:
      params[name] = self.param(name, _init_convs(specs))
    return inception_forward(params, x)
