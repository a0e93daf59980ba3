"""Context encoder (inpainting), small NIN-style ConvNet, full CIFAR-10 at 32 px.

Pathak et al. (CVPR 2016) learn features with random-region masks covering
about a quarter of the image and the L2 loss alone; the official code trains
with Adam, hence AdamW here (not tuned). Random regions are thresholded
smooth noise (see sslx/pretexts/image/inpainting.py), decoded from block3
(8x8) through the channel-wise fully connected layer, without skips.

Sized for about 20 minutes on a 2-core CPU: run side by side with
experiments/rotation_convnet_cifar10.py on a shared, loaded CPU, its step
went at 0.5-0.65x rotation's throughput, i.e. about 200 img/s against
rotation's 340, hence 1,800 steps x 128 images (4.6 epochs). An estimate,
not a timed full run.
"""

from sslx import configs
from sslx.pretexts.image import inpainting


def get_config(arg=None):
  c = configs.base()
  c.pretext = inpainting.default_config()  # random_region, coverage 0.25, L2 only.
  c.pretext.decoder_widths = (32, 16)
  c.pretext.fill = c.normalize.mean  # The dataset mean (validate checks it): holes standardise to 0.
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
