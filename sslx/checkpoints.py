"""Checkpoints of a run: the Orbax manager, the metadata saved beside every step, restoring
(with one-line errors), and ``load_backbone``, the one call that gives a trained backbone to a
notebook, an evaluation script or a downstream project.

A workdir holds ``checkpoints/<step>/{state,data,meta}``: the whole train state, the input
pipeline's position (exact resume) and the run's metadata (resolved config, global batch,
device and process counts, versions), plus ``config.json``, the same metadata for a person.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from sslx import models, run

# What a checkpoint's state and data position mean: resuming with any of these changed would
# load parameters into another model, or continue another data stream, silently. The model's
# run-time settings (models.RUNTIME_KEYS: which kernels run the convolutions) change neither.
RESUME_KEYS = ("model", "pretext", "optimizer.name", "dataset", "train_examples", "image_size",
               "batch_size", "seed", "video.fps", "video.num_frames", "video.frame_stride",
               "video.sampling", "video.test_every", "video.region", "audio.sample_rate",
               "audio.margin_seconds", "test_every", "init_from")
# Keys added after checkpoints were written without them: their value then.
RESUME_DEFAULTS = {"test_every": 4}


def manager(workdir: str, config=None) -> ocp.CheckpointManager:
  """The workdir's checkpoint manager; with ``config`` (training) it creates the folder and
  saves every ``checkpoint_every`` steps, keeping ``keep_checkpoints``."""
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=config.checkpoint_every if config else 1,
      max_to_keep=config.keep_checkpoints if config else None,
      enable_async_checkpointing=True, create=config is not None)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def load_metadata(checkpoints: ocp.CheckpointManager, step: int) -> dict:
  restored = checkpoints.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return dict(restored["meta"])


def _lookup(tree, dotted: str):
  for part in dotted.split("."):
    tree = tree.get(part) if isinstance(tree, dict) else None
  return tree


def check_resumable(saved_meta: dict, config, workdir: str):
  """One-line error before compilation when the workdir was trained with an incompatible config."""
  now = json.loads(config.to_json())
  saved = dict(saved_meta.get("config") or {})
  for tree in (saved, now):
    if isinstance(tree.get("model"), dict):
      tree["model"] = {k: v for k, v in tree["model"].items() if k not in models.RUNTIME_KEYS}
  for key in RESUME_KEYS:
    if _lookup(saved, key) is None and key in RESUME_DEFAULTS and _lookup(saved, "video") is None:
      saved[key] = RESUME_DEFAULTS[key]
    if _lookup(saved, key) != _lookup(now, key):
      raise ValueError(f"workdir {workdir} holds a checkpoint of {key} {_lookup(saved, key)}, but the config "
                       f"asks for {_lookup(now, key)}: use a new --workdir, or the saved {key} settings "
                       f"(in {workdir}/config.json)")


def restore_state(checkpoints: ocp.CheckpointManager, step: int, target, *, workdir: str):
  """The train state of ``step`` onto ``target``'s structure and shardings; a checkpoint of
  another shape is one line (Orbax's own advice, e.g. ``strict=False``, does not apply here)."""
  try:
    return checkpoints.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  except (ValueError, KeyError, TypeError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = first.split(" Truncating/padding")[0].rstrip(".")[:200]  # Orbax's advice does not apply here.
    raise ValueError(f"the checkpoint at step {step} in {workdir} does not fit this config's model "
                     f"({first}): use a new --workdir, or the config it was trained with "
                     f"({workdir}/config.json)") from None


def latest_step(workdir: str, step: int | None = None) -> tuple[ocp.CheckpointManager, int]:
  """The workdir's manager and ``step`` (default: the latest finished one); one-line errors."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints in {workdir}: train first with "
                            f"`sslx-train --config ... --workdir {workdir}`")
  checkpoints = manager(workdir)
  steps = checkpoints.all_steps()
  if not steps:
    raise FileNotFoundError(f"no finished checkpoint in {workdir}/checkpoints: train first with "
                            f"`sslx-train --config ... --workdir {workdir}`")
  if step is None:
    return checkpoints, max(steps)
  if step not in steps:
    raise FileNotFoundError(f"no checkpoint of step {step} in {workdir}/checkpoints: it holds steps "
                            f"{sorted(steps)}")
  return checkpoints, step


@dataclasses.dataclass
class Run:
  """A trained run as saved in its workdir: its whole train state and its backbone."""
  config: ml_collections.ConfigDict
  meta: dict
  step: int
  backbone: Any
  variables: dict  # {"params": ..., "batch_stats": ...} of the backbone alone.
  state: Any = None  # The whole TrainState (head and pretext state included).


def load_run(workdir: str, step: int | None = None, *, mesh=None) -> Run:
  """Restores a checkpoint (default: the latest) onto ``mesh`` (default: this process's
  devices), replicated."""
  checkpoints, step = latest_step(workdir, step)
  meta = load_metadata(checkpoints, step)
  config = ml_collections.ConfigDict(meta["config"])
  pretext, model = run.build_model(config)
  tx, _ = run.make_optimizer(config.optimizer, config.total_steps)
  mesh = mesh if mesh is not None else run.make_mesh(jax.local_devices())
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = jax.eval_shape(run.train_state_init_fn(config, model, pretext, tx), jax.random.PRNGKey(0))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
  state = restore_state(checkpoints, step, target, workdir=workdir)
  variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats.get("backbone", {})}
  return Run(config, meta, step, models.get_backbone(config.model), variables, state)


@dataclasses.dataclass
class Backbone:
  """A trained backbone: ``module.apply(variables, prepare(media), train=False)`` gives its
  feature maps ({"block1": ..., "pooled": ...}) for raw uint8 images or clips."""
  module: Any
  variables: dict
  config: ml_collections.ConfigDict
  prepare: Callable  # uint8 media -> the backbone's input (see run.prepare_fn).
  step: int


def load_backbone(workdir: str, step: int | None = None) -> Backbone:
  """The backbone of a training workdir's checkpoint (default: the latest), with the run's
  config and the function that prepares raw media the way the backbone saw them in training.

      backbone = sslx.load_backbone("runs/rotation_sample")
      maps = backbone.module.apply(backbone.variables, backbone.prepare(images), train=False)
  """
  loaded = load_run(workdir, step)
  return Backbone(module=loaded.backbone, variables=jax.device_get(loaded.variables), config=loaded.config,
                  prepare=run.prepare_fn(loaded.config, loaded.backbone), step=loaded.step)
