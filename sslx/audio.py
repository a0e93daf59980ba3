"""Audio front ends that run on the device, inside the jitted step: STFT, (log-)spectrograms,
mel filterbanks, log-mel spectrograms and MFCCs.

Waveforms are float arrays ``(..., N)`` (mono, in [-1, 1]); every function is pure jnp,
jit-able and batched over the leading axes, and returns ``(..., frames, bins)``: time before
frequency, as the audio backbones read it. Lengths are in samples, so one set of parameters
means different durations at different sample rates. The constants (window, mel filterbank,
DCT matrix) are numpy arrays computed from Python numbers at trace time, never traced.

Framing. A frame reads only the ``window_length`` samples under the window, which is then
zero-padded, centred, to ``n_fft`` (librosa places a short window inside ``n_fft`` the same
way, so the complex values agree with ``librosa.stft`` of the waveform padded by
``(n_fft - window_length) // 2`` on each side). Samples outside the window would be multiplied
by zero anyway, so framing ``n_fft`` samples would only lose frames at the end: 1 s at 48 kHz
with L3-Net's parameters gives 199 frames here (L3-Net's 257 x 199, Arandjelovic & Zisserman,
ICCV 2017), where framing 512 samples would give 198.

- ``center=False``: ``1 + (N - window_length) // hop_length`` frames, frame ``t`` starting at
  sample ``t * hop_length``.
- ``center=True`` (librosa's default): zeros pad ``window_length // 2`` on each side, so frame
  ``t`` is centred on sample ``t * hop_length``: ``1 + N // hop_length`` frames, the values of
  ``librosa.stft(..., center=True, pad_mode="constant")``.
- ``pad_end=True`` (TensorFlow's ``tf.signal.stft`` convention) then pads zeros at the end so
  that a frame starts at every hop inside the signal: ``ceil(N / hop_length)`` frames without
  ``center``, which makes SyncNet's 100 Hz MFCCs exactly 20 frames for 0.2 s (Chung &
  Zisserman, 2016).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np


def hann_window(window_length: int, n_fft: int) -> np.ndarray:
  """Periodic Hann window of ``window_length`` samples, zero-padded centred to ``n_fft``.

  Periodic (the DFT-even form, ``0.5 - 0.5 cos(2 pi n / L)``) so that windows at hops of
  ``L / 2`` or ``L / 4`` sum to a constant, as in librosa and scipy's spectral tools.
  """
  _check_lengths(n_fft=n_fft, window_length=window_length, hop_length=1)
  left = (n_fft - window_length) // 2
  return np.pad(_hann(window_length), (left, n_fft - window_length - left))


def _hann(window_length: int) -> np.ndarray:
  n = np.arange(window_length)
  return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / window_length)).astype(np.float32)


def _check_lengths(*, n_fft: int, window_length: int, hop_length: int) -> None:
  if not 0 < window_length <= n_fft:
    raise ValueError(f"window_length {window_length} must be in [1, n_fft={n_fft}]: "
                     f"use an n_fft at least as long as the window")
  if hop_length < 1:
    raise ValueError(f"hop_length {hop_length} must be at least 1 sample")


def num_frames(num_samples: int, *, window_length: int, hop_length: int, center: bool = False,
               pad_end: bool = False) -> int:
  """How many frames ``stft`` makes of ``num_samples`` samples (the module docstring's rules)."""
  length = num_samples + (2 * (window_length // 2) if center else 0)
  if pad_end:
    return -(-length // hop_length)
  if length < window_length:
    raise ValueError(f"{num_samples} samples are shorter than one window of {window_length}: "
                     f"use a longer waveform, center=True or pad_end=True")
  return 1 + (length - window_length) // hop_length


def frames(waveform, *, window_length: int, hop_length: int, center: bool = False,
           pad_end: bool = False):
  """``(..., N)`` -> ``(..., frames, window_length)``: overlapping frames by one strided gather."""
  waveform = jnp.asarray(waveform)
  count = num_frames(waveform.shape[-1], window_length=window_length, hop_length=hop_length,
                     center=center, pad_end=pad_end)
  left = window_length // 2 if center else 0
  needed = (count - 1) * hop_length + window_length
  right = max(needed - waveform.shape[-1] - left, 0)
  if left or right:
    waveform = jnp.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(left, right)])
  index = hop_length * np.arange(count)[:, None] + np.arange(window_length)[None, :]
  return waveform[..., index]


def stft(waveform, *, n_fft: int, window_length: int, hop_length: int, center: bool = False,
         pad_end: bool = False):
  """Short-time Fourier transform: ``(..., N)`` -> complex ``(..., frames, n_fft // 2 + 1)``.

  Periodic Hann window of ``window_length`` samples, zero-padded centred to ``n_fft``
  (``hann_window``); framing as in the module docstring. Unnormalised, like ``librosa.stft``:
  a full-scale sine at a bin's frequency peaks at about ``window_length / 4``.
  """
  _check_lengths(n_fft=n_fft, window_length=window_length, hop_length=hop_length)
  waveform = jnp.asarray(waveform)
  if waveform.dtype not in (jnp.float32, jnp.float64):  # The FFT runs in float32 or float64.
    waveform = waveform.astype(jnp.float32)
  x = frames(waveform, window_length=window_length, hop_length=hop_length, center=center,
             pad_end=pad_end)
  x = x * jnp.asarray(_hann(window_length), x.dtype)
  left = (n_fft - window_length) // 2
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(left, n_fft - window_length - left)])
  return jnp.fft.rfft(x, n=n_fft, axis=-1)


def _power(spectrum):
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2


def spectrogram(waveform, *, n_fft: int, window_length: int, hop_length: int,
                power: float = 1.0, center: bool = False, pad_end: bool = False):
  """``|stft| ** power``: magnitude (``power=1``, L3-Net) or energy (``power=2``), real
  ``(..., frames, n_fft // 2 + 1)``."""
  energy = _power(stft(waveform, n_fft=n_fft, window_length=window_length,
                       hop_length=hop_length, center=center, pad_end=pad_end))
  if power == 2.0:
    return energy
  return energy ** (power / 2.0)


def power_to_db(energy, *, floor_db: float):
  """``10 log10(energy)``, never below ``floor_db``.

  The floor is absolute (not relative to each clip's loudest bin, as librosa's ``top_db``) so
  that an example's values do not depend on the rest of it, and silence maps to a constant
  instead of ``-inf``. For waveforms in [-1, 1], 16-bit quantisation noise in a 480-sample
  Hann-windowed bin is near -72 dB, so -80 dB sits just under what recordings resolve.
  """
  floor = 10.0 ** (floor_db / 10.0)
  return 10.0 * jnp.log10(jnp.maximum(energy, floor))


def log_spectrogram(waveform, *, n_fft: int, window_length: int, hop_length: int,
                    floor_db: float, center: bool = False, pad_end: bool = False):
  """Log-magnitude spectrogram in dB, ``20 log10 |stft|`` floored at ``floor_db``:
  ``(..., frames, n_fft // 2 + 1)``.

  L3-Net's audio input (Arandjelovic & Zisserman, ICCV 2017): 1 s at 48 kHz, ``n_fft=512``,
  ``window_length=480`` (10 ms), ``hop_length=240`` (5 ms): 199 frames x 257 bins here.
  """
  energy = _power(stft(waveform, n_fft=n_fft, window_length=window_length,
                       hop_length=hop_length, center=center, pad_end=pad_end))
  return power_to_db(energy, floor_db=floor_db)


def hz_to_mel(hz, *, htk: bool = False):
  """Hertz to mels: HTK's ``2595 log10(1 + f / 700)``, or Slaney's (Auditory Toolbox) scale,
  linear at 200 / 3 Hz per mel below 1 kHz and logarithmic above (librosa's default)."""
  hz = np.asarray(hz, np.float64)
  if htk:
    return 2595.0 * np.log10(1.0 + hz / 700.0)
  step, break_hz = 200.0 / 3.0, 1000.0
  log_step = np.log(6.4) / 27.0  # 27 mels per factor 6.4 in frequency above the break.
  linear = hz / step
  above = break_hz / step + np.log(np.maximum(hz, break_hz) / break_hz) / log_step
  return np.where(hz >= break_hz, above, linear)


def mel_to_hz(mel, *, htk: bool = False):
  """The inverse of ``hz_to_mel``."""
  mel = np.asarray(mel, np.float64)
  if htk:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
  step, break_hz = 200.0 / 3.0, 1000.0
  log_step = np.log(6.4) / 27.0
  break_mel = break_hz / step
  return np.where(mel >= break_mel, break_hz * np.exp(log_step * (mel - break_mel)), mel * step)


@functools.lru_cache(maxsize=32)
def _mel_filterbank(sample_rate, n_fft, num_mels, fmin, fmax, htk, area_normalize):
  if fmax is None:
    fmax = sample_rate / 2.0
  if not 0.0 <= fmin < fmax <= sample_rate / 2.0:
    raise ValueError(f"mel filterbank needs 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, "
                     f"fmax={fmax} at {sample_rate} Hz: pick band edges inside that range")
  # num_mels triangles whose corners are num_mels + 2 points equally spaced in mels.
  corners = mel_to_hz(np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), num_mels + 2),
                      htk=htk)
  lower, centre, upper = corners[:-2, None], corners[1:-1, None], corners[2:, None]
  bins = np.arange(n_fft // 2 + 1)[None, :] * (sample_rate / n_fft)  # The rfft's frequencies.
  rising = (bins - lower) / (centre - lower)
  falling = (upper - bins) / (upper - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  if area_normalize:  # Unit area in Hz (Slaney): height 2 / the triangle's width.
    weights *= 2.0 / (upper - lower)
  return _constant(weights.T)


def mel_filterbank(*, sample_rate: int, n_fft: int, num_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, htk: bool = False,
                   area_normalize: bool = True) -> np.ndarray:
  """Triangular mel filters ``(n_fft // 2 + 1, num_mels)``, a numpy float32 constant, so that
  ``spectrogram @ mel_filterbank(...)`` gives mel bands.

  Triangles overlap by half, with corners equally spaced on the mel scale from ``fmin`` to
  ``fmax`` (default: Nyquist); Slaney's scale (librosa's default) or HTK's (``htk=True``).
  ``area_normalize`` (Slaney's, librosa's ``norm="slaney"``) scales each triangle to unit area
  in Hz (height 2 / its width), so that the wide high-frequency bands do not outweigh the
  narrow low ones; without it each triangle peaks at 1 (HTK's own filters). The transpose of
  ``librosa.filters.mel`` with the same arguments (``norm=None`` without ``area_normalize``).
  """
  return _mel_filterbank(int(sample_rate), int(n_fft), int(num_mels), float(fmin),
                         None if fmax is None else float(fmax), bool(htk), bool(area_normalize))


def _constant(array) -> np.ndarray:
  """A cached float32 constant, read-only so that no caller can change it for the others."""
  out = np.ascontiguousarray(array, dtype=np.float32)
  out.setflags(write=False)
  return out


def _exact_matmul(x, matrix):
  # Full float32 precision on GPU and TPU (TF32 or bf16 passes would cost ~1e-3 relative).
  return jnp.matmul(x, jnp.asarray(matrix, x.dtype), precision="highest")


def log_mel_spectrogram(waveform, *, sample_rate: int, n_fft: int, window_length: int,
                        hop_length: int, num_mels: int, floor_db: float, fmin: float = 0.0,
                        fmax: float | None = None, htk: bool = False, center: bool = False,
                        pad_end: bool = False):
  """Mel-band energies in dB, floored at ``floor_db``: ``(..., frames, num_mels)``.

  The energy spectrogram (``|stft|^2``) through ``mel_filterbank`` (area-normalised), then
  ``power_to_db``: the log-mel of ``librosa.feature.melspectrogram`` and ``power_to_db``.
  """
  energy = spectrogram(waveform, n_fft=n_fft, window_length=window_length, hop_length=hop_length,
                       power=2.0, center=center, pad_end=pad_end)
  bank = mel_filterbank(sample_rate=sample_rate, n_fft=n_fft, num_mels=num_mels, fmin=fmin,
                        fmax=fmax, htk=htk)
  return power_to_db(_exact_matmul(energy, bank), floor_db=floor_db)


@functools.lru_cache(maxsize=32)
def dct_matrix(num_coefficients: int, size: int) -> np.ndarray:
  """Orthonormal DCT-II ``(size, num_coefficients)``: ``x @ dct_matrix(k, n)`` gives the first
  ``k`` coefficients of ``scipy.fft.dct(x, type=2, norm="ortho")``."""
  if not 0 < num_coefficients <= size:
    raise ValueError(f"num_coefficients {num_coefficients} must be in [1, {size}]: keep at most "
                     f"as many coefficients as there are mel bands")
  n, k = np.arange(size)[:, None], np.arange(num_coefficients)[None, :]
  basis = np.cos(np.pi * k * (2 * n + 1) / (2 * size)) * np.sqrt(2.0 / size)
  basis[:, 0] /= np.sqrt(2.0)
  return _constant(basis)


def mfcc(waveform, *, sample_rate: int, num_coefficients: int = 13, num_mels: int = 40,
         n_fft: int | None = None, window_length: int | None = None,
         hop_length: int | None = None, floor_db: float = -80.0, fmin: float = 0.0,
         fmax: float | None = None, htk: bool = False, center: bool = False,
         pad_end: bool = False):
  """Mel-frequency cepstral coefficients: ``(..., frames, num_coefficients)``.

  The orthonormal DCT-II of the log-mel spectrogram (dB) over its mel bands, the first
  ``num_coefficients`` kept (coefficient 0 included), as ``librosa.feature.mfcc``. The
  defaults are SyncNet's audio input (Chung & Zisserman, ACCV 2016 workshops): 13 MFCCs at
  100 Hz, ``window_length`` 25 ms and ``hop_length`` 10 ms of ``sample_rate`` where unset,
  ``n_fft`` the next power of two (400, 160 and 512 at 16 kHz); with ``pad_end=True``, 0.2 s
  at 16 kHz gives 20 frames.
  """
  if window_length is None:
    window_length = int(round(0.025 * sample_rate))
  if hop_length is None:
    hop_length = int(round(0.010 * sample_rate))
  if n_fft is None:
    n_fft = 1 << max(window_length - 1, 1).bit_length()
  log_mel = log_mel_spectrogram(waveform, sample_rate=sample_rate, n_fft=n_fft,
                                window_length=window_length, hop_length=hop_length,
                                num_mels=num_mels, floor_db=floor_db, fmin=fmin, fmax=fmax,
                                htk=htk, center=center, pad_end=pad_end)
  return _exact_matmul(log_mel, dct_matrix(num_coefficients, num_mels))
