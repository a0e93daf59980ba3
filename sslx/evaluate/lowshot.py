"""Low-shot linear probes: few labelled examples per class, several draws, per block.

    sslx-lowshot --workdir DIR [--dataset SPEC] [--shots 1,5,10,20,100] [--fractions 0.01,0.1] [--seeds 3]

The semi-supervised reading of RotNet (Gidaris et al., ICLR 2018, CIFAR-10 experiments with
20 to 5,000 labels per class): pretext features should help most where labels are few. The
linear probe of sslx-linear (same pooled features, same classifier, optimiser and weight decay;
sslx/evaluate/linear.py) is fitted on a class-balanced labelled subset of the training split:
``shots`` examples of every class, or ``fraction`` of every class's examples (at least one),
drawn without replacement with each of ``seeds`` seeds (the draw depends on the seed and the
setting only, so runs and random init see the same examples). The features are standardised
with the statistics of the whole training split (its labels unused: the unlabelled images are
there in a semi-supervised setting), since a handful of examples gives no usable spread per
dimension. A probe on n examples trains for ``max(epochs, enough epochs for min_steps steps)``:
one example per class would otherwise get a handful of steps. The test split is scored whole.
Reported per setting and block: the mean and standard deviation over seeds, pretrained and at
random init. A setting that some class cannot fill (fewer examples than ``shots``) is skipped
and named. Writes DIR/eval/lowshot.json and .md.
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import flags

from sslx.evaluate import common, linear

DEFAULT_SHOTS = (1, 5, 10, 20, 100)
DEFAULT_FRACTIONS = (0.01, 0.1)
DEFAULT_SEEDS = 3
MIN_STEPS = 300  # Probe steps at least, whatever the subset's size.


def setting_name(*, shots: int | None = None, fraction: float | None = None) -> str:
  return f"{shots}-shot" if shots is not None else f"{100 * fraction:g}%"


def check_setting(*, shots: int | None = None, fraction: float | None = None) -> None:
  """One line for a setting that cannot be drawn."""
  if (shots is None) == (fraction is None):
    raise ValueError("give exactly one of shots and fraction")
  if shots is not None and shots < 1:
    raise ValueError(f"shots must be >= 1, got {shots}: pass --shots with positive integers")
  if fraction is not None and not 0 < fraction <= 1:
    raise ValueError(f"a fraction of the labels must be in (0, 1], got {fraction}: fix --fractions")


def balanced_subset(labels, *, seed: int, shots: int | None = None, fraction: float | None = None) -> np.ndarray:
  """Sorted indices of a class-balanced labelled subset: ``shots`` examples of every class, or
  ``round(fraction * class size)`` (at least 1) of each; drawn without replacement from a
  generator seeded by (seed, setting), so it does not depend on which other settings ran."""
  check_setting(shots=shots, fraction=fraction)
  labels = np.asarray(labels)
  # Distinct streams per setting: shots s -> (seed, 0, s); fraction f -> (seed, 1, f in millionths).
  key = [int(seed), 0, int(shots)] if shots is not None else [int(seed), 1, int(round(fraction * 1e6))]
  rng = np.random.default_rng(key)
  chosen = []
  for cls in np.unique(labels):
    members = np.flatnonzero(labels == cls)
    take = shots if shots is not None else max(1, int(round(fraction * len(members))))
    if take > len(members):
      raise ValueError(f"{take} labelled examples per class asked, but class {int(cls)} has {len(members)}")
    chosen.append(rng.choice(members, size=take, replace=False))
  return np.sort(np.concatenate(chosen))


def _settings(shots, fractions):
  return ([dict(shots=int(s)) for s in shots] + [dict(fraction=float(f)) for f in fractions])


def probe_epochs(n: int, *, batch_size: int, epochs: int, min_steps: int = MIN_STEPS) -> int:
  """Epochs of a probe on ``n`` examples: the protocol's, or more until ``min_steps`` steps."""
  steps_per_epoch = max(1, n // min(batch_size, n))
  return max(epochs, math.ceil(min_steps / steps_per_epoch))


def lowshot_table(train_f, train_y, test_f, test_y, *, num_classes: int, cfg, shots=DEFAULT_SHOTS,
                  fractions=DEFAULT_FRACTIONS, seeds: int = DEFAULT_SEEDS, min_steps: int = MIN_STEPS):
  """({setting: {"shots"|"fraction", "examples", "blocks": {block: {name, name_std, name_runs}}}},
  {setting: why skipped}) for feature sets ``train_f[name][block]`` (name: "pretrained",
  "random_init")."""
  out, skipped = {}, {}
  names = list(train_f)
  stats = {name: {b: (x.mean(axis=0), x.std(axis=0) + 1e-6) for b, x in blocks.items()}
           for name, blocks in train_f.items()}
  for setting in _settings(shots, fractions):
    key = setting_name(**setting)
    try:
      draws = [balanced_subset(train_y, seed=seed, **setting) for seed in range(seeds)]
    except ValueError as e:
      skipped[key] = str(e)
      continue
    n = len(draws[0])
    epochs = probe_epochs(n, batch_size=cfg.batch_size, epochs=cfg.epochs, min_steps=min_steps)
    blocks = {}
    for block in train_f[names[0]]:
      row = {"dims": int(train_f[names[0]][block].shape[1])}
      for name in names:
        runs = [linear.train_linear(train_f[name][block][idx], train_y[idx], test_f[name][block], test_y,
                                    num_classes=num_classes, epochs=epochs, batch_size=cfg.batch_size,
                                    learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                    seed=cfg.seed + seed, standardize_with=stats[name][block])["test_accuracy"]
                for seed, idx in enumerate(draws)]
        row[name], row[f"{name}_std"], row[f"{name}_runs"] = float(np.mean(runs)), float(np.std(runs)), runs
      blocks[block] = row
    out[key] = dict(setting, examples=int(n), epochs=int(epochs), blocks=blocks)
  return out, skipped


def markdown_table(results: dict) -> str:
  settings = results["settings"]
  blocks = list(next(iter(settings.values()))["blocks"]) if settings else []
  lines = ["| labels | examples | " + " | ".join(f"{b}: pretrained / random init (%)" for b in blocks)
           + " | best gain (points) |", "|---|---|" + "---|" * (len(blocks) + 1)]
  for key, s in settings.items():
    cells, gains = [], []
    for b in blocks:
      r = s["blocks"][b]
      cells.append(f"{100 * r['pretrained']:.1f} ± {100 * r['pretrained_std']:.1f} / "
                   f"{100 * r['random_init']:.1f} ± {100 * r['random_init_std']:.1f}")
      gains.append((100 * (r["pretrained"] - r["random_init"]), b))
    gain, where = max(gains)
    lines.append(f"| {key} | {s['examples']} | " + " | ".join(cells) + f" | {gain:+.1f} ({where}) |")
  for key, why in results.get("skipped_settings", {}).items():
    lines.append(f"| {key} | skipped: {why} |" + " |" * len(blocks) + " |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             shots=DEFAULT_SHOTS, fractions=DEFAULT_FRACTIONS, seeds: int = DEFAULT_SEEDS,
             min_steps: int = MIN_STEPS, temporal_segments: int | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  """Low-shot probes of every block, pretrained and at random init; see the module docstring."""
  if seeds < 1 or min_steps < 0 or not (list(shots) or list(fractions)):
    raise ValueError(f"low-shot probes need seeds >= 1, min_steps >= 0 and at least one setting, got "
                     f"seeds={seeds}, min_steps={min_steps}, shots={list(shots)}, fractions={list(fractions)}")
  for setting in _settings(shots, fractions):  # Bad settings fail now, in one line.
    check_setting(**setting)
  loaded = common.load_for_evaluation(workdir, "sslx-lowshot", overrides=overrides,
                                      temporal_segments=temporal_segments)
  cfg = loaded.config.evaluate
  dataset, (train_f, train_y), (test_f, test_y), num_classes, skipped = common.train_and_test_features(
      loaded, dataset=dataset, data_dir=data_dir, purpose="low-shot evaluation")
  settings, skipped_settings = lowshot_table(train_f, train_y, test_f, test_y, num_classes=num_classes, cfg=cfg,
                                             shots=shots, fractions=fractions, seeds=seeds, min_steps=min_steps)
  if not settings:
    raise ValueError(f"no low-shot setting fits {dataset}: {'; '.join(skipped_settings.values())}: "
                     f"lower --shots")
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "train_examples": int(len(train_y)), "test_examples": int(len(test_y)), "skipped": skipped,
             "seeds": int(seeds), "min_steps": int(min_steps), "protocol": dict(cfg),
             "settings": settings, "skipped_settings": skipped_settings}
  return common.write_results(
      workdir, common.results_stem("lowshot", loaded.config), results, table=markdown_table(results),
      title=f"Low-shot linear probes, {dataset}, checkpoint step {loaded.step}: mean ± std over {seeds} "
            f"draws, {len(test_y)} test examples")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_list("shots", [str(s) for s in DEFAULT_SHOTS], "Labelled examples per class.")
  flags.DEFINE_list("fractions", [str(f) for f in DEFAULT_FRACTIONS], "Fractions of every class's labels.")
  flags.DEFINE_integer("seeds", DEFAULT_SEEDS, "Draws of each labelled subset.")
  flags.DEFINE_integer("min_steps", MIN_STEPS, "Probe steps at least, however small the subset.")
  flags.DEFINE_integer("temporal_segments", None, "Video: clip features as means over this many "
                       "consecutive stretches of time, concatenated; default: the config's.")


USAGE = """Usage: sslx-lowshot --workdir=DIR [--dataset=SPEC] [--shots=1,5,10,20,100] [--fractions=0.01,0.1] [--seeds=3]

Linear probes per block on class-balanced labelled subsets of the training split (several
seeded draws), pretrained against random init; writes DIR/eval/lowshot.json.
"""


def _main(args, overrides):
  try:
    shots = [int(s) for s in args.shots]
    fractions = [float(f) for f in args.fractions]
  except ValueError:
    raise ValueError(f"--shots takes integers and --fractions numbers, got --shots {','.join(args.shots)} "
                     f"--fractions {','.join(args.fractions)}") from None
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, shots=shots,
                     fractions=fractions, seeds=args.seeds, min_steps=args.min_steps,
                     temporal_segments=args.temporal_segments, overrides=overrides)
  print(f"\nLow-shot linear probes on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"mean ± std over {results['seeds']} draws; {results['test_examples']} test examples)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-lowshot", _main, usage=USAGE,
                     flag_names=("shots", "fractions", "seeds", "min_steps", "temporal_segments"))


if __name__ == "__main__":
  cli_main()
