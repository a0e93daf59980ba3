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
import time

import jax
import numpy as np

from sslx import configs, train
from sslx.data import image_ops, pipeline, sources

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(name: str):
  return configs.load(REPO / "experiments" / name)


def real_batch(batch_size: int, size: int) -> dict:
  source = sources.get_source("sample", "train")
  images = np.stack([image_ops.decode(source[i]["image"]) for i in range(batch_size)])
  if size != images.shape[1]:
    images = np.asarray(jax.image.resize(images.astype(np.float32), (batch_size, size, size, 3), "bilinear"))
    images = np.clip(images, 0, 255).astype(np.uint8)
  return {"image": images, "index": np.arange(batch_size, dtype=np.int32) % 16}


def images_per_second(config, steps: int) -> float:
  mesh = train.make_mesh()
  pretext, model = train.build_model(config)
  tx, schedule = train.make_optimizer(config.optimizer, config.total_steps)
  state, state_sharding = train.create_train_state(config, model, pretext, tx, mesh)
  step = jax.jit(train.make_train_step(config, model, pretext, tx, schedule),
                 in_shardings=(state_sharding, pipeline.data_sharding(mesh)), donate_argnums=(0,))
  batch = pipeline.to_global(real_batch(config.batch_size, config.image_size), mesh)
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
