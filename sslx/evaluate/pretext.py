"""The pretext task itself on held-out examples: how well a run solves its own task on clips
(or images) it never trained on, against chance.

    sslx-pretext --workdir DIR [--dataset SPEC] [--draws 4] [--seed 0]

The training loss says whether a network fits its training clips; this says whether what it
learned carries over. Every example of the evaluation split (default ``evaluate.test_split``;
a mix of folders is split per folder, so its test part is every folder's held-out clips) is
drawn ``--draws`` times exactly as training draws it (the host's window among the high-motion
windows, crop and flip; the pretext's shuffles and labels on the device), from fixed seeds, so
a rerun gives the same examples. The checkpoint's whole network (backbone and the pretext's
head, BatchNorm in inference mode) then answers each one.

Reported for the checkpoint and for the same network at random init, which is the measured
chance (its head's answers do not depend on the task): accuracy; balanced accuracy, the mean
over classes of the share of that class's examples answered right, whose chance is
1 / classes whatever the label shares (Shuffle and Learn shows 75% negatives, so "always
shuffled" has accuracy 0.75 but balanced accuracy 0.5); the label shares and the loss. Needs
a classification pretext (logits and a ``label`` target); others get a one-line error.
Writes DIR/eval/pretext.json and .md (``--name N``: pretext-N.json).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from sslx import checkpoints, run
from sslx.data import sources
from sslx.evaluate import common


def held_out_batches(config, source, *, draws: int, seed: int, batch_size: int):
  """Training-time draws of every example of ``source``, ``draws`` each from seeds ``(seed, index,
  draw)``: lists of host batches {media, "index", "label"} and the number of draws skipped (a clip
  that cannot be read, or is shorter than the window, counts once per draw)."""
  preprocess = run.make_preprocess(config, source, train=True)
  key = run.media_key(config)
  records = []
  for index in range(len(source)):
    record = dict(source[index], index=index)
    for draw in range(draws):
      out = preprocess(record, np.random.default_rng((seed, index, draw)))
      if out is not None:
        records.append(out)
  batches = []
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    batches.append({k: np.stack([r[k] for r in chunk]) for k in (key, "index", "label")})
  return batches, preprocess.skipped


def make_answer_fn(config, model, pretext):
  """(variables, pretext state, host batch, key) -> (logits, labels, loss): the pretext's inputs and
  targets made as the training step makes them (run.pretext_inputs), the network in inference mode."""

  def answer(variables, pretext_state, batch, rng):
    inputs, targets = run.pretext_inputs(config, pretext, rng, batch, pretext_state)
    outputs, _ = model.apply(variables, inputs, train=False)
    if not (isinstance(outputs, jax.Array) and outputs.ndim == 2 and "label" in targets):
      raise ValueError(f"sslx-pretext scores classification pretexts (logits and a 'label' target); "
                       f"{config.pretext.name} gives {jax.tree.map(jnp.shape, outputs)}: use its own "
                       f"evaluation script")
    loss, _ = pretext.loss(outputs, targets, cfg=config.pretext)
    return outputs, targets["label"], loss

  return jax.jit(answer)


def scores(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
  """Accuracy, balanced accuracy (mean recall over the classes present) and label shares."""
  predicted = logits.argmax(axis=1)
  present = [c for c in range(num_classes) if np.any(labels == c)]
  recalls = [float(np.mean(predicted[labels == c] == c)) for c in present]
  shares = np.bincount(labels, minlength=num_classes) / len(labels)
  return {"accuracy": float(np.mean(predicted == labels)), "balanced_accuracy": float(np.mean(recalls)),
          "majority_share": float(shares.max()), "label_shares": [float(s) for s in shares]}


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             split: str | None = None, draws: int = 4, seed: int = 0, step: int | None = None,
             name: str | None = None, overrides: dict[str, str] | None = None) -> dict:
  if draws < 1:
    raise ValueError(f"--draws must be >= 1 (draws per held-out example), got {draws}")
  loaded = checkpoints.load_run(workdir, step)
  config = common.apply_overrides(loaded.config, overrides or {}, "sslx-pretext")
  dataset = dataset or config.dataset
  split = split or config.evaluate.test_split
  source = sources.from_config(config, split, dataset=dataset, data_dir=data_dir)
  pretext, model = run.build_model(config)
  pretext.validate(config)
  answer = make_answer_fn(config, model, pretext)
  # Shapes only, before any clip is decoded: a pretext without logits and labels fails in one line now.
  example = {k: jax.ShapeDtypeStruct(v.shape, jnp.uint8 if k == run.media_key(config) else v.dtype)
             for k, v in run.example_batch(config).items() if k in ("video", "image", "index", "label")}
  jax.eval_shape(answer, {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats},
                 loaded.state.pretext_state, example, jax.random.PRNGKey(0))
  batches, skipped = held_out_batches(config, source, draws=draws, seed=seed,
                                      batch_size=config.evaluate.batch_size)
  if not batches:
    raise ValueError(f"no usable example in {dataset} split {split!r} ({skipped} draws skipped as unreadable "
                     f"or too short): pass --dataset with clips long enough for the run's window")
  tx, _ = run.make_optimizer(config.optimizer, config.total_steps)
  fresh = run.jit_once(run.train_state_init_fn(config, model, pretext, tx))(jax.random.PRNGKey(seed + 1))
  networks = {"pretrained": loaded.state, "random_init": fresh}
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "split": split, "pretext": config.pretext.name, "draws": draws, "seed": seed,
             "examples": int(sum(len(b["label"]) for b in batches)), "sources": len(source),
             "skipped": int(skipped)}
  for network, state in networks.items():
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, labels, losses = [], [], []
    for i, batch in enumerate(batches):
      # The pretext's randomness depends on the batch's position only: both networks see the same tuples.
      out, label, loss = answer(variables, state.pretext_state, batch, jax.random.PRNGKey(seed * 100003 + i))
      logits.append(np.asarray(out))
      labels.append(np.asarray(label))
      losses.append(float(loss) * len(label))
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    results[network] = dict(scores(logits, labels, logits.shape[1]), loss=sum(losses) / len(labels))
  results["num_classes"] = int(logits.shape[1])
  results["chance_balanced_accuracy"] = 1.0 / results["num_classes"]
  stem = f"pretext-{name}" if name else "pretext"
  return common.write_results(workdir, stem, results, table=markdown_table(results), title=title(results))


def title(results: dict) -> str:
  return (f"Pretext task ({results['pretext']}) on {results['dataset']} split {results['split']!r}, checkpoint "
          f"step {results['checkpoint_step']}: {results['examples']} examples ({results['draws']} draws of each "
          f"of {results['sources']} sources, {results['skipped']} draws skipped)")


def markdown_table(results: dict) -> str:
  lines = ["| network | accuracy | balanced accuracy (chance %.3f) | loss |" % results["chance_balanced_accuracy"],
           "|---|---|---|---|"]
  for name in ("pretrained", "random_init"):
    row = results[name]
    lines.append(f"| {name} | {row['accuracy']:.3f} | {row['balanced_accuracy']:.3f} | {row['loss']:.3f} |")
  return "\n".join(lines)


def summary_line(results: dict) -> str:
  """The one line a run's evaluation shows: pretext accuracy on the held-out split against chance."""
  p, r = results["pretrained"], results["random_init"]
  return (f"pretext accuracy on the {results['split']} split: {p['accuracy']:.3f} (balanced "
          f"{p['balanced_accuracy']:.3f}; chance {results['chance_balanced_accuracy']:.3f}, random init "
          f"{r['balanced_accuracy']:.3f}) over {results['examples']} examples")


def _define_flags():
  common.define_workdir_flags("Held-out data; default: the run's own dataset (its test split).")
  flags.DEFINE_string("split", None, "Split to score; default: evaluate.test_split.")
  flags.DEFINE_integer("draws", 4, "Training-time draws of each held-out example.")
  flags.DEFINE_integer("seed", 0, "Seed of the draws (the same seed gives the same examples).")
  flags.DEFINE_integer("step", None, "Checkpoint step; default: the latest.")
  flags.DEFINE_string("name", None, "Suffix of the result files: eval/pretext-NAME.json (default eval/pretext.json).")


USAGE = """Usage: sslx-pretext --workdir=DIR [--dataset=SPEC] [--split=test] [--draws=4] [--step=N] [--name=N]

The run's pretext task on held-out examples, drawn as training draws them: accuracy and
balanced accuracy of the checkpoint's network against the same network at random init and
chance. Writes DIR/eval/pretext.json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                     draws=args.draws, seed=args.seed, step=args.step, name=args.name,
                     overrides=overrides)
  print(f"\n{title(results)}\n")
  print(markdown_table(results))
  print(f"\n{summary_line(results)}")
  print(f"Written to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-pretext", _main, usage=USAGE, flag_names=("split", "draws", "seed", "step", "name"))


if __name__ == "__main__":
  cli_main()
