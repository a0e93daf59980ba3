import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslx import losses


def test_softmax_xent_known_values():
  logits = jnp.array([[0.0, 0.0], [np.log(3.0), 0.0]])
  labels = jnp.array([0, 1])
  per_example = losses.softmax_xent(logits=logits, labels=labels, reduction=False)
  np.testing.assert_allclose(per_example, [np.log(2.0), np.log(4.0)], rtol=1e-6)
  np.testing.assert_allclose(losses.softmax_xent(logits=logits, labels=labels),
                             (np.log(2.0) + np.log(4.0)) / 2, rtol=1e-6)


def test_softmax_xent_matches_optax_and_soft_labels():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 5, size=8))
  expected = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  np.testing.assert_allclose(losses.softmax_xent(logits=logits, labels=labels, reduction=False),
                             expected, rtol=1e-5)
  one_hot = jax.nn.one_hot(labels, 5)
  np.testing.assert_allclose(losses.softmax_xent_soft(logits=logits, targets=one_hot, reduction=False),
                             expected, rtol=1e-5)


def test_soft_xent_uniform_target_known_value():
  logits = jnp.zeros((3, 4))
  targets = jnp.full((3, 4), 0.25)
  np.testing.assert_allclose(losses.softmax_xent_soft(logits=logits, targets=targets), np.log(4.0),
                             rtol=1e-6)


def test_sigmoid_xent_known_values():
  logits = jnp.array([0.0, 2.0, -1.0])
  labels = jnp.array([1.0, 0.0, 0.0])
  expected = [np.log(2.0), np.log1p(np.exp(2.0)), np.log1p(np.exp(-1.0))]
  np.testing.assert_allclose(losses.sigmoid_xent(logits=logits, labels=labels, reduction=False),
                             expected, rtol=1e-6)
  # Extreme logits stay finite.
  assert np.isfinite(losses.sigmoid_xent(logits=jnp.array([1e4, -1e4]), labels=jnp.array([0.0, 1.0])))


def test_sigmoid_xent_sums_trailing_axes():
  logits = jnp.zeros((2, 3, 4))
  per_example = losses.sigmoid_xent(logits=logits, labels=jnp.ones((2, 3, 4)), reduction=False)
  np.testing.assert_allclose(per_example, [12 * np.log(2.0)] * 2, rtol=1e-6)


def test_weights_mask_padding():
  logits = jnp.array([[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  masked = losses.accuracy(logits=logits, labels=labels, weights=jnp.array([1.0, 1.0, 0.0]))
  assert float(masked) == 1.0
  assert float(losses.accuracy(logits=logits, labels=labels)) == pytest.approx(2 / 3)
  full = losses.softmax_xent(logits=logits[:2], labels=labels[:2])
  np.testing.assert_allclose(
      losses.softmax_xent(logits=logits, labels=labels, weights=jnp.array([1.0, 1.0, 0.0])), full, rtol=1e-6)


def _decreases(loss_of_params, params, steps=20, lr=0.1):
  tx = optax.sgd(lr)
  opt_state = tx.init(params)
  start = float(loss_of_params(params))
  for _ in range(steps):
    grads = jax.grad(loss_of_params)(params)
    updates, opt_state = tx.update(grads, opt_state)
    params = optax.apply_updates(params, updates)
  return start, float(loss_of_params(params))


@pytest.mark.parametrize("name", ["softmax_xent", "softmax_xent_soft", "sigmoid_xent", "triplet_semihard",
                                  "l2_loss"])
def test_loss_decreases_under_gradient_steps(name):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 3, size=32))
  w0 = {"w": jnp.asarray(rng.normal(size=(6, 3)) * 0.1, jnp.float32)}
  if name == "softmax_xent":
    fn = lambda p: losses.softmax_xent(logits=x @ p["w"], labels=labels)  # noqa: E731
  elif name == "softmax_xent_soft":
    targets = jax.nn.softmax(jnp.asarray(rng.normal(size=(32, 3)), jnp.float32))
    fn = lambda p: losses.softmax_xent_soft(logits=x @ p["w"], targets=targets)  # noqa: E731
  elif name == "triplet_semihard":
    fn = lambda p: losses.triplet_semihard(embeddings=x @ p["w"], labels=labels, margin=1.0)  # noqa: E731
  elif name == "l2_loss":
    target = jnp.asarray(rng.normal(size=(32, 3)), jnp.float32)
    fn = lambda p: losses.l2_loss(predictions=x @ p["w"], targets=target)  # noqa: E731
  else:
    binary = jax.nn.one_hot(labels, 3)
    fn = lambda p: losses.sigmoid_xent(logits=x @ p["w"], labels=binary)  # noqa: E731
  # The triplet loss's gradients are small at these tiny initial embeddings.
  start, end = _decreases(fn, w0, lr=1.0 if name == "triplet_semihard" else 0.1)
  assert end < start - 0.05, (start, end)


def test_losses_jit_and_keyword_only():
  logits, labels = jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32)
  assert jax.jit(lambda a, b: losses.softmax_xent(logits=a, labels=b))(logits, labels).shape == ()
  with pytest.raises(TypeError):
    losses.softmax_xent(logits, labels)  # noqa


def _triplet_reference(x, labels, margin):
  """Direct loops: semi-hard negative per (anchor, positive), else the farthest negative."""
  dist = ((x[:, None] - x[None]) ** 2).sum(-1)
  values = []
  for a in range(len(x)):
    for p in range(len(x)):
      if p == a or labels[p] != labels[a]:
        continue
      negatives = [n for n in range(len(x)) if labels[n] != labels[a]]
      farther = [dist[a, n] for n in negatives if dist[a, n] > dist[a, p]]
      d_an = min(farther) if farther else max(dist[a, n] for n in negatives)
      values.append(max(dist[a, p] - d_an + margin, 0.0))
  return np.mean(values)


def test_triplet_semihard_matches_direct_loops():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(12, 4)).astype(np.float32)
  labels = np.repeat(np.arange(4), 3)
  got = losses.triplet_semihard(embeddings=jnp.asarray(x), labels=jnp.asarray(labels), margin=0.5)
  np.testing.assert_allclose(got, _triplet_reference(x, labels, 0.5), rtol=1e-4)
  # Well separated clusters: zero loss.
  separated = np.repeat(np.eye(4, dtype=np.float32) * 10, 3, axis=0)
  assert float(losses.triplet_semihard(embeddings=jnp.asarray(separated), labels=jnp.asarray(labels))) == 0.0


def test_l2_loss_known_values():
  pred = jnp.array([[1.0, 2.0], [0.0, 0.0]])
  target = jnp.array([[0.0, 0.0], [0.0, 3.0]])
  np.testing.assert_allclose(losses.l2_loss(predictions=pred, targets=target, reduction=False), [5.0, 9.0])
  np.testing.assert_allclose(losses.l2_loss(predictions=pred, targets=target), 7.0)
