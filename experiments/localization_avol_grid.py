"""Sound localisation, AVOL-Net (Arandjelovic & Zisserman, "Objects that Sound", ECCV 2018), on
GRID talking faces: where in the frame is the speech coming from?

The correspondence task of experiments/correspondence_l3_grid.py (a frame and the 1 s of audio
centred on it; half the pairs get another clip's audio from the global batch), answered by
multiple-instance learning over the places of the frame: each location's 128-d embedding is
compared with the sound's, and the best location decides. In GRID the answer should be the
mouth; sslx-localization counts how often the map's peak falls in each test clip's mouth box.

- Data and audio as correspondence_l3_grid.py: speaker 1's 60 clips in the data directory's
  ``grid_av/s1`` (45 train, 15 test), 25 fps, one frame per example, 16 kHz audio through L3's
  log-spectrogram with a 10 ms hop. Frames, unlike there (the mouth box): the square
  ``video.region`` around the lower face (rows 40-95 %, columns 27-73 % of the 360x288 frame),
  resized to 72 px with random 64 px crops, so that the mouth is one place among others.
- Towers: the NIN-style ConvNet (32/64/128 channels), whose block3 map is 16 x 16 on a 64 px
  crop (the paper's conv5: 14 x 14 on 224 px), and L3's audio subnetwork at width 0.25.
- Evaluate with ``sslx-localization --workdir DIR --boxes benchmarks/grid_mouth_boxes.csv``
  (add ``--dataset folder:grid_av_vid2speech --splits train,test`` for an unseen speaker).
"""

from sslx import configs
from sslx.pretexts.audiovisual import localization


def get_config(arg=None):
  c = configs.base_av()
  c.pretext = localization.default_config()
  c.pretext.audio_model = {"name": "l3_audio", "sample_rate": c.audio.sample_rate, "width": 0.25,
                           "n_fft": 256, "window_length": 256, "hop_length": 160}
  c.video.region = (0.40, 0.27, 0.55, 0.46)  # The lower face: 158 x 166 px of GRID's 288 x 360.
  c.model.widths = (32, 64, 128)
  c.batch_size = 32
  # 400 steps (5 min alone on 2 cores): training accuracy 0.557 over the last 50. The same
  # cosine schedule stretched over 1,000 steps kept the rate high and stayed at chance (0.515).
  c.total_steps = 400
  c.log_every = 50
  c.checkpoint_every = 100
  if arg == "quick":
    c = configs.quick_av(c)
  return c
