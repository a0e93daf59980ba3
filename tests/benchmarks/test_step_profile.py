"""The step profile on the tiny quick-mode config (the full run is benchmarks/step_profile.py)."""

import os

from tests.benchmarks import load_benchmark
from tests.conftest import REPO


def test_profile_names_the_steps_convolutions_with_their_model_code(capsys):
  module = load_benchmark("step_profile")
  config = module.configs.load(REPO / "experiments" / "rotation_convnet_sample.py", "quick")
  seconds, totals, hlo = module.profile(config, 4)
  operations = module.hlo_operations(hlo)
  assert seconds > 0 and totals and all(ns >= 0 for ns in totals.values())
  # Operations run on the cores within the traced step: together at most cores x its wall time.
  assert sum(totals.values()) <= os.cpu_count() * seconds * 1e9
  # The backbone's convolutions were traced, and traced back to their module.
  sources = [operations[name][1] for name in totals]
  assert any("backbone/block1_conv1/conv" in s for s in sources)
