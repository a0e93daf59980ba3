"""Rotation prediction, small NIN-style ConvNet, full CIFAR-10 (50,000 train images).

Sized for a 30-minute budget on a 2-core CPU (see the README's results table).
RotNet's own recipe (Gidaris et al. 2018, NIN on CIFAR-10): SGD, Nesterov
momentum 0.9, weight decay 5e-4, lr 0.1, batch 128, 100 epochs, lr x0.2 at
epochs 30, 60, 80; we keep the optimiser and cut the schedule to the budget.
"""

from sslx import configs
from sslx.pretexts.image import rotation


def get_config(arg=None):
  c = configs.base()
  c.pretext = rotation.default_config()
  c.dataset = "folder:../shared/data/cifar10"
  c.batch_size = 128
  c.total_steps = 780  # ~2 epochs: about 28 minutes at ~60 images/s on 2 cores.
  c.optimizer.warmup_steps = 50
  c.log_every = 20
  c.checkpoint_every = 200
  return configs.quick(c) if arg == "quick" else c
