import numpy as np
import PIL.Image
import pytest

from sslx import montage
from sslx.evaluate import pictures
from tests.conftest import quick_run


def test_montage_layout_and_border():
  red = np.zeros((2, 2, 3)); red[..., 0] = 1.0
  grey = np.full((2, 2, 1), 0.5)
  out = montage.montage([[red, np.repeat(grey, 3, -1)], [red, red]], border=1)
  assert out.shape == (2 * 3 + 1, 2 * 3 + 1, 3) and out.dtype == np.uint8
  assert out[0].tolist() == [[255, 255, 255]] * 7  # Border row.
  assert out[1, 1].tolist() == [255, 0, 0] and out[1, 4].tolist() == [128, 128, 128]
  with pytest.raises(ValueError, match="montage needs"):
    montage.montage(np.zeros((2, 2, 2)))


def test_first_layer_filters_one_tile_per_filter():
  kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 5))
  params = {"backbone": {"block1_conv1": {"conv": {"kernel": kernel}},
                         "block2_conv1": {"conv": {"kernel": np.zeros((3, 3, 5, 7))}}}}
  out = pictures.first_layer_filters(params)
  # 5 filters on a 3x3 grid of 12x12 tiles (3x3 kernels drawn 4x larger), 1-pixel borders.
  assert out.shape == (3 * 13 + 1, 3 * 13 + 1, 3)
  tile = out[1:13, 1:13]
  assert tile.min() == 0 and tile.max() == 255  # Each filter stretched to the full range.


def test_pictures_command_writes_pngs(tmp_path_factory):
  workdir, _, _ = quick_run("deepcluster_convnet_cifar10.py", tmp_path_factory)  # The every-config test's run.
  written = pictures.write_pictures(workdir, count=12)
  assert set(written) == {"clusters", "first_layer_filters"}
  clusters = np.asarray(PIL.Image.open(written["clusters"]))
  assert clusters.ndim == 3 and clusters.shape[1] == 10 * 33 + 1  # 10 columns of 32 px images.


def test_pictures_of_a_missing_run_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints in"):
    pictures.write_pictures(str(tmp_path))
