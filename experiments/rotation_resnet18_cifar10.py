"""Rotation prediction, ResNet-18 (CIFAR stem), CIFAR-10: a GPU-sized run.

RotNet's CIFAR-10 recipe (gidariss/FeatureLearningRotNet, config/CIFAR10_RotNet_NIN4blocks.py):
SGD, Nesterov 0.9, wd 5e-4, lr 0.1, batch 128, 200 epochs (78,200 steps of 128
images), lr x0.2 at epochs 60, 120, 160 (30%, 60%, 80% of training).
"""

from sslx import configs
from sslx.pretexts.image import rotation


def get_config(arg=None):
  c = configs.base()
  c.pretext = rotation.default_config()
  c.dataset = "folder:cifar10"
  c.model = configs.ml_collections.ConfigDict(
      {"name": "resnet", "depth": 18, "stem": "cifar", "width": 1.0, "dtype": "float32",
       "conv_kernels": "auto"})
  c.batch_size = 128
  c.total_steps = 78_200
  c.optimizer.schedule = "step"
  c.optimizer.warmup_steps = 0
  c.log_every = 100
  c.checkpoint_every = 2000
  c.evaluate.max_features = 8192
  return configs.quick(c) if arg == "quick" else c
