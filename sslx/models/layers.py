"""Small building blocks shared by the backbones."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from sslx.models.conv import Conv, Pointwise


class ConvBN(nn.Module):
  """Convolution (no bias), BatchNorm, optional ReLU.

  A stride-1 1x1 convolution is a matmul over channels (``sslx.models.conv.Pointwise``,
  parameters as ``nn.Dense``: a (C_in, C_out) kernel), so XLA:CPU computes its weight
  gradient as a plain matmul instead of its slow convolution weight-gradient kernel (see
  docs/performance.md; about 1.4x faster end to end on the ConvNet here). Other convolutions
  go through ``sslx.models.conv.Conv``. ``kernels`` (``model.conv_kernels``) picks how both
  run: "auto" = oneDNN's kernels (or the matmul formulations) on CPU (benchmarks/train_step_vs_torch.py),
  XLA's elsewhere.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  relu: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.kernel_size == 1 and self.strides == 1:
      x = Pointwise(self.features, kernels=self.kernels, dtype=self.dtype, name="conv")(x)
    else:
      x = Conv(self.features, (self.kernel_size, self.kernel_size), (self.strides, self.strides),
               kernels=self.kernels, dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                     name="bn")(x)
    return nn.relu(x) if self.relu else x


def global_avg_pool(x):
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def dense_bn_relu(x, features: int, *, name: str, train: bool):
  """Dense, BatchNorm, ReLU, called inside a compact module (parameters ``name``, ``name_bn``)."""
  x = nn.Dense(features, name=name)(x)
  return nn.relu(nn.BatchNorm(use_running_average=not train, name=f"{name}_bn")(x))


def flatten_last_block(features: dict):
  """The deepest block's map of a backbone's features, flattened per example (fc6's input)."""
  names = sorted((k for k in features if k.startswith("block")), key=lambda k: int(k[len("block"):]))
  last = features[names[-1]]
  return last.reshape(last.shape[0], -1).astype(jnp.float32)


FRAME_FEATURES = ("last_block", "pooled")


def frame_feature_vector(features: dict, kind: str):
  """Per frame of a siamese (multi-branch) head: the deepest block flattened (``"last_block"``,
  keeps where things are, like CaffeNet's pool5) or the global average (``"pooled"``)."""
  if kind not in FRAME_FEATURES:
    raise ValueError(f"unknown frame_features {kind!r}: use one of {FRAME_FEATURES}")
  if kind == "pooled":
    return features["pooled"].astype(jnp.float32)
  return flatten_last_block(features)


def flat_lecun_normal(key, shape, dtype=jnp.float32):
  """LeCun normal (Flax's default conv init) drawn as a (fan_in, out) matrix and reshaped:
  the same distribution, but XLA:CPU compiles the draw of a 5-D kernel about 5x slower
  than a 2-D one (R3D's init: 50 s -> 11 s on the 2-core CPU)."""
  fan_in = int(np.prod(shape[:-1]))
  return nn.initializers.lecun_normal()(key, (fan_in, shape[-1]), dtype).reshape(shape)


class ConvBN3D(nn.Module):
  """3D convolution (no bias), BatchNorm, optional ReLU, on ``(B, T, H, W, C)``.

  A 1x1x1 convolution is a Dense layer over channels, as in ``ConvBN``; with
  SAME padding a strided one reads exactly the voxels at multiples of the
  stride, so it is a strided slice and then that Dense layer (R3D's shortcuts).
  Other convolutions go through ``sslx.models.conv.Conv``, whose ``kernels``
  (``model.conv_kernels``) pick oneDNN's 3D kernels on one CPU device, as in 2D.
  """
  features: int
  kernel_size: tuple[int, int, int] = (3, 3, 3)
  strides: tuple[int, int, int] = (1, 1, 1)
  relu: bool = True
  dtype: Any = jnp.float32
  bn_momentum: float = 0.9
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    if tuple(self.kernel_size) == (1, 1, 1):
      st, sh, sw = self.strides
      x = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="conv")(
          x[:, ::st, ::sh, ::sw])
    else:
      x = Conv(self.features, tuple(self.kernel_size), tuple(self.strides), kernels=self.kernels,
               dtype=self.dtype, kernel_init=flat_lecun_normal, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, dtype=self.dtype,
                     name="bn")(x)
    return nn.relu(x) if self.relu else x


def global_avg_pool3d(x):
  """``(B, T, H, W, C)`` -> ``(B, C)`` in float32."""
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))
