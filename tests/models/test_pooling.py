import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx.models import pooling


@pytest.mark.parametrize("shape, window, strides", [
    ((2, 8, 8, 3), (3, 3), (2, 2)), ((2, 7, 9, 2), (3, 3), (2, 2)), ((1, 6, 5, 4), (2, 2), (2, 2)),
    ((2, 5, 5, 1), (3, 3), (1, 1)), ((1, 9, 8, 2), (3, 2), (3, 2))])
def test_max_pool_values_and_gradient_equal_flax_max_pool(shape, window, strides):
  rng = np.random.default_rng(sum(shape))
  # ReLU'd values hold ties (zeros) in most windows: the gradient must go to the first maximum.
  x = jnp.maximum(jnp.asarray(rng.standard_normal(shape), jnp.float32), 0.0)
  x = x.at[0, 0, :2].set(1.5)  # A tie between positive values too.
  reference = lambda x_: nn.max_pool(x_, window, strides, padding="SAME")  # noqa: E731
  own = lambda x_: pooling.max_pool(x_, window, strides)  # noqa: E731
  np.testing.assert_array_equal(own(x), reference(x))
  g = jnp.asarray(rng.standard_normal(reference(x).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda x_: jnp.sum(f(x_) * g))(x)  # noqa: E731
  np.testing.assert_array_equal(grad(own), grad(reference))


def test_max_pool_same_is_the_custom_kernel_on_cpu():
  x = jnp.zeros((1, 4, 4, 1))
  text = jax.jit(lambda x_: jax.grad(lambda y: pooling.max_pool_same(y, (3, 3), (2, 2)).sum())(x_)).lower(x).as_text()
  assert ("select_and_scatter" in text) == (jax.default_backend() != "cpu")
