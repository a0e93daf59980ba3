"""Tests of benchmarks/: each benchmark's quick mode, and the pieces that can be checked."""

import importlib.util

from tests.conftest import REPO


def load_benchmark(name: str):
  """benchmarks/<name>.py as a module (benchmarks/ is a folder of scripts, not a package)."""
  spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
