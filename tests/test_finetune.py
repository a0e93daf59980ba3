"""Fine-tuning through the one trainer (sslx/finetune.py): the supervised objective starts from
the pretraining checkpoint's backbone, runs as ordinary resumable training runs, and a
``sslx-finetune`` killed with kill -9 and restarted ends bit for bit where an uninterrupted one does."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sslx import checkpoints, configs, finetune, train
from tests.conftest import REPO, tiny_video_config
from tests.trees import assert_trees_close


@pytest.fixture(scope="module")
def video_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("opn"))
  train.train(tiny_video_config(), workdir)
  return workdir


def test_finetune_reports_both_and_trains_the_whole_network(video_workdir):
  results = finetune.evaluate(video_workdir, steps=3, num_clips=2)
  assert results["test_examples"] == 11 and results["num_clips"] == 2  # The sample's 11 test clips.
  assert results["protocol"]["steps"] == 3
  for name in ("pretrained", "random_init"):
    for key in ("video_top1", "clip_top1"):
      assert 0.0 <= results[name][key] <= 1.0
    assert np.isfinite(results[name]["train_loss"])
  with open(f"{video_workdir}/eval/finetune.json") as f:
    saved = json.load(f)
  assert saved["pretrained"] == results["pretrained"] and saved["random_init"] == results["random_init"]
  assert "| random init |" in open(f"{video_workdir}/eval/finetune.md").read()

  # Each is a trainer run with its own checkpoint; the pretrained one moved away from the
  # pretraining backbone (gradients reach the first convolution, BatchNorm in train mode).
  pretrained = checkpoints.load_run(video_workdir)
  tuned = checkpoints.load_run(results["runs"]["pretrained"])
  assert tuned.step == 3 and tuned.config.pretext.name == "supervised"
  assert tuned.config.init_from == os.path.abspath(video_workdir)
  first_conv = lambda params: np.asarray(params["block1_conv1"]["conv"]["kernel"])  # noqa: E731
  assert np.abs(first_conv(tuned.state.params["backbone"]) - first_conv(pretrained.variables["params"])).max() > 0
  assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(jax.device_get(tuned.variables["batch_stats"])),
                                                     jax.tree.leaves(jax.device_get(pretrained.variables["batch_stats"]))))
  # Rerun: both runs are finished and are not trained again; the same numbers come back.
  again = finetune.evaluate(video_workdir, steps=3, num_clips=2)
  assert again["pretrained"]["video_top1"] == results["pretrained"]["video_top1"]


def test_init_from_loads_the_backbone_and_keeps_a_fresh_head(trained_workdir, tmp_path):
  workdir, state, _ = trained_workdir
  config = finetune.training_config(checkpoints.load_run(workdir).config, finetune.default_config(),
                                    dataset="sample", data_dir=None, num_classes=10, init_from=workdir,
                                    init_step=None)
  config.total_steps, config.optimizer.learning_rate, config.progress_bar = 1, 0.0, False
  tuned, _ = train.train(config, str(tmp_path))
  # A zero learning rate: the backbone's parameters are exactly the pretraining checkpoint's.
  assert_trees_close(jax.device_get(tuned.params["backbone"]), jax.device_get(state.params["backbone"]))
  assert set(tuned.params) == {"backbone", "classifier"}


def test_missing_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    finetune.evaluate(str(tmp_path))


def test_bad_steps_fail_in_one_line():
  with pytest.raises(ValueError, match="steps >= 1"):
    finetune.finetune_config(configs.base(), steps=0)


STEPS = 8


def _finetune(workdir):
  return subprocess.Popen([sys.executable, "-m", "sslx.finetune", "--workdir", str(workdir),
                           f"--steps={STEPS}", "--checkpoint_every=2"],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _runs(workdir):
  root = os.path.join(workdir, "eval", "finetune")
  return {name.split("-")[0]: os.path.join(root, name) for name in sorted(os.listdir(root))}


def test_kill_9_then_rerun_is_bitwise_equal_to_an_uninterrupted_finetune(trained_workdir, tmp_path):
  source = trained_workdir[0]
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  for target in (straight, killed):
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("eval", "tensorboard"))
  proc = _finetune(straight)
  output = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, output[-3000:]
  assert "| pretrained |" in output

  proc = _finetune(killed)
  deadline = time.monotonic() + 300
  while not any(os.path.isdir(os.path.join(run, "checkpoints", "4"))
                for run in (_runs(killed).values() if (killed / "eval" / "finetune").exists() else [])):
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
    time.sleep(0.01)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  proc = _finetune(killed)
  output = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, output[-3000:]
  assert "Resumed from the checkpoint at step" in output

  for name in ("pretrained", "random_init"):
    a = checkpoints.load_run(_runs(straight)[name]).state
    b = checkpoints.load_run(_runs(killed)[name]).state
    assert int(a.step) == int(b.step) == STEPS
    assert_trees_close(jax.device_get(a), jax.device_get(b))
  # The same test accuracy (the training-loss column is the mean since the last log or resume).
  for name in ("pretrained", "random_init"):
    assert (json.loads((straight / "eval" / "finetune.json").read_text())[name]["top1"]
            == json.loads((killed / "eval" / "finetune.json").read_text())[name]["top1"])
