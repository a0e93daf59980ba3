"""Fine-tuning the whole pretrained backbone for action recognition (and from random init).

    python -m sslx.evaluate.finetune --workdir DIR [--dataset folder:/data] [--steps 300]

The protocol of VCOP (Xu et al., CVPR 2019) and of the UCF101 fine-tuning in
Shuffle and Learn (Misra et al., ECCV 2016), OPN (Lee et al., ICCV 2017) and
O3N (Fernando et al., CVPR 2017): the checkpoint's backbone plus a new linear
classifier on its ``pooled`` features (dropout before it), all trained with
cross-entropy on the labeled train split, one random window per example
(random crop and flip; windows drawn among all, not the high-motion ones).
A 3D backbone sees the clip whole; a per-frame 2D backbone's pooled features
are averaged over the clip's frames before the classifier. BatchNorm trains
in train mode and tests in eval mode. Test: ``evaluate.num_clips`` windows
spread evenly over each test video, centre crops, softmax probabilities
averaged over them -> video top-1; also the top-1 of the single centre clip.
The same backbone at random init goes through the identical procedure.
Image runs fine-tune on random crops and test on the centre crop.
Writes DIR/eval/finetune.json and .md and prints the table.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import flags
from jax.sharding import NamedSharding, PartitionSpec

from sslx import losses
from sslx import train as trainer
from sslx.data import pipeline, sources, video
from sslx.evaluate import common


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


class Classifier(nn.Module):
  """Backbone -> ``pooled`` -> mean over each clip's ``group`` rows (a 2D backbone's frames)
  -> dropout -> linear classifier."""
  backbone: nn.Module
  num_classes: int
  dropout: float

  @nn.compact
  def __call__(self, x, *, group: int, train: bool):
    pooled = self.backbone(x, train=train)["pooled"].astype(jnp.float32)
    pooled = pooled.reshape(-1, group, pooled.shape[-1]).mean(axis=1)
    pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, name="classifier")(pooled)


def backbone_rows(media, *, is_video: bool, three_d: bool, clip_fn=None):
  """uint8 ``(B, [K,] [T,] H, W, 3)`` -> (backbone input rows, rows per clip); a 2D
  backbone's clips go through ``clip_fn`` (common.clip_input_fn) first when given."""
  if not is_video:
    return media, 1
  if three_d:
    return media.reshape((-1,) + media.shape[-4:]), 1
  if clip_fn is not None:
    media = clip_fn(media.reshape((-1,) + media.shape[-4:]))
  return media.reshape((-1,) + media.shape[-3:]), media.shape[-4]


def average_clip_probabilities(logits):
  """``(B, K, C)`` logits of K clips per video -> ``(B, C)``: the mean of their softmax
  probabilities (VCOP's multi-clip test), not the softmax of the mean logits."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=1)


class FineTuner:
  """Trains and tests one classifier architecture; jitted once, used for every initialisation."""

  def __init__(self, config, backbone, *, cfg, num_classes: int, mesh):
    self.config, self.backbone, self.cfg, self.mesh = config, backbone, cfg, mesh
    self.num_classes = num_classes
    self.key = trainer.media_key(config)
    self.model = Classifier(backbone=backbone, num_classes=num_classes, dropout=cfg.dropout)
    optimizer = ml_collections.ConfigDict({
        "name": cfg.optimizer, "learning_rate": cfg.learning_rate, "momentum": cfg.momentum,
        "nesterov": False, "weight_decay": cfg.weight_decay, "schedule": "cosine",
        "warmup_steps": cfg.warmup_steps, "decay_at": (), "decay_factor": 1.0})
    self.tx, schedule = trainer.make_optimizer(optimizer, cfg.steps)
    self.replicated = NamedSharding(mesh, PartitionSpec())
    to_input, clip_fn = common.backbone_input_fn(config), common.clip_input_fn(config)
    is_video, three_d = self.key == "video", common.takes_video(backbone)
    model, tx = self.model, self.tx

    def train_step(state, batch):
      rng = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state["step"])
      x, group = backbone_rows(batch[self.key], is_video=is_video, three_d=three_d, clip_fn=clip_fn)

      def loss_fn(params):
        logits, updates = model.apply({"params": params, "batch_stats": state["batch_stats"]}, to_input(x),
                                      group=group, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
        loss = losses.softmax_xent(logits=logits, labels=batch["label"])
        return loss, (losses.accuracy(logits=logits, labels=batch["label"]), updates.get("batch_stats", {}))

      (loss, (accuracy, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      new_state = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
                   "batch_stats": batch_stats, "opt_state": opt_state}
      return new_state, {"loss": loss, "accuracy": accuracy, "learning_rate": schedule(state["step"])}

    def predict(variables, media):
      x, group = backbone_rows(media, is_video=is_video, three_d=three_d, clip_fn=clip_fn)
      logits = model.apply(variables, to_input(x), group=group, train=False)
      return average_clip_probabilities(logits.reshape(media.shape[0], -1, logits.shape[-1]))

    self.train_step = jax.jit(train_step, donate_argnums=(0,))
    self.predict = jax.jit(predict)

  def initial_variables(self, backbone_variables: dict) -> dict:
    """The backbone's variables plus a fresh classifier (seeded by ``cfg.seed``, so every
    initialisation starts from the same classifier)."""
    frames = (self.config.video.num_frames,) if self.key == "video" else ()
    dummy = jnp.zeros((1,) + frames + (self.config.image_size, self.config.image_size, 3), jnp.uint8)
    x, group = backbone_rows(dummy, is_video=self.key == "video", three_d=common.takes_video(self.backbone))
    x = common.backbone_input_fn(self.config)(x)
    pooled = jax.eval_shape(lambda v: self.backbone.apply(v, x, train=False)["pooled"], backbone_variables)
    classifier = nn.Dense(self.num_classes).init(jax.random.PRNGKey(self.cfg.seed),
                                                 jnp.zeros((1, pooled.shape[-1])))["params"]
    return {"params": {"backbone": backbone_variables["params"], "classifier": classifier},
            "batch_stats": {"backbone": backbone_variables["batch_stats"]}}

  def fit(self, backbone_variables: dict, source, preprocess) -> tuple[dict, dict]:
    """``cfg.steps`` steps on ``source``: (fine-tuned variables, backbone and classifier; the
    training loss and top-1 averaged over the last 10 steps)."""
    variables = self.initial_variables(backbone_variables)
    state = jax.device_put({"step": jnp.zeros((), jnp.int32), "params": variables["params"],
                            "batch_stats": variables["batch_stats"],
                            "opt_state": self.tx.init(variables["params"])}, self.replicated,
                           may_alias=False)  # A copy: the step donates it, the caller keeps its own.
    devices = self.mesh.devices.size
    batch_size = -(-self.cfg.batch_size // devices) * devices
    # The same seed for every initialisation: both see the same examples in the same order.
    dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=self.cfg.seed,
                                    train=True, num_threads=self.config.get("data_threads", 2))
    data_iter, history = iter(dataset), []
    for _ in range(self.cfg.steps):
      batch = next(data_iter)
      if (batch["label"] < 0).any():
        raise ValueError("fine-tuning needs labels, but the train split has unlabeled examples: "
                         "pass --dataset with a labeled one")
      state, metrics = self.train_step(state, pipeline.to_global(
          {self.key: batch[self.key], "label": batch["label"]}, self.mesh))
      history.append(metrics)
    last = jax.device_get(history[-10:])
    summary = {name: float(np.mean([m[name] for m in last])) for name in ("loss", "accuracy")}
    return {"params": state["params"], "batch_stats": state["batch_stats"]}, summary


def top1_accuracy(tuner: FineTuner, variables: dict, source, preprocess, *, batch_size: int):
  """One pass over ``source``: ({name: top-1 of the (clip-averaged) probabilities}, count)."""
  devices = tuner.mesh.devices.size
  batch_size = -(-batch_size // devices) * devices
  dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False,
                                  num_threads=tuner.config.get("data_threads", 2))
  correct, count = {name: 0 for name in variables}, 0
  for batch in dataset:
    n = len(batch["label"])
    if (batch["label"] < 0).any():
      raise ValueError("fine-tuning needs labels, but the test split has unlabeled examples: "
                       "pass --dataset with a labeled one")
    padded = pipeline.pad_batch({tuner.key: batch[tuner.key], "label": batch["label"]}, batch_size)
    media = pipeline.to_global({tuner.key: padded[tuner.key]}, tuner.mesh)[tuner.key]
    for name, v in variables.items():
      probs = np.asarray(jax.device_get(tuner.predict(v, media)))[:n]
      correct[name] += int((probs.argmax(axis=-1) == batch["label"]).sum())
    count += n
  return {name: c / max(count, 1) for name, c in correct.items()}, count


def markdown_table(results: dict) -> str:
  names = {"pretrained": "pretrained", "random_init": "random init"}
  if results["media"] == "video":
    columns = [("video_top1", f"video top-1, {results['num_clips']} clips (%)"),
               ("clip_top1", "centre clip top-1 (%)")]
  else:
    columns = [("top1", "top-1 (%)")]
  lines = ["| backbone | " + " | ".join(title for _, title in columns) + " | train loss (last 10 steps) |",
           "|---|" + "---|" * (len(columns) + 1)]
  for name, title in names.items():
    row = results[name]
    lines.append(f"| {title} | " + " | ".join(f"{100 * row[k]:.2f}" for k, _ in columns)
                 + f" | {row['train_loss']:.3f} |")
  gains = [100 * (results["pretrained"][k] - results["random_init"][k]) for k, _ in columns]
  lines.append("| gain (points) | " + " | ".join(f"{g:+.2f}" for g in gains) + " | |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             steps: int | None = None, learning_rate: float | None = None,
             num_clips: int | None = None) -> dict:
  """Fine-tunes the checkpoint's backbone and the same backbone at random init; tests both."""
  run = common.load_run(workdir)
  ev = run.config.evaluate
  cfg = finetune_config(run.config, steps=steps, learning_rate=learning_rate)
  dataset = dataset or ev.get("dataset") or run.config.dataset
  data_dir = data_dir or run.config.get("data_dir")
  media = trainer.media_key(run.config)
  num_clips = (num_clips if num_clips is not None else ev.get("num_clips", 1)) if media == "video" else 1
  if num_clips < 1:
    raise ValueError(f"num_clips must be >= 1, got {num_clips}: pass --num_clips 1 or more")
  # Any window of the clip for training: motion-aware sampling serves pretexts, not labels.
  config = ml_collections.ConfigDict(run.config.to_dict())
  if media == "video":
    config.video.sampling = "random"
    config.video.num_frames = (cfg.num_frames or config.evaluate.get("num_frames")
                               or config.video.num_frames)
  mesh = trainer.make_mesh(jax.local_devices())
  cfg.batch_size = -(-cfg.batch_size // mesh.devices.size) * mesh.devices.size  # Split evenly on "data".

  train_source = sources.from_config(config, ev.train_split, dataset=dataset, data_dir=data_dir)
  test_source = sources.from_config(config, ev.test_split, dataset=dataset, data_dir=data_dir)
  num_classes = max(train_source.num_classes, test_source.num_classes)
  if num_classes < 2:
    raise ValueError(f"fine-tuning needs at least 2 classes, {dataset} has {num_classes}: "
                     f"pass --dataset with a labeled one")
  train_pre = trainer.make_preprocess(config, train_source, train=True)
  test_multi = trainer.make_preprocess(config, test_source, train=False, num_clips=num_clips)
  test_centre = None
  if media == "video":
    test_centre = trainer.make_preprocess(config, test_source, train=False, num_clips=1)
    video.check_lengths(train_source, fps=config.video.fps, span=train_pre.span)
    # One decoded-frame cache (whole clips, no motion scores) for all three: memory stays within cache_mb.
    test_multi.cache = test_centre.cache = train_pre.cache

  tuner = FineTuner(config, run.backbone, cfg=cfg, num_classes=num_classes, mesh=mesh)
  initial = {"pretrained": run.variables,
             "random_init": common.random_init_variables(run.backbone, config, cfg.seed)}
  tuned, train_metrics = {}, {}
  for name, backbone_variables in initial.items():
    tuned[name], train_metrics[name] = tuner.fit(backbone_variables, train_source, train_pre)

  top1, test_count = top1_accuracy(tuner, tuned, test_source, test_multi, batch_size=ev.batch_size)
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": run.step, "dataset": dataset,
             "media": media, "num_classes": num_classes, "train_examples": len(train_source),
             "test_examples": test_count, "num_clips": num_clips, "protocol": cfg.to_dict()}
  for name in initial:
    results[name] = {"train_loss": train_metrics[name]["loss"], "train_top1": train_metrics[name]["accuracy"]}
  if media == "video":
    centre, _ = top1_accuracy(tuner, tuned, test_source, test_centre, batch_size=ev.batch_size)
    for name in initial:
      results[name].update(video_top1=top1[name], clip_top1=centre[name])
  else:
    for name in initial:
      results[name]["top1"] = top1[name]
  results["skipped"] = train_pre.skipped + test_multi.skipped + (test_centre.skipped if test_centre else 0)

  return common.write_results(
      workdir, "finetune", results, table=markdown_table(results),
      title=f"Fine-tuning, {dataset}, checkpoint step {run.step}: {cfg.steps} steps of {cfg.batch_size}, "
            f"{len(train_source)} train / {test_count} test {media}s")


def _define_flags():
  common.define_workdir_flags("Labeled evaluation data; default: the config's.")
  flags.DEFINE_integer("steps", None, "Fine-tuning steps; default: evaluate.finetune.steps or 300.")
  flags.DEFINE_float("learning_rate", None, "Peak learning rate; default: evaluate.finetune's or 1e-3.")
  flags.DEFINE_integer("num_clips", None, "Test clips per video; default: evaluate.num_clips.")


def _main(args):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, steps=args.steps,
                     learning_rate=args.learning_rate, num_clips=args.num_clips)
  print(f"\nFine-tuning on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['protocol']['steps']} steps; {results['train_examples']} train / "
        f"{results['test_examples']} test examples)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def run():
  _define_flags()
  common.run_script("sslx-finetune", _main)


if __name__ == "__main__":
  run()
