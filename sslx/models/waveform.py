"""The raw-waveform audio tower of Owens & Efros, "Audio-Visual Scene Analysis with
Self-Supervised Multisensory Features" (ECCV 2018): strided 1-D convolutions straight on the
samples, no spectrogram.

Its layers, as the official code builds them (andrewowens/multisensory, src/shift_net.py,
``make_net``, the ``sf/`` layers; reused by src/sourcesep.py):

- the samples companded, ``sign(x) log(1 + 255 |x|) / log(256)`` (mu-law without
  quantising), so quiet and loud sounds use the input range alike; no parameters;
- ``block1``: a 65-tap convolution, stride 4, 64 channels, BN + ReLU (``sf/conv1_1``);
- a 4-wide max pool with stride 4 (VALID), here at the start of ``block2``;
- ``block2``..``block4``: residual blocks with 15-tap convolutions, stride 4, of 128, 128 and
  256 channels (``sf/conv2_1``, ``sf/conv3_1``, ``sf/conv4_1``): conv (strided) + BN + ReLU,
  conv (with bias, no BN), added to the shortcut, then BN + ReLU. The shortcut subsamples
  by the stride when the channels match and is a strided 1x1 conv + BN when they change.

Every convolution is SAME-padded, weights drawn He-normal (truncated), and BatchNorm has no
scale and epsilon 1e-3, as there. Maps are ``(B, time, C)``: 1 s at 16 kHz gives 4000, 1000
(after the pool), 250, 63 and 16 steps (``block1``, the pool, ``block2``..``block4``), one
``block4`` step per 1,024 samples. ``pooled`` is the global average of ``block4``.

Differences from the paper: our audio is 16 kHz mono where it used 21 kHz stereo (a ``(B, N, 2)``
input works here too: the first convolution takes any number of channels), so a step covers
64 ms instead of about 49 ms; plain BatchNorm with this library's momentum where it used batch
renormalisation with decay 0.9997; ``width`` multiplies every block's channels; and the tower
stops before the fusion with the video stream (its fractional max pool to the frame rate and
``sf/conv5_1``), which belongs to a pretext's head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

STEM = (64, 65, 4)  # channels, kernel taps, stride of block1.
POOL = 4  # max pool window and stride after block1.
BLOCKS = ((128, 15, 4), (128, 15, 4), (256, 15, 4))  # channels, taps, stride of block2..block4.
BN_EPSILON = 1e-3


def compand(waveforms, mu: float = 255.0):
  """Mu-law companding without quantisation: [-1, 1] -> [-1, 1], steep near 0."""
  return jnp.sign(waveforms) * jnp.log1p(mu * jnp.abs(waveforms)) / np.log1p(mu)


def flat_he_normal(key, shape, dtype=jnp.float32):
  """He normal (truncated, fan-in: slim's ``variance_scaling_initializer`` there) drawn as a
  (fan_in, out) matrix and reshaped: the same distribution, but XLA:CPU compiles the draw of a
  3-D kernel several times slower (sslx.models.layers.flat_lecun_normal)."""
  fan_in = int(np.prod(shape[:-1]))
  return nn.initializers.he_normal()(key, (fan_in, shape[-1]), dtype).reshape(shape)


def _conv(features, taps, stride, *, dtype, name, bias=False):
  return nn.Conv(features, (taps,), (stride,), padding="SAME", use_bias=bias, dtype=dtype,
                 kernel_init=flat_he_normal, name=name)


def _bn(*, train, momentum, dtype, name):
  return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=BN_EPSILON,
                      use_scale=False, dtype=dtype, name=name)


class ResidualBlock(nn.Module):
  """conv (strided) + BN + ReLU, conv, plus the shortcut, then BN + ReLU (shift_net's block2)."""
  features: int
  taps: int
  stride: int
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9

  @nn.compact
  def __call__(self, x, *, train: bool):
    bn = dict(train=train, momentum=self.bn_momentum, dtype=self.dtype)
    shortcut = x[:, ::self.stride]  # A SAME 1-tap convolution with this stride reads these.
    if x.shape[-1] != self.features:
      shortcut = nn.Dense(self.features, use_bias=False, dtype=self.dtype,
                          kernel_init=flat_he_normal, name="shortcut")(shortcut)
      shortcut = _bn(name="shortcut_bn", **bn)(shortcut)
    y = _conv(self.features, self.taps, self.stride, dtype=self.dtype, name="conv1")(x)
    y = nn.relu(_bn(name="bn1", **bn)(y))
    y = _conv(self.features, self.taps, 1, dtype=self.dtype, bias=True, name="conv2")(y)
    return nn.relu(_bn(name="bn", **bn)(shortcut + y))


class Backbone(nn.Module):
  """Waveforms ``(B, N)`` (or ``(B, N, channels)``) -> ``{"block1".."block4": (B, time, C),
  "pooled": (B, C)}``."""
  sample_rate: int = 16000  # The data's rate (pretexts check it); the layers do not depend on it.
  width: float = 1.0
  compress: bool = True  # Mu-law companding of the samples first, as Owens & Efros.
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9

  takes_audio = True  # A plain class attribute, not a field: callers tell audio towers by it.

  def _channels(self, channels: int) -> int:
    return max(1, int(round(channels * self.width)))

  @nn.compact
  def __call__(self, waveforms, *, train: bool):
    if waveforms.ndim not in (2, 3):
      raise ValueError(f"waveform takes waveforms (B, N) or (B, N, channels), got shape "
                       f"{waveforms.shape}: put the batch first and time second")
    x = waveforms.astype(jnp.float32)
    if x.ndim == 2:
      x = x[..., None]
    if self.compress:
      x = compand(x)
    x = x.astype(self.dtype)
    features = {}
    channels, taps, stride = STEM
    x = _conv(self._channels(channels), taps, stride, dtype=self.dtype, name="block1_conv")(x)
    x = nn.relu(_bn(train=train, momentum=self.bn_momentum, dtype=self.dtype, name="block1_bn")(x))
    features["block1"] = x
    x = nn.max_pool(x, (POOL,), (POOL,), padding="VALID")
    for i, (channels, taps, stride) in enumerate(BLOCKS):
      x = ResidualBlock(self._channels(channels), taps, stride, dtype=self.dtype,
                        bn_momentum=self.bn_momentum, name=f"block{i + 2}")(x, train=train)
      features[f"block{i + 2}"] = x
    features["pooled"] = jnp.mean(x.astype(jnp.float32), axis=1)
    return features
