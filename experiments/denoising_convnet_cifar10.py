"""Denoising autoencoder, small NIN-style ConvNet, full CIFAR-10 at 32 px.

Vincent et al. (ICML 2008 / JMLR 2010): reconstruct the clean image from a
corrupted one. Here masking noise, a quarter of the pixels (all channels) of
each image set to 0, squared error, decoded from block3 without skips (see
sslx/pretexts/image/denoising.py). AdamW as for the other reconstruction
pretexts (not tuned).

Sized for about 20 minutes on a 2-core CPU: run side by side with
experiments/rotation_convnet_cifar10.py on a shared, loaded CPU, its step
went at 0.5-0.65x rotation's throughput, i.e. about 200 img/s against
rotation's 340, hence 1,800 steps x 128 images (4.6 epochs). An estimate,
not a timed full run.
"""

from sslx import configs
from sslx.pretexts.image import denoising


def get_config(arg=None):
  c = configs.base()
  c.pretext = denoising.default_config()  # masking, fraction 0.25, whole pixels, L2.
  c.pretext.decoder_widths = (32, 16)
  c.dataset = "folder:cifar10"
  c.batch_size = 128
  c.total_steps = 1800
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 600
  return configs.quick(c) if arg == "quick" else c
