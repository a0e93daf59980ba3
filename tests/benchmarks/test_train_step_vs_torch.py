"""The sslx-vs-PyTorch train-step benchmark: its sslx side always, its PyTorch twin where
PyTorch is installed (a benchmark-only dependency: pip install torch==2.13.0)."""


import jax
import numpy as np
import pytest

from tests.benchmarks import load_benchmark



def test_sslx_side_runs_the_trainers_step_and_counts_its_flops():
  bench = load_benchmark("train_step_vs_torch")
  config = bench.sslx_config("convnet", 8, "taps")
  config.model.widths = (8, 16, 16)
  run, flops = bench.sslx_step(config, bench.common.real_batch(8)["image"])
  losses = [run() for _ in range(3)]
  assert all(np.isfinite(losses)) and flops > 1e6
  assert losses[0] == pytest.approx(np.log(4), abs=0.3)  # 4 rotation classes at init.


@pytest.mark.parametrize("model_name", ["convnet", "resnet18"])
def test_torch_twin_has_exactly_the_sslx_models_parameters(model_name):
  pytest.importorskip("torch")
  bench = load_benchmark("train_step_vs_torch")
  config = bench.sslx_config(model_name, 8, "xla")
  from sslx import run
  _, model = run.build_model(config)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {"image": np.zeros((1, 32, 32, 3),
                                                                                           np.float32)}, train=False))
  sslx_shapes = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  torch_shapes = sorted(int(p.numel()) for p in bench.torch_model(model_name, config).parameters())
  assert torch_shapes == sslx_shapes


def test_torch_side_runs_one_step():
  pytest.importorskip("torch")
  bench = load_benchmark("train_step_vs_torch")
  config = bench.sslx_config("convnet", 8, "xla")
  config.model.widths = (8, 16, 16)
  run = bench.torch_step("convnet", config, bench.common.real_batch(8)["image"], channels_last=True)
  assert np.isfinite(run())
