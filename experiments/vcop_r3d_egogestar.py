"""Video clip order prediction (Xu et al., CVPR 2019), R3D-18 at width 0.25,
EgoGestAR gesture clips (132 clips at 64 px).

Three clips shuffled by one of 3! = 6 orders, pairwise features, 6-way
classifier (pair fc 512 and dropout 0.5, as in the official code). The paper's
tuple, 3 clips of 16 frames 8 apart, spans 64 frames (2.6 s at UCF101's 25
fps); at base_video's 10 fps only 7 of the 132 gestures are that long. Scaled
down to 3 clips of 4 frames 2 apart (the paper's 2:1 clip to interval ratio),
a 16-frame tuple (1.6 s) that 119 of the 132 clips hold; the host's
high-motion window is the tuple itself, so its start varies with the window.

Sized from a guess, not a measured run: one step of 16 tuples (48 clips of
4 x 64 x 64) cost about 11.5 CPU-seconds here (XLA:CPU's 3D convolutions are
slow, their gradients most), so 8 tuples x 250 steps should take about 15
minutes on 2 CPU cores. Official recipe: SGD lr 1e-3, momentum 0.9, weight
decay 5e-4, batch 8, 300 epochs; a run of minutes uses configs.base_video's
AdamW 1e-3 with cosine decay.
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
  c.batch_size = 8  # Tuples; x3 clips = 24 encoder inputs per step.
  c.total_steps = 250
  c.log_every = 10
  c.checkpoint_every = 125
  return configs.quick_video(c) if arg == "quick" else c
