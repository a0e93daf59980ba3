"""ResNet v1 (He et al., CVPR 2016) with a CIFAR or ImageNet stem.

depth 18/34 use basic blocks, 50 uses bottlenecks; ``width`` multiplies every
stage's channels (64, 128, 256, 512). The ``cifar`` stem is one 3x3 convolution
at stride 1 with no max pooling (as in the CIFAR ResNets of most SSL papers);
the ``imagenet`` stem is a 7x7 stride-2 convolution and 3x3 stride-2 max pool.
Features: ``stem`` and ``block1``..``block4`` (one per stage), plus ``pooled``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx.models.layers import ConvBN, global_avg_pool
from sslx.models.pooling import max_pool_same

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


class BasicBlock(nn.Module):
  features: int
  strides: int
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train):
    residual = x
    conv_bn = functools.partial(ConvBN, dtype=self.dtype, kernels=self.kernels)
    y = conv_bn(self.features, 3, self.strides, name="conv1")(x, train=train)
    y = conv_bn(self.features, 3, relu=False, name="conv2")(y, train=train)
    if residual.shape != y.shape:
      residual = conv_bn(self.features, 1, self.strides, relu=False, name="shortcut")(residual, train=train)
    return nn.relu(residual + y)


class Bottleneck(nn.Module):
  features: int
  strides: int
  dtype: Any
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train):
    residual = x
    conv_bn = functools.partial(ConvBN, dtype=self.dtype, kernels=self.kernels)
    y = conv_bn(self.features, 1, name="conv1")(x, train=train)
    y = conv_bn(self.features, 3, self.strides, name="conv2")(y, train=train)
    y = conv_bn(self.features * 4, 1, relu=False, name="conv3")(y, train=train)
    if residual.shape != y.shape:
      residual = conv_bn(self.features * 4, 1, self.strides, relu=False, name="shortcut")(residual, train=train)
    return nn.relu(residual + y)


class Backbone(nn.Module):
  depth: int = 18
  stem: str = "cifar"
  width: float = 1.0
  dtype: Any = jnp.float32
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: "auto", "onednn", "taps", "xla".

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.depth not in STAGE_SIZES:
      raise ValueError(f"resnet depth {self.depth} is not supported: use one of {sorted(STAGE_SIZES)}")
    if self.stem not in ("cifar", "imagenet"):
      raise ValueError(f"resnet stem {self.stem!r} is not supported: use 'cifar' or 'imagenet'")
    block_cls = Bottleneck if self.depth >= 50 else BasicBlock
    x = x.astype(self.dtype)
    base = int(round(64 * self.width))
    features = {}
    if self.stem == "cifar":
      x = ConvBN(base, 3, dtype=self.dtype, kernels=self.conv_kernels, name="stem")(x, train=train)
    else:
      x = ConvBN(base, 7, 2, dtype=self.dtype, kernels=self.conv_kernels, name="stem")(x, train=train)
      x = max_pool_same(x, (3, 3), (2, 2))
    features["stem"] = x
    for stage, num_blocks in enumerate(STAGE_SIZES[self.depth]):
      for b in range(num_blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = block_cls(base * 2**stage, strides, self.dtype, self.conv_kernels,
                      name=f"stage{stage + 1}_block{b + 1}")(
            x, train=train)
      features[f"block{stage + 1}"] = x
    features["pooled"] = global_avg_pool(x)
    return features
