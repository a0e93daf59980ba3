"""Exemplar-CNN, small NIN-style ConvNet, CIFAR-10 at 32 px, surrogate classes.

Dosovitskiy et al. use 8,000-16,000 seed patches with ~100 augmentations each;
in our CPU budget (same backbone and budget as
experiments/rotation_convnet_cifar10.py) 4,000 seed images each appear about 80
times. The classes are the first 4,000 training images (train_examples).
"""

from sslx import configs
from sslx.pretexts.image import exemplar


def get_config(arg=None):
  c = configs.base()
  c.pretext = exemplar.default_config()
  c.pretext.num_classes = 4000
  c.dataset = "folder:cifar10"
  c.train_examples = c.pretext.num_classes
  c.crop_padding = 0  # The pretext's own translations replace pad-and-crop.
  c.batch_size = 256
  c.total_steps = 1300
  c.optimizer.warmup_steps = 50
  c.log_every = 25
  c.checkpoint_every = 200
  if arg == "quick":
    c = configs.quick(c)
    c.pretext.num_classes = c.train_examples = 16
  return c
