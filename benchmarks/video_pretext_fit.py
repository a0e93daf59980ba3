"""Can a pretext fit real clips at all? One batch of real training clips, AdamW on it.

  python benchmarks/video_pretext_fit.py --config experiments/opn_convnet_egogestar.py \
      [--pseudo_labels fixed|fresh] [--steps 60] [--learning_rate 1e-3] [--set pretext.frame_gap=2]

``fixed``: the pseudo-labels (shuffles, crops) are drawn once, so the loss
should go to ~0 if the model and labels are wired right (memorisation).
``fresh``: new pseudo-labels of the same clips every step, so the model must
learn the task itself on those clips. A diagnostic for a run whose pretext loss
stays at chance: it separates "cannot learn" from "needs more data or steps".
Prints the loss and accuracy on the step's batch every 10 steps.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402  (sets the data directory, common.DATA_DIR)
from sslx import configs, run
from sslx.data import pipeline, sources


def load_config(path: str, overrides: list[str], *, quick: bool = False):
  """The experiment config with ``key.sub=value`` overrides (values as Python literals, else strings)."""
  config = configs.load(path, "quick" if quick else None)
  parsed = {}
  for item in overrides:
    key, value = item.split("=", 1)
    try:
      parsed[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed[key] = value
  config.update_from_flattened_dict(parsed)
  return config


def fit(config, *, pseudo_labels: str, steps: int, learning_rate: float, report=None) -> list[dict]:
  """AdamW steps on one batch of ``config``'s training clips: each step's loss (and accuracy)."""
  source = sources.from_config(config, "train")
  preprocess = run.make_preprocess(config, source, train=True)
  batch = next(iter(pipeline.make_dataset(source, preprocess, batch_size=config.batch_size, seed=0,
                                          train=True, num_threads=config.data_threads)))
  key = run.media_key(config)
  media = {key: jnp.asarray(batch[key], jnp.float32) / 255.0, "index": jnp.asarray(batch["index"])}
  pretext, model = run.build_model(config)
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  make_inputs = jax.jit(lambda rng: pretext.make_inputs(rng, media, config.pretext))
  standardize = lambda inputs: run.standardize_inputs(inputs, mean, std)  # noqa: E731
  fixed_inputs, fixed_targets = make_inputs(jax.random.PRNGKey(0))
  variables = jax.jit(lambda rng: model.init(rng, standardize(fixed_inputs), train=False))(jax.random.PRNGKey(0))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adamw(learning_rate, weight_decay=1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state, rng):
    inputs, targets = make_inputs(rng) if pseudo_labels == "fresh" else (fixed_inputs, fixed_targets)

    def loss_fn(p):
      (outputs, _), updates = model.apply({"params": p, "batch_stats": batch_stats}, standardize(inputs),
                                          train=True, mutable=["batch_stats"], rngs={"dropout": rng})
      value, metrics = pretext.loss(outputs, targets, cfg=config.pretext)
      return value, (metrics, updates["batch_stats"])

    (value, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, dict(metrics, loss=value)

  history = []
  for i in range(steps):
    params, batch_stats, opt_state, metrics = step(params, batch_stats, opt_state, jax.random.PRNGKey(i + 1))
    history.append({k: float(v) for k, v in metrics.items()})
    if report is not None:
      report(i + 1, history[-1])
  return history


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", required=True,
                      help=f"An experiment file; a folder:NAME dataset is read from {common.DATA_DIR}.")
  parser.add_argument("--quick", action="store_true", help="the config's quick mode (embedded sample)")
  parser.add_argument("--pseudo_labels", choices=("fixed", "fresh"), default="fixed")
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--learning_rate", type=float, default=1e-3)
  parser.add_argument("--set", nargs="*", default=[], help="config overrides, key=value")
  args = parser.parse_args()
  config = load_config(args.config, args.set, quick=args.quick)
  print(f"{config.pretext.name}: {config.batch_size} real clips from {config.dataset}, "
        f"{args.pseudo_labels} pseudo-labels, AdamW {args.learning_rate}")
  start = time.perf_counter()

  def report(step, metrics):
    if step % 10 == 1 or step == args.steps:
      accuracy = f" accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
      print(f"step {step:4d}  loss {metrics['loss']:.3f}{accuracy}  ({time.perf_counter() - start:.0f} s)",
            flush=True)

  fit(config, pseudo_labels=args.pseudo_labels, steps=args.steps, learning_rate=args.learning_rate,
      report=report)


if __name__ == "__main__":
  main()
