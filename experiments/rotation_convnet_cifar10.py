"""Rotation prediction, small NIN-style ConvNet, full CIFAR-10 (50,000 train images).

Sized for a 30-minute budget on a 2-core CPU (see the README's results table).
RotNet's own recipe (gidariss/FeatureLearningRotNet, config/CIFAR10_RotNet_NIN4blocks.py):
SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, batch 128, 200 epochs,
lr x0.2 at epochs 60, 120, 160. We keep the optimiser and batch and cut the
schedule to the budget (cosine over ~1.7 epochs).
"""

from sslx import configs
from sslx.pretexts.image import rotation


def get_config(arg=None):
  c = configs.base()
  c.pretext = rotation.default_config()
  c.dataset = "folder:../shared/data/cifar10"
  c.batch_size = 128
  c.total_steps = 680  # ~1.7 epochs: about 28 minutes at ~52 images/s on 2 cores.
  c.optimizer.warmup_steps = 50
  c.log_every = 20
  c.checkpoint_every = 200
  return configs.quick(c) if arg == "quick" else c
