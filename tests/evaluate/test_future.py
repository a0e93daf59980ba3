import os

import numpy as np
import pytest

from sslx.evaluate import future
from tests.conftest import quick_run


def test_ssim_and_psnr_of_known_images():
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(32, 32, 3))
  assert future.ssim(image, image) == pytest.approx(1.0)
  assert future.psnr(image, np.clip(image + 0.1, 0, 1)) < future.psnr(image, np.clip(image + 0.01, 0, 1))
  assert future.psnr(np.zeros((4, 4, 3)), np.full((4, 4, 3), 0.1)) == pytest.approx(20.0)
  assert future.ssim(image, rng.uniform(size=(32, 32, 3))) < 0.1  # Independent noise: no structure shared.


def test_script_scores_each_step_beside_the_copy_of_the_last_frame(tmp_path_factory, trained_video_workdir):
  workdir, _, _ = quick_run("future_prediction_convnet_mix.py", tmp_path_factory)
  results = future.evaluate(workdir)
  assert results["windows"] == 22 and len(results["steps"]) == 2  # 11 test clips x 2 windows.
  for row in results["steps"]:
    assert 10 < row["psnr_copy_last"] < 60 and 0 < row["ssim_copy_last"] <= 1
    # Two steps from a decoder that starts at the copy: still within a fraction of a dB of it.
    assert abs(row["psnr"] - row["psnr_copy_last"]) < 1.0
  assert results["steps"][0]["psnr_copy_last"] > results["steps"][1]["psnr_copy_last"]  # Farther is harder.
  assert os.path.getsize(results["picture"]) > 1000
  with pytest.raises(ValueError, match=r"trained with video.opn"):
    future.evaluate(trained_video_workdir[0])
