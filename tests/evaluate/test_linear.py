import json

import numpy as np
import pytest

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
                                                        (7, 2048, 4096, 1)])
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


def test_missing_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    linear.evaluate(str(tmp_path))
