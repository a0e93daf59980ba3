"""The per-kernel convolution benchmark at a tiny batch (the full run is benchmarks/conv_kernels.py)."""

import numpy as np

from tests.benchmarks import load_benchmark


def _assert_timed_and_exact(bench, rows):
  """Every pass of each kernel timed, and agreeing with XLA's to fp32 rounding."""
  for row in rows:
    for kernels in ("xla", "taps", "onednn"):
      for name in bench.PASSES:
        assert row[f"{kernels}_{name}"] > 0 and np.isfinite(row[f"{kernels}_{name}"])
    assert 0 <= row["taps_error"] < 1e-5 and 0 <= row["onednn_error"] < 1e-5


def test_tiny_run_times_every_pass_and_checks_each_kernel_against_xla(capsys):
  bench = load_benchmark("conv_kernels")
  rows = bench.main(["--batch_size", "2", "--repeats", "1", "--layers", "stem,block2_down", "--no_torch"])
  assert [r["layer"] for r in rows] == ["stem", "block2_down"]
  _assert_timed_and_exact(bench, rows)
  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
  assert len(table) == 4 and "onednn weight grad" in table[0] and "onednn max rel. error" in table[0]
  assert table[3].startswith("| block2_down | 32x32, 64->128 /2 |")


def test_r3d_layers_time_every_pass_of_3d_kernels(capsys):
  """--r3d: R3D-18's 3D layers (here the two smallest, one clip): every pass of each kernel
  timed and checked against XLA's; the table holds the stem's 3x7x7 kernel and strides."""
  bench = load_benchmark("conv_kernels")
  rows = bench.main(["--r3d", "--batch_size", "1", "--repeats", "1", "--layers", "block3,block4", "--no_torch"])
  assert [r["shape"] for r in rows] == ["4x14x14, 256->256", "2x7x7, 512->512"]
  _assert_timed_and_exact(bench, rows)
  assert [s[0] for s in bench.LAYERS_3D] == ["stem", "block1", "block2_down", "block2", "block3", "block4"]
  assert bench.LAYERS_3D[0][4:] == ((1, 2, 2), (3, 7, 7))
