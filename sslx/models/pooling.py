"""Max pooling as an elementwise maximum of strided slices, with a cheap backward pass, for XLA:CPU.

``flax.linen.max_pool`` lowers to XLA's reduce-window, whose gradient (select-and-scatter, a
variadic reduce-window over index arrays) took about 0.65 s of a 3.4 s ConvNet train step on
the 2-core CPU (benchmarks/step_profile.py; README, issue #7). Here the forward is
the maximum over the window's strided slices of the padded input and the custom VJP sends each
output's gradient to the first position of its window that holds the maximum, which is what
select-and-scatter does: forward and gradient are bit-identical to ``nn.max_pool``'s
(tests/models/test_pooling.py), at about a third of the time (0.23 s against 0.73 s for
forward + backward of the ConvNet's first pooling at 1,024 x 32 x 32 x 32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sslx.models.conv import same_padding


def _windows(x, window: tuple[int, int], strides: tuple[int, int]):
  """The kh * kw strided slices of the -inf SAME-padded ``x`` (NHWC), one per window position."""
  (kh, kw), (sh, sw) = window, strides
  n, h, w, c = x.shape
  (pt, pb), (pl, pr) = same_padding(h, kh, sh), same_padding(w, kw, sw)
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-jnp.inf)
  ho, wo = -(-h // sh), -(-w // sw)
  return [lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def max_pool(x, window: tuple[int, int], strides: tuple[int, int]):
  """SAME-padded max pooling of NHWC ``x``; the same values and gradient as ``nn.max_pool``."""
  return functools.reduce(jnp.maximum, _windows(x, window, strides))


def _max_pool_fwd(x, window, strides):
  y = max_pool(x, window, strides)
  return y, (x, y)


def _max_pool_bwd(window, strides, residuals, g):
  x, y = residuals
  windows, windows_vjp = jax.vjp(lambda x_: _windows(x_, window, strides), x)
  taken = jnp.zeros(y.shape, bool)
  parts = []
  for values in windows:  # In window order: the first maximum gets the gradient, as in XLA.
    hit = (values == y) & ~taken
    taken = taken | hit
    parts.append(jnp.where(hit, g, jnp.zeros_like(g)))
  return windows_vjp(parts)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_same(x, window: tuple[int, int], strides: tuple[int, int]):
  """SAME max pooling: ``max_pool`` on CPU, XLA's reduce-window elsewhere (its kernels are fast
  on GPU/TPU). Both give the same values and gradients, so the choice needs no setting."""
  if jax.default_backend() == "cpu":
    return max_pool(x, tuple(window), tuple(strides))
  return lax.reduce_window(x, -jnp.inf, lax.max, (1, *window, 1), (1, *strides, 1), "SAME")
