"""Where a train step's time goes: time per XLA operation of the trainer's compiled step.

    python benchmarks/step_profile.py [--config rotation_convnet_sample.py] [--batch_size 256] [--top 25]

Builds the trainer's jitted step (benchmarks/common.py) for one experiment config on a fixed
batch of real images from the embedded sample, runs 2 steps to compile and warm up, then traces
one step with the JAX profiler (XLA:CPU's per-operation trace events switched on with
``--xla_cpu_enable_xprof_traceme``) and prints the operations that took longest, each with its
output shape and the model code it came from (the HLO's op_name), and the time per kind of
operation (convolutions and matmuls run as ``ynn_fusion`` / ``dot``, memory-bound element-wise
work as ``*_fusion``). Operations on the two cores overlap, so their times add up to more
than the step's wall time. This is the profile behind the README's "Performance against
PyTorch" notes; on GPU it lists the GPU's kernels if the profiler records them.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import re
import sys
import tempfile
import time

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
import numpy as np  # noqa: E402
from sslx import configs, run  # noqa: E402
from sslx.data import pipeline  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def hlo_operations(hlo_text: str) -> dict[str, tuple[str, str]]:
  """name -> (output shape, op_name metadata) of every instruction in the compiled HLO text."""
  operations = {}
  for line in hlo_text.splitlines():
    match = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", line)
    if match:
      source = re.search(r'op_name="([^"]+)"', line)
      operations[match.group(1)] = (match.group(2), source.group(1) if source else "")
  return operations


def profile(config, batch_size: int):
  """(seconds of the traced step, {operation name: total ns}, compiled HLO text): the trace's
  events that are instructions of the compiled step (not executor waits, Python frames...)."""
  config.batch_size = batch_size
  step, state, _, mesh = common.train_step(config)
  if run.media_key(config) == "video":  # Clips of real images, as the 3D train-step benchmark feeds.
    import train_step_vs_torch
    clips = train_step_vs_torch.real_clips(batch_size, (config.video.num_frames, config.image_size, config.image_size))
    batch = {"video": clips, "index": np.arange(batch_size, dtype=np.int32)}
  else:
    batch = common.real_batch(batch_size, config.image_size)
  batch = pipeline.to_global(batch, mesh)
  for _ in range(2):
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  with tempfile.TemporaryDirectory() as trace_dir:
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir):
      state, metrics = step(state, batch)
      jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    trace = next(pathlib.Path(trace_dir).rglob("*.xplane.pb"))
    data = jax.profiler.ProfileData.from_file(str(trace))
  hlo = step.lower(state, batch).compile().as_text()
  operations = hlo_operations(hlo)
  totals = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        if event.name in operations:
          totals[event.name] += event.duration_ns
  return seconds, totals, hlo


def main(argv=None) -> dict[str, int]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="rotation_convnet_sample.py", help="A file in experiments/ (or a path).")
  parser.add_argument("--batch_size", type=int, default=256, help="Source images per step.")
  parser.add_argument("--top", type=int, default=25, help="How many operations to list.")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  path = pathlib.Path(args.config) if pathlib.Path(args.config).is_file() else REPO / "experiments" / args.config
  seconds, totals, hlo = profile(configs.load(path), args.batch_size)
  operations = hlo_operations(hlo)
  print(f"{path.name}, batch {args.batch_size}: traced step {seconds:.2f} s, "
        f"operations {sum(totals.values()) / 1e9:.2f} s (overlapping on {os.cpu_count()} cores)")
  print("| ms | operation | output | from |\n|---|---|---|---|")
  for name, ns in totals.most_common(args.top):
    shape, source = operations.get(name, ("?", ""))
    print(f"| {ns / 1e6:.1f} | {name} | {shape} | {source.removeprefix('jit(train_step)/')[-90:]} |")
  kinds = collections.Counter()
  for name, ns in totals.items():
    kinds[name.split(".")[0]] += ns
  print("\n| ms | kind of operation |\n|---|---|")
  for kind, ns in kinds.most_common(12):
    print(f"| {ns / 1e6:.1f} | {kind} |")
  return dict(totals)


if __name__ == "__main__":
  main()
