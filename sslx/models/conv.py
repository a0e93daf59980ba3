"""2D and 3D convolutions with kernels chosen for the backend: ``model.conv_kernels``.

XLA:CPU's convolution kernels are slow next to oneDNN's (PyTorch's) on the same CPU,
its weight-gradient kernel most of all (docs/performance.md; "Performance
against PyTorch"; benchmarks/train_step_vs_torch.py). ``Conv`` is a drop-in for
``nn.Conv`` (same parameter name and shape, so checkpoints are interchangeable)
whose ``kernels`` pick how it runs, all computing the same function (tests/models/
test_conv.py checks each against ``jax.grad`` of the plain convolution):

- "xla": ``lax.conv_general_dilated`` differentiated by JAX; the reference, and the
  choice on GPU/TPU, whose convolution kernels are fast.
- "onednn": forward, input and weight gradients by oneDNN (``sslx.models.onednn``),
  CPU and fp32 only.
- "taps": XLA's forward and input gradient; the weight gradient as one matmul per
  kernel tap, ``x_shifted^T @ g`` over the batch and all positions (``tap_conv``;
  27 taps for a 3x3x3 kernel), which XLA:CPU runs at matmul speed. Needs nothing
  beyond jax.
- "auto": "onednn" on a single CPU device where it is ready (``onednn.ready()``: built
  and cached by ``prepare_kernels`` at start-up, never compiled inside tracing), "taps"
  on other CPU setups, "xla" elsewhere.

The choice is a run-time setting, not part of a model's identity (every choice has the
same parameters: ``sslx.models.RUNTIME_KEYS``). Programs call ``prepare_kernels`` once
before building models (sslx-train and the benchmarks do) and ``check_kernels`` to fail in
a line before compiling; ``resolve_kernels`` is what a layer runs with when traced. All
three decide in ``_choose``.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from sslx import models
from sslx.models import onednn

DIMENSIONS = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}  # By spatial rank.
KERNELS = ("auto", "onednn", "taps", "xla")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """XLA's SAME padding of one spatial axis: (low, high), the extra pixel at the high end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def taps_touching_data(kernel, sizes, strides):
  """(the kernel's taps that can reach the map, SAME padding for them): on an axis of stride 1
  whose map is smaller than the kernel (the last R3D stages of an 8-frame clip hold 1 or 2
  frames), taps that only ever see padding add zeros and are cut; the output is unchanged and
  their gradient is zero either way. A map of 1 leaves the centre tap: a 3x3x3 convolution on
  one frame is a 3x3 one. Other axes keep the whole kernel and SAME's padding."""
  padding = []
  for axis, (size, stride) in enumerate(zip(sizes, strides)):
    k = kernel.shape[axis]
    low, high = same_padding(size, k, stride)
    if size < k and stride == 1:
      # Output o reads input o + t - low: tap t reaches data for some o in [0, size) iff
      # low - size < t < low + size.
      start, stop = max(0, low - size + 1), min(k, low + size)
      kernel = lax.slice_in_dim(kernel, start, stop, axis=axis)
      low, high = low - start, stop - 1 - low
    padding.append((low, high))
  return kernel, tuple(padding)


def _conv(x, kernel, strides, padding):
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=DIMENSIONS[x.ndim - 2])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def tap_conv(x, kernel, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]):
  """Channels-last convolution (NHWC x HWIO, or NDHWC x DHWIO) with explicit ``padding``
  ((low, high) per spatial axis), its weight gradient by taps."""
  return _conv(x, kernel, strides, padding)


def _tap_conv_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding), (x, kernel)


def tap_weight_grad(x, g, kernel_shape, strides, padding):
  """d(loss)/d(kernel) = sum over batch and output positions of x_window * g, one matmul per tap
  (2D or 3D: kernel_shape is (spatial..., C_in, C_out))."""
  *window, cin, cout = kernel_shape
  out_spatial = g.shape[1:-1]
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  g2 = g.reshape(-1, cout)
  taps = []
  for offsets in itertools.product(*(range(k) for k in window)):
    limits = [o + s * (n - 1) + 1 for o, s, n in zip(offsets, strides, out_spatial)]
    shifted = lax.slice(xp, (0, *offsets, 0), (x.shape[0], *limits, cin), (1, *strides, 1))
    taps.append(jnp.dot(shifted.reshape(-1, cin).T, g2, preferred_element_type=jnp.float32))
  return jnp.stack(taps).reshape(kernel_shape)


def _tap_conv_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x_: _conv(x_, kernel, strides, padding), x)
  dx = input_vjp(g)[0]
  dkernel = tap_weight_grad(x, g, kernel.shape, strides, padding).astype(kernel.dtype)
  return dx, dkernel


tap_conv.defvjp(_tap_conv_fwd, _tap_conv_bwd)


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


def _choose(kernels: str, platform: str, count: int, dtype, prepare: bool) -> tuple[str, str]:
  """(the kernels, why) for ``model.conv_kernels`` on ``count`` devices of ``platform``;
  ValueError for a choice that cannot run there. Only ``prepare`` lets "auto" build oneDNN:
  compiling belongs at start-up, not in a model's first trace. An explicit "onednn" asks for
  the build, so it may compile."""
  if kernels not in KERNELS:
    raise ValueError(f"unknown model.conv_kernels {kernels!r}: use one of {KERNELS}")
  dtype = jnp.dtype(dtype)
  if kernels == "onednn":
    if platform != "cpu":
      raise ValueError(f"model.conv_kernels='onednn' runs on the CPU backend, this run is on {platform}: "
                       f"use 'auto' or 'xla'")
    if count > 1:
      raise ValueError(f"model.conv_kernels='onednn' runs on one CPU device, this run has {count}: "
                       f"use 'auto' or 'taps'")
    if dtype != jnp.float32:
      raise ValueError(f"model.conv_kernels='onednn' cannot run: its kernels are fp32 and the model is "
                       f"{dtype}: use 'auto' or 'taps'")
    why = onednn.prepare()
    if why:
      raise ValueError(f"model.conv_kernels='onednn' cannot run: {why}; or set model.conv_kernels to 'taps' or 'xla'")
    return kernels, "model.conv_kernels"
  if kernels != "auto":
    return kernels, "model.conv_kernels"
  if platform != "cpu":
    return "xla", f"auto: {platform} backend"
  if count > 1:  # Several devices partition the batch; XLA's partitioner cannot split a custom call.
    return "taps", f"auto: {count} CPU devices; oneDNN runs on one"
  if dtype != jnp.float32:
    return "taps", f"auto: a {dtype} model; oneDNN's kernels are fp32"
  if prepare:
    why = onednn.prepare()
    if why:
      return "taps", f"auto: oneDNN unavailable: {why}"
  elif not onednn.ready():
    return "taps", "auto: oneDNN not built yet; conv.prepare_kernels builds it"
  return "onednn", "auto: one CPU device, oneDNN ready"


def _line(kernels, devices, dtype, prepare: bool) -> str:
  if kernels is not None and not isinstance(kernels, str):  # A whole model config.
    kernels, dtype = models.conv_kernels(kernels), kernels.get("dtype", dtype)
  if kernels is None:
    return "conv kernels: xla (the backbone has no model.conv_kernels)"
  devices = list(devices)
  if not devices:
    raise ValueError("no devices to run the convolutions on: pass the run's devices (jax.devices())")
  chosen, why = _choose(kernels, devices[0].platform, len(devices), dtype, prepare)
  return f"conv kernels: {chosen} ({why})"


def prepare_kernels(kernels, devices, dtype=jnp.float32) -> str:
  """Builds (or loads from its cache) what ``model.conv_kernels`` needs on ``devices``, once,
  before anything is traced; returns one line saying which kernels the run uses and why.
  ``kernels``: the choice, or the model config (its conv_kernels and dtype). ValueError for a
  choice that cannot run there (``check_kernels``)."""
  return _line(kernels, devices, dtype, prepare=True)


def check_kernels(kernels, devices, dtype=jnp.float32) -> str:
  """``prepare_kernels``'s line without building anything for "auto": ValueError for an unknown
  choice, or "onednn" on several devices, another backend or a non-fp32 model."""
  return _line(kernels, devices, dtype, prepare=False)


def resolve_kernels(kernels: str, dtype=jnp.float32) -> str:
  """The kernels a convolution of ``dtype`` runs with (decided when the model is traced, on this
  process's devices)."""
  return _choose(kernels, jax.default_backend(), jax.device_count(), dtype, prepare=False)[0]


class Conv(nn.Module):
  """SAME-padded 2D or 3D convolution without bias (by ``len(kernel_size)``), parameters as
  ``nn.Conv`` (``kernel``, HWIO / DHWIO)."""
  features: int
  kernel_size: tuple[int, ...]
  strides: tuple[int, ...] | None = None  # None: 1 on every axis.
  kernels: str = "auto"
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x):
    window = tuple(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, (*window, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    strides = tuple(self.strides) if self.strides is not None else (1,) * len(window)
    if len(strides) != len(window) or x.ndim != len(window) + 2:
      raise ValueError(f"Conv with a {len(window)}D kernel {window} got strides {strides} and input "
                       f"{x.shape}: give one stride per kernel axis and (N, *spatial, C) input")
    kernels = resolve_kernels(self.kernels, self.dtype)
    sizes = x.shape[1:-1]
    if kernels == "onednn":
      used, padding = taps_touching_data(kernel, sizes, strides)
      if all(size >= k for size, k in zip(sizes, used.shape[:-2])):
        return onednn.conv(x, used, strides, padding)
      # oneDNN 2023.2 corrupts the heap on maps smaller than the kernel (a 3x3 kernel on a 2x1 or
      # 2x2 map, found on SyncNet's MFCC tower; tests/models/test_conv.py): XLA's kernel there.
      kernels = "xla"
    if kernels == "xla":
      return _conv(x, kernel, strides, "SAME")
    padding = tuple(same_padding(size, k, s) for size, k, s in zip(sizes, window, strides))
    return tap_conv(x, kernel, strides, padding)


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
      return onednn.conv(x, kernel[None, None], (1, 1), ((0, 0), (0, 0)))
    return pointwise(x, kernel)
