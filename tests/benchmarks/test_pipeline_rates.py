"""benchmarks/pipeline_rates.py in --quick mode (the full run: the command in its docstring)."""

import numpy as np

from tests.benchmarks import load_benchmark


def test_quick_run_measures_decode_and_every_variant(capsys):
  rates = load_benchmark("pipeline_rates")
  rows = rates.main(["--quick"])
  assert [(r["size"], r["workers"], r["cache"]) for r in rows] == [
      (s, w, c) for s in (32, 64) for w in (0, 1) for c in (False, True)]
  for r in rows:
    assert r["decode_per_core"] > 0 and r["delivered"] > 0 and np.isfinite(r["delivered"])
  assert rows[0]["files"] == 512 and rows[-1]["files"] == 128 and rows[-1]["file_kb"] > rows[0]["file_kb"]
  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
  assert len(table) == 1 + len(rows)
  cells = [c.strip() for c in table[1].strip("|").split("|")]
  assert cells[:5] == ["32 px", f"512 ({rows[0]['file_kb']:.1f})", f"{rows[0]['decode_per_core']:.0f}", "0", "no"]


def test_made_large_files_are_jpegs_of_the_asked_size(tmp_path):
  rates = load_benchmark("pipeline_rates")
  from sslx.data import image_ops
  source = rates.make_large_files(rates.Subset(rates.cifar_source(20), 4), tmp_path)
  assert len(source) == 4
  image = image_ops.decode(source[0]["image"])
  assert image.shape == (rates.LARGE[1], rates.LARGE[0], 3)
