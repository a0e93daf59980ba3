import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.data import video as video_data
from sslx.pretexts.video import motion_segmentation as ms
from tests.pretexts import steps
from tests.pretexts.video.test_o3n import moving_squares


def test_found_by_name_with_contract():
  assert pretexts.get("video.motion_segmentation").module is ms


def test_the_mask_is_the_motion_of_the_frame_shown():
  # Time-coded clips: frame t is flat t / 10, and its motion map is bright in rows t ... t + 1 only.
  frames = jnp.broadcast_to((jnp.arange(8, dtype=jnp.float32) / 10)[None, :, None, None, None], (16, 8, 8, 8, 3))
  motion = np.zeros((16, 8, 8, 8), np.uint8)
  for t in range(8):
    motion[:, t, t:t + 2] = 255 if t < 6 else 100  # Frames 6 and 7: below the threshold, nothing moves.
  inputs, targets = ms.make_inputs(jax.random.PRNGKey(0), {"video": frames, "motion": jnp.asarray(motion)},
                                   ms.default_config())
  shown = np.round(np.asarray(inputs["image"][:, 0, 0, 0]) * 10).astype(int)
  assert len(set(shown)) > 3  # Different clips show different frames.
  for b, t in enumerate(shown):
    expected = np.zeros((8, 8))
    if t < 6:
      expected[t:t + 2] = 1.0
    np.testing.assert_array_equal(np.asarray(targets["mask"][b]), expected)
    # 2 of 8 rows (25%) move: kept; nothing moving (0%): weight 0.
    assert float(targets["weight"][b]) == (1.0 if t < 6 else 0.0)


def test_frames_where_most_of_the_picture_moves_are_left_out():
  frames = jnp.zeros((2, 1, 8, 8, 3))
  motion = jnp.stack([jnp.full((1, 8, 8), 255, jnp.uint8), jnp.zeros((1, 8, 8), jnp.uint8).at[:, :2].set(255)])
  _, targets = ms.make_inputs(jax.random.PRNGKey(0), {"video": frames, "motion": motion}, ms.default_config())
  np.testing.assert_array_equal(np.asarray(targets["weight"]), [0.0, 1.0])  # 100% moves: the camera did.


def test_settings_errors_are_one_line():
  config = ml_collections.ConfigDict({"pretext": ms.default_config(), "video": {"motion_masks": True}})
  ms.validate(config)
  config.video.motion_masks = False
  with pytest.raises(ValueError, match=r"set --config.video.motion_masks=True"):
    ms.validate(config)
  config.video.motion_masks, config.pretext.threshold = True, 1.5
  with pytest.raises(ValueError, match=r"threshold 1.5 must be in \(0, 1\)"):
    ms.validate(config)


def test_loss_decreases():
  video = moving_squares(8, 4, 16, seed=5)
  motion = np.stack([video_data.motion_maps(np.asarray(v * 255, np.uint8)) for v in video])
  cfg = ms.default_config()
  cfg.head_width = 16
  values, metrics = steps.losses_over_steps(ms, cfg, {"video": video, "motion": jnp.asarray(motion)}, steps=15)
  assert values[-1] < values[0] - 0.05, values
  assert float(metrics["kept_frames"]) > 0.5
