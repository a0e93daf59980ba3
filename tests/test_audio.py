"""sslx.audio against librosa (mel filterbanks, MFCC, STFT) and numpy's rfft frame by frame."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest
import scipy.fft

from sslx import audio

# L3-Net (Arandjelovic & Zisserman 2017): 1 s at 48 kHz, 10 ms windows, 5 ms hop, n_fft 512.
L3 = dict(n_fft=512, window_length=480, hop_length=240)


def _noise(n, seed=0, scale=0.1):
  return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def test_stft_is_numpy_rfft_of_each_windowed_frame():
  x = _noise(4000)
  n_fft, window_length, hop = 256, 200, 80
  got = np.asarray(audio.stft(x, n_fft=n_fft, window_length=window_length, hop_length=hop))
  window = audio.hann_window(window_length, n_fft).astype(np.float64)
  left = (n_fft - window_length) // 2
  starts = range(0, len(x) - window_length + 1, hop)
  want = np.stack([np.fft.rfft(window * np.pad(x[s:s + window_length].astype(np.float64),
                                               (left, n_fft - window_length - left)))
                   for s in starts])
  assert got.shape == want.shape == (1 + (4000 - 200) // 80, 129)
  np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())


def test_hann_window_is_librosa_periodic_hann_padded_to_n_fft():
  want = librosa.util.pad_center(librosa.filters.get_window("hann", 480, fftbins=True), size=512)
  np.testing.assert_allclose(audio.hann_window(480, 512), want, atol=1e-7)


@pytest.mark.parametrize("center", [False, True])
def test_stft_matches_librosa(center):
  x = _noise(12000, seed=1)
  got = np.asarray(audio.stft(x, center=center, **L3))
  pad = 0 if center else (L3["n_fft"] - L3["window_length"]) // 2
  want = librosa.stft(np.pad(x, pad), n_fft=512, win_length=480, hop_length=240, center=center,
                      pad_mode="constant").T
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=1e-6 * np.abs(want).max())


def test_sine_peaks_at_its_bin():
  sr, n_fft = 16000, 512
  spectrogram = jax.jit(lambda x, power: audio.spectrogram(  # noqa: E731
      x, n_fft=n_fft, window_length=400, hop_length=160, power=power), static_argnums=1)
  for k in (10, 37, 200):
    f = k * sr / n_fft
    x = np.sin(2 * np.pi * f * np.arange(sr) / sr).astype(np.float32)
    s = np.asarray(spectrogram(x, 1.0))
    assert s.shape == (1 + (sr - 400) // 160, n_fft // 2 + 1)
    assert np.all(np.argmax(s, axis=-1) == k)
    # A full-scale sine at a bin's frequency peaks at the window's sum / 2 = window_length / 4.
    np.testing.assert_allclose(s[:, k], 400 / 4, rtol=1e-3)
    np.testing.assert_allclose(spectrogram(x, 2.0), s ** 2, rtol=1e-5, atol=1e-6)


def test_l3_log_spectrogram_shape_and_floor():
  x = _noise(48000)
  spec = audio.log_spectrogram(x, floor_db=-80.0, **L3)
  assert spec.shape == (199, 257)  # L3-Net's 257 x 199, time first.
  assert audio.num_frames(48000, window_length=480, hop_length=240) == 199
  silence = audio.log_spectrogram(np.zeros(48000, np.float32), floor_db=-80.0, **L3)
  np.testing.assert_allclose(silence, -80.0, atol=1e-4)
  magnitude = np.asarray(audio.spectrogram(x, **L3))
  np.testing.assert_allclose(spec, 20 * np.log10(np.maximum(magnitude, 1e-4)), atol=1e-3)


@pytest.mark.parametrize("htk", [False, True])
@pytest.mark.parametrize("area_normalize", [True, False])
@pytest.mark.parametrize("sr,n_fft,num_mels,fmin,fmax", [(16000, 512, 40, 0.0, None),
                                                         (48000, 2048, 128, 20.0, 16000.0),
                                                         (22050, 1023, 64, 50.0, 8000.0)])
def test_mel_filterbank_matches_librosa(htk, area_normalize, sr, n_fft, num_mels, fmin, fmax):
  got = audio.mel_filterbank(sample_rate=sr, n_fft=n_fft, num_mels=num_mels, fmin=fmin, fmax=fmax,
                             htk=htk, area_normalize=area_normalize)
  want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax, htk=htk,
                             norm="slaney" if area_normalize else None).T
  assert got.shape == want.shape == (n_fft // 2 + 1, num_mels)
  assert got.dtype == np.float32 and not got.flags.writeable
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())


def test_mel_scales_match_librosa():
  hz = np.array([0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 20000.0])
  for htk in (False, True):
    np.testing.assert_allclose(audio.hz_to_mel(hz, htk=htk), librosa.hz_to_mel(hz, htk=htk),
                               rtol=1e-9)
    np.testing.assert_allclose(audio.mel_to_hz(audio.hz_to_mel(hz, htk=htk), htk=htk), hz,
                               rtol=1e-9, atol=1e-9)


def _librosa_log_mel(x, *, sr, n_fft, window_length, hop, num_mels, floor_db, htk=False):
  """librosa's log-mel of the frames sslx.audio makes (its n_fft frames padded as in audio.py)."""
  pad = (n_fft - window_length) // 2
  mel = librosa.feature.melspectrogram(y=np.pad(x, pad), sr=sr, n_fft=n_fft,
                                       win_length=window_length, hop_length=hop, center=False,
                                       n_mels=num_mels, htk=htk, power=2.0)
  return librosa.power_to_db(mel, amin=10 ** (floor_db / 10), top_db=None)


def test_log_mel_matches_librosa():
  x = _noise(16000, seed=2)
  got = audio.log_mel_spectrogram(x, sample_rate=16000, n_fft=512, window_length=400,
                                  hop_length=160, num_mels=64, floor_db=-100.0, htk=True)
  want = _librosa_log_mel(x, sr=16000, n_fft=512, window_length=400, hop=160, num_mels=64,
                          floor_db=-100.0, htk=True).T
  assert got.shape == want.shape == (98, 64)
  np.testing.assert_allclose(got, want, atol=1e-4)  # dB


def test_mfcc_matches_librosa():
  x = _noise(16000, seed=3)
  got = audio.mfcc(x, sample_rate=16000)
  log_mel = _librosa_log_mel(x, sr=16000, n_fft=512, window_length=400, hop=160, num_mels=40,
                             floor_db=-80.0)
  want = librosa.feature.mfcc(S=log_mel, n_mfcc=13, dct_type=2, norm="ortho").T
  assert got.shape == want.shape == (98, 13)
  np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_syncnet_mfcc_shape():
  # SyncNet (Chung & Zisserman 2016): 13 MFCCs at 100 Hz, 0.2 s per example -> 20 x 13.
  x = jax.ShapeDtypeStruct((3, 3200), jnp.float32)

  def shape(**kwargs):
    return jax.eval_shape(lambda w: audio.mfcc(w, sample_rate=16000, **kwargs), x).shape

  assert shape(pad_end=True) == (3, 20, 13)
  assert shape() == (3, 18, 13)  # Whole windows only.
  assert shape(center=True) == (3, 21, 13)


def test_dct_matrix_is_orthonormal_dct_ii():
  d = audio.dct_matrix(40, 40)
  np.testing.assert_allclose(d.T @ d, np.eye(40), atol=1e-5)
  x = _noise(40, seed=4).astype(np.float64)
  np.testing.assert_allclose(x @ audio.dct_matrix(13, 40), scipy.fft.dct(x, norm="ortho")[:13],
                             atol=1e-6)


def test_jit_and_vmap_batch_over_leading_axes():
  x = jnp.asarray(_noise(2 * 3 * 4800).reshape(2, 3, 4800))
  one = lambda w: audio.log_mel_spectrogram(  # noqa: E731
      w, sample_rate=16000, n_fft=512, window_length=400, hop_length=160, num_mels=32,
      floor_db=-80.0)
  batched = jax.jit(one)(x)
  assert batched.shape == (2, 3, 28, 32)
  np.testing.assert_allclose(jax.jit(jax.vmap(jax.vmap(one)))(x), batched, atol=1e-4)
  np.testing.assert_allclose(jax.jit(one)(x[1, 2]), batched[1, 2], atol=1e-4)
  assert jax.jit(lambda w: audio.mfcc(w, sample_rate=16000))(x).shape == (2, 3, 28, 13)


def test_bad_lengths_are_one_line_errors():
  with pytest.raises(ValueError, match="window_length 600 must be in"):
    audio.stft(jnp.zeros(1000), n_fft=512, window_length=600, hop_length=100)
  with pytest.raises(ValueError, match="shorter than one window"):
    audio.stft(jnp.zeros(100), **L3)
  with pytest.raises(ValueError, match="fmin < fmax"):
    audio.mel_filterbank(sample_rate=16000, n_fft=512, num_mels=40, fmax=9000.0)
