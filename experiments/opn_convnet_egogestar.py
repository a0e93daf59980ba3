"""Order Prediction Network, sorting 4 shuffled frames (Lee et al., ICCV 2017),
small NIN-style ConvNet per frame, EgoGestAR gesture clips (132 clips at 32 px).

Four frames 3 delivered frames apart (0.3 s at base_video's 10 fps) from a
high-motion window (the host picks it by mean optical-flow magnitude),
shuffled; 12 classes, each order merged with its reverse. As in the paper, each
frame keeps one random colour channel (channel splitting) and is cropped around
one location per clip with its own small offset (spatial jittering): 24 px
crops of the 32 px frames, +-2 px (the paper: 80 px patches, +-5 px). Pairwise
fusion: fc6 per frame, fc7 on each of the 6 pairs (shared), the pairs
concatenated, 12-way classifier.

The gap is 3, not the module's default 2: with 2, AdamW on 32 clips was still at
chance after 200 steps; with 3 it left chance after ~100 (docs/results.md). The
window is 12 frames (1.2 s; every clip is longer): the tuple spans 3 * 3 + 1 = 10
and the rest lets its start vary.

Measured (docs/results.md, "Frame order on held-out clips"): 4,000 steps of 32
clips, 12 minutes on one CPU core, leave chance after ~1,000 steps; the task on
egogestar's held-out test clips (``sslx-pretext``) 0.32 against chance 0.083.
Frames are 32 px (the paper: 80 px patches), a quarter of the pixels of 64 px,
so a CPU run has the steps it needs; at 64 px, 480 steps stayed at chance. The
same recipe on a mix of every unlabelled video folder (199 clips, half of them
talking faces and assorted scenes) stayed at chance for 4,000 steps.
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
  c.image_size, c.resize_size = 32, 36  # 640x480 -> 48x36, 32 px crops.
  c.pretext.crop_size, c.pretext.max_jitter = 24, 2
  c.batch_size = 32  # Clips; x4 crops = 128 encoder inputs per step.
  c.total_steps = 4000
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick_video(c) if arg == "quick" else c
