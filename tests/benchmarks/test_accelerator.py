"""benchmarks/accelerator.py in --quick mode on the CPU (the full run is for a lent GPU or TPU)."""

import numpy as np
import pytest

from tests.benchmarks import load_benchmark


def test_quick_run_times_each_model_and_dtype_and_the_host_beside_the_step(capsys):
  accelerator = load_benchmark("accelerator")
  step_rows, host_rows = accelerator.main(["--quick", "--dtypes", "float32"])
  assert [(r["model"], r["dtype"]) for r in step_rows] == [("convnet", "float32"), ("r3d18", "float32")]
  for r in step_rows:
    assert r["per_s"] > 0 and 0 < r["mfu"] < 1 and np.isfinite(r["mfu"]), r
    assert r["torch_per_s"] is None  # No CUDA here: the PyTorch twins run only on a GPU.
  assert step_rows[0]["unit"] == "img" and step_rows[1]["unit"] == "clips"
  assert "measured float32 4096^2 matmul" in step_rows[0]["peak_source"]  # A CPU is in no peak table.
  assert [r["workers"] for r in host_rows] == [0, 1]
  for r in host_rows:
    assert r["delivered_per_s"] > 0 and r["consumed_per_s"] > 0 and 0 <= r["wait_share"] <= 1
  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
  assert len(table) == 2 + len(step_rows) + len(host_rows)
  cells = [c.strip() for c in table[1].strip("|").split("|")]
  assert cells[:3] == ["convnet", "float32", "8"] and cells[5:] == ["-", "-"]
  assert float(cells[3].split()[0]) == pytest.approx(step_rows[0]["per_s"], abs=0.051)


def test_known_devices_use_their_dense_peak(monkeypatch):
  accelerator = load_benchmark("accelerator")

  class Device:
    device_kind = "NVIDIA H100 80GB HBM3"

  monkeypatch.setattr(accelerator.jax, "devices", lambda: [Device()])
  assert accelerator.peak_tflops("bfloat16") == (989.4, "NVIDIA H100 80GB HBM3 dense peak")
  assert accelerator.peak_tflops("float32")[0] == 494.7
