"""Audio-visual correspondence, L3-Net (Arandjelovic & Zisserman, ICCV 2017), on GRID talking
faces: small ConvNet on the mouth, L3's audio subnetwork at width 1/4 on 16 kHz
log-spectrograms.

Does this frame of a face go with this second of speech? Positives: a frame and the 1 s of audio
centred on it; negatives (half): the frame with another clip's audio from the global batch. In
GRID every clip is one sentence framed by silence, so the task is read from the mouth (open or
shut, which shape) against the sound (speech or silence, which phoneme).

- Data: speaker 1's 60 clips in the data directory's ``grid_av/s1``, split by clip (every 4th is
  test: 45 train, 15 test). The other speakers are never trained on.
- Frames: 25 fps (GRID's rate), one per example; the mouth box (``video.region``, the one the
  synchronisation configs use), shorter side 54 px, random 48 px crops. (The lower face at 64 px,
  ``video.region = (0.40, 0.27, 0.55, 0.46)``, stayed at chance in training for 250 steps; the
  mouth box left chance by step 200, docs/results.md.)
- Negatives are another clip's audio at its own random time; ``sslx-correspondence`` reports
  held-out accuracy with negatives at the same time of another clip (the hard case: also speech
  or also silence) and at another time.
- Audio: 16 kHz mono; L3's log-spectrogram with 16 ms windows and a 10 ms hop (256 / 160
  samples, n_fft 256: 129 frequency bins x 99 frames per second; the paper: 48 kHz, 10 ms
  windows, 5 ms hop, 257 x 199). The coarser hop halves the audio tower's cost on a CPU.
- Towers: the NIN-style ConvNet (32/64/128 channels) for frames; L3's audio subnetwork at
  width 0.25 (16/32/64/128 channels). L3-Net's concatenation fusion, FC 128, FC 2.
"""

from sslx import configs
from sslx.pretexts.audiovisual import correspondence


def get_config(arg=None):
  c = configs.base_av()
  c.pretext = correspondence.default_config()
  c.pretext.audio_model = {"name": "l3_audio", "sample_rate": c.audio.sample_rate, "width": 0.25,
                           "n_fft": 256, "window_length": 256, "hop_length": 160}
  c.video.region = (0.56, 0.31, 0.36, 0.29)  # The mouth: 104 x 104 px of GRID's 288 x 360.
  c.image_size = 48
  c.resize_size = 54
  c.model.widths = (32, 64, 128)
  c.batch_size = 32
  c.total_steps = 1000
  c.log_every = 50
  c.checkpoint_every = 250
  if arg == "quick":
    c = configs.quick_av(c)
  return c
