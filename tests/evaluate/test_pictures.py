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
  # 5 filters on a 3x3 grid of 24x24 tiles (3x3 kernels drawn 8x larger), 1-pixel borders.
  assert out.shape == (3 * 25 + 1, 3 * 25 + 1, 3)
  tile = out[1:25, 1:25]
  assert tile.min() == 0 and tile.max() == 255  # Each filter stretched to the full range.


def test_a_3d_kernel_shows_its_middle_slice_in_time():
  kernel = np.zeros((3, 7, 7, 3, 4))
  kernel[1, 3, 3] = 1.0  # Only the middle time slice has a bright centre.
  kernel[0, 0, 0] = 1.0  # The first slice a bright corner, which must not show.
  out = pictures.first_layer_filters({"backbone": {"conv1": {"kernel": kernel}}})
  assert out.shape == (2 * 29 + 1, 2 * 29 + 1, 3)  # 4 filters, 7x7 drawn 4x larger.
  tile = out[1:29, 1:29, 0]
  assert tile[12:16, 12:16].min() == 255 and tile[:4, :4].max() == 0


def test_pictures_command_writes_pngs(tmp_path_factory):
  workdir, _, _ = quick_run("deepcluster_convnet_cifar10.py", tmp_path_factory)  # The every-config test's run.
  written = pictures.write_pictures(workdir, count=12, queries=3, neighbours=8, channels=6, gallery=300)
  blocks = ("block1", "block2", "block3")
  assert set(written) == ({"clusters", "first_layer_filters", "learning_curves"}
                          | {f"{kind}_{b}" for kind in ("neighbours", "activations") for b in blocks})
  size = lambda name: np.asarray(PIL.Image.open(written[name])).shape  # noqa: E731
  assert size("clusters")[1] == 10 * 33 + 1  # 10 columns of 32 px images.
  for b in blocks:
    # 3 rows of 64 px tiles (32 px images drawn 2x): query, 8 pretrained, a blank, 8 random init.
    assert size(f"neighbours_{b}") == (3 * 65 + 1, 18 * 65 + 1, 3)
    assert size(f"activations_{b}") == (3 * 65 + 1, 7 * 65 + 1, 3)  # The image and 6 maps.
  assert size("learning_curves") == (340, 3 * 420, 3)  # Loss, accuracy, learning rate at 100 dpi.
  row = np.asarray(PIL.Image.open(written["neighbours_block1"]))[1:65]
  query, first_neighbour, blank = row[:, 1:65], row[:, 66:130], row[:, 9 * 65 + 1:10 * 65]
  assert blank.min() == 255 and query.std() > 10 and first_neighbour.std() > 10  # Real images, a white gap.


def test_video_neighbours_show_middle_frames(trained_video_workdir):
  workdir, _, _ = trained_video_workdir
  written = pictures.write_pictures(workdir, queries=2, neighbours=3, channels=2,
                                    kinds=("neighbours", "activations", "curves"))
  image = np.asarray(PIL.Image.open(written["neighbours_block3"]))
  assert image.shape == (2 * 65 + 1, 8 * 65 + 1, 3) and image[1:65, 1:65].std() > 10
  assert np.asarray(PIL.Image.open(written["activations_block1"])).shape == (2 * 65 + 1, 3 * 65 + 1, 3)
  with pytest.raises(ValueError, match="unknown picture kinds"):
    pictures.write_pictures(workdir, kinds=("nope",))


def test_pictures_of_a_missing_run_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints in"):
    pictures.write_pictures(str(tmp_path))
