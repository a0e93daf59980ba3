"""A small ConvNet in the spirit of RotNet's NIN blocks, sized for CPU runs.

Gidaris et al. (ICLR 2018) use Network-In-Network blocks on CIFAR-10: each block
is one spatial convolution followed by two 1x1 convolutions (BN + ReLU after
each), with max pooling after the first block and average pooling after the
others (3x3 windows, stride 2). This keeps that shape with configurable widths;
RotNet's own NIN uses 192 channels and 5x5 / 3x3 kernels, which would train at a
few images per second on a 2-core CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from sslx.models.layers import ConvBN, global_avg_pool
from sslx.models.pooling import max_pool_same


class Backbone(nn.Module):
  widths: Sequence[int] = (32, 64, 128)
  kernel_sizes: Sequence[int] = (3, 3, 3)
  dtype: Any = jnp.float32
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: "auto", "onednn", "taps", "xla".

  @nn.compact
  def __call__(self, x, *, train: bool):
    if len(self.kernel_sizes) != len(self.widths):
      raise ValueError(f"convnet: kernel_sizes {tuple(self.kernel_sizes)} and widths "
                       f"{tuple(self.widths)} must have one entry per block")
    x = x.astype(self.dtype)
    features = {}
    for i, (width, k) in enumerate(zip(self.widths, self.kernel_sizes)):
      if i == 1:
        x = max_pool_same(x, (3, 3), (2, 2))
      elif i > 1:
        x = nn.avg_pool(x, (3, 3), (2, 2), padding="SAME")
      for j, kernel in enumerate((k, 1, 1)):
        x = ConvBN(width, kernel, dtype=self.dtype, kernels=self.conv_kernels, name=f"block{i + 1}_conv{j + 1}")(x, train=train)
      features[f"block{i + 1}"] = x
    features["pooled"] = global_avg_pool(x)
    return features
