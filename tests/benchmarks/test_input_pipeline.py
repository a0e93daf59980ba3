"""The input-pipeline benchmark in --quick mode (the full run is benchmarks/input_pipeline.py)."""


import numpy as np
import pytest

from tests.benchmarks import load_benchmark



def test_quick_run_prints_positive_rates_and_a_wait_share(capsys):
  input_pipeline = load_benchmark("input_pipeline")
  rows = input_pipeline.main(["--quick"])
  assert [r["config"] for r in rows] == ["rotation_convnet_sample.py:quick", "opn_convnet_egogestar.py:quick"]
  image, clips = rows
  # The pipeline delivered what the configs ask for (quick modes: 32 px, OPN windows of 12 frames),
  # and the timed loop consumed exactly steps x batch examples.
  assert image["media"] == "images" and image["batch_shape"] == (8, 32, 32, 3)
  assert clips["media"] == "clips" and clips["batch_shape"] == (4, 12, 32, 32, 3)
  assert image["cold_per_s"] is None and clips["cold_per_s"] > 0
  for row in rows:
    assert row["loop_steps"] == 4 and row["loop_examples"] == 4 * row["batch_size"]
    for key in ("delivered_per_s", "consumed_per_s", "loop_per_s"):
      assert row[key] > 0 and np.isfinite(row[key]), (row["config"], key)
    assert 0 <= row["wait_share"] <= 1

  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
  assert len(table) == 4 and "in next() share" in table[0]
  for line, row in zip(table[2:], rows):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == row["config"] and cells[2] == str(row["batch_size"])
    delivered, consumed, ratio = (float(c) for c in cells[4:7])
    assert delivered == pytest.approx(row["delivered_per_s"], abs=0.051)
    assert ratio == pytest.approx(row["delivered_per_s"] / row["consumed_per_s"], abs=0.0051)
    assert float(cells[9]) == pytest.approx(row["wait_share"], abs=0.00051)


def test_checked_iterator_rejects_a_batch_of_the_wrong_shape():
  input_pipeline = load_benchmark("input_pipeline")
  from tests.conftest import tiny_config
  config = tiny_config()
  config.batch_size = 2
  good = {"image": np.zeros((2, 32, 32, 3), np.uint8), "index": np.array([0, 1], np.int32)}
  checked = input_pipeline.Checked(iter([good, dict(good, image=good["image"][:, :16])]), config, 10)
  assert next(checked) is good and checked.delivered == 2
  with pytest.raises(AssertionError, match=r"expected uint8\(2, 32, 32, 3\)"):
    next(checked)
  out_of_range = dict(good, index=np.array([0, 10], np.int32))
  with pytest.raises(AssertionError, match="outside 0..9"):
    next(input_pipeline.Checked(iter([out_of_range]), config, 10))


def test_a_config_whose_data_are_absent_is_skipped_with_its_reason(tmp_path, capsys):
  input_pipeline = load_benchmark("input_pipeline")
  experiment = tmp_path / "rotation_absent.py"
  experiment.write_text(
      "from sslx import configs\nfrom sslx.pretexts.image import rotation\n\n\n"
      "def get_config(arg=None):\n  c = configs.base()\n  c.pretext = rotation.default_config()\n"
      f"  c.dataset = 'folder:{tmp_path / 'absent'}'\n  return c\n")
  assert input_pipeline.main(["--configs", str(experiment), "--steps", "1"]) == []
  out = capsys.readouterr().out
  assert f"skipped rotation_absent.py: dataset folder:{tmp_path / 'absent'} not found at {tmp_path / 'absent'}" in out
