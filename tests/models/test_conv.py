import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx.models import conv


def _reference(x, kernel, strides):
  return jax.lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=conv.DIMENSIONS)


@pytest.mark.parametrize("size, kernel_size, cin, cout, stride", [
    (8, 3, 4, 5, 1), (9, 3, 3, 6, 2), (8, 7, 3, 4, 2), (7, 1, 5, 3, 2), (6, 5, 2, 3, 1), (10, 4, 3, 2, 3)])
def test_tap_weight_gradient_equals_jax_grad_of_the_plain_convolution(size, kernel_size, cin, cout, stride):
  rng = np.random.default_rng(size * kernel_size + stride)
  x = jnp.asarray(rng.standard_normal((3, size, size + 1, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, cin, cout)), jnp.float32)
  strides = (stride, stride)
  padding = (conv.same_padding(size, kernel_size, stride), conv.same_padding(size + 1, kernel_size, stride))
  out = conv.conv2d(x, kernel, strides, padding)
  reference = _reference(x, kernel, strides)
  np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-5)
  g = jnp.asarray(rng.standard_normal(reference.shape), jnp.float32)
  loss = lambda f: lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
  dx, dk = jax.grad(loss(lambda x_, k_: conv.conv2d(x_, k_, strides, padding)), argnums=(0, 1))(x, kernel)
  rx, rk = jax.grad(loss(lambda x_, k_: _reference(x_, k_, strides)), argnums=(0, 1))(x, kernel)
  np.testing.assert_array_equal(dx, rx)  # The input gradient is XLA's own.
  # The weight gradient is the same sum in another order: fp32 rounding only.
  scale = float(jnp.max(jnp.abs(rk)))
  assert float(jnp.max(jnp.abs(dk - rk))) / scale < 1e-5


def test_conv_module_is_a_drop_in_for_nn_conv():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 3)), jnp.float32)
  for strides in ((1, 1), (2, 2)):
    plain = nn.Conv(4, (3, 3), strides, padding="SAME", use_bias=False)
    params = plain.init(jax.random.PRNGKey(0), x)
    for weight_grad in ("taps", "xla", "auto"):
      module = conv.Conv(4, (3, 3), strides, weight_grad=weight_grad)
      assert jax.tree.map(jnp.shape, module.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, params)
      np.testing.assert_allclose(module.apply(params, x), plain.apply(params, x), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="unknown model.conv_weight_grad 'fast'"):
    conv.Conv(4, (3, 3), weight_grad="fast").init(jax.random.PRNGKey(0), x)


def test_pointwise_gradients_equal_jax_grad_of_the_plain_matmul():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 5, 6, 7)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((7, 4)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((3, 5, 6, 4)), jnp.float32)
  np.testing.assert_array_equal(conv.pointwise(x, kernel), jnp.dot(x, kernel))
  loss = lambda f: lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
  dx, dk = jax.grad(loss(conv.pointwise), argnums=(0, 1))(x, kernel)
  rx, rk = jax.grad(loss(jnp.dot), argnums=(0, 1))(x, kernel)
  np.testing.assert_allclose(dx, rx, rtol=1e-6, atol=1e-5)
  assert float(jnp.max(jnp.abs(dk - rk))) / float(jnp.max(jnp.abs(rk))) < 1e-5


def test_pointwise_module_is_a_drop_in_for_nn_dense():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5, 3)), jnp.float32)
  dense = nn.Dense(4, use_bias=False)
  params = dense.init(jax.random.PRNGKey(0), x)
  for weight_grad in ("taps", "xla", "auto"):
    module = conv.Pointwise(4, weight_grad=weight_grad)
    own = module.init(jax.random.PRNGKey(0), x)
    # Same names, shapes and initial values: checkpoints of either load into the other.
    jax.tree.map(np.testing.assert_array_equal, own, params)
    np.testing.assert_allclose(module.apply(params, x), dense.apply(params, x), rtol=1e-6, atol=1e-6)
