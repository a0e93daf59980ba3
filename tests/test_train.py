import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from sslx import checkpoints, process, run, train
from tests.conftest import REPO, quick_run, tiny_config, train_until_killed, with_xla_flags
from tests.trees import assert_trees_close

EXPERIMENTS = sorted(p.name for p in (REPO / "experiments").glob("*.py"))


def _params_close(a, b, atol=0.0):
  assert_trees_close(a, b, atol=atol)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_runs_two_steps_in_quick_mode(name, tmp_path_factory):
  config = tiny_config(name)
  workdir, state, metrics = quick_run(name, tmp_path_factory)  # Shared with the evaluation tests.
  assert int(state.step) == 2
  assert np.isfinite(metrics["loss"]) and metrics["images_per_sec"] > 0
  meta = json.loads((Path(workdir) / "config.json").read_text())
  assert meta["global_batch_size"] == config.batch_size and meta["device_count"] == jax.device_count()
  assert meta["config"]["pretext"]["name"] == config.pretext.name
  assert list((Path(workdir) / "tensorboard").iterdir())


def _logged(workdir, tag):
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  return {e.step: e.value for e in events.Scalars(tag)}


def test_logged_metrics_are_means_over_the_logging_interval(tmp_path):
  config = tiny_config()
  config.total_steps, config.checkpoint_every = 4, 4
  config.log_every = 1
  train.train(config, str(tmp_path / "every_step"))
  config.log_every = 2
  train.train(config, str(tmp_path / "every_2"))
  per_step = _logged(str(tmp_path / "every_step"), "train/loss")
  per_2 = _logged(str(tmp_path / "every_2"), "train/loss")
  assert sorted(per_step) == [1, 2, 3, 4] and sorted(per_2) == [2, 4]
  assert len(set(per_step.values())) == 4  # Distinct losses, so a mean differs from any one.
  for step in (2, 4):
    np.testing.assert_allclose(per_2[step], (per_step[step - 1] + per_step[step]) / 2, rtol=1e-5)
  lr = _logged(str(tmp_path / "every_2"), "train/learning_rate")
  np.testing.assert_allclose(lr[4], _logged(str(tmp_path / "every_step"), "train/learning_rate")[4])


def test_checkpoint_round_trip(trained_workdir):
  workdir, state, _ = trained_workdir
  loaded = checkpoints.load_run(workdir)
  assert loaded.step == 2 and loaded.meta["sslx_version"]
  _params_close(loaded.variables["params"], state.params["backbone"])
  _params_close(loaded.variables["batch_stats"], state.batch_stats["backbone"])


def test_unfinished_checkpoint_is_never_latest(trained_workdir):
  workdir, _, _ = trained_workdir
  # What a crash in the middle of writing step 9 leaves behind.
  (Path(workdir) / "checkpoints" / "9.orbax-checkpoint-tmp-1234" / "state").mkdir(parents=True)
  assert checkpoints.manager(workdir).latest_step() == 2
  assert checkpoints.load_run(workdir).step == 2


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
  config = tiny_config()
  config.total_steps, config.checkpoint_every = 5, 2
  straight, _ = train.train(config, str(tmp_path / "straight"))

  # Crash while assembling the 4th batch: the checkpoint of step 2 is the last good one.
  train_until_killed(config, str(tmp_path / "resumed"), monkeypatch, kill_at_batch=4)
  assert checkpoints.manager(str(tmp_path / "resumed")).latest_step() == 2

  resumed, _ = train.train(config, str(tmp_path / "resumed"))
  assert int(resumed.step) == 5
  _params_close(resumed.params, straight.params)
  _params_close(resumed.batch_stats, straight.batch_stats)
  _params_close(resumed.opt_state, straight.opt_state)


def test_other_model_in_workdir_fails_before_compiling(trained_workdir):
  workdir, _, _ = trained_workdir
  config = tiny_config()
  config.model.widths = (8, 16, 32)
  with pytest.raises(ValueError, match="holds a checkpoint of model"):
    train.train(config, workdir)


def test_bad_config_values_fail_clearly(tmp_path):
  config = tiny_config()
  config.dataset = "imagenet"
  with pytest.raises(ValueError, match="unknown dataset spec"):
    train.train(config, str(tmp_path))
  config = tiny_config()
  config.optimizer.name = "lamb"
  with pytest.raises(ValueError, match="unknown optimizer.name 'lamb'"):
    train.train(config, str(tmp_path / "b"))


def test_cache_and_worker_processes_train_to_the_same_state(tmp_path):
  """data.cache_mb and data.workers change how batches are made, not which: 3 steps with a cache
  and 2 worker processes end in the same state, bit for bit, as with neither."""
  config = tiny_config()
  config.total_steps, config.checkpoint_every = 3, 3
  config.data.cache_mb, config.data.workers = 0, 0
  plain, _ = train.train(config, str(tmp_path / "plain"))
  config.data.cache_mb, config.data.workers = 64, 2
  fast, _ = train.train(config, str(tmp_path / "fast"))
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(fast.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_worker_processes_for_clips_fail_before_compiling(tmp_path):
  config = tiny_config("opn_convnet_egogestar.py")
  config.data.workers = 2
  with pytest.raises(ValueError, match=r"^data.workers=2: worker processes run image preprocessing only for now"):
    train.train(config, str(tmp_path))


def test_schedules():
  config = tiny_config().optimizer
  config.learning_rate, config.warmup_steps = 1.0, 10
  cosine = run.make_schedule(config, 100)
  assert float(cosine(0)) == 0.0 and float(cosine(10)) == pytest.approx(1.0)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-6)
  config.schedule = "step"
  step = run.make_schedule(config, 100)
  assert float(step(10)) == pytest.approx(1.0)
  assert float(step(45)) == pytest.approx(0.2) and float(step(95)) == pytest.approx(0.2**3)


SHARDED_CHECK = textwrap.dedent("""
    import json, os, sys
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    import jax, numpy as np
    sys.path.insert(0, sys.argv[1])
    from tests.conftest import tiny_config
    from sslx import run, train
    assert jax.device_count() == 8
    config = tiny_config()
    config.total_steps = 1
    # Summation order differs between 1 and 8 devices: about 1e-4 relative noise in the
    # first conv's float32 gradient, 3e-6 in the parameters at this learning rate. The
    # BatchNorm statistics compared below do not depend on it.
    config.optimizer.learning_rate = 0.01
    out = {}
    for n in (1, 8):
      state, _ = train.train(config, os.path.join(sys.argv[2], str(n)), mesh=run.make_mesh(jax.devices()[:n]))
      out[n] = jax.device_get((state.params, state.batch_stats))
    assert jax.tree.structure(out[1]) == jax.tree.structure(out[8])
    leaves = zip(jax.tree.leaves(out[1]), jax.tree.leaves(out[8]))
    diff = max(float(np.max(np.abs(a - b))) for a, b in leaves)
    config.batch_size = 12
    try:
      train.train(config, os.path.join(sys.argv[2], "odd"))
      error = ""
    except ValueError as e:
      error = str(e)
    print(json.dumps({"max_abs_diff": diff, "error": error}))
""")


def test_eight_fake_devices_match_one_device(tmp_path):
  result = subprocess.run([sys.executable, "-c", SHARDED_CHECK, str(REPO), str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          # CPU platform even where a GPU is present: the check is about 8 host devices.
                          env=dict(os.environ, JAX_PLATFORMS="cpu",
                                   XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=8")))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["max_abs_diff"] < 1e-5, report
  assert "batch_size 12 is not divisible by the 8 devices" in report["error"]


def test_deterministic_gpu_ops_requested_once_and_user_choice_kept(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
  process.request_deterministic_gpu_ops()
  process.request_deterministic_gpu_ops()
  assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                             "--xla_gpu_deterministic_ops=true"]
  monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_deterministic_ops=false")  # The user's own setting wins.
  process.request_deterministic_gpu_ops()
  assert os.environ["XLA_FLAGS"] == "--xla_gpu_deterministic_ops=false"
