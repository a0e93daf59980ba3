"""sslx: self-supervised representation learning with pretext tasks, in JAX/Flax."""

__version__ = "0.1.0"


def load_backbone(workdir: str, step: int | None = None):
  """A trained backbone from a workdir: see ``sslx.checkpoints.load_backbone``."""
  # Imported on call: ``import sslx`` (setup tools reading the version) stays free of JAX.
  from sslx import checkpoints
  return checkpoints.load_backbone(workdir, step)
