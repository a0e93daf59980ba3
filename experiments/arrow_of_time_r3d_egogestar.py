"""Arrow of time (Wei et al., CVPR 2018), R3D-18 at width 0.25 on RGB clips,
EgoGestAR gesture clips (132 clips at 64 px).

An 8-frame clip (0.8 s at base_video's 10 fps; every clip is that long) from a
high-motion window, reversed with probability 1/2; binary classifier on the
pooled features. Wei et al. use optical flow and a T-CAM (VGG-16) model; only
RGB is implemented here (see sslx/pretexts/video/arrow_of_time.py).

Sized when XLA ran the 3D convolutions (one step of 32 clips of 8 x 64 x 64
cost about 17.5 CPU-seconds then): 16 clips x 160 steps. oneDNN's 3D
convolutions (model.conv_kernels, default auto) make this model's step about
6x faster on the 2-core CPU (docs/performance.md); this config's wall time has
not been measured again since. Optimizer: configs.base_video's AdamW 1e-3, cosine.
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
  c.batch_size = 16
  c.total_steps = 160
  c.log_every = 10
  c.checkpoint_every = 80
  return configs.quick_video(c) if arg == "quick" else c
