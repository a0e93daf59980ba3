"""Rotation prediction, small NIN-style ConvNet, the embedded 2,000-image CIFAR-10 sample.

The README's first command: about 5 minutes of pretraining on 2 CPU cores, then
the linear probe (sslx-linear). `:quick` makes it a two-step smoke run.
"""

from sslx import configs
from sslx.pretexts.image import rotation


def get_config(arg=None):
  c = configs.base()
  c.pretext = rotation.default_config()
  c.dataset = "sample"
  c.batch_size = 64  # x4 rotations = 256 inputs per step.
  c.total_steps = 300  # ~10 epochs of the sample.
  c.optimizer.warmup_steps = 30
  c.log_every = 25
  c.checkpoint_every = 100
  return configs.quick(c) if arg == "quick" else c
