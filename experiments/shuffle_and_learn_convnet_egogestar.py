"""Shuffle and Learn (Misra et al., ECCV 2016), small NIN-style ConvNet per
frame, EgoGestAR gesture clips (132 clips at 64 px).

Temporal order verification: three frames (b, c, d) of a high-motion window
(the host picks it by mean optical-flow magnitude) are in order, (b, a, d) and
(b, e, d) are not; 75% negatives, the paper's best ratio; binary classifier on
the three per-frame features concatenated. The paper's gaps (tau_max = 60,
tau_min = 15 frames at 25 fps, 2.4 s and 0.6 s) become tau_max = 8 and tau_min =
2 frames at base_video's 10 fps (0.8 s and 0.2 s, the 4:1 ratio kept), because
the gestures are short: the 2 * tau_min + tau_max + 1 = 13-frame window in which
every positive span up to tau_max can be drawn keeps 127 of the 132 clips (the
host skips clips shorter than the window); the paper's durations would keep 43.

Sized (estimated, not yet measured) for about 15 minutes on 2 CPU cores: 3
frames of 64 px per example, 96 per step through the ConvNet (about the pixel
rate of the jigsaw run, see the README), so 32 clips x 700 steps; the host
decodes 13 frames per clip. Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import shuffle_and_learn


def get_config(arg=None):
  c = configs.base_video()
  c.pretext = shuffle_and_learn.default_config()  # tau_max 8, tau_min 2, 75% negatives.
  # Frames the host delivers per example: 2 * tau_min + tau_max + 1, so every span up to tau_max
  # occurs (the rule needs 2 * tau_min + 3 = 7 at least; validate() checks).
  c.video.num_frames = 2 * c.pretext.tau_min + c.pretext.tau_max + 1
  c.batch_size = 32  # Clips; x3 frames = 96 encoder inputs per step.
  c.total_steps = 700
  c.log_every = 25
  c.checkpoint_every = 350
  return configs.quick_video(c) if arg == "quick" else c
