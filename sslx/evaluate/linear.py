"""Linear probe per block of a frozen, pretrained backbone (and of random init).

    python -m sslx.evaluate.linear --workdir DIR [--dataset folder:/data] [--epochs 30]

Reads the run's saved config and latest Orbax checkpoint, extracts every
block's features (average-pooled to a grid of at most ``max_features`` dims,
the protocol of Zhang et al. ECCV 2016 / Goyal et al. ICCV 2019; constants in
the config's ``evaluate`` section), trains one linear softmax classifier per
block on the labeled train split and reports top-1 accuracy on the test split.
The same backbone at random init goes through the identical protocol. Writes
DIR/eval/linear.json and DIR/eval/linear.md and prints the table.

A run trained with sound (an audio-visual pretext) is probed on its visual backbone by
default, and on its audio tower with ``--stream audio``: every block of the tower, applied to
the sound it heard in training (sslx/evaluate/common.py), against the same tower at random
init; written to DIR/eval/linear-audio.json and .md. The labels are the evaluation's
(``evaluate.label_file`` / ``evaluate.label_column``, else the run's; sslx/data/sources.py):
``--config.evaluate.label_column=color`` probes GRID's colour word instead of its command.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import optax
from absl import flags

from sslx import losses
from sslx import run
from sslx.data import sources
from sslx.evaluate import common


def train_linear(train_x, train_y, test_x, test_y, *, num_classes: int, epochs: int, batch_size: int,
                 learning_rate: float, weight_decay: float, seed: int, standardize_with=None) -> dict:
  """Fits a linear softmax classifier on standardised features; returns accuracies.

  ``standardize_with``: (mean, std) per dimension to standardise with instead of the labelled
  training features' own (low-shot probes pass the whole unlabelled training set's).
  """
  if standardize_with is None:
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6
  else:
    mean, std = standardize_with
  train_x = jnp.asarray((train_x - mean) / std)
  test_x = jnp.asarray((test_x - mean) / std)
  train_y, test_y = jnp.asarray(train_y), jnp.asarray(test_y)
  n, dims = train_x.shape
  batch_size = min(batch_size, n)
  tx, epoch = _fit_fns(n, batch_size, epochs, float(learning_rate), float(weight_decay))
  params = {"w": jnp.zeros((dims, num_classes)), "b": jnp.zeros((num_classes,))}
  opt_state = tx.init(params)
  key = jax.random.PRNGKey(seed)
  for _ in range(epochs):
    key, epoch_key = jax.random.split(key)
    params, opt_state = epoch(params, opt_state, epoch_key, train_x, train_y)
  return {"test_accuracy": float(_accuracy(params, test_x, test_y)),
          "train_accuracy": float(_accuracy(params, train_x, train_y))}


def _logits(params, x):
  return x @ params["w"] + params["b"]


@jax.jit
def _accuracy(params, x, y):
  return losses.accuracy(logits=_logits(params, x), labels=y)


@functools.lru_cache(maxsize=16)
def _fit_fns(n: int, batch_size: int, epochs: int, learning_rate: float, weight_decay: float):
  """The optimizer and the jitted epoch of a probe, built once per schedule: the features are
  arguments, so the probes of every block of the same width (and of both the pretrained and the
  random-init network) share one compilation."""
  steps_per_epoch = n // batch_size
  schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
  tx = optax.adamw(schedule, weight_decay=weight_decay)

  @jax.jit
  def epoch(params, opt_state, key, train_x, train_y):
    order = jax.random.permutation(key, n)[:steps_per_epoch * batch_size].reshape(steps_per_epoch, -1)

    def step(carry, idx):
      params, opt_state = carry
      loss_fn = lambda p: losses.softmax_xent(logits=_logits(p, train_x[idx]), labels=train_y[idx])  # noqa: E731
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
    return params, opt_state

  return tx, epoch


def _unit(config) -> str:
  return "videos" if run.media_key(config) == "video" else "images"


def markdown_table(results: dict) -> str:
  lines = ["| block | dims | pretrained top-1 (%) | random init top-1 (%) | gain (points) |",
           "|---|---|---|---|---|"]
  for block, r in results["blocks"].items():
    pre, rnd = 100 * r["pretrained"], 100 * r["random_init"]
    lines.append(f"| {block} | {r['dims']} | {pre:.2f} | {rnd:.2f} | {pre - rnd:+.2f} |")
  return "\n".join(lines)


def labels_read(config, *, dataset: str, data_dir: str | None) -> dict:
  """What the probe's labels were: {"file": the CSV read (None: the dataset's own labels),
  "column", "classes"}, from the evaluation's train split as the probe opened it."""
  source = sources.from_config(config, config.evaluate.train_split, dataset=dataset, data_dir=data_dir,
                               evaluation=True)
  label_file = getattr(source, "label_file", None)
  return {"file": str(label_file) if label_file else None,
          "column": getattr(source, "label_column", None) if label_file else None,
          "classes": list(getattr(source, "classes", []) or [])}


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             epochs: int | None = None, patch_grid: int | None = None,
             temporal_segments: int | None = None, overrides: dict[str, str] | None = None,
             stream: str = "visual") -> dict:
  """Probes every block of the checkpoint's backbone and of the same backbone at random init.

  ``patch_grid`` overrides the config's probe input (0: the whole image; g: the
  mean over a g x g grid of patches); its results go to ``eval/linear_grid{g}``
  so that both protocols of one checkpoint can sit side by side. ``stream="audio"``
  probes an audio-visual run's audio tower instead (``eval/linear-audio``).
  """
  if stream == "audio" and (patch_grid is not None or temporal_segments is not None):
    raise ValueError("patch_grid and temporal_segments shape the visual features: drop them for --stream audio")
  loaded = common.load_for_evaluation(workdir, "sslx-linear", overrides=overrides,
                                      temporal_segments=temporal_segments)
  common.check_stream(loaded.config, stream)
  cfg = loaded.config.evaluate
  stem = "linear" if stream == "visual" else f"linear-{stream}"
  if patch_grid is not None:
    if patch_grid < 0:
      raise ValueError(f"patch_grid must be >= 0 (0: whole image), got {patch_grid}")
    cfg.patch_grid = patch_grid
    stem = f"linear_grid{patch_grid}"
  epochs = epochs if epochs is not None else cfg.epochs
  dataset, (train_f, train_y), (test_f, test_y), num_classes, skipped = common.train_and_test_features(
      loaded, dataset=dataset, data_dir=data_dir, purpose="linear evaluation", stream=stream)
  labels = labels_read(loaded.config, dataset=dataset, data_dir=data_dir)
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "stream": stream, "labels": labels,
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

  what = "Linear probe" if stream == "visual" else f"Linear probe of the {stream} tower"
  column = f" ({labels['column']} from {os.path.basename(labels['file'])})" if labels["file"] else ""
  return common.write_results(
      workdir, common.results_stem(stem, loaded.config), results, table=markdown_table(results),
      title=f"{what}, {dataset}{column}, checkpoint step {loaded.step}, {len(train_y)} train / "
            f"{len(test_y)} test {_unit(loaded.config)}")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_integer("temporal_segments", None, "Video: clip features as means over this many "
                       "consecutive stretches of time, concatenated; default: the config's.")
  flags.DEFINE_integer("epochs", None, "Probe epochs; default: the config's.")
  flags.DEFINE_integer("patch_grid", None, "Probe input: 0 the whole image, g the mean over g x g "
                       "patches; default: the config's evaluate.patch_grid.")
  flags.DEFINE_string("stream", "visual", "What to probe: 'visual' (the backbone) or 'audio' (the audio "
                      "tower of a run trained with an audio-visual pretext; writes eval/linear-audio.json).")


USAGE = """Usage: sslx-linear --workdir=DIR [--dataset=SPEC] [--stream=audio] [--config.evaluate.KEY=VALUE ...]

Linear probe per block of the workdir's latest checkpoint and of the same backbone at random
init; the protocol's settings are the run's evaluate section, overridable with --config.
(e.g. --config.evaluate.test_split=val --config.evaluate.epochs=10). Writes DIR/eval/linear.json
(--stream audio: an audio-visual run's audio tower, DIR/eval/linear-audio.json).
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                     patch_grid=args.patch_grid, temporal_segments=args.temporal_segments,
                     overrides=overrides, stream=args.stream)
  tower = "" if results["stream"] == "visual" else f" of the {results['stream']} tower"
  print(f"\nLinear probe{tower} on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['train_examples']} train / {results['test_examples']} test examples)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-linear", _main, usage=USAGE,
                     flag_names=("epochs", "patch_grid", "temporal_segments", "stream"))


if __name__ == "__main__":
  cli_main()
