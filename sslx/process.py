"""Process concerns of a run: preemption, the step watchdog, multi-process start-up, and the
XLA flags that must be set before any computation. Nothing here knows a model or a pretext."""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
import numpy as np


class Preempted(Exception):
  """Raised by ``train`` after a preemption notice, once the checkpoint of ``step`` is complete."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"preempted: the checkpoint of step {step} in {workdir} is complete; "
                     f"run the same command again to resume")
    self.step = step


class PreemptionNotice:
  """Notices a preemption (SIGTERM) and says at which step boundary the loop saves and stops.

  One process: a SIGTERM handler, installed for the run and then restored,
  records the notice. Several processes: JAX's preemption service (started by
  ``jax.distributed.initialize``) catches the signal on any process and picks
  the first step every process reaches (``reached_preemption_sync_point``), so
  all save the same step. From the notice on, a clock runs: a process still
  alive ``grace_seconds`` later exits hard with a message, so a scheduler's
  deadline is never overrun silently; an unfinished checkpoint is then never
  picked as the latest, and the previous complete one is.
  """

  def __init__(self, grace_seconds: float):
    self.grace_seconds = grace_seconds
    self.noticed_at: float | None = None
    self.distributed = jax.process_count() > 1
    self._previous_handler = None
    if not self.distributed and threading.current_thread() is threading.main_thread():
      self._previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: self._notice())

  def _notice(self):
    if self.noticed_at is None:
      self.noticed_at = time.monotonic()
      timer = threading.Timer(self.grace_seconds, self._expire)
      timer.daemon = True
      timer.start()

  def _expire(self):
    os.write(2, f"sslx-train: error: the checkpoint after the preemption notice did not finish within "
                f"config.preemption_grace_seconds={self.grace_seconds:g}: exiting; the last complete "
                f"checkpoint stays the latest\n".encode())
    os._exit(143)

  def reached(self, step: int) -> bool:
    if self.distributed:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self._notice()
    return self.noticed_at is not None

  def close(self):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)


class StepWatchdog:
  """Exits the process with a one-line error when no training step finishes for ``timeout``
  seconds (0: off), e.g. when another process of a multi-process run died and a
  collective waits for it forever. Armed once the first step (and its compilation)
  is done; paused around long passes that are not steps (a pretext-state refresh).
  """

  def __init__(self, timeout: float, workdir: str):
    self.timeout, self.workdir = timeout, workdir
    self.last_progress: float | None = None
    self.step = 0
    self._stopped = threading.Event()
    if timeout > 0:
      threading.Thread(target=self._watch, daemon=True, name="sslx-step-watchdog").start()

  def progress(self, step: int):
    self.step, self.last_progress = step, time.monotonic()

  def pause(self):
    self.last_progress = None

  def _watch(self):
    while not self._stopped.wait(min(self.timeout / 4, 5.0)):
      if self.last_progress is not None and time.monotonic() - self.last_progress > self.timeout:
        os.write(2, f"sslx-train: error: no training step finished for {self.timeout:g} s after step "
                    f"{self.step} (process {jax.process_index()} of {jax.process_count()}): another process "
                    f"probably died or hangs; restart all processes with the same command to resume "
                    f"from the latest checkpoint in {self.workdir} (config.step_timeout_seconds sets "
                    f"this limit)\n".encode())
        os._exit(1)

  def close(self):
    self._stopped.set()


def process_sum(values: dict) -> dict:
  """{name: count} summed over all processes (every process must call it)."""
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  names = sorted(values)
  gathered = multihost_utils.process_allgather(np.asarray([values[n] for n in names], np.int64))
  return dict(zip(names, (int(v) for v in np.asarray(gathered).reshape(jax.process_count(), -1).sum(0))))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, heartbeat_timeout_seconds: int = 100,
                           initialization_timeout: int = 300):
  """Joins JAX's multi-controller runtime; call before any computation.

  With no arguments JAX finds the cluster itself (TPU pods, SLURM, Open MPI,
  Kubernetes); elsewhere give all three (``distributed_settings``). A process
  that stops answering for ``heartbeat_timeout_seconds`` makes the coordination
  service fail every other process with an error, rather than leave them
  waiting forever in a collective.
  """
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout_seconds)


def distributed_settings(coordinator_address, num_processes, process_id, environ) -> tuple:
  """(coordinator address, process count, process id) from the flags, else from the environment
  variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (set by a launcher);
  all None lets JAX detect the cluster."""
  try:
    return (coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS"),
            num_processes if num_processes is not None else
            (int(environ["JAX_NUM_PROCESSES"]) if environ.get("JAX_NUM_PROCESSES") else None),
            process_id if process_id is not None else
            (int(environ["JAX_PROCESS_ID"]) if environ.get("JAX_PROCESS_ID") else None))
  except ValueError:
    raise ValueError(f"JAX_NUM_PROCESSES={environ.get('JAX_NUM_PROCESSES')!r} / JAX_PROCESS_ID="
                     f"{environ.get('JAX_PROCESS_ID')!r} are not integers: fix the launcher's environment") from None


def request_deterministic_gpu_ops():
  """Asks XLA for deterministic GPU reductions, scatters and convolution algorithms.

  Without it a GPU run resumed from a checkpoint drifts from an uninterrupted one
  (1e-4 in BatchNorm parameters after 5 steps of the resume test on an H100);
  CPUs and TPUs are deterministic already. XLA reads the flag when the first
  backend starts, so this must run before any computation: the CLI calls it first.
  """
  flag = "--xla_gpu_deterministic_ops=true"
  current = os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_deterministic_ops" not in current:
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()


# The malloc a CPU step should run under: XLA:CPU allocates each step's temporary buffers afresh
# and frees them at its end; glibc returns large blocks to the kernel (munmap) and the next step
# page-faults them in again (a third of the main job's CPU time). tcmalloc keeps freed memory for
# reuse. Measured in benchmarks/allocator.py, table in docs/performance.md ("Allocator").
TCMALLOC_LIBRARY = "libtcmalloc_minimal.so.4"
TCMALLOC_PACKAGE = "libtcmalloc-minimal4"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib")


def malloc_in_use(maps_text: str | None = None) -> str:
  """"tcmalloc", "jemalloc" or "glibc": the allocator mapped into this process (from
  /proc/self/maps, or ``maps_text``); "unknown" where that cannot be read."""
  if maps_text is None:
    try:
      with open("/proc/self/maps") as f:
        maps_text = f.read()
    except OSError:
      return "unknown"
  for name in ("tcmalloc", "jemalloc"):
    if f"lib{name}" in maps_text:
      return name
  return "glibc"


def find_tcmalloc(library_dirs=LIBRARY_DIRS) -> str | None:
  for folder in library_dirs:
    path = os.path.join(folder, TCMALLOC_LIBRARY)
    if os.path.exists(path):
      return path
  return None


def allocator_line(backend: str, *, maps_text: str | None = None, library_dirs=LIBRARY_DIRS) -> str | None:
  """The run header's line on the memory allocator: on CPU, which one runs, and under glibc how
  to preload tcmalloc (nothing is changed for the user: an LD_PRELOAD must be set before the
  process starts). None on accelerators, whose buffers XLA allocates itself."""
  if backend != "cpu":
    return None
  used = malloc_in_use(maps_text)
  if used != "glibc":
    return f"allocator   {used}"
  path = find_tcmalloc(library_dirs)
  how = (f"LD_PRELOAD={path}" if path else
         f"apt-get install {TCMALLOC_PACKAGE}, then LD_PRELOAD=/usr/lib/<arch>/{TCMALLOC_LIBRARY}")
  return (f"allocator   glibc: the CPU step page-faults its buffers afresh every step; {how} "
          f"before the command removes that (docs/performance.md, Allocator)")
