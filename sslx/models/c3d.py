"""C3D (Tran et al., ICCV 2015) with BatchNorm, the video backbone of VCOP (Xu et al., CVPR 2019).

Eight 3x3x3 convolutions at stride 1 (conv1a; conv2a; conv3a/b; conv4a/b;
conv5a/b with 64, 128, 256, 512, 512 channels), each followed by BatchNorm and
ReLU as in VCOP's version. pool1 is 1x2x2 so that temporal information is not
merged too early; pool2-pool5 are 2x2x2 max pools. fc6/fc7 belong to the
pretext heads, not here.

Input ``(B, T, H, W, 3)``. Features ``block1``..``block5``: each conv group
followed by its pool, so ``block5`` is pool5's output, C3D's fc6 input (SAME
padding gives the paper's 512x1x4x4 for 16x112x112 clips, whose pool5 pads
1 in H and W, and lets small clips through). ``pooled`` averages ``block5``;
VCOP instead replaces pool5 by a global average of conv5b.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from sslx.models.layers import ConvBN3D, global_avg_pool3d

# (channels of each conv, pool window after the group), one entry per block.
GROUPS = (((64,), (1, 2, 2)), ((128,), (2, 2, 2)), ((256, 256), (2, 2, 2)),
          ((512, 512), (2, 2, 2)), ((512, 512), (2, 2, 2)))


class Backbone(nn.Module):
  width: float = 1.0
  dtype: Any = jnp.float32
  conv_kernels: str = "auto"  # sslx.models.conv.KERNELS: how the 3D convolutions run (not what).

  takes_video = True  # A plain class attribute, not a field: evaluation tells 3D from 2D by it.

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.astype(self.dtype)
    features = {}
    for i, (channels, window) in enumerate(GROUPS):
      for j, c in enumerate(channels):
        x = ConvBN3D(max(1, int(round(c * self.width))), dtype=self.dtype, kernels=self.conv_kernels,
                     name=f"conv{i + 1}{'ab'[j]}")(x, train=train)
      x = nn.max_pool(x, window, window, padding="SAME")
      features[f"block{i + 1}"] = x
    features["pooled"] = global_avg_pool3d(x)
    return features
