"""Single-view time-contrastive network (Sermanet et al., ICRA 2018), small NIN-style ConvNet
per frame, EgoGestAR gesture clips (labels unused in training; the linear probe uses them).

Frames within 0.2 s of each other embed close, frames of the same clip more than 0.4 s apart
embed far (the paper's ranges, in seconds: 2 and 4 frames at base_video's 10 fps), 32-d
L2-normalised embeddings, semi-hard triplet loss with margin 0.2. Each clip gives 4 anchors and
their positives from a 16-frame (1.6 s) window, so every anchor has frames beyond the negative
radius in its window.

16 clips x 8 frames = 128 frames of 64 px per step through the ConvNet, 600 steps: 11 min on 2
CPU cores (docs/results.md). 9 of the 99 training videos are shorter than the window and skipped.
Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import time_contrastive


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = time_contrastive.default_config()
  c.pretext.fps = c.video.fps / c.video.frame_stride
  c.video.num_frames = 16
  c.batch_size = 16  # Clips; x 2 * pairs_per_clip = 128 frames per step.
  c.total_steps = 600
  c.log_every = 25
  c.checkpoint_every = 300
  return configs.quick_video(c) if arg == "quick" else c
