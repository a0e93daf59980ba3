"""Compile time of a run's initialisation: ``jax.jit`` against ``sslx.run.jit_once``.

    python benchmarks/init_compile.py [--configs rotation_resnet18_cifar10.py,multitask_convnet_cifar10.py]

For each experiment config in quick mode, builds the model, optimizer and the train state's
init function exactly as sslx.train does, then compiles it with XLA's default CPU optimisation
level (``jax.jit``) and with ``run.jit_once`` (level 1 on CPU), one right after the other, and
runs both from the same key. It prints the compile times,
their ratio, and the largest difference between the two initial states in units of the
parameters' float32 spacing (ulp), so a faster init that changed the values would show.
Each compile is a fresh ``jit`` of a new function object, so no in-memory cache serves it;
the persistent compilation cache is off unless the environment turns it on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sslx import configs, run  # noqa: E402


def compile_seconds(jit, init) -> tuple[float, object]:
  fresh = lambda rng: init(rng)  # noqa: E731  A new function object: nothing cached in memory.
  start = time.perf_counter()
  compiled = jit(fresh).lower(jax.random.PRNGKey(0)).compile()
  seconds = time.perf_counter() - start
  return seconds, jax.device_get(compiled(jax.random.PRNGKey(0)))


def max_ulps(a, b) -> float:
  worst = 0.0
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind == "f" and x.size:
      worst = max(worst, float(np.max(np.abs(x - y) / np.spacing(np.maximum(np.abs(x), np.abs(y)).astype(x.dtype)))))
    elif not np.array_equal(x, y):
      return float("inf")
  return worst


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--configs", default="rotation_resnet18_cifar10.py,multitask_convnet_cifar10.py")
  args = parser.parse_args()
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  print("| config | jax.jit compile s | jit_once compile s | ratio | max difference (ulp) |")
  print("|---|---|---|---|---|")
  for name in args.configs.split(","):
    config = configs.load(REPO / "experiments" / name, "quick")
    pretext, model = run.build_model(config)
    tx, _ = run.make_optimizer(config.optimizer, config.total_steps)
    init = run.train_state_init_fn(config, model, pretext, tx)
    once_s, once_state = compile_seconds(run.jit_once, init)
    default_s, default_state = compile_seconds(jax.jit, init)
    print(f"| {name} | {default_s:.1f} | {once_s:.1f} | {default_s / once_s:.1f}x | "
          f"{max_ulps(default_state, once_state):g} |", flush=True)


if __name__ == "__main__":
  main()
