"""Audio-visual correspondence, L3-Net (Arandjelovic & Zisserman, ICCV 2017), on a mix of sounding
scenes: GRID talking faces, clips whose sound source is on screen (instruments, animals, tools,
fireworks) and assorted clips with sound. The same towers and audio front end as
experiments/correspondence_l3_grid.py, on whole frames (no face region: the mix is not all faces).

L3-Net learns from varied videos (Flickr-SoundNet, Kinetics), where a frame and a second of sound
tell each other's scene apart; GRID alone is one speaker in one room, where only the mouth ties
them. Training on the mix gives both kinds of negatives; the evaluation tests held-out clips of each
source separately (``sslx-correspondence --dataset folder:grid_av/s1`` / ``folder:av_sound_source``).

- Data (data directory): ``grid_av/s1`` (45 train clips), ``av_sound_source`` (15 train of 20),
  ``video_samples`` (the clips with sound among its 7 train clips; clips without sound are skipped
  and counted). Each folder split by clip (every 4th is test).
"""

from sslx import configs
from sslx.pretexts.audiovisual import correspondence


def get_config(arg=None):
  c = configs.base_av()
  c.dataset = "mix:folder:grid_av/s1,folder:av_sound_source,folder:video_samples"
  c.label_file = None  # A mix is for pretraining: no CSV labels.
  c.label_column = None
  c.pretext = correspondence.default_config()
  c.pretext.audio_model = {"name": "l3_audio", "sample_rate": c.audio.sample_rate, "width": 0.25,
                           "n_fft": 256, "window_length": 256, "hop_length": 160}
  c.model.widths = (32, 64, 128)
  c.batch_size = 32
  c.total_steps = 800
  c.log_every = 50
  c.checkpoint_every = 200
  if arg == "quick":
    c = configs.quick_av(c)
  return c
