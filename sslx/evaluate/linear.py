"""Linear probe per block of a frozen, pretrained backbone (and of random init).

    python -m sslx.evaluate.linear --workdir DIR [--dataset folder:/data] [--epochs 30]

Reads the run's saved config and latest Orbax checkpoint, extracts every
block's features (average-pooled to a grid of at most ``max_features`` dims,
the protocol of Zhang et al. ECCV 2016 / Goyal et al. ICCV 2019; constants in
the config's ``evaluate`` section), trains one linear softmax classifier per
block on the labeled train split and reports top-1 accuracy on the test split.
The same backbone at random init goes through the identical protocol. Writes
DIR/eval/linear.json and DIR/eval/linear.md and prints the table.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import optax
from absl import flags

from sslx import losses
from sslx import checkpoints, run
from sslx.evaluate import common


def train_linear(train_x, train_y, test_x, test_y, *, num_classes: int, epochs: int, batch_size: int,
                 learning_rate: float, weight_decay: float, seed: int) -> dict:
  """Fits a linear softmax classifier on standardised features; returns accuracies."""
  mean = train_x.mean(axis=0)
  std = train_x.std(axis=0) + 1e-6
  train_x = jnp.asarray((train_x - mean) / std)
  test_x = jnp.asarray((test_x - mean) / std)
  train_y, test_y = jnp.asarray(train_y), jnp.asarray(test_y)
  n, dims = train_x.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  tx = optax.adamw(schedule, weight_decay=weight_decay)
  params = {"w": jnp.zeros((dims, num_classes)), "b": jnp.zeros((num_classes,))}
  opt_state = tx.init(params)

  def logits_fn(params, x):
    return x @ params["w"] + params["b"]

  @jax.jit
  def epoch(params, opt_state, key):
    order = jax.random.permutation(key, n)[:steps_per_epoch * batch_size].reshape(steps_per_epoch, -1)

    def step(carry, idx):
      params, opt_state = carry
      loss_fn = lambda p: losses.softmax_xent(logits=logits_fn(p, train_x[idx]), labels=train_y[idx])  # noqa: E731
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state

  key = jax.random.PRNGKey(seed)
  for _ in range(epochs):
    key, epoch_key = jax.random.split(key)
    params, opt_state = epoch(params, opt_state, epoch_key)

  accuracy = jax.jit(lambda p, x, y: losses.accuracy(logits=logits_fn(p, x), labels=y))
  return {"test_accuracy": float(accuracy(params, test_x, test_y)),
          "train_accuracy": float(accuracy(params, train_x, train_y))}


def _unit(config) -> str:
  return "videos" if run.media_key(config) == "video" else "images"


def markdown_table(results: dict) -> str:
  lines = ["| block | dims | pretrained top-1 (%) | random init top-1 (%) | gain (points) |",
           "|---|---|---|---|---|"]
  for block, r in results["blocks"].items():
    pre, rnd = 100 * r["pretrained"], 100 * r["random_init"]
    lines.append(f"| {block} | {r['dims']} | {pre:.2f} | {rnd:.2f} | {pre - rnd:+.2f} |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             epochs: int | None = None, patch_grid: int | None = None,
             temporal_segments: int | None = None, overrides: dict[str, str] | None = None) -> dict:
  """Probes every block of the checkpoint's backbone and of the same backbone at random init.

  ``patch_grid`` overrides the config's probe input (0: the whole image; g: the
  mean over a g x g grid of patches); its results go to ``eval/linear_grid{g}``
  so that both protocols of one checkpoint can sit side by side.
  """
  loaded = checkpoints.load_run(workdir)
  loaded.config = common.for_evaluation(common.apply_overrides(loaded.config, overrides or {}, "sslx-linear"),
                                        temporal_segments=temporal_segments)
  cfg = loaded.config.evaluate
  stem = "linear"
  if patch_grid is not None:
    if patch_grid < 0:
      raise ValueError(f"patch_grid must be >= 0 (0: whole image), got {patch_grid}")
    cfg.patch_grid = patch_grid
    stem = f"linear_grid{patch_grid}"
  dataset = dataset or cfg.get("dataset") or loaded.config.dataset
  data_dir = data_dir or loaded.config.get("data_dir")
  epochs = epochs if epochs is not None else cfg.epochs
  splits, num_classes, skipped = common.extract_pretrained_and_random(
      loaded, (cfg.train_split, cfg.test_split), dataset=dataset, data_dir=data_dir,
      purpose="linear evaluation")

  (train_f, train_y), (test_f, test_y) = splits[cfg.train_split], splits[cfg.test_split]
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "train_examples": int(len(train_y)), "test_examples": int(len(test_y)),
             "skipped_images": skipped, "protocol": dict(cfg, epochs=epochs), "blocks": {}}
  for block in train_f["pretrained"]:
    row = {"dims": int(train_f["pretrained"][block].shape[1])}
    for name in ("pretrained", "random_init"):
      fit = train_linear(train_f[name][block], train_y, test_f[name][block], test_y,
                         num_classes=num_classes, epochs=epochs, batch_size=cfg.batch_size,
                         learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, seed=cfg.seed)
      row[name] = fit["test_accuracy"]
      row[f"{name}_train"] = fit["train_accuracy"]
    results["blocks"][block] = row

  return common.write_results(
      workdir, stem, results, table=markdown_table(results),
      title=f"Linear probe, {dataset}, checkpoint step {loaded.step}, {len(train_y)} train / "
            f"{len(test_y)} test {_unit(loaded.config)}")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_integer("temporal_segments", None, "Video: clip features as means over this many "
                       "consecutive stretches of time, concatenated; default: the config's.")
  flags.DEFINE_integer("epochs", None, "Probe epochs; default: the config's.")
  flags.DEFINE_integer("patch_grid", None, "Probe input: 0 the whole image, g the mean over g x g "
                       "patches; default: the config's evaluate.patch_grid.")


USAGE = """Usage: sslx-linear --workdir=DIR [--dataset=SPEC] [--config.evaluate.KEY=VALUE ...]

Linear probe per block of the workdir's latest checkpoint and of the same backbone at random
init; the protocol's settings are the run's evaluate section, overridable with --config.
(e.g. --config.evaluate.test_split=val --config.evaluate.epochs=10). Writes DIR/eval/linear.json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                     patch_grid=args.patch_grid, temporal_segments=args.temporal_segments,
                     overrides=overrides)
  print(f"\nLinear probe on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['train_examples']} train / {results['test_examples']} test examples)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-linear", _main, usage=USAGE,
                     flag_names=("epochs", "patch_grid", "temporal_segments"))


if __name__ == "__main__":
  cli_main()
