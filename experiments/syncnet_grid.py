"""SyncNet (Chung & Zisserman, ACCV 2016 workshops) on GRID talking faces: 5-frame grey mouth
windows and 0.2 s of 13 MFCCs embedded by two towers, a contrastive loss with a margin on their
distance; the offset is the shift of the audio with the smallest distance (sslx-sync).

- Data: speaker 1's 60 clips in the data directory's ``grid_av/s1`` and the 10 clips of other
  GRID speakers in ``grid_av/lipnet_samples``, each split by clip (every 4th is test: 53 train,
  17 test); the unseen speaker (``grid_av_vid2speech``) is never trained on. On speaker 1 alone
  (``--config.dataset=folder:grid_av/s1``) held-out offsets on the unseen speaker were worse
  (docs/results.md).
- Frames: 5 at 25 fps (0.2 s, the paper's), the mouth (``video.region``, the box the
  Owens & Efros experiment uses, experiments/synchronization_r3d_grid.py), shorter side 54 px,
  random 48 px crops (the paper: 111 px).
- Audio: 16 kHz, 0.6 s of margin on each side (the evaluation searches +-15 frames); the
  negatives are the clip's own audio shifted by 2-15 frames either way.
- Schedule: 3,000 steps of 32 clips, about 25 minutes on 2 CPU cores.
- Towers: SyncNet's lip tower (sslx/models/stacked_frames.py) at width 1/2; L3-Net's block
  layout on the MFCC map at width 1/4; embeddings 512 -> 256 as the paper's fc6 / fc7.
"""

from sslx import configs
from sslx.pretexts.audiovisual import syncnet


def get_config(arg=None):
  c = configs.base_av()
  c.dataset = "mix:folder:grid_av/s1,folder:grid_av/lipnet_samples"
  c.video.num_frames = 5
  c.video.region = (0.56, 0.31, 0.36, 0.29)
  c.audio.margin_seconds = 0.6
  c.image_size = 48
  c.resize_size = 54
  c.model = {"name": "stacked_frames", "width": 0.5}
  c.pretext = syncnet.default_config()
  c.pretext.fps = c.video.fps
  c.pretext.audio_model.sample_rate = c.audio.sample_rate
  c.batch_size = 32  # Clips; x2 pairs (aligned and shifted).
  c.total_steps = 3000
  c.log_every = 50
  c.checkpoint_every = 500
  if arg == "quick":
    c = configs.quick_av(c)
  return c
