"""The checkpoint-cost benchmark in --quick mode (the full run is benchmarks/checkpoint_cost.py)."""


import numpy as np
import pytest

from tests.benchmarks import load_benchmark



def test_quick_run_prints_positive_times_and_ratios(capsys):
  checkpoint_cost = load_benchmark("checkpoint_cost")
  rows = checkpoint_cost.main(["--quick"])
  assert [r["config"] for r in rows] == ["rotation_convnet_sample.py:quick"]
  row = rows[0]
  assert row["batch_size"] == 8 and row["repeats"] == 2
  for key in ("step_ms", "async_block_ms", "async_complete_ms", "sync_save_ms", "restore_ms", "state_mb"):
    assert row[key] > 0 and np.isfinite(row[key]), key
  assert row["async_complete_ms"] >= row["async_block_ms"]  # Completion includes the blocking part.

  lines = capsys.readouterr().out.splitlines()
  table = [line for line in lines if line.startswith("|")]
  assert len(table) == 3  # Header, separator, one config.
  assert "step ms" in table[0] and "restore ms" in table[0] and table[0].count("x step") == 4
  cells = [c.strip() for c in table[2].strip("|").split("|")]
  assert cells[0] == "rotation_convnet_sample.py:quick" and cells[1] == "8"
  numbers = [float(c) for c in cells[2:]]
  assert len(numbers) == 10 and all(n > 0 for n in numbers)
  # The printed numbers are the returned ones, each ratio its time over the step time.
  assert numbers[:2] == [pytest.approx(row["step_ms"], abs=0.051), pytest.approx(row["state_mb"], abs=0.0051)]
  for name, time_ms, ratio in zip(("async_block", "async_complete", "sync_save", "restore"),
                                  numbers[2::2], numbers[3::2]):
    assert time_ms == pytest.approx(row[f"{name}_ms"], abs=0.051)
    assert ratio == pytest.approx(row[f"{name}_ms"] / row["step_ms"], abs=0.0051)


def test_bitwise_check_catches_a_changed_state():
  checkpoint_cost = load_benchmark("checkpoint_cost")
  saved = {"a": np.arange(4, dtype=np.float32), "b": np.zeros((), np.int32)}
  checkpoint_cost.assert_bitwise_equal(saved, saved, "same")
  changed = dict(saved, a=np.nextafter(saved["a"], np.float32(10)))  # One ulp off.
  with pytest.raises(AssertionError, match="leaf 0 differs"):
    checkpoint_cost.assert_bitwise_equal(changed, saved, "changed")
