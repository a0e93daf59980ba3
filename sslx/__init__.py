"""sslx: self-supervised representation learning with pretext tasks, in JAX/Flax."""

__version__ = "0.1.0"
