import json

import numpy as np
import pytest

from sslx.evaluate import knn


def _brute_force(train_x, train_y, test_x, *, num_classes, k, temperature):
  """The weighted vote written out one query at a time in numpy (float64)."""
  train = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  out = []
  for q in test_x / np.linalg.norm(test_x, axis=1, keepdims=True):
    similarity = train @ q
    nearest = np.argsort(-similarity, kind="stable")[:k]
    votes = np.zeros(num_classes)
    for i in nearest:
      votes[train_y[i]] += np.exp(similarity[i] / temperature)
    out.append(np.argmax(votes))
  return np.array(out)


def test_weighted_vote_equals_a_brute_force_numpy_reference():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(5, 16))
  train_y, test_y = rng.integers(0, 5, 300), rng.integers(0, 5, 97)
  train_x = centres[train_y] + 1.5 * rng.normal(size=(300, 16))
  test_x = centres[test_y] + 1.5 * rng.normal(size=(97, 16))
  for temperature in (0.07, 1.0):
    got = knn.knn_predict(train_x, train_y, test_x, num_classes=5, ks=(1, 20, 200), temperature=temperature)
    for k in (1, 20, 200):
      expected = _brute_force(train_x, train_y, test_x, num_classes=5, k=k, temperature=temperature)
      np.testing.assert_array_equal(got[k], expected)
  accuracy = knn.knn_accuracy(train_x, train_y, test_x, test_y, num_classes=5, ks=(20,))[20]
  assert 0.5 < accuracy < 1.0  # Overlapping clusters: well above chance (0.2), not trivially perfect.


def test_chunked_similarity_equals_one_chunk():
  rng = np.random.default_rng(1)
  train_x, test_x = rng.normal(size=(500, 32)), rng.normal(size=(203, 32))
  train_y = rng.integers(0, 10, 500)
  whole = knn.knn_predict(train_x, train_y, test_x, num_classes=10, ks=(5, 20), chunk_size=10_000)
  for chunk in (1, 7, 64):
    chunked = knn.knn_predict(train_x, train_y, test_x, num_classes=10, ks=(5, 20), chunk_size=chunk)
    for k in (5, 20):
      np.testing.assert_array_equal(chunked[k], whole[k])


def test_bad_settings_fail_in_one_line():
  x, y = np.ones((4, 3)), np.zeros(4, int)
  with pytest.raises(ValueError, match="more than the 4 training examples"):
    knn.knn_predict(x, y, x, num_classes=2, ks=(5,))
  with pytest.raises(ValueError, match="temperature must be > 0"):
    knn.knn_predict(x, y, x, num_classes=2, ks=(1,), temperature=0.0)
  with pytest.raises(ValueError, match="positive integers"):
    knn.knn_predict(x, y, x, num_classes=2, ks=(0,))


def test_script_scores_every_block_against_random_init(trained_workdir):
  workdir, _, _ = trained_workdir
  results = knn.evaluate(workdir, ks=(20, 5), chunk_size=100)
  assert results["k"] == [20, 5] and results["temperature"] == 0.07
  assert results["train_examples"] == 2000 and results["test_examples"] == 1000
  assert set(results["blocks"]) == {"block1", "block2", "block3"}
  for row in results["blocks"].values():
    assert set(row["by_k"]) == {"20", "5"}
    assert row["pretrained"] == row["by_k"]["20"]["pretrained"]
    for by in row["by_k"].values():
      # Ten real classes: each backbone's features put neighbours of a class together above chance.
      assert 0.1 < by["pretrained"] < 1.0 and 0.1 < by["random_init"] < 1.0
  saved = json.loads(open(results["written_to"]).read())
  assert saved["blocks"]["block1"]["by_k"] == results["blocks"]["block1"]["by_k"]
  assert "k=20: pretrained / random init" in open(results["written_to"][:-len("json")] + "md").read()
  with pytest.raises(ValueError, match="more than the 2000 training examples"):
    knn.evaluate(workdir, ks=(5000,))


def test_the_monitor_logs_knn_per_block_and_leaves_training_bitwise_unchanged(tmp_path):
  import jax

  from sslx import train
  from sslx.evaluate import common
  from tests.conftest import tiny_config
  finals = {}
  for every in (0, 2):
    c = tiny_config()
    c.total_steps, c.checkpoint_every = 4, 4
    c.evaluate.every = every
    c.evaluate.monitor_train_examples, c.evaluate.monitor_test_examples = 300, 100
    state, _ = train.train(c, str(tmp_path / f"every{every}"))
    finals[every] = jax.device_get((state.params, state.batch_stats, state.opt_state, state.rng))
  for a, b in zip(jax.tree.leaves(finals[0]), jax.tree.leaves(finals[2])):
    np.testing.assert_array_equal(a, b)
  logged = common.read_scalars(str(tmp_path / "every2"))
  for block in ("block1", "block2", "block3"):
    assert logged[f"knn/{block}"]["step"].tolist() == [2, 4]
    assert all(0.1 < v < 1.0 for v in logged[f"knn/{block}"]["value"])  # Ten classes: above chance.
  assert not any(tag.startswith("knn/") for tag in common.read_scalars(str(tmp_path / "every0")))


def test_the_monitor_needs_labels_and_says_how_to_turn_it_off(tmp_path):
  from sslx import train
  from tests.conftest import tiny_config
  c = tiny_config()
  c.evaluate.every = 1
  c.evaluate.test_split = "nonexistent"
  with pytest.raises((ValueError, FileNotFoundError), match="evaluate.every=0"):
    train.train(c, str(tmp_path / "run"))


def test_videos_are_scored_on_their_multi_clip_features(trained_video_workdir):
  workdir, _, _ = trained_video_workdir
  results = knn.evaluate(workdir, ks=(5,))
  assert results["train_examples"] == 22 and results["test_examples"] == 11  # Videos, not clips.
  assert set(results["blocks"]) == {"block1", "block2", "block3"}
  assert all(0.0 <= row["pretrained"] <= 1.0 for row in results["blocks"].values())
