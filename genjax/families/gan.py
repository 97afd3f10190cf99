"""Generative adversarial networks: DCGAN networks, two optimizers, R1, projection D.

Model. A generator G maps z ~ N(0, I_d) (and, when conditional, a label y) to an
image x = G(z, y) in [-1, 1]; a discriminator D maps an image (and y) to a logit
l = D(x, y). Real uint8 images are mapped to [-1, 1] by k / 127.5 - 1.

Losses (config.model.loss), per example, with l_r = D(x_real), l_f = D(G(z)):

  "non_saturating" (Goodfellow et al., 2014, the -log D trick):
      L_D = softplus(-l_r) + softplus(l_f)      # = -log sigmoid(l_r) - log(1 - sigmoid(l_f))
      L_G = softplus(-l_f)                      # = -log sigmoid(l_f)
      (all logits 0: L_D = 2 log 2, L_G = log 2)
  "hinge" (Lim & Ye, 2017; Miyato et al., 2018):
      L_D = relu(1 - l_r) + relu(1 + l_f)
      L_G = -l_f
      (all logits 0: L_D = 2, L_G = 0)

R1 penalty (Mescheder et al., 2018), on real data only, if config.model.r1_gamma > 0:
      L_D += (gamma / 2) * || grad_x D(x_real, y) ||^2
  The input gradient is taken with jax.vjp through D; the D update then
  differentiates through it (a second-order term). Per-example gradients are
  exact because every D layer acts on each example alone (no BatchNorm).

Conditional variant (config.model.conditional and labelled data): the generator
concatenates a label embedding to z; the discriminator is a projection
discriminator (Miyato & Koyama, 2018), D(x, y) = w . phi(x) + b + embed(y) . phi(x).
Fake examples in training use the real batch's labels, so real and fake share
the class distribution of the data.

One `train_step` = `config.model.d_steps` discriminator updates, then one
generator update. Every D update reuses the SAME real batch with fresh z (so
the batch size and its sharding do not depend on d_steps); the G update uses
fresh z and the just-updated D. The two networks have their own optax
optimizers, built from `config.optim` (G) and `config.optim_d` (D); the D
schedule counts D updates, i.e. total_steps * d_steps. State:

  params    = {"generator": ..., "discriminator": ...}
  opt_state = {"generator": ..., "discriminator": ...}

`discriminator_update` / `generator_update` each return the other network's
params and optimizer state untouched (the same arrays), so tests can check that
a D step leaves G bitwise unchanged and vice versa. The loop's EMA covers the
generator only (`ema_view`), and `sample` draws from that EMA generator.

Metrics (scalars, global batch means) and how to read them:
  loss             d_loss + g_loss: meaningless as a quality measure, present for the
                   loop's NaN/inf check.
  d_loss, g_loss   the adversarial losses above (d_loss excludes R1). For NS, d_loss
                   near 2 log 2 = 1.386 and g_loss near log 2 = 0.693 mean D cannot tell
                   real from fake (equilibrium); d_loss -> 0 with g_loss growing
                   means D wins and G's signal is fading.
  d_real, d_fake   mean logits D(x_real) and D(G(z)) (from the last D step, before its
                   update). A healthy run keeps them O(1) and d_real > d_fake; a gap
                   that keeps widening (e.g. |d_real - d_fake| > 10) means D is
                   overpowering G: lower optim_d.learning_rate or raise r1_gamma.
  d_accuracy       fraction of real with logit > 0 and fake with logit < 0; 0.5 is
                   chance, ~1.0 for many logs means D has won.
  d_r1             E ||grad_x D(x_real)||^2 (unweighted; only when r1_gamma > 0).
                   Blowing up signals a sharp, overfitting D.
  d_grad_norm, g_grad_norm   global L2 norms of the two gradients. Spikes of
                   orders of magnitude precede NaNs.
  g_output_std     mean over pixels of the std over the batch of G(z) (in [-1, 1]):
                   sample diversity. 0 exactly when every sample in the batch is
                   the same image (complete mode collapse).
  real_output_std  the same statistic for the real batch, the reference scale
                   (measured: ~0.54 for Fashion-MNIST, ~0.34 for MNIST). A ratio
                   g_output_std / real_output_std that sinks well below ~0.3 and
                   stays there suggests partial mode collapse; samples look alike.

`collapse_message(metrics)` turns these into a stop/no-stop decision the loop can
apply at log time (it is a pure function of one log's metrics).
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import optax

from genjax.errors import ConfigError
from genjax.families.base import Batch, DataSpec, Family, Metrics, PyTree
from genjax.nn.dcgan import NORMS, DCGANDiscriminator, DCGANGenerator
from genjax.nn.images import symmetric_to_unit, uint8_to_symmetric
from genjax.optim import make_optimizer

LOSSES = ("non_saturating", "hinge")


# ---- losses (pure, per example) -------------------------------------------------------
def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array, kind: str) -> jax.Array:
  if kind == "non_saturating":
    return jax.nn.softplus(-real_logits) + jax.nn.softplus(fake_logits)
  if kind == "hinge":
    return jax.nn.relu(1.0 - real_logits) + jax.nn.relu(1.0 + fake_logits)
  raise ConfigError(f"unknown model.loss {kind!r}; choose one of {', '.join(LOSSES)}")


def generator_loss(fake_logits: jax.Array, kind: str) -> jax.Array:
  if kind == "non_saturating":
    return jax.nn.softplus(-fake_logits)
  if kind == "hinge":
    return -fake_logits
  raise ConfigError(f"unknown model.loss {kind!r}; choose one of {', '.join(LOSSES)}")


def logits_and_input_grad_sq(d_fn: Callable[[jax.Array], jax.Array],
                             x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Returns (D(x) [B], ||grad_x D(x)_i||^2 [B]) for a per-example D.

  One vjp with a cotangent of ones gives grad_x sum_i D(x)_i, whose i-th slice is
  grad_{x_i} D(x_i) because D(x)_i depends on x_i alone.
  """
  logits, vjp = jax.vjp(d_fn, x)
  (grad_x,) = vjp(jnp.ones_like(logits))
  return logits, jnp.sum(jnp.square(grad_x).reshape(x.shape[0], -1), axis=-1)


def batch_pixel_std(x: jax.Array) -> jax.Array:
  """Mean over pixels of the std over the batch: 0 iff all images are identical."""
  return jnp.mean(jnp.std(x.astype(jnp.float32), axis=0))


# ---- collapse detection (host side, at log time) --------------------------------------
def collapse_message(metrics: Mapping[str, float], *, min_std: float = 1e-4,
                     min_ratio: float = 0.01) -> Optional[str]:
  """A one-line explanation if the generator has collapsed, else None.

  Rule: the generator is declared collapsed when the batch std of its samples
  (`g_output_std`) is below `min_std` in absolute terms (every sample is the
  same image, to float precision) or below `min_ratio` times the real batch's
  std (`real_output_std`), i.e. samples are ~100x less diverse than data. A loop
  should require this on a few consecutive logs (e.g. 3) before stopping, since
  a single log can catch a transient.
  """
  if "g_output_std" not in metrics:
    return None
  g_std = float(metrics["g_output_std"])
  real_std = float(metrics.get("real_output_std", 0.0))
  if g_std < min_std or (real_std > 0 and g_std < min_ratio * real_std):
    return (f"GAN mode collapse: generator samples are (nearly) identical across the batch "
            f"(g_output_std={g_std:.3g} vs real_output_std={real_std:.3g}). Restart from an "
            f"earlier checkpoint with a lower learning rate, model.r1_gamma > 0, or "
            f"model.d_steps > 1.")
  return None


class GAN(Family):
  """Adversarial training of a DCGAN generator/discriminator pair (see module docstring)."""

  def __init__(self, config, data: DataSpec, stages=None):
    super().__init__(config, data, stages)
    m = config.model
    if m.loss not in LOSSES:
      raise ConfigError(f"unknown model.loss {m.loss!r}; choose one of {', '.join(LOSSES)}")
    for key in ("g_norm", "d_norm"):
      if m[key] not in NORMS:
        raise ConfigError(f"unknown model.{key} {m[key]!r}; choose one of {', '.join(NORMS)} "
                          f"(no BatchNorm: all state must live in params)")
    if int(m.d_steps) < 1:
      raise ConfigError(f"model.d_steps must be >= 1, got {m.d_steps}")
    if float(m.r1_gamma) < 0:
      raise ConfigError(f"model.r1_gamma must be >= 0, got {m.r1_gamma}")
    if len(m.g_channels) < 1 or len(m.d_channels) < 1:
      raise ConfigError("model.g_channels and model.d_channels need at least one entry")
    if m.get("conditional", False) and data.num_classes <= 0:
      raise ConfigError("model.conditional=True needs a labelled dataset (num_classes > 0)")
    if "optim_d" not in config:
      raise ConfigError("a GAN config needs an `optim_d` block for the discriminator optimizer")
    self.loss_kind = m.loss
    self.d_steps = int(m.d_steps)
    self.r1_gamma = float(m.r1_gamma)
    self.latent_dim = int(m.latent_dim)
    num_classes = data.num_classes if self.conditional else 0
    self.generator = DCGANGenerator(image_shape=tuple(data.image_shape),
                                    channels=tuple(m.g_channels), norm=m.g_norm,
                                    num_classes=num_classes, embed_dim=int(m.embed_dim))
    self.discriminator = DCGANDiscriminator(channels=tuple(m.d_channels), norm=m.d_norm,
                                            num_classes=num_classes)
    self.g_optimizer = make_optimizer(config.optim, config.total_steps)
    self.d_optimizer = make_optimizer(config.optim_d, config.total_steps * self.d_steps)

  # ---- pieces -------------------------------------------------------------------------
  def _labels(self, batch: Batch) -> Optional[jax.Array]:
    return self.class_labels(batch["cond"])

  def _generate(self, g_params, rng, num, labels):
    z = jax.random.normal(rng, (num, self.latent_dim), jnp.float32)
    return self.generator.apply({"params": g_params}, z, labels)

  def _discriminate(self, d_params, x, labels):
    return self.discriminator.apply({"params": d_params}, x, labels)

  # ---- training -----------------------------------------------------------------------
  def init(self, rng, batch, frozen=None):
    g_rng, d_rng, z_rng = jax.random.split(rng, 3)
    x = uint8_to_symmetric(batch["image"])
    labels = self._labels(batch)
    z = jax.random.normal(z_rng, (x.shape[0], self.latent_dim), jnp.float32)
    params = {
        "generator": self.generator.init(g_rng, z, labels)["params"],
        "discriminator": self.discriminator.init(d_rng, x, labels)["params"],
    }
    opt_state = {
        "generator": self.g_optimizer.init(params["generator"]),
        "discriminator": self.d_optimizer.init(params["discriminator"]),
    }
    return params, opt_state

  def discriminator_update(self, params: PyTree, opt_state: PyTree, batch: Batch,
                           rng: jax.Array) -> tuple[PyTree, PyTree, Metrics]:
    """One D step on the real batch and fresh fakes; G's params/state pass through."""
    x_real = uint8_to_symmetric(batch["image"])
    labels = self._labels(batch)
    x_fake = self._generate(params["generator"], rng, x_real.shape[0], labels)

    def loss_fn(d_params):
      d_fn = lambda x: self._discriminate(d_params, x, labels)
      if self.r1_gamma > 0:
        real_logits, grad_sq = logits_and_input_grad_sq(d_fn, x_real)
      else:
        real_logits, grad_sq = d_fn(x_real), None
      fake_logits = d_fn(x_fake)
      adv = jnp.mean(discriminator_loss(real_logits, fake_logits, self.loss_kind))
      aux = {
          "d_loss": adv,
          "d_real": jnp.mean(real_logits),
          "d_fake": jnp.mean(fake_logits),
          "d_accuracy": 0.5 * (jnp.mean(real_logits > 0) + jnp.mean(fake_logits < 0)),
      }
      total = adv
      if grad_sq is not None:
        aux["d_r1"] = jnp.mean(grad_sq)
        total = total + 0.5 * self.r1_gamma * aux["d_r1"]
      return total, aux

    grads, metrics = jax.grad(loss_fn, has_aux=True)(params["discriminator"])
    updates, d_opt = self.d_optimizer.update(grads, opt_state["discriminator"],
                                             params["discriminator"])
    metrics["d_grad_norm"] = optax.global_norm(grads)
    return ({**params, "discriminator": optax.apply_updates(params["discriminator"], updates)},
            {**opt_state, "discriminator": d_opt}, metrics)

  def generator_update(self, params: PyTree, opt_state: PyTree, batch: Batch,
                       rng: jax.Array) -> tuple[PyTree, PyTree, Metrics]:
    """One G step against the current D; D's params/state pass through."""
    labels = self._labels(batch)
    num = batch["image"].shape[0]

    def loss_fn(g_params):
      x_fake = self._generate(g_params, rng, num, labels)
      fake_logits = self._discriminate(params["discriminator"], x_fake, labels)
      return jnp.mean(generator_loss(fake_logits, self.loss_kind)), x_fake

    (g_loss, x_fake), grads = jax.value_and_grad(loss_fn, has_aux=True)(params["generator"])
    updates, g_opt = self.g_optimizer.update(grads, opt_state["generator"], params["generator"])
    metrics = {"g_loss": g_loss, "g_grad_norm": optax.global_norm(grads),
               "g_output_std": batch_pixel_std(x_fake)}
    return ({**params, "generator": optax.apply_updates(params["generator"], updates)},
            {**opt_state, "generator": g_opt}, metrics)

  def train_step(self, params, opt_state, batch, rng, step, frozen=None):
    del step  # per-step randomness arrives already folded into `rng`
    d_rng, g_rng = jax.random.split(rng)
    params, opt_state, d_metrics = self.discriminator_update(
        params, opt_state, batch, jax.random.fold_in(d_rng, 0))
    if self.d_steps > 1:  # metrics of the last D step are reported
      body = lambda i, carry: self.discriminator_update(carry[0], carry[1], batch,
                                                        jax.random.fold_in(d_rng, i))
      params, opt_state, d_metrics = jax.lax.fori_loop(1, self.d_steps, body,
                                                       (params, opt_state, d_metrics))
    params, opt_state, g_metrics = self.generator_update(params, opt_state, batch, g_rng)
    metrics = {**d_metrics, **g_metrics}
    metrics["loss"] = metrics["d_loss"] + metrics["g_loss"]
    metrics["real_output_std"] = batch_pixel_std(uint8_to_symmetric(batch["image"]))
    return params, opt_state, metrics

  def ema_view(self, params):
    return params["generator"]

  # ---- evaluation ---------------------------------------------------------------------
  def sample(self, ema_params, rng, num, cond, frozen=None):
    """`ema_params` is the (EMA) generator. A conditional model given no labels
    draws them uniformly; an unconditional one ignores labels."""
    label_rng, z_rng = jax.random.split(rng)
    labels = self.class_labels(cond)
    if self.conditional and labels is None:
      labels = jax.random.randint(label_rng, (num,), 0, self.data.num_classes)
    return symmetric_to_unit(self._generate(ema_params, z_rng, num, labels))

  def health_message(self, metrics: Mapping[str, float]) -> Optional[str]:
    return collapse_message(metrics)
