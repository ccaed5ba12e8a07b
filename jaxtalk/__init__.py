"""jaxtalk: train, evaluate and export talking-face and portrait-animation models in JAX/Flax."""

__version__ = "0.1.0"
