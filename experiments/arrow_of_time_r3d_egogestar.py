"""Arrow of time (Wei et al., CVPR 2018), R3D-18 at width 0.25 on RGB clips,
EgoGestAR gesture clips (132 clips at 32 px).

An 8-frame clip (0.8 s at base_video's 10 fps; every clip is that long) from a
high-motion window, reversed with probability 1/2; binary classifier on the
pooled features. Wei et al. use optical flow and a T-CAM (VGG-16) model; only
RGB is implemented here (see sslx/pretexts/video/arrow_of_time.py).

Measured (docs/results.md, "Frame order on held-out clips"): 4,000 steps of 16
clips at 32 px (640x480 frames resized to 48x36, 32 px crops), 17 minutes on
one CPU core of a shared machine, with oneDNN's 3D convolutions: training accuracy 0.74, but 0.51
on egogestar's held-out test clips (chance 0.5), i.e. the training clips were
memorised. Most of these gestures played backwards are other gestures (left and
right, up and down, a circle's two senses), so the clips hold little arrow of
time to find. Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

import ml_collections

from sslx import configs
from sslx.pretexts.video import arrow_of_time


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = arrow_of_time.default_config()
  c.pretext.clip_frames = 8  # Default 16 (1.6 s here); the gestures are short.
  c.video.num_frames = c.pretext.clip_frames  # The host's high-motion window is the clip.
  c.model = ml_collections.ConfigDict({"name": "r3d", "width": 0.25, "conv": "3d", "dtype": "float32"})
  c.image_size, c.resize_size = 32, 36
  c.batch_size = 16
  c.total_steps = 4000
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick_video(c) if arg == "quick" else c
