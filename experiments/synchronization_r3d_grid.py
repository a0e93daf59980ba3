"""Audio-visual synchronisation after Owens & Efros (ECCV 2018), early fusion, on GRID talking
faces: a small R3D trunk (stem and 2 stages) on 8-frame windows of the mouth, the paper's
raw-waveform tower at width 1/4 on 16 kHz audio, fused after the trunk's second block.

Every clip gives its aligned audio (label 1) and its own audio shifted by 0.08-0.6 s (2-15
frames) either way (label 0): the evaluation asks for the offset within +-1 frame, so offsets of
2-4 frames must be told from 0 too (a first run with shifts of 5-15 frames could not, see
docs/results.md). The host delivers 8 frames at 25 fps (0.32 s) with 0.6 s of audio on each side, so
shifts up to 15 frames fit, as the evaluation's +-15-frame search needs (sslx-sync).

- Data: speaker 1's 60 clips in the data directory's ``grid_av/s1``, split by clip (45 train,
  15 test); the unseen speaker (``grid_av_vid2speech``) is never trained on.
- Frames: the mouth (``video.region``: rows 56-92 %, columns 31-60 % of the 288 x 360 frame, a
  104 px square around where GRID speakers' mouths are; checked by eye on speaker 1, the unseen
  speaker and two others), shorter side 36 px, random 32 px crops.
- Trunk: R3D at width 1/4 cut after stage 2 (16/16/32 channels, 4 x 8 x 8 at fusion); audio:
  the waveform tower at width 1/4 (16/32/32/64 channels, 5 steps per window); fusion: 32
  channels per step, merge 128 -> 32, two fused residual stages of 64 and 128 channels.
"""

from sslx import configs
from sslx.pretexts.audiovisual import synchronization


def get_config(arg=None):
  c = configs.base_av()
  c.video.num_frames = 8
  c.video.region = (0.56, 0.31, 0.36, 0.29)
  c.audio.margin_seconds = 0.6
  c.image_size = 32
  c.resize_size = 36
  c.model = {"name": "r3d", "width": 0.25, "stages": 2}
  c.pretext = synchronization.default_config()
  c.pretext.fps = c.video.fps
  c.pretext.min_shift_seconds = 0.08  # 2 frames at 25 fps.
  c.pretext.audio_model = {"name": "waveform", "sample_rate": c.audio.sample_rate, "width": 0.25}
  c.pretext.fusion_channels = 32
  c.pretext.merge_channels = 128
  c.pretext.fused_channels = (64, 128)
  c.batch_size = 16  # Clips; x2 examples (aligned and shifted).
  c.total_steps = 1000
  c.log_every = 50
  c.checkpoint_every = 250
  if arg == "quick":
    c = configs.quick_av(c)
  return c
