import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sslx import losses
from tests.conftest import with_xla_flags


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


def test_classification_is_softmax_xent_and_accuracy():
  logits = jnp.array([[5.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
  labels = jnp.array([0, 1, 1])
  value, metrics = losses.classification(logits=logits, labels=labels)
  assert set(metrics) == {"accuracy"}
  np.testing.assert_array_equal(value, losses.softmax_xent(logits=logits, labels=labels))
  assert float(metrics["accuracy"]) == pytest.approx(2 / 3)
  weights = jnp.array([1.0, 1.0, 0.0])
  value, metrics = losses.classification(logits=logits, labels=labels, weights=weights)
  np.testing.assert_array_equal(value, losses.softmax_xent(logits=logits, labels=labels, weights=weights))
  assert float(metrics["accuracy"]) == 1.0
  per_example, metrics = losses.classification(logits=logits, labels=labels, reduction=False)
  np.testing.assert_array_equal(per_example, losses.softmax_xent(logits=logits, labels=labels, reduction=False))
  np.testing.assert_array_equal(metrics["accuracy"], [1.0, 1.0, 0.0])
  with pytest.raises(TypeError):
    losses.classification(logits, labels)  # noqa


def test_binary_classification_is_sigmoid_xent_and_the_sign_of_the_logit():
  logits = jnp.array([2.0, -1.0, 0.5, -3.0])
  labels = jnp.array([1, 0, 0, 1])
  value, metrics = losses.binary_classification(logits=logits, labels=labels)
  np.testing.assert_allclose(value, losses.sigmoid_xent(logits=logits, labels=labels.astype(jnp.float32)))
  assert float(metrics["accuracy"]) == pytest.approx(0.5)
  weights = jnp.array([1.0, 1.0, 0.0, 0.0])
  _, metrics = losses.binary_classification(logits=logits, labels=labels, weights=weights)
  assert float(metrics["accuracy"]) == 1.0
  _, metrics = losses.binary_classification(logits=logits, labels=labels, reduction=False)
  np.testing.assert_array_equal(metrics["accuracy"], [1.0, 1.0, 0.0, 0.0])


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


def test_masked_l2_and_l1_average_over_the_mask_only():
  pred = jnp.zeros((2, 2, 2, 3))
  target = jnp.ones((2, 2, 2, 3)) * jnp.array([1.0, 2.0])[:, None, None, None]
  mask = jnp.zeros((2, 2, 2, 1)).at[:, 0, 0].set(1.0)  # One pixel of four, all channels.
  target = target.at[:, 1:].set(100.0)  # Unmasked errors must not count.
  np.testing.assert_allclose(losses.masked_l2(predictions=pred, targets=target, mask=mask, reduction=False),
                             [1.0, 4.0])
  np.testing.assert_allclose(losses.masked_l1(predictions=pred, targets=target, mask=mask, reduction=False),
                             [1.0, 2.0])
  # Weights in the mask make a weighted mean; no mask is the plain mean squared error.
  weighted = mask.at[:, 0, 1].set(3.0)
  np.testing.assert_allclose(losses.masked_l2(predictions=pred, targets=target.at[:, 0, 1].set(0.0),
                                              mask=weighted, reduction=False), [0.25, 1.0])
  np.testing.assert_allclose(losses.masked_l2(predictions=pred, targets=jnp.full((2, 2, 2, 3), 2.0)), 4.0)
  # An empty mask gives 0, not NaN.
  assert float(losses.masked_l2(predictions=pred, targets=target, mask=jnp.zeros_like(mask))) == 0.0


def test_gan_losses_known_values():
  real, fake = jnp.array([0.0, 2.0]), jnp.array([0.0, -1.0])
  d = losses.gan_discriminator_loss(real_logits=real, fake_logits=fake, reduction=False)
  np.testing.assert_allclose(d, [2 * np.log(2.0), np.log1p(np.exp(-2.0)) + np.log1p(np.exp(-1.0))], rtol=1e-6)
  g = losses.gan_generator_loss(fake_logits=fake[:, None], reduction=False)
  np.testing.assert_allclose(g, [np.log(2.0), np.log1p(np.exp(1.0))], rtol=1e-6)
  # A confident, correct discriminator has a small loss; the fooled generator a large one.
  assert float(losses.gan_discriminator_loss(real_logits=jnp.array([9.0]), fake_logits=jnp.array([-9.0]))) < 1e-3
  assert float(losses.gan_generator_loss(fake_logits=jnp.array([-9.0]))) > 8.9


def _nt_xent_reference(a, b, temperature):
  """Direct loops over the 2N views: -log of the partner's share of exp(cos / t) over all others."""
  z = np.concatenate([a, b]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  count = len(z)
  total = 0.0
  for i in range(count):
    partner = (i + len(a)) % count
    others = sum(np.exp(z[i] @ z[k] / temperature) for k in range(count) if k != i)
    total -= np.log(np.exp(z[i] @ z[partner] / temperature) / others)
  return total / count


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_matches_direct_loops(temperature):
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
  got = losses.nt_xent(embeddings_a=jnp.asarray(a), embeddings_b=jnp.asarray(b), temperature=temperature)
  np.testing.assert_allclose(got, _nt_xent_reference(a, b, temperature), rtol=1e-5)
  per_example = losses.nt_xent(embeddings_a=jnp.asarray(a), embeddings_b=jnp.asarray(b),
                               temperature=temperature, reduction=False)
  assert per_example.shape == (6,)
  np.testing.assert_allclose(per_example.mean(), got, rtol=1e-6)
  # Scale does not matter (cosine similarity); swapping the views does not either.
  np.testing.assert_allclose(losses.nt_xent(embeddings_a=jnp.asarray(3 * a), embeddings_b=jnp.asarray(b),
                                            temperature=temperature), got, rtol=1e-5)
  np.testing.assert_allclose(losses.nt_xent(embeddings_a=jnp.asarray(b), embeddings_b=jnp.asarray(a),
                                            temperature=temperature), got, rtol=1e-5)


def test_nt_xent_permutation_invariant_and_pairing_matters():
  rng = np.random.default_rng(5)
  a = rng.normal(size=(8, 4)).astype(np.float32)
  b = (a + 0.3 * rng.normal(size=(8, 4))).astype(np.float32)
  value = float(losses.nt_xent(embeddings_a=a, embeddings_b=b, temperature=0.5))
  order = rng.permutation(8)
  np.testing.assert_allclose(losses.nt_xent(embeddings_a=a[order], embeddings_b=b[order], temperature=0.5),
                             value, rtol=1e-6)
  # Breaking the pairing (b permuted alone) must change the value: here it raises it.
  assert float(losses.nt_xent(embeddings_a=a, embeddings_b=b[order], temperature=0.5)) > value + 0.5


def test_nt_xent_weights_remove_padding_from_negatives_and_temperature_must_be_positive():
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
  nt_xent = jax.jit(losses.nt_xent, static_argnames="temperature")  # Jitted: eager dispatch is slow.
  padded = nt_xent(embeddings_a=a, embeddings_b=b, temperature=0.5, weights=jnp.array([1, 1, 1, 1, 0]))
  unpadded = nt_xent(embeddings_a=a[:4], embeddings_b=b[:4], temperature=0.5)
  np.testing.assert_allclose(padded, unpadded, rtol=1e-6)
  for bad in (0.0, -0.1):
    with pytest.raises(ValueError, match="temperature must be > 0"):
      losses.nt_xent(embeddings_a=a, embeddings_b=b, temperature=bad)


def test_nt_xent_decreases_under_gradient_steps():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  noisy = x + 0.5 * jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
  w0 = {"w": jnp.asarray(rng.normal(size=(6, 4)) * 0.1, jnp.float32)}
  @jax.jit
  def fn(p):
    return losses.nt_xent(embeddings_a=x @ p["w"], embeddings_b=noisy @ p["w"], temperature=0.5)

  start, end = _decreases(fn, w0, lr=0.5)
  assert end < start - 0.1, (start, end)


NT_XENT_SHARDED = """
import json, os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
sys.path.insert(0, sys.argv[1])
from sslx import losses, run
assert jax.device_count() == 8
rng = np.random.default_rng(0)
a, b = (rng.normal(size=(32, 16)).astype(np.float32) for _ in range(2))
loss = lambda x, y: losses.nt_xent(embeddings_a=x, embeddings_b=y, temperature=0.5)
value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
one = jax.devices()[0]
single, single_grads = value_and_grad(jax.device_put(a, one), jax.device_put(b, one))
sharding = NamedSharding(run.make_mesh(), PartitionSpec("data"))
xa, xb = jax.device_put(a, sharding), jax.device_put(b, sharding)
sharded, sharded_grads = value_and_grad(xa, xb)
grad_diff = max(float(np.abs(np.asarray(g) - np.asarray(h)).max())
                for g, h in zip(single_grads, sharded_grads))
# What negatives from each device's own 4 examples only would give.
local = np.mean([float(loss(a[i:i + 4], b[i:i + 4])) for i in range(0, 32, 4)])
print(json.dumps({"single": float(single), "sharded": float(sharded), "local": float(local),
                  "grad_diff": grad_diff, "devices": len({s.device for s in xa.addressable_shards})}))
"""


def test_nt_xent_negatives_are_the_whole_global_batch_on_eight_devices():
  # A subprocess: the 8 fake devices must be set before jax starts (as tests/test_train.py does).
  import json, os, subprocess, sys  # noqa: E401
  from pathlib import Path
  result = subprocess.run([sys.executable, "-c", NT_XENT_SHARDED, str(Path(__file__).resolve().parents[1])],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu",
                                   XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=8")))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8, report
  assert abs(report["sharded"] - report["single"]) < 1e-5 and report["grad_diff"] < 1e-6, report
  # Per-device negatives would give a clearly smaller loss (fewer negatives), so the check can fail.
  assert report["local"] < report["single"] - 0.5, report
