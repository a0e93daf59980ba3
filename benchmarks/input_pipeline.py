"""Input pipeline against train step: does the host deliver examples as fast as the step eats them?

    python benchmarks/input_pipeline.py [--configs a.py,b.py] [--batch_size 64,128,32] [--steps 20]
        [--rounds 5] [--window 3]
    python benchmarks/input_pipeline.py --quick   # rotation sample + OPN sample clips, tiny batches.

For each config (default: rotation on the embedded sample, rotation on the real CIFAR-10 JPEGs
and OPN on the egogestar clips of the data directory, common.DATA_DIR; a config whose data are
absent is skipped with its reason), one run builds the trainer's own pieces:
``sources.from_config``, ``run.make_preprocess`` and ``run.make_train_iterator`` (grain,
``config.data_threads`` threads, ``config.data.workers`` processes, make_dataset's prefetch: sslx-train's
iterator, with no other prefetching), and the jitted step of benchmarks/common.py
``train_step``. Warm-up: two batches (clips: one epoch, timed as "cold"), compilation and 2
untimed steps of the loop below. Then ``--rounds`` rounds, each timing in turn (rates in source
examples, images or clips, per second):

1. consumed: ``--window`` steps of the jitted step on one fixed batch (images: common's
   ``real_batch``; clips: a batch the pipeline delivered), until the last is ready, with the
   pipeline idle (its buffer was refilled before, see 4);
2. delivered: ``next(iterator)`` for ``--window`` batches (at least twice the drain below, which
   the buffers partly refill while it runs) with no step running, after draining
   what the buffers can hold (``pipeline.buffered_batches`` + 1 untimed batches): the pipeline's own production,
   batching included;
3. the trainer's loop, ceil(``--steps`` / rounds) steps: ``next`` -> ``pipeline.to_global`` ->
   jitted step, one step in flight (the previous step's ``nonfinite`` read back, metric sums
   added on the device), as sslx.train's loop runs, less logging and checkpoints. It starts
   with the buffer drained by step 2, so that no buffered lead hides a pipeline slower than the
   step; when the pipeline is the faster this costs at most one batch's wait and the refill's
   CPU time (buffer / delivered s) per round. Input wait share ("in next() share") = time the loop
   spends inside ``next`` / its wall time (until its last step is ready). With one step in
   flight that time overlaps the running step: the device idles only for the part of a
   ``next`` longer than a step, so the share is an upper bound on the device's input wait.
   On a CPU the pipeline's work also takes cores from the step, which loop / consumed shows;
4. a sleep of 1.2 x the buffers' examples / the delivered rate, in which they refill.

Reported: the medians over the rounds, and the cold rate of the first epoch of clips (every
clip decoded and its motion scored, filling the decoded-frame cache that later epochs read).
Alternating makes machine noise hit every column alike. On a CPU the "device" is the cores the
pipeline's threads use too: consumed and delivered are each measured alone, the loop shows
what the two give together. Checked, so that no row times a wrong pipeline: every delivered
batch has the config's shape (B, [T,] S, S, 3) uint8 and source indices in range, the loops
consumed exactly loop steps x batch examples, and the state counts every step run.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx import pretexts, process, run
from sslx.data import pipeline, sources

DEFAULT_CONFIGS = ("rotation_convnet_sample.py", "rotation_convnet_cifar10.py", "opn_convnet_egogestar.py")
QUICK = (("rotation_convnet_sample.py", 8), ("opn_convnet_egogestar.py", 4))
LOOP_WARMUP = 2


class Checked:
  """The pipeline's iterator, checking every batch it hands out against the config."""

  def __init__(self, iterator, config, num_examples: int):
    self.iterator, self.key, self.num_examples = iterator, run.media_key(config), num_examples
    frames = (config.video.num_frames,) if self.key == "video" else ()
    self.shape = (config.batch_size,) + frames + (config.image_size, config.image_size, 3)
    self.delivered = 0

  def __next__(self):
    batch = next(self.iterator)
    media, index = batch[self.key], batch["index"]
    assert media.shape == self.shape and media.dtype == np.uint8, \
        f"delivered {media.dtype}{media.shape}, expected uint8{self.shape}"
    assert index.shape == self.shape[:1] and 0 <= index.min() and index.max() < self.num_examples, \
        f"delivered indices {index.min()}..{index.max()} outside 0..{self.num_examples - 1}"
    self.delivered += len(index)
    return batch


def trainer_loop(step_fn, state, data_iter, mesh, key: str, steps: int, add_metrics):
  """sslx.train's loop body without logging and checkpoints: (state, wall s, input wait s)."""
  metrics = metric_sums = None
  wait = 0.0
  start = time.perf_counter()
  for _ in range(steps):
    tick = time.perf_counter()
    local = next(data_iter)
    wait += time.perf_counter() - tick
    previous_metrics = metrics
    state, metrics = step_fn(state, pipeline.to_global({key: local[key], "index": local["index"]}, mesh))
    metric_sums = metrics if metric_sums is None else add_metrics(metric_sums, metrics)
    if previous_metrics is not None:
      float(previous_metrics["nonfinite"])  # One step in flight, as the trainer's check_finite.
  jax.block_until_ready((state, metric_sums))
  return state, time.perf_counter() - start, wait


def measure(config, source, *, steps: int, rounds: int, window: int) -> dict:
  """Rates in source examples per second and the loop's input wait share; see the module doc."""
  key = run.media_key(config)
  batch_size = config.batch_size
  preprocess = run.make_preprocess(config, source, train=True)
  num_examples = config.get("train_examples") or len(source)
  pretext = pretexts.get(config.pretext.name)
  step_fn, state, _, mesh = common.train_step(config)
  data_iter = Checked(run.make_train_iterator(config, source, preprocess, pretext, state.pretext_state,
                                                epoch=run.epoch_of(pretext, config, 1, num_examples)),
                      config, num_examples)

  # Warm-up: for clips one epoch, which fills the frame cache (the cold rate); then compilation.
  cold_batches = math.ceil(num_examples / batch_size) if key == "video" else 2
  start = time.perf_counter()
  for _ in range(cold_batches):
    local = next(data_iter)
  cold = cold_batches * batch_size / (time.perf_counter() - start) if key == "video" else None
  fixed = common.real_batch(batch_size, config.image_size) if key == "image" else \
      {"video": local["video"], "index": local["index"]}
  fixed = pipeline.to_global(fixed, mesh)
  state, metrics = step_fn(state, fixed)
  jax.block_until_ready((state, metrics))

  add_metrics = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))
  state, _, _ = trainer_loop(step_fn, state, data_iter, mesh, key, LOOP_WARMUP, add_metrics)  # Compiles.

  drain = pipeline.buffered_batches(batch_size, num_threads=config.data_threads,
                                    workers=run.data_setting(config, "workers")) + 1
  delivered_window = max(window, 2 * drain)  # The buffers refill during the drain: outlast that.
  per_round = math.ceil(steps / rounds)
  delivered, consumed, loop, wait_share = [], [], [], []
  before = data_iter.delivered
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(window):
      state, metrics = step_fn(state, fixed)
    jax.block_until_ready((state, metrics))
    consumed.append(window * batch_size / (time.perf_counter() - start))
    for _ in range(drain):
      next(data_iter)
    start = time.perf_counter()
    for _ in range(delivered_window):
      next(data_iter)
    delivered.append(delivered_window * batch_size / (time.perf_counter() - start))
    # The loop starts drained, so that no buffered lead hides a pipeline slower than the step.
    state, wall, wait = trainer_loop(step_fn, state, data_iter, mesh, key, per_round, add_metrics)
    loop.append(per_round * batch_size / wall)
    wait_share.append(wait / wall)
    time.sleep(min(1.2 * drain * batch_size / delivered[-1], 30.0))  # Refill: the next step window runs alone.

  loop_examples = data_iter.delivered - before - rounds * (drain + delivered_window) * batch_size
  assert loop_examples == rounds * per_round * batch_size, \
      f"the loop consumed {loop_examples} examples, not {rounds * per_round} x {batch_size}"
  steps_run = 1 + LOOP_WARMUP + rounds * (window + per_round)
  assert int(state.step) == steps_run, f"the state counts {int(state.step)} steps, {steps_run} were run"

  return {"media": "clips" if key == "video" else "images", "batch_size": batch_size,
          "batch_shape": data_iter.shape, "cold_per_s": cold,
          "delivered_per_s": statistics.median(delivered), "consumed_per_s": statistics.median(consumed),
          "loop_per_s": statistics.median(loop), "wait_share": statistics.median(wait_share),
          "loop_steps": rounds * per_round, "loop_examples": loop_examples, "rounds": rounds, "window": window}


def format_table(rows: list[dict]) -> str:
  header = ("| config | unit | batch | cold /s | delivered /s | consumed /s | delivered / consumed "
            "| loop /s | loop / consumed | in next() share |")
  lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
  for r in rows:
    cold = "-" if r["cold_per_s"] is None else f"{r['cold_per_s']:.1f}"
    cells = [r["config"], r["media"], str(r["batch_size"]), cold, f"{r['delivered_per_s']:.1f}",
             f"{r['consumed_per_s']:.1f}", f"{r['delivered_per_s'] / r['consumed_per_s']:.2f}",
             f"{r['loop_per_s']:.1f}", f"{r['loop_per_s'] / r['consumed_per_s']:.2f}", f"{r['wait_share']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_config_arguments(parser, DEFAULT_CONFIGS)
  parser.add_argument("--steps", type=int, default=20, help="Timed steps of the trainer's loop, spread over the rounds.")
  parser.add_argument("--rounds", type=int, default=5, help="Alternating delivered / consumed rounds (medians).")
  parser.add_argument("--window", type=int, default=3, help="Batches or steps per timed window.")
  parser.add_argument("--quick", action="store_true",
                      help="Quick modes of rotation (batch 8) and OPN (batch 4 sample clips), 2 rounds, 4 loop steps.")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  """Runs the benchmark, prints the markdown table and returns its rows."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  if args.quick:
    names, batch_sizes = [n for n, _ in QUICK], [b for _, b in QUICK]
    steps, rounds, window, arg = 4, 2, 2, "quick"
  else:
    names, batch_sizes = zip(*common.configs_and_batch_sizes(args.configs, args.batch_size))
    steps, rounds, window, arg = args.steps, args.rounds, args.window, None
  if min(steps, rounds, window) < 1:
    raise SystemExit("--steps, --rounds and --window must be at least 1")

  rows, skipped = [], []
  for name, batch_size in zip(names, batch_sizes):
    config, label = common.load_config(name, arg, batch_size)
    print(f"measuring {label} (batch {config.batch_size})...", file=sys.stderr, flush=True)
    try:
      source = sources.from_config(config, config.train_split)
    except FileNotFoundError as e:  # Data not on this machine (the real CIFAR-10, egogestar).
      skipped.append(f"skipped {label}: {e}")
      continue
    rows.append({"config": label, **measure(config, source, steps=steps, rounds=rounds, window=window)})
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; per second of source "
        f"examples; medians of {rounds} alternating rounds of {window} delivered batches, {window} "
        f"steps, {math.ceil(steps / rounds)} loop steps")
  print(format_table(rows))
  for line in skipped:
    print(line)
  sys.stdout.flush()
  return rows


if __name__ == "__main__":
  process.request_deterministic_gpu_ops()  # As sslx-train does, before any computation.
  main()
