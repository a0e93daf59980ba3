"""Several processes as on a TPU pod or a GPU cluster: 2 processes x 4 fake CPU devices on
127.0.0.1 (JAX's multi-controller runtime, gloo collectives), against 1 process x 8 devices."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from sslx import checkpoints, process
from tests.conftest import REPO, with_xla_flags

WORKER = REPO / "tests" / "multiprocess_worker.py"
CPU_ENV = dict(os.environ, JAX_PLATFORMS="cpu")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run_workers(out_dir, workdir, num_processes):
  """Runs the worker as ``num_processes`` processes; returns each one's report and params."""
  os.makedirs(out_dir, exist_ok=True)
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(WORKER), str(out_dir), str(workdir), str(i),
                             str(num_processes), port], env=CPU_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(num_processes)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, output in zip(procs, outputs):
    assert p.returncode == 0, output[-3000:]
  reports = [json.loads((out_dir / f"process_{i}.json").read_text()) for i in range(num_processes)]
  params = [dict(np.load(out_dir / f"params_{i}.npz")) for i in range(num_processes)]
  return reports, params, outputs


def _losses(workdir):
  from tensorboard.backend.event_processing import event_accumulator
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  return np.array([e.value for e in events.Scalars("train/loss")])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
  root = tmp_path_factory.mktemp("one_process")
  reports, params, _ = _run_workers(root / "out", root / "run", 1)
  return reports[0], params[0], _losses(str(root / "run"))


def test_two_processes_match_one_process_and_resume_across_processes(tmp_path, one_process):
  reference, reference_params, reference_losses = one_process
  workdir = tmp_path / "run"
  reports, params, _ = _run_workers(tmp_path / "out", workdir, 2)
  assert [r["local_devices"] for r in reports] == [4, 4]

  # Each process fed 8 rows per step; together the reference's global batch, step by step.
  for step, global_batch in enumerate(reference["fed"]):
    assert len(reports[0]["fed"][step]) == len(reports[1]["fed"][step]) == 8
    assert reports[0]["fed"][step] + reports[1]["fed"][step] == global_batch
  # Disjoint shards: no example read by both processes within an epoch, none missing.
  fed = [np.concatenate(r["fed"]) for r in reports]
  first_epoch = [f[:32] for f in fed]  # 4 steps x 8 rows per process = one epoch of 64.
  assert not set(first_epoch[0]) & set(first_epoch[1])
  assert sorted(np.concatenate(first_epoch)) == list(range(64))
  assert not set(fed[0][32:]) & set(fed[1][32:])

  # Losses of every step and the final parameters equal the 1-process run's within 1e-5.
  np.testing.assert_allclose(_losses(str(workdir)), reference_losses, atol=1e-5, rtol=0)
  assert len(reference_losses) == 6
  for name, value in reference_params.items():
    np.testing.assert_allclose(params[0][name], value, atol=1e-5, rtol=0, err_msg=name)
    np.testing.assert_array_equal(params[1][name], params[0][name])  # Replicated: identical.

  # Only process 0 wrote logs and config.json (Orbax writes checkpoints from both, by design).
  assert reports[1]["written"] == []
  assert "config.json" in reports[0]["written"]
  assert any(path.startswith("tensorboard") for path in reports[0]["written"])
  assert len(os.listdir(workdir / "tensorboard")) == 1

  # Orbax across processes: drop the final checkpoint, rerun: both processes restore step 3
  # (state and their own data position) and end on the same parameters, bit for bit.
  checkpoints = workdir / "checkpoints"
  assert sorted(os.listdir(checkpoints)) == ["3", "6"]
  assert sorted(os.listdir(checkpoints / "3" / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  shutil.rmtree(checkpoints / "6")
  resumed, resumed_params, outputs = _run_workers(tmp_path / "resumed", workdir, 2)
  assert "Resumed from the checkpoint at step 3" in outputs[0]
  for step, global_batch in enumerate(reference["fed"][3:]):
    assert resumed[0]["fed"][step] + resumed[1]["fed"][step] == global_batch
  for name, value in params[0].items():
    np.testing.assert_array_equal(resumed_params[0][name], value, err_msg=name)
    np.testing.assert_array_equal(resumed_params[1][name], value, err_msg=name)


def _cli(workdir, process_id, port, *extra, from_environment=False):
  """``sslx-train --distributed`` as process ``process_id`` of 2, told where the coordinator is
  by flags or, as a launcher would, by JAX_* environment variables."""
  where = {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": str(process_id)}
  flags = [] if from_environment else [f"--coordinator_address={where['JAX_COORDINATOR_ADDRESS']}",
                                       "--num_processes=2", f"--process_id={process_id}"]
  env = dict(CPU_ENV, XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=4"), **(where if from_environment else {}))
  return subprocess.Popen(
      [sys.executable, "-m", "sslx.train", "--config", str(REPO / "experiments/rotation_convnet_sample.py:quick"),
       "--workdir", str(workdir), "--distributed", *flags, "--heartbeat_timeout=5",
       "--config.total_steps=100000", "--config.checkpoint_every=3", "--config.step_timeout_seconds=20",
       "--config.progress_bar=False", *extra],
      env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# Messages a survivor may die with, whichever notices first: the trainer (a failed collective,
# or its step watchdog), or JAX's coordination service, which aborts the process itself on a
# missed heartbeat or a lost coordinator ("... This most likely indicates that another task died").
DEAD_PEER_MESSAGES = ("another process probably died", "another task died", "heartbeat timeout")


@pytest.mark.parametrize("victim", [1, 0], ids=["worker_dies", "coordinator_dies"])
def test_when_a_process_dies_the_other_exits_with_a_clear_error_in_bounded_time(tmp_path, victim):
  port = _free_port()
  procs = [_cli(tmp_path, i, port) for i in range(2)]
  try:
    deadline = time.monotonic() + 300
    while not (tmp_path / "checkpoints" / "3").exists():  # Both are training.
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
          [p.communicate()[0][-2000:] for p in procs if p.poll() is not None]
      time.sleep(0.2)
    procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    survivor = procs[1 - victim]
    output = survivor.communicate(timeout=120)[0]
    elapsed = time.monotonic() - killed_at
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert survivor.returncode != 0
  assert elapsed < 60, elapsed  # Heartbeat 5 s, step watchdog 20 s.
  assert any(m in output for m in DEAD_PEER_MESSAGES), output[:6000]


def test_sigterm_to_one_process_checkpoints_the_same_step_on_all_and_exits(tmp_path):
  port = _free_port()
  procs = [_cli(tmp_path, i, port, "--config.preemption_grace_seconds=30", from_environment=True)
           for i in range(2)]
  try:
    deadline = time.monotonic() + 300
    while not (tmp_path / "checkpoints" / "3").exists():
      assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
      time.sleep(0.1)
    procs[1].send_signal(signal.SIGTERM)  # The notice reaches one host; JAX tells the others.
    noticed = time.monotonic()
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    elapsed = time.monotonic() - noticed
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [143, 143], [o[-2000:] for o in outputs]
  assert elapsed < 30
  latest = checkpoints.manager(str(tmp_path)).latest_step()
  assert latest > 3
  for output in outputs:
    assert f"preempted: the checkpoint of step {latest} in {tmp_path} is complete" in output
  assert sorted(os.listdir(tmp_path / "checkpoints" / str(latest) / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]


def test_distributed_settings_come_from_flags_else_the_environment():
  env = {"JAX_COORDINATOR_ADDRESS": "h0:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"}
  assert process.distributed_settings(None, None, None, env) == ("h0:1234", 4, 2)
  assert process.distributed_settings("h1:99", 2, 0, env) == ("h1:99", 2, 0)
  assert process.distributed_settings(None, None, None, {}) == (None, None, None)  # JAX detects the cluster.
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='four'.*not integers"):
    process.distributed_settings(None, None, None, dict(env, JAX_NUM_PROCESSES="four"))


def test_the_allocator_line_names_the_malloc_in_use_and_how_to_preload_tcmalloc(tmp_path):
  tcmalloc_maps = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n"
  glibc_maps = "7f00-7f10 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
  assert process.malloc_in_use(tcmalloc_maps) == "tcmalloc"
  assert process.malloc_in_use(glibc_maps) == "glibc"
  assert process.allocator_line("cpu", maps_text=tcmalloc_maps) == "allocator   tcmalloc"
  assert process.allocator_line("gpu", maps_text=glibc_maps) is None  # XLA allocates device memory itself.
  (tmp_path / process.TCMALLOC_LIBRARY).write_bytes(b"")
  found = process.allocator_line("cpu", maps_text=glibc_maps, library_dirs=(str(tmp_path),))
  assert f"LD_PRELOAD={tmp_path / process.TCMALLOC_LIBRARY} " in found
  missing = process.allocator_line("cpu", maps_text=glibc_maps, library_dirs=())
  assert f"apt-get install {process.TCMALLOC_PACKAGE}" in missing
  assert process.malloc_in_use() in ("glibc", "tcmalloc", "jemalloc")  # This process's own maps.
