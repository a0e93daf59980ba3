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


def test_main_reports_each_round_as_it_completes_and_times_only_the_chosen_variants(capsys):
  bench = load_benchmark("train_step_vs_torch")
  rows = bench.main(["--models", "convnet", "--kernels", "xla", "--torch", "none", "--steps", "2",
                     "--batch_size", "4"])
  out = capsys.readouterr().out
  rounds = [line for line in out.splitlines() if line.startswith("convnet round ")]
  assert [line.split(" (")[0] for line in rounds] == ["convnet round 1/2", "convnet round 2/2"]
  assert all("sslx_xla " in line and "torch" not in line for line in rounds)
  # The model's row follows its rounds, with only the timed columns.
  assert out.index("| convnet | 4 |") > out.index("convnet round 2/2")
  timed = {k for k in rows[0] if k.endswith("_s") and not k.endswith("per_s")}
  assert timed == {"sslx_xla_s"} and rows[0]["flops"] > 1e6


def test_main_rejects_an_unknown_variant_before_measuring():
  bench = load_benchmark("train_step_vs_torch")
  with pytest.raises(SystemExit, match="unknown --kernels"):
    bench.main(["--kernels", "onednn"])


@pytest.mark.parametrize("model_name", ["r3d18_w0.25", "r2plus1d18"])
def test_torch_video_twin_has_exactly_the_sslx_models_parameters(model_name):
  pytest.importorskip("torch")
  bench = load_benchmark("train_step_vs_torch")
  config = bench.sslx_config(model_name, 2, "xla", (4, 16, 16))
  from sslx import run
  _, model = run.build_model(config)
  clips = np.zeros((1, 4, 16, 16, 3), np.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {"video": clips}, train=False))
  sslx_shapes = sorted(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  torch_shapes = sorted(int(p.numel()) for p in bench.torch_model(model_name, config).parameters())
  assert torch_shapes == sslx_shapes


def test_video_step_runs_on_real_clips_at_the_chosen_size(capsys):
  bench = load_benchmark("train_step_vs_torch")
  clips = bench.real_clips(2, (4, 16, 16))
  assert clips.shape == (2, 4, 16, 16, 3) and clips.dtype == np.uint8 and clips.std() > 10
  np.testing.assert_array_equal(clips[:, 1], np.roll(clips[:, 0], 1, axis=2))  # Panning one pixel a frame.
  rows = bench.main(["--models", "r3d18_w0.25", "--clip", "4x16x16", "--kernels", "auto", "--torch", "none",
                     "--steps", "1", "--batch_size", "2"])
  assert rows[0]["model"] == "r3d18_w0.25 4x16x16" and rows[0]["sslx_images_per_s"] > 0
  out = capsys.readouterr().out
  assert "r3d18_w0.25 round 1/1 (clips/s): sslx " in out and "| batch (clips) |" in out
