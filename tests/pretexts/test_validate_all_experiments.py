from pathlib import Path

import pytest

from sslx import configs, pretexts

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments").glob("*.py"))


def test_experiments_found():
  assert len(EXPERIMENTS) >= 20, EXPERIMENTS


@pytest.mark.parametrize("arg", [None, "quick"])
@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_passes_its_pretexts_validate(path, arg):
  # Both the full config and its two-step CPU mode must pass the checks the trainer runs first.
  config = configs.load(path, arg)
  module = pretexts.get(config.pretext.name)
  if hasattr(module, "validate"):
    module.validate(config)
