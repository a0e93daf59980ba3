"""Tree comparisons for tests that fail on a missing or extra leaf, not only on a wrong value."""

import jax
import numpy as np


def assert_trees_close(a, b, *, atol=0.0, rtol=0.0):
  """Same structure (keys, nesting, leaf count), and every leaf equal within ``atol`` /
  ``rtol`` (exactly, by default)."""
  sa, sb = jax.tree.structure(a), jax.tree.structure(b)
  assert sa == sb, f"trees differ in structure:\n{sa}\nvs\n{sb}"
  for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                               jax.tree_util.tree_flatten_with_path(b)[0]):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol,
                               err_msg=f"at {jax.tree_util.keystr(path)}")
