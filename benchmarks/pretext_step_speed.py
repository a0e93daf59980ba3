"""Train-step speed of every experiment config, side by side, as ratios to rotation.

    python benchmarks/pretext_step_speed.py [--steps 20] [--configs a.py,b.py]

Builds each config's model and jitted train step exactly as sslx.train does,
feeds one fixed batch of real images from the embedded sample (resized to the
config's image size), and times ``--steps`` steps after compilation. Prints
source images per second and the ratio to the rotation config measured in the
same run, which is what sizing an experiment to a CPU budget needs (the host
pipeline is not included: on 2 cores it runs beside the step).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx import configs
from sslx.data import pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
  return configs.load(REPO / "experiments" / name)


def images_per_second(config, steps: int) -> float:
  step, state, _, mesh = common.train_step(config)
  batch = pipeline.to_global(common.real_batch(config.batch_size, config.image_size, index_classes=16), mesh)
  state, metrics = step(state, batch)  # Compile.
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  return steps * config.batch_size / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--configs", default=None, help="Comma-separated experiment files (default: all *_cifar10.py).")
  args = parser.parse_args()
  names = args.configs.split(",") if args.configs else sorted(
      p.name for p in (REPO / "experiments").glob("*_convnet_cifar10.py"))
  reference = "rotation_convnet_cifar10.py"
  names = [reference] + [n for n in names if n != reference]
  print(f"{'config':48s} {'batch':>5s} {'px':>4s} {'img/s':>8s} {'vs rotation':>11s} {'steps in 25 min':>15s}")
  base = None
  for name in names:
    config = load_config(name)
    speed = images_per_second(config, args.steps)
    base = base or speed
    print(f"{name:48s} {config.batch_size:5d} {config.image_size:4d} {speed:8.1f} {speed / base:11.2f} "
          f"{int(25 * 60 * speed / config.batch_size):15d}", flush=True)


if __name__ == "__main__":
  main()
