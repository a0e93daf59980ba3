import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.video import opn
from tests.pretexts import steps


def small_cfg(**overrides):
  cfg = opn.default_config()
  cfg.crop_size = 16
  cfg.max_jitter = 2
  cfg.update(overrides)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("video.opn").module is opn
  assert opn.default_config().name == "video.opn"


def test_twelve_classes_merge_each_order_with_its_reverse():
  classes = opn.order_classes(4)
  assert classes.shape == (12, 4) and opn.num_classes(4) == 12
  assert (classes[:, 0] < classes[:, -1]).all()
  covered = {tuple(p) for p in classes} | {tuple(p[::-1]) for p in classes}
  assert covered == set(itertools.permutations(range(4)))
  for p in itertools.permutations(range(4)):
    assert opn.class_of(p) == opn.class_of(p[::-1])
    label = opn.class_of(p)
    assert tuple(classes[label]) in (p, p[::-1])
  assert sorted(opn.class_of(p) for p in itertools.permutations(range(4))) == sorted(list(range(12)) * 2)


def test_sampled_orders_cover_all_24_and_carry_their_label():
  labels, orders = jax.device_get(jax.jit(lambda r: opn.sample_orders(r, 4000, 4))(jax.random.PRNGKey(0)))
  assert {tuple(o) for o in orders} == set(itertools.permutations(range(4)))
  assert all(opn.class_of(o) == l for o, l in zip(orders, labels))
  counts = np.bincount(labels, minlength=12)
  assert counts.min() > 4000 / 12 * 0.8
  reversed_ = orders[:, 0] > orders[:, -1]
  assert 0.45 < reversed_.mean() < 0.55


def test_inverse_of_the_labelled_order_restores_time():
  # Frame t of each clip is filled with t (and a per-clip offset): the shown frames tell their time.
  batch, frames = 64, 9
  values = np.arange(frames, dtype=np.float32)[None, :] + 100 * np.arange(batch)[:, None]
  video = jnp.asarray(np.broadcast_to(values[:, :, None, None, None], (batch, frames, 20, 20, 3)))
  cfg = small_cfg(channel_split=False)
  fn = jax.jit(lambda r, b: opn.make_inputs(r, b, cfg))
  inputs, targets = fn(jax.random.PRNGKey(1), {"video": video, "index": jnp.arange(batch, dtype=jnp.int32)})
  assert inputs["image"].shape == (batch * 4, 16, 16, 3)
  shown = np.asarray(inputs["image"]).reshape(batch, 4, -1)
  assert (shown.min(-1) == shown.max(-1)).all()
  shown_time = shown[:, :, 0] - 100 * np.arange(batch)[:, None]
  labels = np.asarray(targets["label"])
  classes = opn.order_classes(4)
  for time, label, order in zip(shown_time, labels, np.asarray(targets["order"])):
    for candidate in (classes[label], classes[label][::-1]):
      restored = time[np.argsort(candidate)]
      if (np.diff(restored) > 0).all():
        break
    else:
      raise AssertionError(f"class {label} does not sort {time}")
    np.testing.assert_array_equal(time, time.min() + cfg.frame_gap * order)
  restored = np.asarray(opn.unshuffle(jnp.asarray(shown_time), targets["order"]))
  np.testing.assert_array_equal(np.diff(restored, axis=1), cfg.frame_gap)
  # The start varies within the window: 9 frames, span 7, so 3 starts.
  assert set(restored[:, 0]) == {0, 1, 2}


def test_channel_splitting_gives_three_identical_channels():
  video = jax.random.uniform(jax.random.PRNGKey(2), (8, 7, 20, 20, 3))
  cfg = small_cfg(max_jitter=0)
  inputs, _ = jax.jit(lambda r, b: opn.make_inputs(r, b, cfg))(jax.random.PRNGKey(3), {"video": video})
  crops = np.asarray(inputs["image"])
  np.testing.assert_array_equal(crops[..., 0], crops[..., 1])
  np.testing.assert_array_equal(crops[..., 0], crops[..., 2])
  # The kept channel is one of the frame's own, picked independently per frame.
  video = np.asarray(video)
  split = np.asarray(jax.jit(opn.split_channels)(jax.random.PRNGKey(4), jnp.asarray(video)))
  matches = (split[..., :1] == video).all(axis=(2, 3))  # (B, T, 3): which channel was kept.
  assert (matches.sum(-1) == 1).all()
  assert set(matches.argmax(-1).ravel()) == {0, 1, 2}


def test_jitter_stays_within_bounds_around_one_location():
  cfg = small_cfg(crop_size=16, max_jitter=3)
  offsets = jax.jit(lambda r: opn.crop_offsets(r, 2000, 24, 30, cfg))
  base, top, left = jax.device_get(offsets(jax.random.PRNGKey(5)))
  for corner, side, axis in ((top, 24, 0), (left, 30, 1)):
    assert corner.min() >= 0 and corner.max() + 16 <= side
    offset = corner - base[:, axis:axis + 1]
    assert np.abs(offset).max() == 3  # Reached, never exceeded.
    assert set(np.unique(offset)) == set(range(-3, 4))
  # Pixels encode (row, column): each crop's corner is where the offsets say.
  rows, cols = np.meshgrid(np.arange(24), np.arange(30), indexing="ij")
  frame = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)
  video = jnp.asarray(np.broadcast_to(frame, (3, 7, 24, 30, 3)))
  cfg = small_cfg(channel_split=False, max_jitter=3)
  inputs, _ = jax.jit(lambda r, b: opn.make_inputs(r, b, cfg))(jax.random.PRNGKey(6), {"video": video})
  corners = np.asarray(inputs["image"])[:, 0, 0, :2].reshape(3, 4, 2)
  assert (corners.max(1) - corners.min(1) <= 6).all()
  assert corners.min() >= 0 and corners[..., 0].max() + 16 <= 24 and corners[..., 1].max() + 16 <= 30


def test_config_errors_are_one_line():
  config = ml_collections.ConfigDict({"video": {"num_frames": 6}, "image_size": 64,
                                      "pretext": opn.default_config()})
  with pytest.raises(ValueError, match=r"num_frames >= \(tuple_length-1\)\*frame_gap\+1 = 7, got 6: raise"):
    opn.validate(config)
  config.video.num_frames = 7
  opn.validate(config)
  config.image_size = 48
  with pytest.raises(ValueError, match=r"below crop_size\+2\*max_jitter = 54"):
    opn.validate(config)
  config.image_size = 64
  config.pretext.max_jitter = -1
  with pytest.raises(ValueError, match=r"max_jitter -1 >= 0"):
    opn.validate(config)


def test_head_fuses_all_six_pairs():
  cfg = small_cfg(fc6=8, fc7=4)
  inputs = {"image": jnp.zeros((3 * 4, 16, 16, 3))}
  model = steps.build(opn, cfg)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), inputs, train=False))
  outputs, _ = jax.eval_shape(lambda v: model.apply(v, inputs, train=False), variables)
  assert outputs.shape == (3, 12)
  head = variables["params"]["head"]
  assert head["fc7"]["kernel"].shape == (2 * 8, 4)  # One fc7 for every pair.
  assert head["classifier"]["kernel"].shape == (6 * 4, 12)


def test_loss_decreases():
  cfg = small_cfg(frame_gap=1, fc6=32, fc7=32)
  video = jax.random.uniform(jax.random.PRNGKey(0), (4, 4, 20, 20, 3))
  values, metrics = steps.losses_over_steps(opn, cfg, {"video": video}, steps=15)
  assert values[0] > math.log(12) - 0.7
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
