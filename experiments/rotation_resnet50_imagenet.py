"""Rotation prediction, ResNet-50 (ImageNet stem), ImageNet via TFDS: a TPU-pod run.

Data: `tfds build imagenet2012 --file_format=array_record` into --config.data_dir.
224x224 random crops of images resized to shorter side 256, flips; bf16 compute.
Batch 1024 (4,096 rotated inputs per step), SGD-Nesterov, lr 0.1 x batch/256
with 5 warmup epochs and cosine decay over 35 epochs (~43,800 steps).
"""

import ml_collections

from sslx import configs
from sslx.pretexts.image import rotation


def get_config(arg=None):
  c = configs.base()
  c.pretext = rotation.default_config()
  c.dataset = "tfds:imagenet2012"
  c.image_size = 224
  c.resize_size = 256
  c.crop_padding = 0
  c.normalize = ml_collections.ConfigDict(
      {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)})
  c.model = ml_collections.ConfigDict(
      {"name": "resnet", "depth": 50, "stem": "imagenet", "width": 1.0, "dtype": "bfloat16",
       "conv_kernels": "auto"})
  c.batch_size = 1024
  c.total_steps = 43_800
  c.optimizer.learning_rate = 0.4
  c.optimizer.warmup_steps = 6_250
  c.optimizer.weight_decay = 1e-4
  c.data_threads = 16
  c.log_every = 100
  c.checkpoint_every = 2000
  c.evaluate.train_split = "train"
  c.evaluate.test_split = "validation"
  c.evaluate.max_features = 9216  # ~9k dims per block, as Zhang et al. 2016.
  c.evaluate.epochs = 10
  return configs.quick(c) if arg == "quick" else c
