"""Video clip order prediction (Xu et al., CVPR 2019), R3D-18 at width 0.25,
EgoGestAR gesture clips (132 clips at 32 px).

Three clips shuffled by one of 3! = 6 orders, pairwise features, 6-way
classifier (pair fc 512 and dropout 0.5, as in the official code). The paper's
tuple, 3 clips of 16 frames 8 apart, spans 64 frames (2.6 s at UCF101's 25
fps); at base_video's 10 fps only 7 of the 132 gestures are that long. Scaled
down to 3 clips of 4 frames 2 apart (the paper's 2:1 clip to interval ratio),
a 16-frame tuple (1.6 s) that 119 of the 132 clips hold; the host's
high-motion window is the tuple itself, so its start varies with the window.

Measured (docs/results.md, "Frame order on held-out clips"): 4,000 steps of 8
tuples at 32 px (640x480 frames resized to 48x36, 32 px crops; the paper: 112 px
crops), 16 minutes on one CPU core with oneDNN's 3D convolutions (sharing the machine), leave
chance after ~800 steps; the task on egogestar's held-out test clips
(``sslx-pretext``) 0.30 against chance 0.167. Official recipe: SGD lr 1e-3,
momentum 0.9, weight decay 5e-4, batch 8, 300 epochs; a CPU run uses
configs.base_video's AdamW 1e-3 with cosine decay.
"""

import ml_collections

from sslx import configs
from sslx.pretexts.video import vcop


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = vcop.default_config()  # 3 clips, pair fc 512, dropout 0.5.
  c.pretext.clip_frames, c.pretext.interval = 4, 2  # Paper: 16 and 8 (see above).
  c.video.num_frames = vcop.span(c.pretext)  # 3 * 4 + 2 * 2 = 16; validate() checks.
  c.evaluate.num_frames = c.pretext.clip_frames  # Probes see single clips, as the backbone did.
  c.model = ml_collections.ConfigDict({"name": "r3d", "width": 0.25, "conv": "3d", "dtype": "float32"})
  c.image_size, c.resize_size = 32, 36
  c.batch_size = 8  # Tuples; x3 clips = 24 encoder inputs per step.
  c.total_steps = 4000
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick_video(c) if arg == "quick" else c
