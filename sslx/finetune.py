"""Fine-tuning the whole pretrained backbone (and the same backbone from random init), through
the one trainer.

    sslx-finetune --workdir DIR [--dataset folder:NAME] [--steps 300] [--learning_rate 1e-3]

The protocol of VCOP (Xu et al., CVPR 2019) and of the UCF101 fine-tuning in Shuffle and
Learn (Misra et al., ECCV 2016), OPN (Lee et al., ICCV 2017) and O3N (Fernando et al., CVPR
2017): the checkpoint's backbone plus a new linear classifier on its ``pooled`` features
(dropout before it), all trained with cross-entropy on the labeled train split, one random
window per example (random crop and flip; windows drawn among all, not the high-motion
ones); see sslx/pretexts/supervised.py. Each of the two runs is an ordinary training run of
``sslx.train`` in ``DIR/eval/finetune/<init>-<protocol hash>``, with its sharding,
checkpoints, exact resume (rerun the command after a kill) and non-finite guard; both start
from the same classifier and see the same examples in the same order. Then the test
(sslx/evaluate/finetune.py): ``evaluate.num_clips`` windows per test video, probabilities
averaged. Writes DIR/eval/finetune.json and .md and prints the table.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import ml_collections
from absl import flags

from sslx import checkpoints, process, run, train
from sslx.data import sources, video
from sslx.evaluate import common
from sslx.evaluate import finetune as finetune_test
from sslx.models import conv
from sslx.pretexts import supervised


def default_config() -> ml_collections.ConfigDict:
  """Used where the run's config has no ``evaluate.finetune``; sized for a CPU.

  The papers fine-tune far longer (tens of epochs over UCF101's ~9.5k training
  videos, e.g. SGD with momentum and a step-decayed learning rate); 300 AdamW
  steps of 16 clips is a quick comparison of pretrained against random init.
  """
  return ml_collections.ConfigDict({
      "steps": 300, "batch_size": 16,
      "optimizer": "adamw",  # or "sgd" (with momentum).
      "learning_rate": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "warmup_steps": 0,
      "dropout": 0.5,  # Before the classifier.
      # Frames per clip, train and test; None: evaluate.num_frames, else video.num_frames. A tuple
      # pretext's window is longer than one clip (VCOP: 3 x 16 + 2 x 8 frames); it fine-tunes on its
      # 16-frame clips.
      "num_frames": ml_collections.config_dict.placeholder(int),
      "checkpoint_every": 100,
      "seed": 0})


def finetune_config(config, *, steps: int | None = None, learning_rate: float | None = None):
  """The defaults, updated by the run's ``evaluate.finetune`` and then by the overrides."""
  cfg = default_config()
  saved = config.evaluate.get("finetune")
  if saved is not None:
    cfg.update(saved)
  if steps is not None:
    cfg.steps = steps
  if learning_rate is not None:
    cfg.learning_rate = learning_rate
  if cfg.steps < 1:
    raise ValueError(f"fine-tuning needs steps >= 1, got {cfg.steps}: pass --steps 1 or more")
  return cfg


def training_config(config, cfg, *, dataset: str, data_dir: str | None, num_classes: int,
                    init_from: str | None, init_step: int | None) -> ml_collections.ConfigDict:
  """The trainer's config for one fine-tuning run: the pretraining run's data and model, the
  supervised objective, the fine-tuning protocol's optimizer and schedule."""
  ft = ml_collections.ConfigDict(config.to_dict())
  objective = supervised.default_config()
  objective.num_classes = num_classes
  objective.dropout = cfg.dropout
  objective.input_pretext = config.pretext.name
  objective.input_cfg = ml_collections.ConfigDict(config.pretext.to_dict())
  ft.pretext = objective
  ft.init_from, ft.init_step = init_from, init_step
  ft.dataset, ft.data_dir = dataset, data_dir
  ft.train_split = config.evaluate.train_split
  ft.train_examples = None
  ft.seed = cfg.seed
  ft.batch_size = cfg.batch_size
  ft.total_steps = cfg.steps
  ft.optimizer = ml_collections.ConfigDict({
      "name": cfg.optimizer, "learning_rate": cfg.learning_rate, "momentum": cfg.momentum,
      "nesterov": False, "weight_decay": cfg.weight_decay, "schedule": "cosine",
      "warmup_steps": cfg.warmup_steps, "decay_at": (), "decay_factor": 1.0})
  ft.log_every = max(1, min(50, cfg.steps))
  ft.checkpoint_every = cfg.checkpoint_every
  ft.keep_checkpoints = 1
  ft.evaluate.every = 0  # No kNN monitor: this script tests the fine-tuned network itself.
  if ft.get("video") is not None:
    # Any window of the clip: motion-aware sampling serves pretexts, not labels.
    ft.video.sampling = "random"
    ft.video.num_frames = cfg.num_frames or config.evaluate.get("num_frames") or config.video.num_frames
    # Trained on the labels the evaluation names (e.g. evaluate.label_column=color), not the run's.
    ft.label_file, ft.label_column = sources.label_settings(config, evaluation=True)
  return ft


def run_dir(workdir: str, name: str, ft) -> str:
  """``workdir/eval/finetune/<name>-<hash>``: one folder per protocol, so a rerun resumes its
  own run and another protocol never resumes a different one."""
  settings = ft.to_dict()
  for key in ("init_from", "progress_bar"):
    settings.pop(key, None)
  digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
  return os.path.join(os.path.abspath(workdir), "eval", "finetune", f"{name}-{digest}")


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             steps: int | None = None, learning_rate: float | None = None,
             num_clips: int | None = None, checkpoint_every: int | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  """Fine-tunes the checkpoint's backbone and the same backbone at random init; tests both."""
  checkpoints_manager, step = checkpoints.latest_step(workdir)
  config = ml_collections.ConfigDict(checkpoints.load_metadata(checkpoints_manager, step)["config"])
  config = common.apply_overrides(config, overrides or {}, "sslx-finetune")
  ev = config.evaluate
  cfg = finetune_config(config, steps=steps, learning_rate=learning_rate)
  if checkpoint_every is not None:
    cfg.checkpoint_every = checkpoint_every
  dataset = dataset or ev.get("dataset") or config.dataset
  data_dir = data_dir or config.get("data_dir")
  media = run.media_key(config)
  num_clips = (num_clips if num_clips is not None else ev.get("num_clips", 1)) if media == "video" else 1
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}: pass --num_clips 1 or more")
  mesh = run.make_mesh(jax.local_devices())
  cfg.batch_size = -(-cfg.batch_size // mesh.devices.size) * mesh.devices.size  # Split evenly on "data".

  # Both splits checked before anything trains.
  split_sources = common.labeled_sources(config, (ev.train_split, ev.test_split), dataset=dataset,
                                         data_dir=data_dir, purpose="fine-tuning")
  train_source, test_source = split_sources[ev.train_split], split_sources[ev.test_split]
  num_classes = max(train_source.num_classes, test_source.num_classes)

  workdirs, train_metrics = {}, {}
  for name, init_from in (("pretrained", os.path.abspath(workdir)), ("random_init", None)):
    ft = training_config(config, cfg, dataset=dataset, data_dir=data_dir, num_classes=num_classes,
                         init_from=init_from, init_step=step if init_from else None)
    workdirs[name] = run_dir(workdir, name, ft)
    _, train_metrics[name] = train.train(ft, workdirs[name], mesh=mesh)

  test_config = training_config(config, cfg, dataset=dataset, data_dir=data_dir, num_classes=num_classes,
                                init_from=None, init_step=None)
  multi = run.make_preprocess(test_config, test_source, train=False, num_clips=num_clips)
  accuracy, test_count = finetune_test.top1(workdirs, test_source, multi, batch_size=ev.batch_size, mesh=mesh)
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": step, "dataset": dataset,
             "media": media, "num_classes": num_classes, "train_examples": len(train_source),
             "test_examples": test_count, "num_clips": num_clips, "protocol": cfg.to_dict(),
             "runs": workdirs}
  for name in workdirs:
    results[name] = {"train_loss": train_metrics[name].get("loss", float("nan")),
                     "train_top1": train_metrics[name].get("accuracy", float("nan"))}
  skipped = multi.skipped
  if media == "video":
    centre = run.make_preprocess(test_config, test_source, train=False, num_clips=1)
    centre.cache = multi.cache  # One decoded-frame cache: memory stays within cache_mb.
    video.check_lengths(test_source, fps=test_config.video.fps, span=multi.span)
    centre_top1, _ = finetune_test.top1(workdirs, test_source, centre, batch_size=ev.batch_size, mesh=mesh)
    skipped += centre.skipped
    for name in workdirs:
      results[name].update(video_top1=accuracy[name], clip_top1=centre_top1[name])
  else:
    for name in workdirs:
      results[name]["top1"] = accuracy[name]
  results["skipped"] = skipped
  return common.write_results(
      workdir, "finetune", results, table=finetune_test.markdown_table(results),
      title=f"Fine-tuning, {dataset}, checkpoint step {step}: {cfg.steps} steps of {cfg.batch_size}, "
            f"{len(train_source)} train / {test_count} test {media}s")


USAGE = """Usage: sslx-finetune --workdir=DIR [--dataset=SPEC] [--steps=N] [--learning_rate=LR]
                     [--num_clips=K] [--config.evaluate.KEY=VALUE ...]

Fine-tunes the workdir's latest checkpoint and the same backbone from random init with the
dataset's labels, through the trainer (resumable runs under DIR/eval/finetune/), then tests
both (K clips per test video, probabilities averaged). Writes DIR/eval/finetune.json.
"""
FLAG_NAMES = ("steps", "learning_rate", "num_clips", "checkpoint_every")


def _define_flags():
  common.define_workdir_flags("Labeled evaluation data; default: the config's.")
  flags.DEFINE_integer("steps", None, "Fine-tuning steps; default: evaluate.finetune.steps or 300.")
  flags.DEFINE_float("learning_rate", None, "Peak learning rate; default: evaluate.finetune's or 1e-3.")
  flags.DEFINE_integer("num_clips", None, "Test clips per video; default: evaluate.num_clips.")
  flags.DEFINE_integer("checkpoint_every", None, "Checkpoint interval of the fine-tuning runs (steps); "
                       "default: evaluate.finetune's or 100.")


def _main(args, overrides):
  process.request_deterministic_gpu_ops()
  print(f"sslx-finetune: {conv.prepare_kernels('auto', jax.devices())}", flush=True)  # Before any tracing.
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, steps=args.steps,
                     learning_rate=args.learning_rate, num_clips=args.num_clips,
                     checkpoint_every=args.checkpoint_every, overrides=overrides)
  print(f"\nFine-tuning on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['protocol']['steps']} steps; {results['train_examples']} train / "
        f"{results['test_examples']} test examples)\n")
  print(finetune_test.markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  """The ``sslx-finetune`` entry point."""
  _define_flags()
  common.run_script("sslx-finetune", _main, usage=USAGE, flag_names=FLAG_NAMES)


if __name__ == "__main__":
  cli_main()
