"""Tracking by colorization (Vondrick et al., ECCV 2018), small NIN-style ConvNet per grey frame, on
a mix of unlabelled video: clips whose sound source is on screen (instruments, animals, vehicles),
assorted clips and EgoGestAR gestures. Evaluated by DAVIS-2016 label propagation (sslx-propagate),
never trained on DAVIS.

Three references at 0, 0.2 and 0.4 s and the target at 0.8 s (frames 0, 2, 4 and 8 of a 9-frame
window at 10 fps), 16 k-means colours in ab computed once before step 1, 64-d embeddings on the
ConvNet's 16 x 16 deepest map (stride 4 on 64 px crops), pointer temperature 1.

- Data (data directory): ``av_sound_source`` (15 train clips of 20), ``video_samples`` (7 of 9),
  ``egogestar`` (99 of 132), each split by clip (every 4th is test); clips shorter than the window
  are skipped and counted.
- 16 clips x 4 frames = 64 frames of 64 px per step, 2,000 steps (docs/results.md gives the time).
  Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import colorization_tracking


def get_config(arg=None):
  c = configs.base_video()
  c.dataset = "mix:folder:av_sound_source,folder:video_samples,folder:egogestar"
  c.pretext = colorization_tracking.default_config()
  c.pretext.fps = c.video.fps / c.video.frame_stride
  c.video.num_frames = 9
  c.batch_size = 16  # Clips; x 4 frames = 64 frames per step.
  c.total_steps = 2000
  c.log_every = 50
  c.checkpoint_every = 500
  return configs.quick_video(c) if arg == "quick" else c
