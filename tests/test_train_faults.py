"""The trainer against bad data, non-finite steps and bad configs: each handled in a line,
with nothing lost."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import checkpoints, run, train
from sslx.data import sources
from tests.conftest import REPO, tiny_config, tiny_video_config


def _corrupt(path: Path, how: str):
  data = path.read_bytes()
  if how == "truncated":
    path.write_bytes(data[: len(data) // 3])
  elif how == "empty":
    path.write_bytes(b"")
  elif how == "garbage":
    path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
  elif how == "text":
    path.write_text("not an image at all\n")


def test_five_percent_corrupt_images_are_skipped_counted_and_the_run_finishes(tmp_path):
  source = sources.get_source("sample", "train")
  picked = range(0, 2000, 10)  # 200 real images, all 10 classes.
  copies = []
  for i in picked:
    record = source[i]
    dst = tmp_path / "data" / "train" / source.classes[record["label"]] / record["path"].rsplit("/", 1)[1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(record["image"])
    copies.append(dst)
  ways = ("truncated", "empty", "garbage", "text")
  corrupted = [copies[j] for j in range(5, 200, 20)]  # 10 of 200: 5%.
  for k, path in enumerate(corrupted):
    _corrupt(path, ways[k % len(ways)])
  config = tiny_config()
  config.dataset = f"folder:{tmp_path / 'data'}"
  config.total_steps, config.checkpoint_every = 14, 14  # 224 examples: more than one epoch of 190.
  state, metrics = train.train(config, str(tmp_path / "run"))
  assert int(state.step) == 14
  assert metrics["skipped_images"] == len(corrupted) == 10  # Each bad file counted once.
  assert np.isfinite(metrics["loss"])


def test_corrupt_clips_are_skipped_counted_and_the_run_finishes(tmp_path):
  shutil.copytree(REPO / "sslx" / "data" / "sample_video", tmp_path / "clips")
  clips = sorted((tmp_path / "clips" / "train").glob("*/*.mp4"))
  for path, how in zip(clips[::8], ("truncated", "garbage", "text")):
    _corrupt(path, how)
  config = tiny_video_config()
  config.dataset = f"folder:{tmp_path / 'clips'}"
  config.total_steps = config.checkpoint_every = 8  # 32 clips: every one visited.
  state, metrics = train.train(config, str(tmp_path / "run"))
  assert int(state.step) == 8 and np.isfinite(metrics["loss"])
  assert metrics["skipped_clips_unreadable"] >= 3


def _learning_rate_inf_at(monkeypatch, bad_step):
  """Makes exactly ``bad_step``'s update infinite (its loss and gradient stay finite)."""
  real = run.make_schedule

  def spiked(cfg, total_steps):
    schedule = real(cfg, total_steps)
    return lambda count: jnp.where(count == bad_step - 1, jnp.inf, schedule(count))

  monkeypatch.setattr(run, "make_schedule", spiked)


def test_nonfinite_step_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  _learning_rate_inf_at(monkeypatch, 5)
  config = tiny_config()
  config.total_steps, config.checkpoint_every = 8, 2
  with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient at step 5 .*latest checkpoint "
                                               r"is step 4.*on_nonfinite=skip"):
    train.train(config, str(tmp_path))
  manager = checkpoints.manager(str(tmp_path))
  assert manager.latest_step() == 4 and manager.all_steps() == [2, 4]
  restored = checkpoints.load_run(str(tmp_path)).state
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def test_nonfinite_step_skipped_and_counted_by_config(tmp_path, monkeypatch):
  from sslx import pretexts
  from sslx.data import pipeline
  config = tiny_config()
  config.total_steps, config.checkpoint_every = 6, 6
  fed, real_to_global = [], pipeline.to_global
  monkeypatch.setattr(pipeline, "to_global", lambda batch, mesh: fed.append(batch["index"].copy())
                      or real_to_global(batch, mesh))
  clean, _ = train.train(config, str(tmp_path / "clean"))
  monkeypatch.setattr(pipeline, "to_global", real_to_global)
  # NaN inputs for the batch holding step 3's first example: that step's loss is NaN.
  poison = int(fed[2][0])
  assert all(poison not in f for i, f in enumerate(fed) if i != 2)
  module = pretexts.get(config.pretext.name).module
  real_make_inputs = module.make_inputs

  def poisoned(rng, batch, cfg, **kwargs):
    inputs, targets = real_make_inputs(rng, batch, cfg, **kwargs)
    bad = jnp.any(batch["index"] == poison)
    return jax.tree.map(lambda x: jnp.where(bad, jnp.nan, x), inputs), targets

  monkeypatch.setattr(module, "make_inputs", poisoned)
  config.on_nonfinite = "skip"
  state, metrics = train.train(config, str(tmp_path / "skipped"))
  assert int(state.step) == 6 and metrics["nonfinite_steps"] == 1
  leaves = [np.asarray(x) for x in jax.tree.leaves((state.params, state.opt_state))]
  assert all(np.isfinite(x).all() for x in leaves)
  # The skipped update really is missing: the run differs from the clean one.
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                      jax.tree.leaves(clean.params)))


@pytest.fixture
def no_compilation(monkeypatch):
  """Fails the test if the trainer reaches jax.jit: config errors must come before it."""
  def refuse(*args, **kwargs):
    raise AssertionError("jax.jit was reached before the config error")
  monkeypatch.setattr(train.jax, "jit", refuse)


BAD_CONFIGS = {
    "unknown pretext": (lambda c: setattr(c.pretext, "name", "image.rotatoin"), r"unknown pretext 'image.rotatoin'"),
    "unknown model": (lambda c: setattr(c.model, "name", "vgg"), r"unknown model name 'vgg'"),
    "image size vs geometry": (lambda c: c.update({"image_size": 16}), r"jigsaw needs image_size >= .*got 16"),
    "unknown nonfinite mode": (lambda c: c.update({"on_nonfinite": "ignore"}), r"unknown on_nonfinite 'ignore'"),
    "no steps": (lambda c: c.update({"total_steps": 0}), r"total_steps is 0"),
}


@pytest.mark.parametrize("problem", sorted(BAD_CONFIGS))
def test_bad_configs_fail_in_one_line_before_compilation(problem, tmp_path, no_compilation):
  # (A global batch that the devices do not divide: test_train.py, on 8 fake devices.)
  change, message = BAD_CONFIGS[problem]
  config = tiny_config("jigsaw_convnet_cifar10.py" if "geometry" in problem else "rotation_convnet_sample.py")
  change(config)
  with pytest.raises(ValueError, match=message) as error:
    train.train(config, str(tmp_path))
  assert "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [("batch_size", 32), ("dataset", "sample_video"), ("seed", 1),
                                        ("model.widths", (8, 16, 32)), ("optimizer.name", "adamw")])
def test_workdir_of_an_incompatible_config_fails_in_one_line_before_compilation(
    key, value, trained_workdir, monkeypatch):
  workdir, _, _ = trained_workdir
  config = tiny_config()
  config.update_from_flattened_dict({key: value})
  monkeypatch.setattr(train.jax, "jit", lambda *a, **k: pytest.fail("compiled before the error"))
  top = key.split(".")[0]
  with pytest.raises(ValueError, match=rf"workdir .* holds a checkpoint of {top if top != 'optimizer' else key} "
                                       rf".*use a new --workdir") as error:
    train.train(config, workdir)
  assert "\n" not in str(error.value)


def test_a_longer_run_in_the_same_workdir_is_compatible(trained_workdir, tmp_path):
  workdir, _, _ = trained_workdir
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  config = tiny_config()
  config.total_steps = 3  # Continuing a run is what a workdir is for.
  state, _ = train.train(config, str(copy))
  assert int(state.step) == 3


WATCHDOG = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from sslx import process
    watchdog = process.StepWatchdog(1.0, "/some/workdir")
    watchdog.progress(7)
    if sys.argv[2] == "paused":
      watchdog.pause()  # A long pass that is not a step (a pretext-state refresh).
    time.sleep(4)
    print("still alive")
""")


@pytest.mark.parametrize("mode", ["hung", "paused"])
def test_step_watchdog_ends_a_hung_process_with_one_line(mode):
  result = subprocess.run([sys.executable, "-c", WATCHDOG, str(REPO), mode], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  if mode == "paused":
    assert result.returncode == 0 and "still alive" in result.stdout
    return
  assert result.returncode == 1 and "still alive" not in result.stdout
  assert ("sslx-train: error: no training step finished for 1 s after step 7 (process 0 of 1): "
          "another process probably died or hangs") in result.stderr


def test_checkpoints_and_data_are_never_executed():
  # Checkpoints are Orbax arrays + JSON and the data are decoded media: nothing in the
  # package may unpickle or evaluate what it reads.
  # (ast.literal_eval, which reads literals only, is allowed: it parses command-line values.)
  offenders = []
  for path in (REPO / "sslx").rglob("*.py"):
    text = path.read_text()
    for needle in ("import pickle", "pickle.load", "allow_pickle=True", "exec(", "import dill",
                   "cloudpickle", "torch.load"):
      if needle in text:
        offenders.append(f"{path.relative_to(REPO)}: {needle}")
    if re.search(r"(?<![\w.])eval\(", text):
      offenders.append(f"{path.relative_to(REPO)}: eval(")
  assert offenders == []


def test_video_workdir_with_other_clip_sampling_fails_but_other_cache_size_resumes(trained_video_workdir, tmp_path):
  workdir, _, _ = trained_video_workdir
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  config = tiny_video_config()
  config.video.frame_stride = 2
  with pytest.raises(ValueError, match=r"holds a checkpoint of video.frame_stride 1, but the config asks for 2"):
    train.train(config, str(copy))
  config = tiny_video_config()
  config.video.cache_mb, config.total_steps = 64, 3  # Not part of what the checkpoint means.
  state, _ = train.train(config, str(copy))
  assert int(state.step) == 3
