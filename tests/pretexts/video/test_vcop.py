import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.video import vcop
from tests.conftest import REPO
from tests.pretexts import steps
from tests.pretexts.video.test_o3n import moving_squares

TINY_R3D = {"name": "r3d", "width": 0.125, "conv": "3d"}


def small_cfg(**overrides):
  cfg = vcop.default_config()
  cfg.update(dict(clip_frames=2, interval=1, pair_width=32, dropout=0.0))
  cfg.update(overrides)
  return cfg


def indexed_video(batch, frames, size=2):
  """Frame t of video b holds the value 100 b + t everywhere: every clip tells where it came from."""
  values = 100.0 * np.arange(batch)[:, None] + np.arange(frames)[None, :]
  return jnp.asarray(np.broadcast_to(values[:, :, None, None, None], (batch, frames, size, size, 3)),
                     jnp.float32)


def test_found_by_name_with_contract():
  assert pretexts.get("video.vcop").module is vcop


def test_orders_are_itertools_permutations():
  assert [tuple(o) for o in vcop.orders(3)] == list(itertools.permutations(range(3)))
  assert vcop.span(vcop.default_config()) == 3 * 16 + 2 * 8 == 64


def test_clips_are_exact_slices_and_inverse_restores_order():
  cfg = vcop.default_config()
  cfg.clip_frames, cfg.interval = 3, 2
  batch_size, num_frames = 1200, 17  # Span 13: starts 0..4.
  video = indexed_video(batch_size, num_frames)
  inputs, targets = jax.jit(lambda r, b: vcop.make_inputs(r, b, cfg))(
      jax.random.PRNGKey(0), {"video": video, "index": jnp.arange(batch_size)})
  assert inputs["video"].shape == (batch_size * 3, 3, 2, 2, 3)
  labels, order, start = (np.asarray(targets[k]) for k in ("label", "order", "start"))
  assert np.array_equal(order, vcop.orders(3)[labels])
  assert start.min() == 0 and start.max() == num_frames - vcop.span(cfg)
  shown = np.asarray(inputs["video"])[:, :, 0, 0, 0].reshape(batch_size, 3, 3)  # (B, K, frames)
  for b in (0, 1, 7, batch_size - 1):
    for j in range(3):
      first = start[b] + order[b, j] * (cfg.clip_frames + cfg.interval)
      np.testing.assert_array_equal(shown[b, j], 100 * b + first + np.arange(cfg.clip_frames))
  restored = np.asarray(vcop.unshuffle(jnp.asarray(shown), jnp.asarray(order)))
  offsets = np.arange(3)[:, None] * (cfg.clip_frames + cfg.interval) + np.arange(cfg.clip_frames)
  expected = 100 * np.arange(batch_size)[:, None, None] + start[:, None, None] + offsets
  np.testing.assert_array_equal(restored, expected)
  counts = np.bincount(labels, minlength=6)
  assert ((counts - batch_size / 6) ** 2 / (batch_size / 6)).sum() < 25.0, counts
  assert len(set(start)) == num_frames - vcop.span(cfg) + 1


def test_short_window_is_a_one_line_error():
  with pytest.raises(ValueError, match=r"clips\*clip_frames \+ \(clips-1\)\*interval = 64, got 16"):
    vcop.make_inputs(jax.random.PRNGKey(0), {"video": jnp.zeros((2, 16, 4, 4, 3))}, vcop.default_config())
  config = ml_collections.ConfigDict({"pretext": vcop.default_config(), "video": {"num_frames": 16}})
  with pytest.raises(ValueError, match=r"= 64, got 16: raise --config.video.num_frames"):
    vcop.validate(config)
  config.video.num_frames = 64
  vcop.validate(config)


def test_head_shapes_pairs_and_dropout_stream():
  cfg = small_cfg(dropout=0.5)
  module = vcop.head(cfg)
  features = {"pooled": jax.random.normal(jax.random.PRNGKey(1), (4 * 3, 8))}
  variables = module.init(jax.random.PRNGKey(2), features, train=False)
  assert variables["params"]["pair_fc"]["kernel"].shape == (16, 32)  # One layer shared by the 3 pairs.
  assert variables["params"]["classifier"]["kernel"].shape == (3 * 32, 6)
  logits = module.apply(variables, features, train=False)
  assert logits.shape == (4, 6)
  with pytest.raises(ValueError, match=r"needs a 'dropout' PRNG stream"):
    module.apply(variables, features, train=True)
  dropped = module.apply(variables, features, train=True, rngs={"dropout": jax.random.PRNGKey(3)})
  assert dropped.shape == (4, 6) and not np.allclose(dropped, logits)


def test_loss_decreases_r3d():
  cfg = small_cfg()
  video = moving_squares(4, 10, 16, seed=1)
  values, metrics = steps.losses_over_steps(vcop, cfg, {"video": video}, model_config=TINY_R3D)
  assert values[0] > math.log(6) - 0.7
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_experiment_config_passes_validate():
  for arg in (None, "quick"):
    vcop.validate(configs.load(REPO / "experiments" / "vcop_r3d_egogestar.py", arg))


@pytest.mark.parametrize("overrides", [{}, {"num_clips": 4, "interval": 0}])
def test_validate_bound_is_the_one_make_inputs_needs(overrides):
  # The window must hold a whole tuple: num_frames == span runs, one frame less does not.
  cfg = small_cfg(**overrides)
  span = vcop.span(cfg)
  inside = steps.experiment_config(cfg, image_size=4, num_frames=span)
  vcop.validate(inside)
  assert steps.abstract_inputs(vcop, inside)["video"] == (2 * cfg.num_clips, cfg.clip_frames, 4, 4, 3)
  outside = steps.experiment_config(cfg, image_size=4, num_frames=span - 1)
  with pytest.raises(ValueError, match=rf"= {span}, got {span - 1}: raise --config.video.num_frames"):
    vcop.validate(outside)
  with pytest.raises(ValueError, match=rf"= {span}, got {span - 1}"):
    steps.abstract_inputs(vcop, outside)
