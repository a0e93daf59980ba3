"""Multi-task: rotation + jigsaw (2x2) + relative transformation on one shared
small ConvNet, full CIFAR-10 at 32 px (Doersch & Zisserman 2017: one trunk, one
head per task, the weighted sum of the losses). Same backbone and CPU budget as
experiments/rotation_convnet_cifar10.py.

Override a weight with --config.pretext.tasks.jigsaw.weight=0.5.
"""

from sslx import configs
from sslx.pretexts import multitask


def get_config(arg=None):
  c = configs.base()
  c.pretext = multitask.default_config()
  c.pretext.tasks.rotation = multitask.task("image.rotation", weight=1.0)
  c.pretext.tasks.jigsaw = multitask.task("image.jigsaw", weight=1.0, grid=2, num_permutations=24)
  c.pretext.tasks.transformation = multitask.task("image.relative_transformation", weight=1.0)
  c.dataset = "folder:cifar10"
  c.batch_size = 32  # Rotation x4, jigsaw x4 tiles, transformation x2 views.
  c.total_steps = 2600
  c.optimizer.warmup_steps = 100
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick(c) if arg == "quick" else c
