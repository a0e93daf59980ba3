"""SyncNet's lip tower (Chung & Zisserman, "Out of time: automated lip sync in the wild", ACCV
2016 workshops): a 2D ConvNet over a short clip whose frames are stacked on the channel axis,
so its first convolution sees all of them at once (early fusion in time).

The paper feeds 5 grey mouth crops (0.2 s at 25 fps, 111 x 111 x 5) to a VGG-M-like tower:
conv1 96 3x3 + pool, conv2 256 5x5 + pool, conv3-5 (3x3, 512) + pool, fc6 (6x6, 512) and fc7
(256, the embedding; in sslx the head's). Here four blocks, each a convolution + BN + ReLU:

- ``block1``: 96 x width, 3x3, then 3x3 max pool stride 2;
- ``block2``: 256 x width, 5x5, then 3x3 max pool stride 2;
- ``block3``: two 3x3 convolutions of 256 x width, then 3x3 max pool stride 2;
- ``block4``: 512 x width, 3x3 (the paper's fc6 is a convolution over the whole last map; the
  head pools this map instead, so any crop size works).

``grey=True`` (the paper's) averages the colour channels before stacking; the public SyncNet
model (syncnet_python) takes colour frames into a first 3D convolution that spans all five,
which is the same as ``grey=False``. Maps keep a time axis of length 1, ``(B, 1, H', W', C)``,
so the tower is a video backbone like c3d and r3d (``takes_video``) and the video evaluations
read it as they read them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx.models.layers import ConvBN, global_avg_pool
from sslx.models.pooling import max_pool_same

CHANNELS = (96, 256, 256, 512)


class Backbone(nn.Module):
  """Clips ``(B, T, H, W, C)`` -> ``{"block1".."block4": (B, 1, H', W', C'), "pooled": (B, C')}``."""
  width: float = 1.0
  grey: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: "auto", "onednn", "taps", "xla".

  takes_video = True  # A plain class attribute, not a field: evaluation tells 3D from 2D by it.

  @nn.compact
  def __call__(self, clips, *, train: bool):
    if clips.ndim != 5:
      raise ValueError(f"stacked_frames takes clips (B, T, H, W, C), got shape {clips.shape}: "
                       f"give the model a video config (configs.base_video or base_av)")
    x = clips.mean(axis=-1, keepdims=True) if self.grey else clips
    b, t, h, w, c = x.shape
    x = jnp.transpose(x, (0, 2, 3, 1, 4)).reshape(b, h, w, t * c).astype(self.dtype)
    channels = [max(1, int(round(n * self.width))) for n in CHANNELS]

    def conv(features, kernel, name):
      return ConvBN(features, kernel, dtype=self.dtype, bn_momentum=self.bn_momentum,
                    kernels=self.conv_kernels, name=name)

    features = {}
    x = conv(channels[0], 3, "block1_conv1")(x, train=train)
    features["block1"] = x
    x = conv(channels[1], 5, "block2_conv1")(max_pool_same(x, (3, 3), (2, 2)), train=train)
    features["block2"] = x
    x = max_pool_same(x, (3, 3), (2, 2))
    x = conv(channels[2], 3, "block3_conv1")(x, train=train)
    x = conv(channels[2], 3, "block3_conv2")(x, train=train)
    features["block3"] = x
    x = conv(channels[3], 3, "block4_conv1")(max_pool_same(x, (3, 3), (2, 2)), train=train)
    features["block4"] = x
    pooled = global_avg_pool(x)
    features = {k: v[:, None] for k, v in features.items()}
    features["pooled"] = pooled
    return features
