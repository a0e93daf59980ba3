import json

import numpy as np
import pytest

from sslx.evaluate import linear, retrieval


def test_top_k_hits_on_known_neighbours():
  gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
  gallery_labels = np.array([0, 1, 2, 3])
  queries = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.1]])  # Nearest: 0, 1, 3 (cosine, not distance).
  hits = retrieval.top_k_hits(queries, np.array([0, 2, 9]), gallery, gallery_labels, (1, 2, 4))
  # Query 0 hits at rank 1; query 1 (label 2) finds item 2 at rank 2; query 2's class is absent.
  assert hits == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3), 4: pytest.approx(2 / 3)}


def test_video_linear_probe_and_retrieval_read_the_checkpoint(trained_video_workdir):
  workdir, _, _ = trained_video_workdir
  results = retrieval.evaluate(workdir)
  assert results["queries"] == 11 and results["gallery"] == 22 and results["num_clips"] == 2
  for block, row in results["blocks"].items():
    for name in ("pretrained", "random_init"):
      rates = [row[name][str(k)] for k in results["k"]]
      assert rates == sorted(rates) and 0 <= rates[0] and rates[-1] == 1.0  # k=50 >= 22 covers all.
  assert json.loads(open(results["written_to"]).read())["blocks"].keys() == results["blocks"].keys()
  probe = linear.evaluate(workdir, epochs=3)
  assert probe["train_examples"] == 22 and probe["test_examples"] == 11
  assert set(probe["blocks"]) == {"block1", "block2", "block3"}


def test_whole_clip_probe_reads_one_clip_per_video_also_of_a_run_saved_before_the_field(
    trained_video_workdir, monkeypatch):
  from sslx.evaluate import common
  workdir, _, _ = trained_video_workdir
  load_run = common.checkpoints.load_run

  def saved_before_whole_clip(*args, **kwargs):
    loaded = load_run(*args, **kwargs)
    del loaded.config.evaluate["whole_clip"]
    return loaded

  monkeypatch.setattr(common.checkpoints, "load_run", saved_before_whole_clip)
  results = retrieval.evaluate(workdir, overrides={"evaluate.whole_clip": "True"})
  assert results["whole_clip"] and results["num_clips"] == 1
  assert results["queries"] == 11 and results["gallery"] == 22 and results["skipped"] == 0
  assert results["written_to"].endswith("retrieval-whole.json")  # Beside the windowed protocol's.


def test_temporal_segments_keep_the_order_a_mean_discards():
  import jax.numpy as jnp
  from sslx.evaluate import common
  forward = jnp.arange(8.0).reshape(1, 8, 1)  # (N, T, D): a quantity rising over time.
  backward = forward[:, ::-1]
  np.testing.assert_allclose(common.temporal_segments(forward, 1), common.temporal_segments(backward, 1))
  np.testing.assert_allclose(common.temporal_segments(forward, 4)[0, :, 0], [0.5, 2.5, 4.5, 6.5])
  assert common.temporal_segments(forward, 16).shape == (1, 8, 1)  # At most one segment per step.


def test_evaluation_config_overrides():
  from sslx import configs
  from sslx.evaluate import common
  c = configs.base_video()
  c.evaluate.num_frames = 4
  evaluated = common.for_evaluation(c, temporal_segments=2)
  assert evaluated.video.num_frames == 4 and evaluated.evaluate.temporal_segments == 2
  assert c.video.num_frames == 8  # The run's own config is left alone.
  c.evaluate.whole_clip = True
  assert common.for_evaluation(c).evaluate.num_clips == 1 and c.evaluate.num_clips == 10
  with pytest.raises(ValueError, match="temporal_segments must be >= 1"):
    common.for_evaluation(c, temporal_segments=0)
