import json

import jax
import numpy as np
import pytest

from sslx import models, run
from sslx.evaluate import common, linear


def test_linear_probe_recovers_a_known_rule():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 20)) * 3
  train_y, test_y = rng.integers(0, 4, 400), rng.integers(0, 4, 200)
  train_x = centers[train_y] + rng.normal(size=(400, 20))
  test_x = centers[test_y] + rng.normal(size=(200, 20))
  fit = linear.train_linear(train_x, train_y, test_x, test_y, num_classes=4, epochs=20, batch_size=64,
                            learning_rate=1e-2, weight_decay=0.0, seed=0)
  assert fit["test_accuracy"] > 0.97
  # Shuffled labels leave nothing to learn: chance level on the test set.
  shuffled = linear.train_linear(train_x, rng.permutation(train_y), test_x, test_y, num_classes=4,
                                 epochs=20, batch_size=64, learning_rate=1e-2, weight_decay=0.0, seed=0)
  assert shuffled["test_accuracy"] < 0.5


@pytest.mark.parametrize("height,channels,limit,grid", [(32, 32, 4096, 8), (16, 64, 4096, 8),
                                                        (8, 128, 4096, 4), (4, 512, 4096, 2),
                                                        (7, 2048, 4096, 1), (11, 64, 4096, 8),
                                                        (21, 32, 4096, 7), (6, 128, 4096, 3)])
def test_pool_grid(height, channels, limit, grid):
  assert common.pool_grid(height, channels, limit) == grid


def test_pool_block_averages_cells():
  x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
  pooled = np.asarray(common.pool_block(x, max_features=4))
  assert pooled.shape == (2, 4)
  np.testing.assert_allclose(pooled[0], [x[0, :2, :2].mean(), x[0, :2, 2:].mean(),
                                         x[0, 2:, :2].mean(), x[0, 2:, 2:].mean()])


def test_evaluate_writes_table_for_every_block(trained_workdir):
  workdir, _, _ = trained_workdir
  results = linear.evaluate(workdir, epochs=1)
  assert set(results["blocks"]) == {"block1", "block2", "block3"}
  assert results["train_examples"] == 2000 and results["test_examples"] == 1000
  for row in results["blocks"].values():
    assert 0.0 <= row["pretrained"] <= 1.0 and 0.0 <= row["random_init"] <= 1.0
  with open(f"{workdir}/eval/linear.json") as f:
    saved = json.load(f)
  assert saved["blocks"] == results["blocks"]
  assert "| block1 |" in open(f"{workdir}/eval/linear.md").read()


def test_patch_grid_override_writes_its_own_table(trained_workdir):
  workdir, _, _ = trained_workdir
  whole = linear.evaluate(workdir, epochs=1)
  patches = linear.evaluate(workdir, epochs=1, patch_grid=2)
  assert patches["protocol"]["patch_grid"] == 2 and whole["protocol"]["patch_grid"] == 0
  assert patches["written_to"].endswith("eval/linear_grid2.json")
  # Other inputs (2x2 grid of 16 px patches), other features: the accuracies differ.
  assert patches["blocks"] != whole["blocks"]
  with open(f"{workdir}/eval/linear.json") as f:
    assert json.load(f)["protocol"]["patch_grid"] == 0  # The config's own table is kept.
  with pytest.raises(ValueError, match="patch_grid must be >= 0"):
    linear.evaluate(workdir, epochs=1, patch_grid=-1)


def test_missing_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    linear.evaluate(str(tmp_path))


def test_grid_patches_raster_order_and_content():
  images = np.arange(2 * 7 * 7 * 1, dtype=np.float32).reshape(2, 7, 7, 1)
  patches = np.asarray(common.grid_patches(images, 3))  # 2 px patches from the centred 6 px square.
  assert patches.shape == (18, 2, 2, 1)
  np.testing.assert_array_equal(patches[0], images[0, 0:2, 0:2])
  np.testing.assert_array_equal(patches[5], images[0, 2:4, 4:6])  # Row 1, column 2.
  np.testing.assert_array_equal(patches[9 + 7], images[1, 4:6, 2:4])  # Second image, row 2, column 1.


def test_patch_grid_features_are_the_mean_over_patches(sample_images):
  from sslx import configs, models
  from sslx.data import image_ops
  config = configs.quick(configs.base())
  config.evaluate.patch_grid = 2
  backbone = models.get_backbone(config.model)
  variables = run.random_init_variables(backbone, config, seed=0)
  images = sample_images[0][:3]
  # Full float32 convolutions: on GPUs the default (TF32) differs by ~5e-4 between batch shapes.
  with jax.default_matmul_precision("highest"):
    got = common.feature_fn(backbone, config, 4096)(variables, images)
    patches = common.grid_patches(images, 2)
    maps = backbone.apply(variables, image_ops.normalize(patches), train=False)
  for block in models.block_names(maps):
    per_patch = np.asarray(common.pool_block(maps[block], 4096)).reshape(3, 4, -1)
    np.testing.assert_allclose(got[block], per_patch.mean(1), rtol=1e-4, atol=1e-5)


def test_pool_block_uneven_cells_cover_the_map():
  x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype(np.float32)
  # 5 = prime side, 3x3 allowed: adaptive cells [0, 2), [1, 4), [3, 5) instead of one 1x1 cell.
  pooled = np.asarray(common.pool_block(x, max_features=27)).reshape(2, 3, 3, 3)
  np.testing.assert_allclose(pooled[:, 0, 1], x[:, 0:2, 1:4].mean(axis=(1, 2)), rtol=1e-5)
  np.testing.assert_allclose(pooled[:, 2, 0], x[:, 3:5, 0:2].mean(axis=(1, 2)), rtol=1e-5)


def test_backbone_input_follows_the_pretext(sample_images):
  from tests.conftest import tiny_config
  images = np.asarray(sample_images[0][:4])
  rotation_config = tiny_config()
  standard = np.asarray(run.backbone_input_fn(rotation_config)(images))
  images_01 = (images / 255.0).astype(np.float32)
  np.testing.assert_allclose(standard, np.asarray(
      (images_01 - np.asarray(rotation_config.normalize.mean)) / np.asarray(rotation_config.normalize.std)),
      rtol=1e-5, atol=1e-5)
  # DeepCluster's encoder saw Sobel maps in training, so the probe feeds it the same.
  deepcluster_config = tiny_config("deepcluster_convnet_cifar10.py")
  edges = np.asarray(run.backbone_input_fn(deepcluster_config)(images))
  from sslx.pretexts.image import deepcluster
  np.testing.assert_allclose(edges, np.asarray(deepcluster.sobel(images_01)), atol=1e-5)
  variables = run.random_init_variables(models.get_backbone(deepcluster_config.model),
                                           deepcluster_config, 0)
  first = variables["params"]["block1_conv1"]["conv"]["kernel"]
  assert first.shape[2] == 2  # Two input channels: the Sobel x and y maps.
