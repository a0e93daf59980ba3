import os

import numpy as np
import pytest

from sslx.evaluate import propagate, segment
from tests.conftest import requires_data, quick_run


def test_centre_prior_is_a_centred_ellipse_of_half_the_axes():
  prior = segment.centre_prior((40, 80))
  assert prior[20, 40] and not prior[0, 0] and not prior[20, 10] and prior[20, 25]
  assert prior.mean() == pytest.approx(np.pi / 16, abs=0.01)  # An ellipse of a quarter of each side, each way.


@requires_data("davis2016")
def test_script_scores_single_frames_against_the_baselines(tmp_path_factory, trained_video_workdir):
  workdir, _, _ = quick_run("motion_segmentation_convnet_mix.py", tmp_path_factory)
  results = segment.evaluate(workdir, overrides={"evaluate.segmentation.sequences": "dog",
                                                 "evaluate.segmentation.pictures": "2",
                                                 "evaluate.segmentation.max_frames": "12"})
  row = results["sequences"]["dog"]
  assert set(row) == set(segment.METHODS) and results["size"] == 36  # The quick config's resize_size.
  assert all(0.0 <= row[m]["J"] <= 1.0 for m in row)
  from sslx.data import davis
  from tests.conftest import DATA_DIR
  seq = davis.load_sequence(DATA_DIR / "davis2016", "dog")
  prior = segment.centre_prior(seq.masks.shape[1:])
  assert row["centre_prior"]["J"] == pytest.approx(np.mean([propagate.region_similarity(prior, m)
                                                            for m in seq.masks[1:11]]))
  assert os.path.getsize(os.path.join(workdir, "eval", "segment", "dog.jpg")) > 1000
  with pytest.raises(ValueError, match=r"trained with video.opn"):
    segment.evaluate(trained_video_workdir[0])
