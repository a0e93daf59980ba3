"""The trainer on video clips: exact resume, and clear errors for mismatched data."""

import pytest

from sslx import checkpoints, configs, run, train
from tests.conftest import tiny_config, tiny_video_config, train_until_killed
from tests.trees import assert_trees_close


def _close(a, b):
  assert_trees_close(a, b)


def test_video_run_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
  config = tiny_video_config()
  config.total_steps, config.checkpoint_every = 4, 2
  straight, metrics = train.train(config, str(tmp_path / "straight"))
  assert metrics["skipped_clips_short"] == 0 and metrics["skipped_clips_unreadable"] == 0

  train_until_killed(config, str(tmp_path / "resumed"), monkeypatch, kill_at_batch=3)
  assert checkpoints.manager(str(tmp_path / "resumed")).latest_step() == 2
  resumed, _ = train.train(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 4
  _close(resumed.params, straight.params)
  _close(resumed.opt_state, straight.opt_state)


def test_video_config_on_images_and_image_config_on_videos_fail_in_one_line(tmp_path):
  config = tiny_video_config()
  config.dataset = "sample"
  with pytest.raises(ValueError, match="holds images: point --config.dataset at a folder of clips"):
    train.train(config, str(tmp_path / "a"))
  config = tiny_config()
  config.dataset = "sample_video"
  with pytest.raises(ValueError, match="holds video clips but the config has no video section"):
    train.train(config, str(tmp_path / "b"))


def test_no_clip_long_enough_fails_before_compiling(tmp_path):
  config = tiny_video_config()
  config.video.num_frames = 200  # 20 s at 10 fps; the sample's clips last 1-5 s.
  with pytest.raises(ValueError, match="no clip is long enough: a window needs 200 frames"):
    train.train(config, str(tmp_path))


def test_base_video_defaults_are_consistent():
  c = configs.base_video()
  assert c.resize_size >= c.image_size and c.video.fps > 0 and c.evaluate.num_clips >= 1
  assert run.media_key(c) == "video" and run.media_key(configs.base()) == "image"
