import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.video import arrow_of_time
from tests.pretexts import steps
from tests.pretexts.video.test_o3n import moving_squares
from tests.pretexts.video.test_vcop import TINY_R3D, indexed_video


def test_found_by_name_with_contract():
  assert pretexts.get("video.arrow_of_time").module is arrow_of_time


def test_reversed_clips_are_exactly_the_frames_reversed():
  cfg = arrow_of_time.default_config()
  cfg.clip_frames = 4
  batch_size, num_frames = 2000, 7
  video = indexed_video(batch_size, num_frames)
  inputs, targets = jax.jit(lambda r, b: arrow_of_time.make_inputs(r, b, cfg))(
      jax.random.PRNGKey(0), {"video": video, "index": jnp.arange(batch_size)})
  assert inputs["video"].shape == (batch_size, 4, 2, 2, 3)
  labels, start = np.asarray(targets["label"]), np.asarray(targets["start"])
  clips = np.asarray(inputs["video"])
  for b in range(batch_size):
    forward = np.asarray(video[b, start[b]:start[b] + 4])
    np.testing.assert_array_equal(clips[b], forward[::-1] if labels[b] else forward)
  assert set(np.unique(labels)) == {0, 1}
  assert abs(labels.mean() - 0.5) < 4 * math.sqrt(0.25 / batch_size)  # 4 standard deviations.
  assert set(start) == set(range(num_frames - 4 + 1))


def test_short_window_and_flow_are_one_line_errors():
  config = ml_collections.ConfigDict({"pretext": arrow_of_time.default_config(),
                                      "video": {"num_frames": 8}})
  with pytest.raises(ValueError, match=r"num_frames >= clip_frames = 16, got 8"):
    arrow_of_time.validate(config)
  with pytest.raises(ValueError, match=r"num_frames >= clip_frames = 16, got 8"):
    arrow_of_time.make_inputs(jax.random.PRNGKey(0), {"video": jnp.zeros((2, 8, 4, 4, 3))},
                              config.pretext)
  config.video.num_frames = 16
  arrow_of_time.validate(config)
  config.pretext.input = "flow"
  with pytest.raises(ValueError, match=r"'flow' is not implemented.*input=rgb or --config.pretext.input=diff"):
    arrow_of_time.validate(config)


def test_frame_differences_are_taken_after_the_reversal_and_match_evaluation():
  cfg = arrow_of_time.default_config()
  cfg.clip_frames, cfg.input = 4, "diff"
  batch_size = 64
  video = jax.random.uniform(jax.random.PRNGKey(3), (batch_size, 4, 2, 2, 3))
  inputs, targets = arrow_of_time.make_inputs(jax.random.PRNGKey(0), {"video": video}, cfg)
  assert inputs["video"].shape == (batch_size, 3, 2, 2, 3)
  labels = np.asarray(targets["label"])
  assert set(np.unique(labels)) == {0, 1}
  shown = np.where(labels[:, None, None, None, None] == 1, np.asarray(video)[:, ::-1], np.asarray(video))
  np.testing.assert_allclose(inputs["video"], (shown[:, 1:] - shown[:, :-1] + 1) / 2, atol=1e-6)
  # Played backwards, every difference changes sign (about 0.5) and the order reverses.
  forward = np.asarray(arrow_of_time.clip_input(video, cfg))
  backward = np.asarray(arrow_of_time.clip_input(video[:, ::-1], cfg))
  np.testing.assert_allclose(backward, 1 - forward[:, ::-1], atol=1e-6)
  # Evaluation (run.prepare_fn) feeds a 3D backbone the same differences, standardised.
  from sslx import configs, models, run
  config = configs.base_video()
  config.pretext = cfg
  config.model = ml_collections.ConfigDict(TINY_R3D)
  backbone = models.get_backbone(config.model)
  uint8 = np.round(np.asarray(video) * 255).astype(np.uint8)
  prepared = run.prepare_fn(config, backbone)(uint8)
  expected = run.standardize_inputs({"video": arrow_of_time.clip_input(uint8 / 255.0, cfg)},
                                    tuple(config.normalize.mean), tuple(config.normalize.std))["video"]
  np.testing.assert_allclose(prepared, expected, atol=1e-5)


@pytest.mark.parametrize("input_kind", ["rgb", "diff"])
def test_loss_decreases_r3d(input_kind):
  cfg = arrow_of_time.default_config()
  cfg.clip_frames, cfg.input = 4, input_kind
  video = moving_squares(8, 6, 16, seed=2)
  values, metrics = steps.losses_over_steps(arrow_of_time, cfg, {"video": video},
                                            model_config=TINY_R3D)
  assert values[0] > math.log(2) - 0.4
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
