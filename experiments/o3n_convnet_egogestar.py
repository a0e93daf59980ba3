"""Odd-one-out networks (Fernando et al., CVPR 2017), small NIN-style ConvNet per
dynamic image, EgoGestAR gesture clips (132 clips at 32 px).

Six elements per question, five with their frames in order and one shuffled;
each element is 6 frames at sorted random positions of a 12-frame high-motion
window (1.2 s at base_video's 10 fps; every clip is at least that long), pooled
into one dynamic image (approximate rank pooling, rescaled to [0, 1]); sum of
differences fusion, the paper's best; 6-way classifier. The window is short
because the gestures are (median 3 s), so the elements overlap a lot; the paper
samples its elements from whole UCF101 videos.

Measured (docs/results.md, "Frame order on held-out clips"): 4,000 steps of 16
clips at 32 px (640x480 frames resized to 48x36, 32 px crops), 18 minutes
on one CPU core of a shared machine: the task on egogestar's held-out test clips (``sslx-pretext``)
0.34 against chance 0.167. Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import o3n


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = o3n.default_config()  # 6 elements of 6 frames, dynamic images, sum of differences.
  c.video.num_frames = 12  # Frames the host delivers; validate() checks >= element_frames.
  c.image_size, c.resize_size = 32, 36
  c.batch_size = 16  # Clips; x6 dynamic images = 96 encoder inputs per step.
  c.total_steps = 4000
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick_video(c) if arg == "quick" else c
