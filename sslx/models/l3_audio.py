"""L3-Net's audio subnetwork (Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017),
on raw waveforms with its log-spectrogram computed inside (sslx/audio.py, no parameters).

The paper's tower: a 257 x 199 log-magnitude spectrogram of 1 s at 48 kHz (``n_fft`` 512,
10 ms windows, 5 ms hop), then four blocks of two 3x3 convolutions (BN + ReLU after each)
with 64, 128, 256 and 512 channels, 2x2 max pooling between blocks (after blocks 1-3: the
paper's conv4 map is 32 x 24 in frequency x time), and a max pool over the whole last map.
Here:

- ``block1``..``block4`` are each block's last convolution, maps ``(B, time, freq, C)``:
  time (frames) before frequency (bins), as sslx.audio returns them. 1 s at 48 kHz gives
  (199, 257), (99, 128), (49, 64), (24, 32); 1 s at 16 kHz with the same sample counts
  (30 ms windows, 15 ms hop) gives (65, 257), (32, 128), (16, 64), (8, 32). Pooling is
  2x2 VALID (an odd last row or column dropped), as the paper's sizes show.
- ``pooled`` is the global average of ``block4``, like every backbone here; the paper's global
  max is ``sslx.models.max_pool_all(features["block4"])``.
- ``width`` multiplies every block's channels (rounded); ``mel_bins > 0`` swaps the linear
  spectrogram for a log-mel one with that many bands (OpenL3's "mel128" / "mel256" inputs,
  Cramer et al., ICASSP 2019); ``mfcc_coefficients > 0`` swaps it for that many MFCCs over
  ``mel_bins`` (40 where unset) bands, with the end padded so that 0.2 s gives 20 frames at a
  10 ms hop (SyncNet's audio input, 13 MFCCs at 100 Hz: ``window_length`` 400, ``hop_length``
  160 at 16 kHz).
- The spectrogram (dB, tens of dB louder at low frequencies than high) is standardised per
  frequency bin by a BatchNorm without scale or offset before the first convolution: its
  running mean and variance adapt to the data's level and spectral tilt with no parameter and
  no constant to guess, and the first ConvBN absorbs any affine map after it. OpenL3 (Cramer et
  al.) also puts a BatchNorm right after its spectrogram layer.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx import audio
from sslx.models.conv import Conv
from sslx.models.layers import flat_lecun_normal, global_avg_pool
from sslx.models.pooling import max_pool_same

CHANNELS = (64, 128, 256, 512)


class ConvBN(nn.Module):
  """3x3 convolution (no bias), BatchNorm, ReLU: ``sslx.models.layers.ConvBN``'s parameters and
  kernels (``conv_kernels`` through ``sslx.models.conv.Conv``), its kernel drawn by
  ``flat_lecun_normal`` (the same distribution): XLA:CPU compiled this tower's jitted init in
  28 s with 4-D draws and 6 s with flat ones, on the 2-core CPU."""
  features: int
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = Conv(self.features, (3, 3), (1, 1), kernels=self.kernels, dtype=self.dtype,
             kernel_init=flat_lecun_normal, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                     name="bn")(x)
    return nn.relu(x)


def _max_pool_2x2_valid(x):
  """2x2 max pooling with stride 2 that drops an odd last row or column (VALID)."""
  t, f = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return max_pool_same(x[:, :t, :f], (2, 2), (2, 2))  # Even sizes: SAME adds no padding.


class Backbone(nn.Module):
  """Waveforms ``(B, N)`` float32 -> ``{"block1".."block4": (B, time, freq, C),
  "pooled": (B, C)}``."""
  sample_rate: int = 48000  # The data's rate (pretexts check it); lengths below are in samples.
  n_fft: int = 512
  window_length: int = 480
  hop_length: int = 240
  floor_db: float = -80.0  # Log-spectrogram floor (sslx.audio.power_to_db).
  mel_bins: int = 0  # 0: L3-Net's linear-frequency spectrogram; > 0: log-mel with that many bands.
  mfcc_coefficients: int = 0  # > 0: MFCCs instead (SyncNet: 13), over mel_bins (or 40) bands.
  width: float = 1.0
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: "auto", "onednn", "taps", "xla".

  takes_audio = True  # A plain class attribute, not a field: callers tell audio towers by it.

  def front_end(self, waveforms):
    """``(B, N)`` -> ``(B, frames, bins)`` float32 dB: the parameter-free input of block 1."""
    if waveforms.ndim != 2:
      raise ValueError(f"l3_audio takes mono waveforms (B, N), got shape {waveforms.shape}: "
                       f"mix to mono before the tower")
    waveforms = waveforms.astype(jnp.float32)
    kwargs = dict(n_fft=self.n_fft, window_length=self.window_length,
                  hop_length=self.hop_length, floor_db=self.floor_db)
    if self.mfcc_coefficients > 0:
      return audio.mfcc(waveforms, sample_rate=self.sample_rate, num_coefficients=self.mfcc_coefficients,
                        num_mels=self.mel_bins or 40, pad_end=True, **kwargs)
    if self.mel_bins > 0:
      return audio.log_mel_spectrogram(waveforms, sample_rate=self.sample_rate,
                                       num_mels=self.mel_bins, **kwargs)
    return audio.log_spectrogram(waveforms, **kwargs)

  @nn.compact
  def __call__(self, waveforms, *, train: bool):
    x = self.front_end(waveforms)[..., None]  # (B, time, freq, 1)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, axis=2,
                     use_scale=False, use_bias=False, name="input_bn")(x)
    x = x.astype(self.dtype)
    features = {}
    for i, channels in enumerate(CHANNELS):
      if i > 0:
        x = _max_pool_2x2_valid(x)
      for j in range(2):
        x = ConvBN(max(1, int(round(channels * self.width))), dtype=self.dtype,
                   bn_momentum=self.bn_momentum, kernels=self.conv_kernels,
                   name=f"block{i + 1}_conv{j + 1}")(x, train=train)
      features[f"block{i + 1}"] = x
    features["pooled"] = global_avg_pool(x)
    return features
