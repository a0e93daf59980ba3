"""Jigsaw puzzles, small NIN-style ConvNet, full CIFAR-10, CIFAR upsampled to 64 px.

Noroozi & Favaro cut 75 px cells from 225 px images; CIFAR's 32 px would leave
9 px tiles, so images are upsampled to 64 px (21 px cells, 18 px tiles). Same
backbone and CPU budget as experiments/rotation_convnet_cifar10.py (see the
README's results table). The probe averages the features of a 3x3 grid of
patches (Kolesnikov et al. 2019), the input the encoder was trained on.
"""

from sslx import configs
from sslx.pretexts.image import jigsaw


def get_config(arg=None):
  c = configs.base()
  c.pretext = jigsaw.default_config()  # 3x3, 100 permutations, max-min Hamming.
  c.dataset = "folder:cifar10"
  c.image_size = 64
  c.resize_size = 64  # Upsample 32 -> 64 on the host, before any crop.
  c.crop_padding = 8
  c.batch_size = 64  # x9 tiles = 576 encoder inputs per step.
  c.total_steps = 1500
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 500
  c.evaluate.patch_grid = 3
  return configs.quick(c) if arg == "quick" else c
