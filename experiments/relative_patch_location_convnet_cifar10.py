"""Relative patch location, small NIN-style ConvNet, full CIFAR-10 upsampled to 64 px.

Doersch et al. use 96 px patches with 48 px gaps on ImageNet-sized images; at
64 px we keep their proportions: 15 px patches, 7 px gaps, 1 px jitter. All 8
(centre, neighbour) pairs of an image are classified from one pass over its 9
patches (Kolesnikov et al. 2019). Same backbone and CPU budget as
experiments/rotation_convnet_cifar10.py. The probe averages the features of a
3x3 grid of patches (Kolesnikov et al. 2019).
"""

from sslx import configs
from sslx.pretexts.image import relative_patch_location


def get_config(arg=None):
  c = configs.base()
  c.pretext = relative_patch_location.default_config()
  c.dataset = "folder:cifar10"
  c.image_size = 64
  c.resize_size = 64
  c.crop_padding = 8
  c.batch_size = 64  # x9 patches = 576 encoder inputs, 512 pairs per step.
  c.total_steps = 3200
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 500
  c.evaluate.patch_grid = 3
  return configs.quick(c) if arg == "quick" else c
