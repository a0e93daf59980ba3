"""Checkpoint cost against train-step time: Orbax save and restore of the full train state.

    python benchmarks/checkpoint_cost.py [--configs a.py,b.py] [--batch_size 32,8] [--repeats 5]
    python benchmarks/checkpoint_cost.py --quick   # One tiny config, batch 8, 2 repeats.

Builds each config's model, optimizer, replicated TrainState and jitted step exactly as
sslx.train does (its own functions), feeds one fixed batch of real images from the embedded
sample, and times in one loop, alternating so that machine noise hits all alike:

- step: one train step, until its state and metrics are ready (block_until_ready);
- async blocks: how long ``manager.save`` holds the loop with the trainer's async manager
  (checkpoints.manager, the Composite(state=StandardSave(...)) layout);
- async complete: that save plus ``wait_until_finished``, i.e. until it is on disk;
- sync save: the same save with async checkpointing off;
- restore: StandardRestore onto the abstract state with its sharding, until ready.

Each restored state is checked bitwise against the saved one (alternately from the async and
the sync checkpoint), so no column can time a no-op. Values are medians over ``--repeats``
after one warm-up round (compilation, first-save setup); ratios are to the step time measured
in the same run. State MB is 1e6 bytes of the state's arrays (params, BatchNorm statistics,
optimizer state). Checkpoints go to a temporary directory (``--tmp_dir`` picks the disk),
removed at the end. Only the state is saved: the trainer also writes the data iterator's
state and a small JSON, a few kB.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx import checkpoints, process
from sslx.data import pipeline

DEFAULT_CONFIGS = ("rotation_convnet_sample.py", "rotation_resnet18_cifar10.py")
DEFAULT_BATCH_SIZES = (32, 8)  # Rotation x4: 128 and 32 inputs per step, so both fit 2 CPU cores.
QUICK_CONFIG = "rotation_convnet_sample.py"
TIMED = ("step", "async_block", "async_complete", "sync_save", "restore")


def state_bytes(state) -> int:
  return sum(np.dtype(x.dtype).itemsize * int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def assert_bitwise_equal(restored, saved_host, what: str):
  """``restored`` (device arrays) holds exactly the bytes of ``saved_host`` (host copies)."""
  restored_leaves, restored_def = jax.tree.flatten(jax.device_get(restored))
  saved_leaves, saved_def = jax.tree.flatten(saved_host)
  assert restored_def == saved_def, f"{what}: restored tree {restored_def} != saved {saved_def}"
  for i, (a, b) in enumerate(zip(restored_leaves, saved_leaves)):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, f"{what}: leaf {i} {a.dtype}{a.shape} != {b.dtype}{b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: leaf {i} differs from the saved state"


def measure(config, *, repeats: int, tmp_dir: str | None = None, warmup: int = 1) -> dict:
  """Median times (ms) of a train step and of saving / restoring its state; see the module doc."""
  step_fn, state, state_sharding, mesh = common.train_step(config)
  batch = pipeline.to_global(common.real_batch(config.batch_size, config.image_size), mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_sharding)
  times: dict[str, list[float]] = {name: [] for name in TIMED}

  with tempfile.TemporaryDirectory(prefix="sslx_checkpoint_cost_", dir=tmp_dir) as tmp:
    # The trainer's manager (async, its max_to_keep); force=True since save_interval_steps
    # would skip most steps. The sync one differs only in enable_async_checkpointing.
    async_manager = checkpoints.manager(f"{tmp}/async", config)
    sync_manager = ocp.CheckpointManager(
        f"{tmp}/sync/checkpoints", options=ocp.CheckpointManagerOptions(
            max_to_keep=config.keep_checkpoints, enable_async_checkpointing=False, create=True))
    try:
      for i in range(warmup + repeats):
        start = time.perf_counter()
        state, metrics = step_fn(state, batch)
        jax.block_until_ready((state, metrics))
        step_s = time.perf_counter() - start
        number = int(state.step)

        start = time.perf_counter()
        saved = async_manager.save(number, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
        block_s = time.perf_counter() - start
        async_manager.wait_until_finished()
        complete_s = time.perf_counter() - start
        assert saved, f"the async manager skipped step {number}"

        start = time.perf_counter()
        saved = sync_manager.save(number, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
        sync_manager.wait_until_finished()  # A no-op without async checkpointing; kept for symmetry.
        sync_s = time.perf_counter() - start
        assert saved, f"the sync manager skipped step {number}"

        manager, what = (async_manager, "async") if i % 2 == 0 else (sync_manager, "sync")
        start = time.perf_counter()
        restored = manager.restore(number, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        jax.block_until_ready(restored)
        restore_s = time.perf_counter() - start

        # Untimed: the host copy is taken after the saves, so no cached host value speeds them up.
        assert_bitwise_equal(restored, jax.device_get(state), f"{what} checkpoint of step {number}")
        assert all(jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding == s, restored, state_sharding))), \
            "the restored state is not on the state's sharding"
        del restored
        if i >= warmup:
          for name, seconds in zip(TIMED, (step_s, block_s, complete_s, sync_s, restore_s)):
            times[name].append(1e3 * seconds)
    finally:
      async_manager.close()
      sync_manager.close()

  result = {f"{name}_ms": statistics.median(values) for name, values in times.items()}
  result["state_mb"] = state_bytes(state) / 1e6
  result["batch_size"] = config.batch_size
  result["repeats"] = repeats
  return result


def format_table(rows: list[dict]) -> str:
  header = ("| config | batch | step ms | state MB | async save blocks ms | x step | save complete ms | x step "
            "| sync save ms | x step | restore ms | x step |")
  lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for r in rows:
    step = r["step_ms"]
    cells = [r["config"], str(r["batch_size"]), f"{step:.1f}", f"{r['state_mb']:.2f}"]
    for name in ("async_block", "async_complete", "sync_save", "restore"):
      cells += [f"{r[name + '_ms']:.1f}", f"{r[name + '_ms'] / step:.2f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_config_arguments(parser, DEFAULT_CONFIGS, ",".join(map(str, DEFAULT_BATCH_SIZES)))
  parser.add_argument("--repeats", type=int, default=5, help="Timed rounds; medians are reported.")
  parser.add_argument("--tmp_dir", default=None, help="Where the temporary checkpoints go (default: the system's).")
  parser.add_argument("--quick", action="store_true", help=f"{QUICK_CONFIG}:quick, batch 8, 2 repeats.")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  """Runs the benchmark, prints the markdown table and returns its rows."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  if args.quick:
    names, batch_sizes, repeats, arg = [QUICK_CONFIG], [8], 2, "quick"
  else:
    names, batch_sizes = zip(*common.configs_and_batch_sizes(args.configs, args.batch_size))
    repeats, arg = args.repeats, None
  if repeats < 1:
    raise SystemExit("--repeats must be at least 1")

  rows = []
  for name, batch_size in zip(names, batch_sizes):
    config, label = common.load_config(name, arg, batch_size)
    print(f"measuring {label} (batch {batch_size}, {repeats} repeats)...", file=sys.stderr, flush=True)
    rows.append({"config": label, **measure(config, repeats=repeats, tmp_dir=args.tmp_dir)})
  print(f"jax {jax.__version__}, orbax-checkpoint {ocp.__version__}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}; medians of {repeats} after 1 warm-up round")
  print(format_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  process.request_deterministic_gpu_ops()  # As sslx-train does, before any computation.
  main()
