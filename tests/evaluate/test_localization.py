import json
import os

import numpy as np
import PIL.Image
import pytest

from sslx.data import video
from sslx.evaluate import localization
from tests.conftest import DATA_DIR, REPO, quick_run, requires_data

BOXES = REPO / "benchmarks" / "grid_mouth_boxes.csv"
SAMPLE_TEST = ("bwwa8n.mp4", "lwiy7s.mp4", "pwix3a.mp4", "swiu6p.mp4")  # sample_av's test split.


def test_a_box_reaches_the_map_through_region_resize_and_centre_crop():
  # A 200x400 frame; region rows 50-150, columns 100-300 (100x200); shorter side to 50 (x0.5:
  # 50x100); centre 40 crop (rows 5-45, columns 30-70); an 8x8 map (5 px cells). The box's
  # rows 100-120 and columns 200-220 become crop pixels 20-30 both ways: cells 4 to 6.
  rect = localization.box_on_map((0.5, 0.5, 0.1, 0.05), frame_hw=(200, 400), region=(0.25, 0.25, 0.5, 0.5),
                                 resize_size=50, image_size=40, grid=(8, 8))
  np.testing.assert_allclose(rect, (4.0, 4.0, 6.0, 6.0))
  # Without a region or a resize only the centre crop moves it.
  rect = localization.box_on_map((0.0, 0.25, 0.5, 0.5), frame_hw=(40, 80), region=None, resize_size=None,
                                 image_size=40, grid=(4, 4))
  np.testing.assert_allclose(rect, (0.0, 0.0, 2.0, 4.0))


def test_the_mapping_agrees_with_the_host_pipeline_on_a_drawn_box():
  # GRID's frame and the experiment's region, resize and crop: a white box drawn on the frame
  # lands where box_on_map says, to within a pixel of the resized crop.
  height, width, box = 288, 360, (0.66, 0.35, 0.15, 0.16)
  region, resize_size, image_size, grid = (0.40, 0.27, 0.55, 0.46), 72, 64, (16, 16)
  frame = np.zeros((height, width, 3), np.uint8)
  frame[round(box[0] * height):round((box[0] + box[2]) * height),
        round(box[1] * width):round((box[1] + box[3]) * width)] = 255
  shown = video.resize_shorter_side(video.crop_region(frame, region), resize_size)
  top, left = (shown.shape[0] - image_size) // 2, (shown.shape[1] - image_size) // 2
  shown = shown[top:top + image_size, left:left + image_size, 0]
  rows, cols = np.nonzero(shown > 127)
  rect = localization.box_on_map(box, frame_hw=(height, width), region=region, resize_size=resize_size,
                                 image_size=image_size, grid=grid)
  cell = image_size / grid[0]
  np.testing.assert_allclose([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1], np.asarray(rect) * cell,
                             atol=1.0)


def test_cells_count_as_inside_by_their_centre():
  mask = localization.cells_in_box((1.0, 1.0, 3.0, 2.4), (4, 4))
  expected = np.zeros((4, 4), bool)
  expected[1:3, 1] = True
  np.testing.assert_array_equal(mask, expected)


def test_peak_in_box_rate_on_hand_made_maps():
  masks = np.zeros((3, 4, 4), bool)
  masks[:, 1:3, 1:3] = True  # A 2x2 box: a quarter of the map.
  maps = np.zeros((3, 4, 4))
  maps[0, 2, 1] = 5.0  # Peak inside.
  maps[1, 0, 3] = 5.0  # Peak outside.
  # maps[2] is flat: every cell ties for the peak, a quarter of them inside.
  scores = localization.score_maps(maps, masks)
  assert scores["peak_in_box"] == pytest.approx((1 + 0 + 0.25) / 3)
  assert 0.25 < scores["mass_in_box"] < 1.0
  assert localization.score_maps(maps[2:], masks[2:])["mass_in_box"] == pytest.approx(0.25)


def test_boxes_file_errors_are_one_line(tmp_path):
  bad = tmp_path / "bad.csv"
  bad.write_text("file,top,left,height\nx.mp4,0.1,0.1,0.2\n")
  with pytest.raises(ValueError, match=r"lacks columns \['width'\]: give a header file,top,left,height,width"):
    localization.read_boxes(str(bad))
  bad.write_text("file,top,left,height,width\nx.mp4,0.9,0.1,0.2,0.2\n")
  with pytest.raises(ValueError, match=r"the box of x.mp4 .* is not inside the frame"):
    localization.read_boxes(str(bad))
  with pytest.raises(FileNotFoundError, match="pass --boxes"):
    localization.read_boxes(str(tmp_path / "missing.csv"))


def test_the_shipped_boxes_are_what_the_estimator_gives_on_the_sample():
  boxes = localization.read_boxes(str(BOXES))
  for name in SAMPLE_TEST:
    path = next((REPO / "sslx" / "data" / "sample_av").glob(f"*/{name}"))
    frames, _ = video.decode(str(path), fps=25.0, resize_size=None)
    np.testing.assert_allclose(localization.estimate_mouth_box(frames), boxes[name], atol=6e-5)


@requires_data("grid_av/s1", "grid_av_vid2speech")
def test_the_shipped_boxes_cover_every_evaluated_grid_clip():
  boxes = localization.read_boxes(str(BOXES))
  s1_test = video.VideoFolderSource(DATA_DIR / "grid_av" / "s1", "test").paths
  other = [p for split in ("train", "test")
           for p in video.VideoFolderSource(DATA_DIR / "grid_av_vid2speech", split).paths]
  assert len(s1_test) == 15 and len(other) == 33
  assert all(os.path.basename(p) in boxes for p in s1_test + other)


@pytest.fixture(scope="module")
def trained_avol_workdir(tmp_path_factory):
  return quick_run("localization_avol_grid.py", tmp_path_factory)[0]  # The every-config test's run.


def test_scores_held_out_clips_against_their_mouth_boxes_and_draws_the_maps(trained_avol_workdir, tmp_path):
  results = localization.evaluate(trained_avol_workdir, boxes=str(BOXES))
  # The sample's 4 test clips, 2 windows each (quick_video's evaluate.num_clips); 32 px crops
  # through the ConvNet give 8x8 maps.
  assert results["clips"] == 4 and results["windows"] == 8 and results["skipped"] == 0
  assert results["map_size"] == [8, 8] and 0.0 < results["chance"] < 0.5
  for name in ("pretrained", "random_init"):
    assert set(results[name]) == {"peak_in_box", "mass_in_box"}
    assert all(0.0 <= v <= 1.0 for v in results[name].values())
  assert json.loads(open(results["written_to"]).read())["windows"] == 8
  assert sorted(results["picture_clips"]) == sorted(SAMPLE_TEST)
  picture = np.asarray(PIL.Image.open(results["picture"]))
  tile = 32 * localization.PICTURE_SCALE + 2  # Each tile and its border.
  assert picture.shape == (3 * tile + 2, 4 * tile + 2, 3)
  lacking = tmp_path / "three.csv"
  lacking.write_text("".join(line for line in open(BOXES) if not line.startswith("swiu6p.mp4")))
  with pytest.raises(ValueError, match=r"no mouth box for 1 of the 4 clips of sample_av test \(e.g. swiu6p.mp4\)"):
    localization.evaluate(trained_avol_workdir, boxes=str(lacking))
