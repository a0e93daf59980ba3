"""SimCLR, small NIN-style ConvNet, CIFAR-10 at 32 px: the contrastive baseline.

The CIFAR-10 recipe of the official README's command (google-research/simclr; the paper's
Appendix B.9 drops the blur and halves the colour strength likewise): crop + flip + colour jitter
of strength 0.5, no blur, temperature 0.5, batch 512, 1,000 epochs, ResNet-18, LARS (lr 1.0,
scaled by batch / 256; weight decay 1e-6). Each image costs two encoder
passes, so at about half rotation's 339 img/s (same backbone as
experiments/rotation_convnet_cifar10.py) 800 steps x 256 images, 4.1 epochs, should take about
20 minutes on 2 cores. That is an estimate: the augmentation costs ~0.2 ms of CPU per image,
small beside the encoder, but the one timing so far (40 steps) ran on a shared, overloaded
machine (38 img/s).

Optimizer: the paper uses LARS because plain momentum SGD was unstable at its batches of
4,096-8,192; at batch 256 momentum SGD is the usual choice, and the trainer offers SGD / AdamW,
not LARS. lr 0.2 is the rotation config's 0.1 at batch 128 scaled linearly; it is not tuned.
The negatives are the other 255 images' views (510 per positive pair).
"""

from sslx import configs
from sslx.pretexts.image import simclr


def get_config(arg=None):
  c = configs.base()
  c.pretext = simclr.default_config()  # CIFAR-10 defaults: strength 0.5, no blur, temperature 0.5.
  c.dataset = "folder:cifar10"
  # The pretext crops, resizes and flips each view itself; the host's pad-and-crop and flip
  # would only shift both views alike.
  c.crop_padding = 0
  c.flip = False
  c.batch_size = 256  # x2 views = 512 encoder inputs per step.
  c.total_steps = 800
  c.optimizer.learning_rate = 0.2
  c.optimizer.warmup_steps = 50
  c.log_every = 25
  c.checkpoint_every = 200
  return configs.quick(c) if arg == "quick" else c
