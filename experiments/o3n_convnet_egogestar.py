"""Odd-one-out networks (Fernando et al., CVPR 2017), small NIN-style ConvNet per
dynamic image, EgoGestAR gesture clips (132 clips at 64 px).

Six elements per question, five with their frames in order and one shuffled;
each element is 6 frames at sorted random positions of a 12-frame high-motion
window (1.2 s at base_video's 10 fps; every clip is at least that long), pooled
into one dynamic image (approximate rank pooling, rescaled to [0, 1]); sum of
differences fusion, the paper's best; 6-way classifier. The window is short
because the gestures are (median 3 s), so the elements overlap a lot; the paper
samples its elements from whole UCF101 videos.

Sized (estimated, not yet measured) for about 15 minutes on 2 CPU cores:
6 dynamic images of 64 px per example, 96 per step through the ConvNet (the
pixel rate of the shuffle-and-learn run), so 16 clips x 700 steps. Optimizer:
configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import o3n


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = o3n.default_config()  # 6 elements of 6 frames, dynamic images, sum of differences.
  c.video.num_frames = 12  # Frames the host delivers; validate() checks >= element_frames.
  c.batch_size = 16  # Clips; x6 dynamic images = 96 encoder inputs per step.
  c.total_steps = 700
  c.log_every = 25
  c.checkpoint_every = 350
  return configs.quick_video(c) if arg == "quick" else c
