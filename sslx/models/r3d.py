"""R3D-18 and R(2+1)D-18 (Tran et al., CVPR 2018, "A Closer Look at Spatiotemporal Convolutions").

R3D-18 is ResNet-18 with every convolution made 3D: a 3x7x7 stem at stride
1x2x2 (no max pool), then 4 stages of 2 basic blocks of 3x3x3 convolutions
(64, 128, 256, 512 channels, times ``width``); the first block of stages 2-4
has stride 2 in T, H and W, with a 1x1x1 convolution + BN shortcut where the
shape changes. BN follows every convolution.

``conv="2plus1d"`` gives R(2+1)D-18: each t x d x d convolution becomes a
1 x d x d spatial convolution (carrying the spatial stride), BN, ReLU, then a
t x 1 x 1 temporal convolution (carrying the temporal stride), with
M = floor(t d^2 N_in N_out / (d^2 N_in + t N_out)) channels in between so the
parameter count matches the 3D convolution's (the paper's Eq. 1 choice); the
extra ReLU doubles the nonlinearities. The stem is factorised the same way,
1x7x7 then 3x1x1.

Input ``(B, T, H, W, 3)``. Features ``stem`` and ``block1``..``block4`` (one
per stage), plus ``pooled``, the global average of the last block. ``stages`` < 4
keeps only the first stages: the visual trunk of a network that fuses another
stream into the later ones (Owens & Efros's early fusion after block 2,
sslx/pretexts/audiovisual/synchronization.py).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx.models.layers import ConvBN3D, global_avg_pool3d

STAGE_SIZES = (2, 2, 2, 2)  # depth 18


def mid_channels(n_in: int, n_out: int, t: int = 3, d: int = 3) -> int:
  """R(2+1)D's intermediate channels: the (2+1)D pair has the t x d x d convolution's parameters."""
  return (t * d * d * n_in * n_out) // (d * d * n_in + t * n_out)


def conv_bn(x, features: int, t: int, d: int, strides: tuple[int, int], *, conv: str, relu: bool,
            dtype: Any, name: str, train: bool, kernels: str = "auto"):
  """A t x d x d convolution + BN (+ ReLU), strides (temporal, spatial), called in a compact module.

  ``conv="2plus1d"`` factorises it into ``{name}_spatial`` and ``{name}_temporal``.
  """
  st, ss = strides
  if conv == "3d":
    return ConvBN3D(features, (t, d, d), (st, ss, ss), relu=relu, dtype=dtype, kernels=kernels,
                    name=name)(x, train=train)
  mid = mid_channels(x.shape[-1], features, t, d)
  x = ConvBN3D(mid, (1, d, d), (1, ss, ss), dtype=dtype, kernels=kernels, name=f"{name}_spatial")(
      x, train=train)
  return ConvBN3D(features, (t, 1, 1), (st, 1, 1), relu=relu, dtype=dtype, kernels=kernels,
                  name=f"{name}_temporal")(x, train=train)


class BasicBlock(nn.Module):
  features: int
  strides: int
  conv: str
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train):
    residual = x
    s = (self.strides, self.strides)
    y = conv_bn(x, self.features, 3, 3, s, conv=self.conv, relu=True, dtype=self.dtype,
                name="conv1", train=train, kernels=self.kernels)
    y = conv_bn(y, self.features, 3, 3, (1, 1), conv=self.conv, relu=False, dtype=self.dtype,
                name="conv2", train=train, kernels=self.kernels)
    if residual.shape != y.shape:
      residual = ConvBN3D(self.features, (1, 1, 1), (self.strides,) * 3, relu=False,
                          dtype=self.dtype, name="shortcut")(residual, train=train)
    return nn.relu(residual + y)


class Backbone(nn.Module):
  width: float = 1.0
  dtype: Any = jnp.float32
  conv: str = "3d"
  stages: int = 4  # How many of the 4 stages to keep (the trunk before a fusion).
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: how the 3D convolutions run (not what).

  takes_video = True  # A plain class attribute, not a field: evaluation tells 3D from 2D by it.

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.conv not in ("3d", "2plus1d"):
      raise ValueError(f"r3d conv {self.conv!r} is not supported: use '3d' or '2plus1d'")
    if not 1 <= self.stages <= len(STAGE_SIZES):
      raise ValueError(f"r3d stages {self.stages} is outside 1..{len(STAGE_SIZES)}: set model.stages")
    channels = lambda c: max(1, int(round(c * self.width)))  # noqa: E731
    x = x.astype(self.dtype)
    features = {}
    x = conv_bn(x, channels(64), 3, 7, (1, 2), conv=self.conv, relu=True, dtype=self.dtype,
                name="stem", train=train, kernels=self.conv_kernels)
    features["stem"] = x
    for stage, num_blocks in enumerate(STAGE_SIZES[:self.stages]):
      for b in range(num_blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = BasicBlock(channels(64 * 2**stage), strides, self.conv, self.dtype, self.conv_kernels,
                       name=f"stage{stage + 1}_block{b + 1}")(x, train=train)
      features[f"block{stage + 1}"] = x
    features["pooled"] = global_avg_pool3d(x)
    return features
