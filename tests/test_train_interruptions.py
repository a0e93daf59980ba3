"""The trainer under kill -9, preemption (SIGTERM) and its grace period, as a real
``sslx-train`` process: every interrupted run, restarted with the same command, ends
with exactly (bit for bit) the state of an uninterrupted one."""

import os
import random
import signal
import subprocess
import sys
import time

import jax
import pytest

from sslx import checkpoints
from tests.trees import assert_trees_close
from tests.conftest import REPO

TOTAL_STEPS = 16
ARGS = ["--config", str(REPO / "experiments/rotation_convnet_sample.py:quick"),
        f"--config.total_steps={TOTAL_STEPS}", "--config.checkpoint_every=2", "--config.keep_checkpoints=3",
        "--config.log_every=1", "--config.progress_bar=False"]


def _start(workdir, *extra):
  return subprocess.Popen([sys.executable, "-m", "sslx.train", *ARGS, "--workdir", str(workdir), *extra],
                          env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(workdir, *extra):
  proc = _start(workdir, *extra)
  output = proc.communicate(timeout=600)[0]
  assert proc.returncode == 0, output[-3000:]
  return output


def _wait_for_checkpoint(workdir, step, proc):
  deadline = time.monotonic() + 300
  while not (workdir / "checkpoints" / str(step)).exists():
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.01)


def _final_state(workdir):
  loaded = checkpoints.load_run(str(workdir))
  assert loaded.step == TOTAL_STEPS
  return jax.device_get(loaded.state)


def _assert_bitwise_equal(a, b):
  assert_trees_close(a, b)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  _finish(workdir)
  return _final_state(workdir)


def test_kill_9_at_random_steps_then_resume_is_bitwise_equal(tmp_path, uninterrupted):
  rng = random.Random(6)  # Fixed, so a failure reproduces; the points fall across the run.
  kill_after = sorted(rng.sample(range(2, TOTAL_STEPS - 2, 2), 3))
  resumed_from = []
  for checkpoint in kill_after:
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, checkpoint, proc)
    time.sleep(rng.uniform(0, 0.1))  # Anywhere in the next steps, perhaps mid-write.
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    latest = checkpoints.manager(str(tmp_path)).latest_step()
    assert checkpoint <= latest < TOTAL_STEPS  # A complete checkpoint, never a half-written one.
    if resumed_from:
      assert f"Resumed from the checkpoint at step {resumed_from[-1]}" in output
    resumed_from.append(latest)
  output = _finish(tmp_path)
  assert f"Resumed from the checkpoint at step {resumed_from[-1]}" in output
  _assert_bitwise_equal(_final_state(tmp_path), uninterrupted)


def test_sigterm_checkpoints_within_the_grace_period_then_resume_is_bitwise_equal(tmp_path, uninterrupted):
  proc = _start(tmp_path, "--config.preemption_grace_seconds=30")
  _wait_for_checkpoint(tmp_path, 4, proc)
  proc.send_signal(signal.SIGTERM)
  noticed = time.monotonic()
  output = proc.communicate(timeout=60)[0]
  elapsed = time.monotonic() - noticed
  assert proc.returncode == 143, output[-3000:]
  assert elapsed < 30
  latest = checkpoints.manager(str(tmp_path)).latest_step()
  # The step reached when the notice came is saved, though it is not a multiple of checkpoint_every.
  assert f"preempted: the checkpoint of step {latest} in {tmp_path} is complete" in output
  assert 4 <= latest < TOTAL_STEPS
  output = _finish(tmp_path)
  assert f"Resumed from the checkpoint at step {latest}" in output
  _assert_bitwise_equal(_final_state(tmp_path), uninterrupted)


def test_grace_period_expiry_exits_and_keeps_the_last_complete_checkpoint(tmp_path, uninterrupted):
  # A zero grace period expires before any checkpoint can be written after the notice.
  proc = _start(tmp_path, "--config.preemption_grace_seconds=0")
  _wait_for_checkpoint(tmp_path, 4, proc)
  proc.send_signal(signal.SIGTERM)
  output = proc.communicate(timeout=60)[0]
  assert proc.returncode == 143
  assert "did not finish within config.preemption_grace_seconds=0" in output, output[-3000:]
  latest = checkpoints.manager(str(tmp_path)).latest_step()
  assert 4 <= latest < TOTAL_STEPS
  _finish(tmp_path)
  _assert_bitwise_equal(_final_state(tmp_path), uninterrupted)


def _unfinished(workdir):
  """Checkpoint directories Orbax is still writing (renamed to their step once complete)."""
  folder = workdir / "checkpoints"
  return sorted(p.name for p in folder.iterdir() if "tmp" in p.name) if folder.exists() else []


def test_kill_9_in_the_middle_of_writing_a_checkpoint_leaves_the_previous_one_latest(tmp_path, uninterrupted):
  for attempt in range(3):  # The kill must land while a save is in flight; retry if it was too late.
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, 2 + 2 * attempt, proc)
    deadline = time.monotonic() + 120
    while not _unfinished(tmp_path):
      assert proc.poll() is None and time.monotonic() < deadline
      time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    left = _unfinished(tmp_path)
    if left:
      break
  assert left, "no kill landed during a checkpoint write in 3 attempts"
  unfinished_step = int(left[0].split(".")[0])
  latest = checkpoints.manager(str(tmp_path)).latest_step()
  assert latest < unfinished_step  # The half-written one is never the latest...
  _finish(tmp_path)  # ...and the rerun resumes from the previous complete one.
  _assert_bitwise_equal(_final_state(tmp_path), uninterrupted)
