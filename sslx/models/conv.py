"""2D convolutions with kernels chosen for the backend: ``model.conv_kernels``.

XLA:CPU's convolution kernels are slow next to oneDNN's (PyTorch's) on the same CPU,
its weight-gradient kernel most of all (../shared/STACK.md; README, "Performance
against PyTorch"; benchmarks/train_step_vs_torch.py). ``Conv`` is a drop-in for
``nn.Conv`` (same parameter name and shape, so checkpoints are interchangeable)
whose ``kernels`` pick how it runs, all computing the same function (tests/models/
test_conv.py checks each against ``jax.grad`` of the plain convolution):

- "xla": ``lax.conv_general_dilated`` differentiated by JAX; the reference, and the
  choice on GPU/TPU, whose convolution kernels are fast.
- "onednn": forward, input and weight gradients by oneDNN (``sslx.models.onednn``),
  CPU and fp32 only.
- "taps": XLA's forward and input gradient; the weight gradient as one matmul per
  kernel tap, ``x_shifted^T @ g`` over the batch and all positions (``conv2d``),
  which XLA:CPU runs at matmul speed. Needs nothing beyond jax.
- "auto": "onednn" on a single CPU device where it is available, "taps" on other
  CPU setups, "xla" elsewhere.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sslx.models import onednn

DIMENSIONS = ("NHWC", "HWIO", "NHWC")
KERNELS = ("auto", "onednn", "taps", "xla")


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


def resolve_kernels(kernels: str, dtype=jnp.float32) -> str:
  """The kernels a convolution of ``dtype`` runs with (decided when the model is traced)."""
  if kernels not in KERNELS:
    raise ValueError(f"unknown model.conv_kernels {kernels!r}: use one of {KERNELS}")
  if kernels == "auto":
    if jax.default_backend() != "cpu":
      return "xla"
    # Several CPU devices partition the batch; XLA's partitioner cannot split a custom call.
    single_fp32 = jnp.dtype(dtype) == jnp.float32 and jax.device_count() == 1
    return "onednn" if single_fp32 and not onednn.unavailable_reason() else "taps"
  if kernels == "onednn":
    why = onednn.unavailable_reason() or (
        "" if jnp.dtype(dtype) == jnp.float32 else f"its kernels are fp32 and the model is {jnp.dtype(dtype)}")
    if why:
      raise ValueError(f"model.conv_kernels='onednn' cannot run: {why}")
  return kernels


class Conv(nn.Module):
  """SAME-padded 2D convolution without bias, parameters as ``nn.Conv`` (``kernel``, HWIO)."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  kernels: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    strides = tuple(self.strides)
    kernels = resolve_kernels(self.kernels, self.dtype)
    if kernels == "xla":
      return _conv(x, kernel, strides, "SAME")
    padding = (same_padding(x.shape[1], kh, strides[0]), same_padding(x.shape[2], kw, strides[1]))
    if kernels == "onednn":
      return onednn.conv2d(x, kernel, strides, padding)
    return conv2d(x, kernel, strides, padding)


class Pointwise(nn.Module):
  """1x1 convolution without bias, parameters as ``nn.Dense`` (``kernel``, (C_in, C_out)).

  ``kernels`` as in ``Conv``: "xla" is ``jnp.dot`` differentiated by JAX (the reference);
  "onednn" runs it as oneDNN's 1x1 convolution (x1.07-1.2 on the ConvNet step against XLA's
  skinny matmuls); "taps" uses ``pointwise``'s backward."""
  features: int
  kernels: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    kernels = resolve_kernels(self.kernels, self.dtype)
    if kernels == "xla":
      return jnp.dot(x, kernel)
    if kernels == "onednn":
      return onednn.conv2d(x, kernel[None, None], (1, 1), ((0, 0), (0, 0)))
    return pointwise(x, kernel)
