"""Relative transformation prediction, small NIN-style ConvNet, CIFAR-10 at 32 px.

Two 24 px views related by a random similarity (rotation +-30 degrees, scale
0.8-1.25, translation +-0.15), regression of its 4 parameters (AET, Zhang et
al. 2019). Same backbone and CPU budget as experiments/rotation_convnet_cifar10.py.
"""

from sslx import configs
from sslx.pretexts.image import relative_transformation


def get_config(arg=None):
  c = configs.base()
  c.pretext = relative_transformation.default_config()
  c.dataset = "folder:cifar10"
  c.batch_size = 128  # x2 views = 256 encoder inputs per step.
  c.total_steps = 3000
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick(c) if arg == "quick" else c
