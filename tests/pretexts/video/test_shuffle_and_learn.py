import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.video import shuffle_and_learn as sal
from tests.pretexts import steps


def small_cfg(**overrides):
  cfg = sal.default_config()
  cfg.update(overrides)
  return cfg


def counting_video(batch, frames, size=8):
  """Frame t of every clip is filled with the value t, so a shown frame tells its position."""
  values = np.broadcast_to(np.arange(frames, dtype=np.float32)[None, :, None, None, None],
                           (batch, frames, size, size, 3))
  return jnp.asarray(values)


def test_found_by_name_with_contract():
  assert pretexts.get("video.shuffle_and_learn").module is sal
  assert sal.default_config().name == "video.shuffle_and_learn"


@pytest.mark.parametrize("num_frames", [7, 40])
def test_positions_are_ordered_and_respect_the_gaps(num_frames):
  cfg = small_cfg()  # tau_max 8, tau_min 2: 7 frames at least.
  sample = jax.jit(lambda r: sal.sample_positions(r, 4000, num_frames, cfg))
  positions = np.asarray(sample(jax.random.PRNGKey(0)))
  a, b, c, d, e = positions.T
  assert (a >= 0).all() and (e <= num_frames - 1).all()
  assert ((a < b) & (b < c) & (c < d) & (d < e)).all()
  assert (d - b <= cfg.tau_max).all()
  assert (b - a >= cfg.tau_min).all() and (e - d >= cfg.tau_min).all()
  # Every allowed span is drawn (up to tau_max or what the window leaves).
  assert set(d - b) == set(range(2, min(cfg.tau_max, num_frames - 1 - 2 * cfg.tau_min) + 1))


@pytest.mark.parametrize("reverse_negatives", [True, False])
def test_tuples_endpoints_middles_and_ratio(reverse_negatives):
  cfg = small_cfg(reverse_negatives=reverse_negatives)
  n = 20000
  tuples = jax.device_get(jax.jit(lambda r: sal.make_tuples(r, n, 13, cfg))(jax.random.PRNGKey(1)))
  a, b, c, d, e = tuples["positions"].T
  first, middle, last = tuples["frames"].T
  label = tuples["label"]
  # Endpoints are always b and d, forwards or backwards.
  forward = (first == b) & (last == d)
  backward = (first == d) & (last == b)
  assert (forward | backward).all()
  positive = label == 1
  assert (middle[positive] == c[positive]).all()
  assert ((b < middle) & (middle < d))[positive].all()
  assert ((middle == a) | (middle == e))[~positive].all()
  assert ((middle < b) | (middle > d))[~positive].all()
  assert abs((~positive).mean() - cfg.negative_fraction) < 0.015
  # Both negatives, (b, a, d) and (b, e, d), and both directions of the positives.
  assert 0.45 < (middle == a)[~positive].mean() < 0.55
  assert 0.45 < backward[positive].mean() < 0.55
  if reverse_negatives:
    assert 0.45 < backward[~positive].mean() < 0.55
  else:
    assert forward[~positive].all()


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_negative_fraction_extremes(fraction):
  cfg = small_cfg(negative_fraction=fraction)
  labels = np.asarray(jax.jit(lambda r: sal.make_tuples(r, 1000, 9, cfg))(jax.random.PRNGKey(2))["label"])
  assert (labels == (0 if fraction == 1.0 else 1)).all()


def test_make_inputs_shows_the_tuple_frames_jitted():
  cfg = small_cfg()
  video = counting_video(6, 13)
  fn = jax.jit(lambda r, b: sal.make_inputs(r, b, cfg))
  inputs, targets = fn(jax.random.PRNGKey(3), {"video": video, "index": jnp.arange(6, dtype=jnp.int32)})
  assert inputs["image"].shape == (6 * 3, 8, 8, 3)
  shown = np.asarray(inputs["image"]).reshape(6, 3, -1)
  np.testing.assert_array_equal(shown.min(-1), np.asarray(targets["frames"]))
  np.testing.assert_array_equal(shown.max(-1), np.asarray(targets["frames"]))
  # The same key gives the same tuples outside make_inputs.
  expected = sal.make_tuples(jax.random.PRNGKey(3), 6, 13, cfg)
  np.testing.assert_array_equal(np.asarray(targets["label"]), np.asarray(expected["label"]))


def test_short_window_is_a_one_line_error():
  config = ml_collections.ConfigDict({"video": {"num_frames": 6}, "pretext": small_cfg()})
  with pytest.raises(ValueError, match=r"video.num_frames >= 2\*tau_min\+3 = 7, got 6: raise"):
    sal.validate(config)
  config.video.num_frames = 7
  sal.validate(config)
  with pytest.raises(ValueError, match=r"num_frames >= 2\*tau_min\+3"):
    sal.make_inputs(jax.random.PRNGKey(0), {"video": jnp.zeros((2, 6, 8, 8, 3))}, small_cfg())


def test_head_regroups_three_frames():
  cfg = small_cfg(fc6=8)
  inputs = {"image": jnp.zeros((5 * 3, 16, 16, 3))}
  model = steps.build(sal, cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs, train=False))
  outputs, features = jax.eval_shape(lambda v: model.apply(v, inputs, train=False), variables)
  assert features["pooled"].shape[0] == 15
  assert outputs.shape == (5, 2)
  # fc6 is shared by the three frames; the classifier sees them concatenated.
  head = variables["params"]["head"]
  assert head["classifier"]["kernel"].shape == (3 * 8, 2) and "fusion" not in head  # The paper's fc8.
  fused = jax.eval_shape(lambda: steps.build(sal, small_cfg(fc6=8, fusion=4)).init(
      jax.random.PRNGKey(0), inputs, train=False))["params"]["head"]
  assert fused["fusion"]["kernel"].shape == (3 * 8, 4) and fused["classifier"]["kernel"].shape == (4, 2)


def test_loss_decreases():
  cfg = small_cfg(tau_max=4, tau_min=1, negative_fraction=0.5, fc6=32)
  video = jax.random.uniform(jax.random.PRNGKey(0), (4, 7, 16, 16, 3))
  values, metrics = steps.losses_over_steps(sal, cfg, {"video": video}, steps=15)
  assert values[0] > math.log(2) - 0.4
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
