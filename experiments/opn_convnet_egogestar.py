"""Order Prediction Network, sorting 4 shuffled frames (Lee et al., ICCV 2017),
small NIN-style ConvNet per frame, EgoGestAR gesture clips (132 clips at 64 px).

Four frames 3 delivered frames apart (0.3 s at base_video's 10 fps) from a
high-motion window (the host picks it by mean optical-flow magnitude),
shuffled; 12 classes, each order merged with its reverse. As in the paper, each
frame keeps one random colour channel (channel splitting) and is cropped around
one location per clip with its own small offset (spatial jittering): 48 px
crops of the 64 px frames, +-3 px (the paper: 80 px patches, +-5 px). Pairwise
fusion: fc6 per frame, fc7 on each of the 6 pairs (shared), the pairs
concatenated, 12-way classifier.

The gap is 3, not the module's default 2: with 2, AdamW on 32 clips was still at
chance after 200 steps; with 3 it left chance after ~100 (README, "Video I").
The window is 12 frames (1.2 s; every clip is longer): the tuple spans 3 * 3 + 1
= 10 and the rest lets its start vary, since the 132 clips give few distinct
windows. Sized (estimated, not yet measured) for about 15 minutes on 2 CPU
cores: 4 crops of 48 px per example, 128 per step, 32 clips x 800 steps.
Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import opn


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = opn.default_config()  # 4 frames, 48 px crops, +-3 px jitter, channel splitting.
  c.pretext.frame_gap = 3
  # Frames the host delivers per example: the tuple's (4 - 1) * frame_gap + 1 = 10 and 2 more for the
  # start to vary (validate() checks the 7).
  c.video.num_frames = 12
  c.batch_size = 32  # Clips; x4 crops = 128 encoder inputs per step.
  c.total_steps = 800
  c.log_every = 25
  c.checkpoint_every = 400
  if arg == "quick":
    c = configs.quick_video(c)
    c.pretext.crop_size = 24  # quick_video's frames are 32 px.
  return c
