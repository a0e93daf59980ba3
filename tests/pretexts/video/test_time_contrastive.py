import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import losses, pretexts
from sslx.pretexts.video import time_contrastive as tcn
from tests.pretexts import steps
from tests.pretexts.video.test_o3n import moving_squares


def small_cfg(**overrides):
  cfg = tcn.default_config()  # 10 fps: positive radius 2 frames, negative radius 4.
  cfg.update(overrides)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("video.time_contrastive").module is tcn
  assert tcn.default_config().name == "video.time_contrastive"


def test_seconds_become_frames_at_the_delivered_rate():
  assert tcn.radii(small_cfg()) == (2, 4)
  assert tcn.radii(small_cfg(fps=30.0)) == (6, 12)  # The paper's frames at 30 fps.


@pytest.mark.parametrize("num_frames", [6, 16])
def test_positives_lie_within_the_radius_inside_the_window(num_frames):
  cfg = small_cfg(pairs_per_clip=3)
  times = np.asarray(jax.jit(lambda r: tcn.sample_times(r, 2000, num_frames, cfg))(jax.random.PRNGKey(0)))
  anchor, positive = times[:, 0::2], times[:, 1::2]
  gap = np.abs(positive - anchor)
  assert ((times >= 0) & (times < num_frames)).all()
  assert ((gap >= 1) & (gap <= 2)).all()
  # Both offsets either way occur, from every anchor position.
  assert set(np.unique(positive - anchor)) == {-2, -1, 1, 2}
  assert set(np.unique(anchor)) == set(range(num_frames))


def test_frames_shown_are_the_frames_at_the_sampled_times():
  video = jnp.broadcast_to(jnp.arange(16, dtype=jnp.float32)[None, :, None, None, None], (3, 16, 4, 4, 3))
  video = video + 100 * jnp.arange(3, dtype=jnp.float32)[:, None, None, None, None]  # Clip id in the pixels.
  inputs, targets = tcn.make_inputs(jax.random.PRNGKey(1), {"video": video}, small_cfg())
  shown = np.asarray(inputs["image"][:, 0, 0, 0]).reshape(3, 8)
  np.testing.assert_array_equal(shown, np.asarray(targets["time"]) + 100 * np.asarray(targets["clip"]))


def test_positives_and_negatives_follow_the_radii_and_the_clip():
  times = jnp.array([0, 2, 3, 5, 0, 9])
  clips = jnp.array([0, 0, 0, 0, 1, 1])
  positives, negatives = tcn.pair_masks(times, clips, small_cfg())
  positives, negatives = np.asarray(positives), np.asarray(negatives)
  # Frame 0 (t=0): t=2 is a positive (gap 2), t=3 neither (gap 3), t=5 a negative (gap 5 > 4).
  np.testing.assert_array_equal(positives[0], [0, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(negatives[0], [0, 0, 0, 1, 0, 0])
  assert not positives.diagonal().any() and not negatives.diagonal().any()
  # Another clip's frame at the same time is never a positive, and a negative only when asked.
  assert not positives[0, 4] and not negatives[0, 4]
  _, other = tcn.pair_masks(times, clips, small_cfg(negatives_from_other_clips=True))
  assert other[0, 4] and other[0, 5] and not other[0, 2]


def test_semihard_triplet_picks_the_closest_negative_farther_than_the_positive():
  # 1-D embeddings: anchor 0 at 0, positive at 1 (d = 1), negatives at 1.5 (d = 2.25) and 3 (d = 9).
  x = jnp.array([[0.0], [1.0], [1.5], [3.0]])
  positives = jnp.zeros((4, 4), bool).at[0, 1].set(True)
  negatives = jnp.zeros((4, 4), bool).at[0, 2].set(True).at[0, 3].set(True)
  value = losses.triplet_semihard_masked(embeddings=x, positives=positives, negatives=negatives, margin=2.0)
  assert float(value) == pytest.approx(1.0 - 2.25 + 2.0)
  # Without any negative farther than the positive, the farthest negative is used.
  negatives = jnp.zeros((4, 4), bool).at[0, 2].set(True)
  x = jnp.array([[0.0], [2.0], [1.0], [3.0]])
  value = losses.triplet_semihard_masked(embeddings=x, positives=positives, negatives=negatives, margin=0.5)
  assert float(value) == pytest.approx(4.0 - 1.0 + 0.5)


def test_npairs_ignores_candidates_that_are_not_negatives():
  anchors = jnp.eye(3)
  partners = jnp.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])  # Partner 1 looks like anchor 0.
  valid = jnp.array([[True, False, True], [True, True, True], [True, True, True]])
  per_anchor = losses.npairs(anchors=anchors, positives=partners, valid=valid, reduction=False)
  # Anchor 0 scores 1 on its own and 0 on partner 2; partner 1 (also 1) is dropped.
  assert float(per_anchor[0]) == pytest.approx(-jax.nn.log_softmax(jnp.array([1.0, 0.0]))[0])


def test_radii_and_window_errors_are_one_line():
  config = ml_collections.ConfigDict({"pretext": small_cfg(), "video": {"num_frames": 16, "fps": 10.0,
                                                                       "frame_stride": 1}})
  tcn.validate(config)
  config.pretext.positive_seconds = 0.04
  with pytest.raises(ValueError, match=r"under one frame at 10 delivered fps"):
    tcn.validate(config)
  config.pretext.positive_seconds, config.pretext.negative_seconds = 0.2, 0.2
  with pytest.raises(ValueError, match=r"not beyond the positive radius 2"):
    tcn.validate(config)
  config.pretext.negative_seconds, config.video.num_frames = 0.4, 5
  with pytest.raises(ValueError, match=r"num_frames >= negative radius \+ 2 = 6 .*, got 5"):
    tcn.validate(config)
  config.video.num_frames, config.video.frame_stride = 16, 2
  with pytest.raises(ValueError, match=r"--config.pretext.fps=5"):
    tcn.validate(config)


@pytest.mark.parametrize("loss_name", ["triplet", "npairs"])
def test_loss_decreases(loss_name):
  cfg = small_cfg(loss=loss_name, pairs_per_clip=3)
  video = moving_squares(4, 12, 16, seed=3)
  values, metrics = steps.losses_over_steps(tcn, cfg, {"video": video}, steps=15)
  assert values[-1] < values[0] - 0.05, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
