"""One process of a multi-process training run on this machine, for tests/test_multiprocess.py.

    python tests/multiprocess_worker.py OUT_DIR WORKDIR PROCESS_ID NUM_PROCESSES PORT

Sets up fake CPU devices (8 // NUM_PROCESSES per process), joins the JAX
distributed runtime on 127.0.0.1:PORT (skipped for one process), trains the
tiny rotation config, and writes OUT_DIR/process_<id>.json (the example ids
this process fed, step by step) and OUT_DIR/params_<id>.npz (final params).
"""

import builtins
import json
import os
import sys

out_dir, workdir, process_id, num_processes, port = sys.argv[1:6]
process_id, num_processes = int(process_id), int(num_processes)
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={8 // num_processes}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sslx import process, train
from sslx.data import pipeline  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402

if num_processes > 1:
  process.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id,
                               heartbeat_timeout_seconds=10)
assert jax.process_count() == num_processes and jax.device_count() == 8

# Files this process opens for writing in the workdir, outside checkpoints/ (which Orbax
# writes from every process by design): only process 0 may write logs.
written = []
real_open = builtins.open


def recording_open(file, mode="r", *args, **kwargs):
  path = os.path.abspath(str(file)) if isinstance(file, (str, os.PathLike)) else ""
  if any(c in mode for c in "wax") and path.startswith(os.path.abspath(workdir)) and "/checkpoints/" not in path:
    written.append(os.path.relpath(path, workdir))
  return real_open(file, mode, *args, **kwargs)


builtins.open = recording_open
fed = []
real_to_global = pipeline.to_global


def recording_to_global(batch, mesh):
  fed.append(np.asarray(batch["index"]).tolist())
  return real_to_global(batch, mesh)


pipeline.to_global = recording_to_global
config = tiny_config()
config.train_examples = 64  # One epoch = 4 global batches of 16.
config.batch_size = 16
config.total_steps = 6
config.checkpoint_every = 3
config.log_every = 1
# Reductions across processes (gloo) sum in another order than within one: ~1e-8 in the
# parameters per step, which a max-pool tie can turn into a different gradient route.
# A small learning rate keeps 6 steps of that well inside the 1e-5 the test allows.
config.optimizer.learning_rate = 0.001
state, metrics = train.train(config, workdir)
params = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_leaves_with_path(jax.device_get((state.params, state.batch_stats)))}
np.savez(os.path.join(out_dir, f"params_{process_id}.npz"), **params)
with open(os.path.join(out_dir, f"process_{process_id}.json"), "w") as f:
  json.dump({"fed": fed, "metrics": metrics, "written": written, "process_index": jax.process_index(),
             "local_devices": jax.local_device_count()}, f)
