"""The video benchmarks' pieces, on the embedded clip sample (the full runs are in the README)."""


import numpy as np

from tests.benchmarks import load_benchmark
from tests.conftest import REPO



def test_flow_reference_segment_means():
  flow_reference = load_benchmark("video_flow_reference")
  per_pair = np.arange(12, dtype=np.float32).reshape(4, 3)  # 4 pairs of (dx, dy, magnitude).
  np.testing.assert_allclose(flow_reference.segment_means(per_pair, 1), per_pair.mean(axis=0))
  np.testing.assert_allclose(flow_reference.segment_means(per_pair, 2),
                             np.concatenate([per_pair[:2].mean(axis=0), per_pair[2:].mean(axis=0)]))
  # More segments than pairs: every segment still holds a pair, in order.
  short = flow_reference.segment_means(per_pair[:2], 4)
  assert short.shape == (12,) and np.all(np.diff(short[0::3]) >= 0)


def test_flow_reference_features_of_real_clips():
  from sslx.data import sources
  flow_reference = load_benchmark("video_flow_reference")
  source = sources.get_source("sample_video", "test")
  flows, labels, skipped = flow_reference.flows_of(source, fps=10.0)
  assert skipped == 0 and len(flows) == len(source) == len(labels)
  assert all(f.ndim == 2 and f.shape[1] == 3 and np.isfinite(f).all() for f in flows)
  assert all((f[:, 2] >= np.abs(f[:, :2]).max(axis=1) - 1e-5).all() for f in flows)  # |mean| <= mean |.|


def test_flow_reference_plays_clips_backwards(tmp_path):
  from tests.data.test_video import write_clip
  flow_reference = load_benchmark("video_flow_reference")
  path = write_clip(tmp_path / "c.mp4", fps=10, num_frames=12, moving=True, size=(48, 96))
  forward = flow_reference.pair_flows(path, fps=10.0)
  backward = flow_reference.pair_flows(path, fps=10.0, reverse=True)
  assert forward.shape == backward.shape == (11, 3)
  # The square moves right 3 px a frame: played backwards, it moves left as fast.
  assert forward[:, 0].mean() > 0.1 and backward[:, 0].mean() < -0.1
  np.testing.assert_allclose(backward[:, 2].mean(), forward[:, 2].mean(), rtol=0.2)
  index, similarity = flow_reference.nearest(np.array([[1.0, 0.1], [-1.0, 0.0]]),
                                             np.array([[0.0, 1.0], [2.0, 0.0], [-1.0, -0.1]]))
  np.testing.assert_array_equal(index, [1, 2])
  assert np.all(similarity > 0.99)
  # Forwards against backwards on features that carry the direction: separable.
  rng = np.random.default_rng(0)
  train, test = rng.normal(1.0, 0.3, (40, 3)), rng.normal(1.0, 0.3, (20, 3))
  fits = flow_reference.forwards_or_backwards(train, -train, test, -test)
  assert [fit["test_accuracy"] for fit in fits] == [1.0, 1.0]
  # Windows: those at or above the median motion of their video, each (pairs, 3) flattened.
  per_pair = np.zeros((6, 3), np.float32)
  per_pair[:, 2] = [0, 1, 5, 5, 1, 0]
  windows = flow_reference.high_motion_windows([per_pair, per_pair[:2]], pairs=3)
  np.testing.assert_array_equal(windows[:, 2::3], [[1, 5, 5], [5, 5, 1]])


def test_pretext_fit_memorises_fixed_pseudo_labels():
  fit_check = load_benchmark("video_pretext_fit")
  config = fit_check.load_config(str(REPO / "experiments" / "opn_convnet_egogestar.py"),
                                 ["total_steps=5"], quick=True)
  assert config.dataset == "sample_video" and config.total_steps == 5
  history = fit_check.fit(config, pseudo_labels="fixed", steps=12, learning_rate=3e-3)
  assert len(history) == 12 and {"loss", "accuracy"} <= set(history[0])
  assert history[-1]["loss"] < 0.5 * history[0]["loss"]
