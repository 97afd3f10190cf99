"""genjax: image generative models in JAX/Flax behind one training loop."""

__version__ = "0.1.0"
