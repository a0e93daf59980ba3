"""A small convolutional decoder for reconstruction pretexts, and the encoder-decoder around a backbone.

The backbone is the encoder; ``Decoder`` turns one of its feature maps (the
deepest block by default) back into an RGB image of a requested size: an
optional channel-wise fully connected layer (Pathak et al. 2016, so that every
decoder unit sees the whole encoded image), then x2 upsampling stages (nearest
resize + 3x3 conv, or a 4x4 stride-2 transposed conv; BatchNorm and ReLU after
each), a resize when the ratio is not a power of two, and a 3x3 conv to 3
channels with a sigmoid (or linear) output.

No skip connections by default: with skips from the shallow blocks a decoder
can copy what it sees (the context around a hole, the noisy pixels) instead of
having the deep features describe it, which is what the pretext is for.
``skips=True`` concatenates a shallower block wherever its resolution matches.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from sslx.models import block_names
from sslx.models.layers import ConvBN


def _pair(size) -> tuple[int, int]:
  return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ChannelwiseDense(nn.Module):
  """Each channel's h x w map fully connected to a new h x w map, channels kept apart
  (Pathak et al.: m * (hw)^2 weights instead of m^2 * (hw)^2 for a full layer)."""

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,)),
                        (c, h * w, h * w), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c, h * w), jnp.float32)
    flat = x.reshape(b, h * w, c).astype(jnp.float32)
    out = jnp.einsum("bpc,cpq->bqc", flat, kernel) + bias.T[None]
    return out.reshape(b, h, w, c).astype(x.dtype)


class Decoder(nn.Module):
  """Backbone features dict -> (B, H, W, 3) image.

  ``size``: the output (H, W), or an int for square; the call's ``size``
  argument overrides it. ``block``: which feature map to decode (None: the
  deepest). ``widths``: channels of the upsampling stages in order (the last
  is reused when there are more stages). ``output``: "sigmoid" or "linear".
  """
  size: Any = None
  block: str | None = None
  widths: Sequence[int] = (64, 32, 16)
  upsample: str = "resize"  # or "transpose".
  channel_fc: bool = False
  skips: bool = False
  output: str = "sigmoid"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features, *, train: bool, size=None):
    size = size if size is not None else self.size
    if size is None:
      raise ValueError("decoder: no output size: give Decoder(size=...) or call it with size=(H, W)")
    if self.upsample not in ("resize", "transpose"):
      raise ValueError(f"decoder: unknown upsample {self.upsample!r}: use 'resize' or 'transpose'")
    if self.output not in ("sigmoid", "linear"):
      raise ValueError(f"decoder: unknown output {self.output!r}: use 'sigmoid' or 'linear'")
    height, width = _pair(size)
    names = block_names(features)
    name = self.block or names[-1]
    x = features[name].astype(self.dtype)
    shallower = [features[n] for n in names[:names.index(name)]] if self.skips else []
    if self.channel_fc:
      x = ChannelwiseDense(name="channel_fc")(x)
      # A stride-1 (1x1) convolution then mixes the channels, as in the paper.
      x = ConvBN(x.shape[-1], 1, dtype=self.dtype, name="channel_mix")(x, train=train)
    ratio = max(height / x.shape[1], width / x.shape[2])
    stages = max(0, math.ceil(math.log2(ratio) - 1e-9)) if ratio > 1 else 0
    for i in range(stages):
      features_out = self.widths[min(i, len(self.widths) - 1)]
      if self.upsample == "resize":
        x = jax.image.resize(x, (x.shape[0], 2 * x.shape[1], 2 * x.shape[2], x.shape[3]), "nearest")
        x = ConvBN(features_out, 3, dtype=self.dtype, name=f"up{i + 1}")(x, train=train)
      else:
        x = nn.ConvTranspose(features_out, (4, 4), (2, 2), padding="SAME", use_bias=False,
                             dtype=self.dtype, name=f"up{i + 1}_conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype,
                                 name=f"up{i + 1}_bn")(x))
      for skip in shallower:
        if skip.shape[1:3] == x.shape[1:3]:
          x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    if x.shape[1:3] != (height, width):
      x = jax.image.resize(x, (x.shape[0], height, width, x.shape[3]), "linear")
    x = nn.Conv(3, (3, 3), padding="SAME", dtype=jnp.float32, name="to_rgb")(x.astype(jnp.float32))
    return nn.sigmoid(x) if self.output == "sigmoid" else x


class EncoderDecoder(nn.Module):
  """``inputs["image"]`` -> ({"reconstruction" or "logits": (B, H, W, 3)}, backbone features).

  The decoder's output has the input's size. With ``logits=True`` (a linear
  decoder for a cross-entropy loss) the outputs hold the logits and their
  sigmoid as the reconstruction.
  """
  backbone: nn.Module
  decoder: Decoder
  logits: bool = False

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    image = inputs["image"]
    features = self.backbone(image, train=train)
    out = self.decoder(features, train=train, size=image.shape[1:3])
    if self.logits:
      return {"logits": out, "reconstruction": nn.sigmoid(out)}, features
    return {"reconstruction": out}, features
