"""A 2D convolution whose weight gradient is computed as matmuls, for XLA:CPU.

XLA:CPU's convolution weight-gradient kernel runs several times slower than its
forward and input-gradient convolutions (../shared/STACK.md; benchmarks/
train_step_vs_torch.py). ``conv2d`` computes the same function with a custom
VJP: the input gradient is XLA's own (the transposed convolution), the weight
gradient is one matmul per kernel tap, ``x_shifted^T @ g`` over the batch and
all positions, which XLA:CPU runs at matmul speed. Numerically it is the same
sum in another order (tests/models/test_conv.py checks it against ``jax.grad``
of the plain convolution). ``Conv`` is a drop-in for ``nn.Conv`` (same parameter
name and shape, so checkpoints are interchangeable) that uses it where
``weight_grad="taps"``; "xla" keeps the plain convolution (the reference, and
the choice on GPU/TPU, whose convolution kernels are fast).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
WEIGHT_GRADS = ("auto", "taps", "xla")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's SAME padding of one spatial axis: (low, high), the extra pixel at the high end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]]):
  """NHWC x HWIO convolution with explicit ``padding`` ((low, high) per spatial axis)."""
  return _conv(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def tap_weight_grad(x, g, kernel_shape, strides, padding):
  """d(loss)/d(kernel) = sum over batch and output positions of x_window * g, one matmul per tap."""
  kh, kw, cin, cout = kernel_shape
  n, ho, wo, _ = g.shape
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  sh, sw = strides
  g2 = g.reshape(-1, cout)
  taps = []
  for i in range(kh):
    for j in range(kw):
      window = lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin),
                         (1, sh, sw, 1))
      taps.append(jnp.dot(window.reshape(-1, cin).T, g2, preferred_element_type=jnp.float32))
  return jnp.stack(taps).reshape(kernel_shape)


def _conv2d_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: _conv(x_, kernel, strides, padding), x)
  dx = input_vjp(g)[0]
  dkernel = tap_weight_grad(x, g, kernel.shape, strides, padding).astype(kernel.dtype)
  return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


@jax.custom_vjp
def pointwise(x, kernel):
  """A 1x1 convolution, ``x @ kernel`` over the last axis (what ``nn.Dense`` without bias computes)."""
  return jnp.dot(x, kernel)


def _pointwise_fwd(x, kernel):
  return pointwise(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, g):
  x, kernel = residuals
  # Left to itself, XLA fuses the producer of g (BatchNorm's backward) into a copy that writes g
  # transposed for the weight-gradient matmul, reading its inputs out of order: 0.25 s per layer
  # at 1,024 x 32 x 32 x 32 on the 2-core CPU. The barrier makes it write g once in order.
  g = lax.optimization_barrier(g)
  dx = jnp.dot(g, kernel.T)
  dkernel = lax.dot_general(x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())))
  return dx, dkernel.astype(kernel.dtype)


pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def resolve_weight_grad(weight_grad: str) -> str:
  """"auto": "taps" on CPU, "xla" elsewhere (decided when the model is traced)."""
  if weight_grad not in WEIGHT_GRADS:
    raise ValueError(f"unknown model.conv_weight_grad {weight_grad!r}: use one of {WEIGHT_GRADS}")
  if weight_grad == "auto":
    return "taps" if jax.default_backend() == "cpu" else "xla"
  return weight_grad


class Conv(nn.Module):
  """SAME-padded 2D convolution without bias, parameters as ``nn.Conv`` (``kernel``, HWIO)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  weight_grad: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    strides = tuple(self.strides)
    if resolve_weight_grad(self.weight_grad) == "xla":
      return _conv(x, kernel, strides, "SAME")
    padding = (same_padding(x.shape[1], kh, strides[0]), same_padding(x.shape[2], kw, strides[1]))
    return conv2d(x, kernel, strides, padding)


class Pointwise(nn.Module):
  """1x1 convolution without bias, parameters as ``nn.Dense`` (``kernel``, (C_in, C_out)).

  ``weight_grad`` as in ``Conv``: "taps" (CPU under "auto") uses ``pointwise``'s backward,
  "xla" is ``jnp.dot`` differentiated by JAX (the reference)."""
  features: int
  weight_grad: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_weight_grad(self.weight_grad) == "xla":
      return jnp.dot(x, kernel)
    return pointwise(x, kernel)
