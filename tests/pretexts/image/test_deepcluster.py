import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import checkpoints, pretexts, run, train
from sslx.pretexts.image import deepcluster
from tests.conftest import tiny_config, train_until_killed
from tests.pretexts import steps
from tests.trees import assert_trees_close


def _blobs(seed=0, per_blob=(60, 40, 30), dim=5):
  rng = np.random.default_rng(seed)
  centres = np.eye(3, dim) * 10.0
  points = np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, per_blob)])
  labels = np.repeat(np.arange(3), per_blob)
  return points.astype(np.float32), labels


def _recovered(labels, found):
  """Every true blob maps to one cluster and no two blobs share one."""
  mapping = {t: set(np.asarray(found)[labels == t]) for t in np.unique(labels)}
  return all(len(v) == 1 for v in mapping.values()) and len(set.union(*mapping.values())) == len(mapping)


def test_found_by_name_with_contract():
  assert pretexts.get("image.deepcluster").module is deepcluster


def test_kmeans_recovers_separable_blobs():
  points, labels = _blobs()
  _, found, _ = deepcluster.kmeans(points, 3, rng=jax.random.PRNGKey(0), iterations=10)
  assert _recovered(labels, found)


def test_kmeans_reseeds_an_empty_cluster_by_splitting_and_still_recovers_blobs():
  points, labels = _blobs()
  # Two centroids in blob 0, one far from everything: the far one is empty after the first
  # assignment, and blobs 1 and 2 share a centroid until a split separates them.
  init = np.stack([points[0], points[1], np.full(5, 1000.0, np.float32)])
  _, found, reseeded = deepcluster.kmeans(points, 3, rng=jax.random.PRNGKey(1), iterations=10,
                                          init_centroids=init)
  assert int(reseeded) >= 1
  assert np.all(np.bincount(np.asarray(found), minlength=3) > 0)
  assert _recovered(labels, found)


def test_reseed_splits_a_non_empty_cluster_symmetrically():
  centroids = jnp.asarray([[1.0, 2.0, 3.0, 4.0], [9.0, 9.0, 9.0, 9.0]])
  counts = jnp.asarray([10, 0])
  new, new_counts, reseeded = deepcluster.reseed_empty(jax.random.PRNGKey(0), centroids, counts)
  eps = deepcluster.SPLIT_EPSILON
  signs = np.asarray([1, -1, 1, -1]) * eps
  np.testing.assert_allclose(new[1], np.asarray(centroids[0]) * (1 + signs), rtol=1e-6)
  np.testing.assert_allclose(new[0], np.asarray(centroids[0]) * (1 - signs), rtol=1e-6)
  assert new_counts.tolist() == [5, 5] and int(reseeded) == 1
  # Nothing empty: nothing changes.
  same, _, none = deepcluster.reseed_empty(jax.random.PRNGKey(0), centroids, jnp.asarray([4, 6]))
  np.testing.assert_array_equal(same, centroids)
  assert int(none) == 0


def test_pca_whitening_gives_identity_covariance():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) * 3.0 + 5.0
  white = np.asarray(deepcluster.pca_whiten(x, 4))
  assert white.shape == (2000, 4)
  np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(4), atol=1e-3)


def test_epoch_indices_sample_uniformly_over_clusters():
  assignments = np.concatenate([np.zeros(900), np.ones(80), np.full(20, 2)]).astype(np.int32)
  cfg = deepcluster.default_config()
  indices = deepcluster.epoch_indices({"assignments": assignments}, jax.random.PRNGKey(0), cfg)
  assert len(indices) == 1000
  per_cluster = np.bincount(assignments[indices], minlength=3)
  assert per_cluster.min() >= 330 and per_cluster.max() <= 334, per_cluster
  assert set(indices[assignments[indices] == 2]) <= set(range(980, 1000))


def test_nmi():
  a = np.repeat(np.arange(4), 50)
  assert deepcluster.normalized_mutual_information(a, (a + 1) % 4) == pytest.approx(1.0)
  rng = np.random.default_rng(0)
  assert deepcluster.normalized_mutual_information(rng.integers(0, 4, 5000), rng.integers(0, 4, 5000)) < 0.01


def test_update_state_assigns_every_example_and_reports():
  points, labels = _blobs()
  order = np.random.default_rng(0).permutation(len(points))
  cfg = deepcluster.default_config()
  # PCA keeps the 2 dims the 3 centres span; whitening the 3 noise-only dims as well
  # would blow them up to the blobs' separation (why DeepCluster reduces dims first).
  cfg.num_clusters, cfg.num_examples, cfg.pca_dim = 3, len(points), 2
  state = deepcluster.init_state(cfg)
  collected = {"features": points[order], "index": order}
  state = deepcluster.update_state(state, collected, rng=jax.random.PRNGKey(0), cfg=cfg)
  assert _recovered(labels, state["assignments"])  # Assignments are stored by source index.
  assert int(state["clusterings"]) == 1 and float(state["nmi_previous"]) == 0.0
  state = deepcluster.update_state(state, collected, rng=jax.random.PRNGKey(3), cfg=cfg)
  assert float(state["nmi_previous"]) == pytest.approx(1.0)


def test_k_larger_than_dataset_fails_clearly():
  cfg = deepcluster.default_config()
  cfg.num_clusters, cfg.num_examples = 50, 10
  with pytest.raises(ValueError, match="larger than the 10 training images"):
    deepcluster.update_state(deepcluster.init_state(cfg), {"features": np.zeros((10, 4)),
                                                           "index": np.arange(10)},
                             rng=jax.random.PRNGKey(0), cfg=cfg)
  config = tiny_config("deepcluster_convnet_cifar10.py")
  config.pretext.num_clusters = 1000
  with pytest.raises(ValueError, match=r"^deepcluster: k = 1000 clusters is larger than the dataset"):
    deepcluster.validate(config)
  config = tiny_config("deepcluster_convnet_cifar10.py")
  config.train_examples = 100
  with pytest.raises(ValueError, match="set both to the number of training images"):
    deepcluster.validate(config)


def test_sobel_responds_to_edges_only():
  image = jnp.zeros((1, 8, 8, 3)).at[:, :, 4:].set(1.0)  # A vertical edge.
  edges = np.asarray(deepcluster.sobel(image))
  assert edges.shape == (1, 8, 8, 2)
  assert np.abs(edges[0, 2:6, 3:5, 0]).min() > 1.0  # x-derivative at the edge.
  np.testing.assert_allclose(edges[0, 2:6, :, 1], 0.0, atol=1e-6)  # No y-derivative inside.
  np.testing.assert_allclose(edges[0, 2:6, :2, 0], 0.0, atol=1e-6)  # Flat region.


def test_loss_decreases_on_real_images(sample_images):
  cfg = deepcluster.default_config()
  cfg.num_clusters, cfg.num_examples, cfg.hidden_dim = 8, 32, 16
  state = {"assignments": jnp.asarray(np.arange(32) % 8, jnp.int32)}
  batch = {"image": sample_images[0][:32] / 255.0, "index": np.arange(32)}
  values, metrics = steps.losses_over_steps(deepcluster, cfg, batch, state=state, steps=25, learning_rate=1e-2)
  assert values[-1] < 0.7 * values[0], values
  assert metrics["accuracy"] > 0.3


def test_classifier_and_its_optimizer_state_reinitialised():
  params = {"backbone": {"w": np.ones(3)}, "head": {"hidden": {"kernel": np.ones(2)},
                                                    "classifier": {"kernel": np.ones(2)}}}
  fresh = jax.tree.map(lambda x: x * 7, params)
  out = run.reinitialize(params, fresh, deepcluster.reinit_params, zero=False)
  assert out["head"]["classifier"]["kernel"].tolist() == [7, 7]
  assert out["head"]["hidden"]["kernel"].tolist() == [1, 1] and out["backbone"]["w"].tolist() == [1, 1, 1]
  zeroed = run.reinitialize(params, None, deepcluster.reinit_params, zero=True)
  assert zeroed["head"]["classifier"]["kernel"].tolist() == [0, 0]
  assert zeroed["head"]["hidden"]["kernel"].tolist() == [1, 1]


def test_trainer_reclusters_each_epoch_and_resumes_exactly(tmp_path, monkeypatch):
  config = tiny_config("deepcluster_convnet_cifar10.py")  # 64 images, batch 32: an epoch is 2 steps.
  config.total_steps, config.checkpoint_every = 5, 3
  config.evaluate.batch_size = 16  # Tells the clustering pass's batches from training ones below.
  straight, _ = train.train(config, str(tmp_path / "straight"))
  # Before steps 1 and 3; not before step 5, a last partial epoch of one step.
  assert int(straight.pretext_state["clusterings"]) == 2
  assert np.asarray(straight.pretext_state["assignments"]).max() < config.pretext.num_clusters

  # Crash while assembling the 5th training batch: step 3's checkpoint is the last good one,
  # and the resumed run continues mid-epoch (step 4) with the restored clusters and iterator.
  train_until_killed(config, str(tmp_path / "resumed"), monkeypatch, kill_at_batch=5,
                     batch_size=config.batch_size)
  assert checkpoints.manager(str(tmp_path / "resumed")).latest_step() == 3
  resumed, _ = train.train(config, str(tmp_path / "resumed"))
  assert_trees_close(jax.device_get((resumed.params, resumed.opt_state, resumed.pretext_state)),
                     jax.device_get((straight.params, straight.opt_state, straight.pretext_state)))


def test_pictures_show_the_largest_clusters_of_training_images():
  assignments = np.asarray([2, 0, 2, 1, 2, 0], np.int32)
  # Image i is flat with value i / 10, so every tile tells which training image it is.
  load = lambda idx: np.stack([np.full((4, 4, 3), i / 10.0, np.float32) for i in idx])  # noqa: E731
  out = deepcluster.pictures(None, np.zeros((1, 4, 4, 3), np.float32), rng=jax.random.PRNGKey(0),
                             cfg=deepcluster.default_config(), state={"assignments": assignments},
                             train_images=load, columns=3)["clusters"]
  assert out.shape == (3 * 5 + 1, 3 * 5 + 1, 3)
  tile = lambda r, c: out[1 + 5 * r, 1 + 5 * c, 0]  # noqa: E731
  # Rows: cluster 2 (images 0, 2, 4 in a random order), cluster 0 (1, 5, blank), cluster 1 (3, blanks).
  assert sorted(tile(0, c) for c in range(3)) == [0, 51, 102]
  assert sorted(tile(1, c) for c in range(2)) == [26, 128] and tile(1, 2) == 255
  assert [tile(2, c) for c in range(3)] == [77, 255, 255]
