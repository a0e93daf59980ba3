"""The command lines as a user meets them: --help lists each script's own flags, a mistyped
config key is one line naming the closest valid key, a finished workdir says it is finished."""

import json
import os
import subprocess
import sys

import pytest


from tests.conftest import REPO

QUICK = str(REPO / "experiments/rotation_convnet_sample.py:quick")


def _run(*args, timeout=300):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=dict(os.environ, JAX_PLATFORMS="cpu"))


@pytest.mark.parametrize("module", ["sslx.train", "sslx.evaluate.linear", "sslx.evaluate.retrieval",
                                    "sslx.evaluate.knn", "sslx.evaluate.lowshot",
                                    "sslx.evaluate.pictures", "sslx.finetune"])
def test_help_lists_the_scripts_own_flags_first(module):
  result = _run(module, "--help")
  assert result.returncode == 0, result.stderr
  first_lines = result.stdout.splitlines()[:15]
  assert any("--workdir" in line for line in first_lines), result.stdout[:2000]


def test_train_help_says_how_to_list_a_configs_fields():
  assert "--print_config" in _run("sslx.train", "--help").stdout


def test_print_config_lists_the_fields():
  result = _run("sslx.train", f"--config={QUICK}", "--print_config")
  assert result.returncode == 0, result.stderr
  assert "total_steps: 2" in result.stdout and "conv_kernels" in result.stdout


def test_a_mistyped_config_key_is_one_line_naming_the_closest(tmp_path):
  result = _run("sslx.train", f"--config={QUICK}", f"--workdir={tmp_path}", "--config.totl_steps=5")
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) <= 3, result.stderr
  assert "totl_steps" in lines[-1] and "--config.total_steps" in lines[-1]


def test_a_checkpoint_of_another_model_is_one_line_without_teardown_noise(trained_workdir):
  workdir = trained_workdir[0]
  result = _run("sslx.train", f"--config={QUICK}", f"--workdir={workdir}", "--config.model.widths=(4,8,8)")
  assert result.returncode == 1
  assert "error: " in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "Event loop is closed" not in result.stderr


def test_header_then_a_finished_workdir_says_so_with_its_metrics(tmp_path):
  result = _run("sslx.train", f"--config={QUICK}", f"--workdir={tmp_path}", "--config.total_steps=1",
                "--config.progress_bar=False")
  assert result.returncode == 0, result.stderr[-3000:]
  head = result.stdout
  for part in ("(fresh)", "device(s)", "sample split 'train': 2000 images", "image.rotation",
               "parameters", "1 steps of 16", "conv kernels", "allocator   "):
    assert part in head, head
  again = _run("sslx.train", f"--config={QUICK}", f"--workdir={tmp_path}", "--config.total_steps=1")
  assert again.returncode == 0 and "is finished (step 1 of 1)" in again.stdout
  final = json.loads(again.stdout.strip().splitlines()[-1])["final_metrics"]
  assert final["loss"] > 0


def test_evaluation_overrides_of_the_stored_config(trained_workdir):
  workdir = trained_workdir[0]
  result = _run("sslx.evaluate.linear", f"--workdir={workdir}", "--config.evaluate.test_split=val")
  assert result.returncode != 0
  # The missing split is found before any feature is extracted, in one line.
  assert "val" in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
  result = _run("sslx.evaluate.linear", f"--workdir={workdir}", "--config.evaluate.tset_split=val")
  assert "did you mean --config.evaluate.test_split" in result.stderr


