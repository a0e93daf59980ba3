"""Motion segmentation from a single frame (Pathak et al., CVPR 2017), small NIN-style ConvNet, on a
mix of unlabelled video: clips whose sound source is on screen, assorted clips and EgoGestAR
gestures. Evaluated zero-shot on DAVIS-2016 masks (sslx-segment), never trained on DAVIS.

Pseudo masks: Farneback flow less each frame's median flow, normalised per clip, at >= 0.5 of the
clip's 95th percentile; frames whose mask covers under 1% or over 50% are left out of the loss.
One frame per clip from the delivered window, per-pixel binary cross-entropy on the ConvNet's
16 x 16 deepest map.

- Data (data directory): ``av_sound_source`` (15 train clips of 20), ``video_samples`` (7 of 9),
  ``egogestar`` (99 of 132), each split by clip (every 4th is test).
- 64 clips (one frame each) of 64 px per step, 800 steps (docs/results.md gives the time).
  Optimizer: configs.base_video's AdamW 1e-3, cosine.
"""

from sslx import configs
from sslx.pretexts.video import motion_segmentation


def get_config(arg=None):
  c = configs.base_video()
  c.dataset = "mix:folder:av_sound_source,folder:video_samples,folder:egogestar"
  c.pretext = motion_segmentation.default_config()
  c.video.motion_masks = True
  c.video.num_frames = 4  # One frame per clip is used; a short window keeps the host's copy small.
  c.batch_size = 64
  c.total_steps = 800
  c.log_every = 50
  c.checkpoint_every = 400
  return configs.quick_video(c) if arg == "quick" else c
