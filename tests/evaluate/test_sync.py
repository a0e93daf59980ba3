import json

import ml_collections
import numpy as np
import pytest

from sslx.evaluate import sync
from tests.conftest import quick_run

CFG = ml_collections.ConfigDict({"fps": 25.0, "audio_model": {"sample_rate": 16000}})


def test_offset_windows_start_whole_frames_from_the_centre():
  audio = np.arange(2 * 24320, dtype=np.float32).reshape(2, 24320)  # 0.32 s + 2 x 0.6 s at 16 kHz.
  windows = sync.offset_windows(audio, [-15, -1, 0, 1, 15], num_frames=8, cfg=CFG)
  assert windows.shape == (5, 2, 5120)
  # The aligned window starts 9600 samples (0.6 s) in; one frame is 640 samples.
  np.testing.assert_array_equal(windows[:, 0, 0], [0, 8960, 9600, 10240, 19200])
  np.testing.assert_array_equal(windows[2, 1], audio[1, 9600:9600 + 5120])
  with pytest.raises(ValueError, match=r"offsets of up to 16 frames need 0.64 s of audio beyond the window"):
    sync.offset_windows(audio, [-16, 0], num_frames=8, cfg=CFG)


def test_offset_metrics():
  metrics = sync.offset_metrics(np.array([0, 1, -1, 3, -15]))
  assert metrics == {"exact": 0.2, "within_1": 0.6, "mean_abs_error_frames": 4.0}


def test_per_clip_offsets_average_each_offsets_scores_over_the_clips_windows():
  offsets = np.array([-1, 0, 1])
  # Clip 0's windows prefer -1 and 0 alone, 0 on average; clip 1's one window prefers +1.
  scores = np.array([[3.0, 0.0, 0.0], [2.0, 2.0, 0.0], [0.0, 1.0, 5.0]])
  np.testing.assert_array_equal(sync.per_clip_offsets(scores, np.array([0, 0, 1]), offsets), [0, 1])


@pytest.mark.parametrize("experiment", ["synchronization_r3d_grid.py", "syncnet_grid.py"])
def test_reads_the_checkpoint_and_searches_every_offset(tmp_path_factory, experiment):
  workdir, _, _ = quick_run(experiment, tmp_path_factory)  # Shared with the every-config test in one process.
  results = sync.evaluate(workdir)
  assert results["clips"] == 4 and results["windows"] == 8 and results["max_offset_frames"] == 15
  for name in ("pretrained", "random_init"):
    row = results[name]
    assert len(row["predicted"]) == 8 and all(-15 <= p <= 15 for p in row["predicted"])
    assert 0 <= row["exact"] <= row["within_1"] <= 1
    assert 0 <= row["exact_per_clip"] <= row["within_1_per_clip"] <= 1
  assert json.loads(open(results["written_to"]).read())["windows"] == 8
  with pytest.raises(ValueError, match="need 0.64 s of audio beyond the window"):
    sync.evaluate(workdir, overrides={"evaluate.max_offset_frames": "16"})


def test_a_run_without_a_sync_head_is_a_one_line_error(trained_workdir):
  workdir, _, _ = trained_workdir
  with pytest.raises(ValueError, match=r"trained with image.rotation, not one of"):
    sync.evaluate(workdir)
