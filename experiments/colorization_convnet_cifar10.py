"""Colorization, small NIN-style ConvNet, full CIFAR-10 at 32 px.

Zhang, Isola & Efros (ECCV 2016): L in, a distribution over the 313 in-gamut ab
bins out, soft-encoded targets (5 nearest bins, sigma 5), class rebalancing
with lambda = 1/2 against the training set's smoothed ab prior (computed in
one pass before the first step), annealed-mean decoding at T = 0.38; trained
with Adam. Zhang et al. predict at 1/4 of a 224 px input; at 32 px the head
upsamples block3 (8x8) to a 16x16 grid (prediction_stride 2). Sized for about
20 minutes on a 2-core CPU like experiments/rotation_convnet_cifar10.py: on the
same loaded machine a step ran at 0.69x the images per second of the rotation
config (129 against 187), so about 235 images/s unloaded; 2,100 steps x 128
images (5.4 epochs) plus the one pass that counts the ab prior (about half a
minute) fill the budget.
"""

from sslx import configs
from sslx.pretexts.image import colorization


def get_config(arg=None):
  c = configs.base()
  c.pretext = colorization.default_config()
  c.pretext.prediction_stride = 2
  c.dataset = "folder:cifar10"
  c.batch_size = 128
  c.total_steps = 2100
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick(c) if arg == "quick" else c
