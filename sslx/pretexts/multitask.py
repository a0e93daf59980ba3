"""Multi-task pretext mixing (Doersch & Zisserman, "Multi-task Self-Supervised
Visual Learning", ICCV 2017): one shared backbone, one head per pretext, the
weighted sum of the pretexts' losses.

The config lists the tasks by a label of your choice, each the full config of
its pretext plus a ``weight``::

    cfg = multitask.default_config()
    cfg.tasks.rotation = multitask.task("image.rotation", weight=1.0)
    cfg.tasks.jigsaw = multitask.task("image.jigsaw", weight=0.5, grid=2)

Every pretext makes its own inputs from its own fold of the key (inputs and
targets are nested per task); the backbone runs once per task, as the paper's
shared trunk does for each task's batch. Metrics are reported per task
(``jigsaw/accuracy``, ``jigsaw/loss``). BatchNorm statistics see every task's
inputs in turn. All tasks share the input pipeline, so they share the image
size (choose one that suits the patch pretexts, e.g. 64 px).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from sslx import pretexts


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "multitask"
  cfg.tasks = ml_collections.ConfigDict()  # label -> task(...)
  return cfg


def task(name: str, weight: float = 1.0, **overrides) -> ml_collections.ConfigDict:
  """A pretext's default config with ``weight`` and any field overridden."""
  cfg = pretexts.get(name).default_config()
  cfg.weight = float(weight)
  cfg.update(overrides)
  return cfg


def _tasks(cfg) -> list[tuple[str, Any, Any]]:
  """(label, module, config) per task, in a fixed (sorted) order."""
  out = []
  for label in sorted(cfg.tasks.keys()):
    sub = cfg.tasks[label]
    if sub.name == "multitask":
      raise ValueError(f"multitask: task {label!r} is itself a multitask: list its pretexts directly")
    out.append((label, pretexts.get(sub.name), sub))
  return out


def validate(config) -> None:
  """Before compilation: tasks exist, weights are sane, each task's own checks pass."""
  cfg = config.pretext
  if not cfg.tasks:
    raise ValueError("multitask: no tasks: add some, e.g. cfg.tasks.rotation = "
                     "multitask.task('image.rotation', weight=1.0)")
  for label, module, sub in _tasks(cfg):
    if sub.get("weight") is None or sub.weight < 0:
      raise ValueError(f"multitask: task {label!r} needs a weight >= 0, got {sub.get('weight')}: "
                       f"set --config.pretext.tasks.{label}.weight")
    if hasattr(module, "validate"):
      # The task's own checks see the shared config (image size, video window) with its sub-config as
      # the pretext; its overrides then live under pretext.tasks.<label>.
      try:
        module.validate(ml_collections.ConfigDict(dict(config.to_dict(), pretext=sub.to_dict())))
      except ValueError as e:
        message = re.sub(r"\bpretext\.(?!tasks\.)", f"pretext.tasks.{label}.", str(e))
        raise ValueError(f"multitask task {label!r} ({sub.name}): {message}") from None


def make_inputs(rng, batch, cfg):
  inputs, targets = {}, {}
  for i, (label, module, sub) in enumerate(_tasks(cfg)):
    inputs[label], targets[label] = module.make_inputs(jax.random.fold_in(rng, i), batch, sub)
  return inputs, targets


class Heads(nn.Module):
  """One head per task: {label: backbone features} -> {label: outputs}."""
  heads: dict

  def __call__(self, features, *, train: bool):
    return {label: self.heads[label](features[label], train=train) for label in self.heads}


def head(cfg) -> nn.Module:
  return Heads(heads={label: module.head(sub) for label, module, sub in _tasks(cfg)})


class MultiTaskModel(nn.Module):
  """The shared backbone applied to each task's inputs, then each task's head."""
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    features = {label: self.backbone(task_inputs["image"], train=train)
                for label, task_inputs in inputs.items()}
    first = sorted(features)[0]
    return self.head(features, train=train), features[first]


def model(backbone, cfg) -> nn.Module:
  return MultiTaskModel(backbone=backbone, head=head(cfg))


def loss(outputs, targets, *, cfg):
  """The weighted sum of the tasks' losses; metrics per task."""
  total, metrics = 0.0, {}
  for label, module, sub in _tasks(cfg):
    value, task_metrics = module.loss(outputs[label], targets[label], cfg=sub)
    total = total + sub.weight * value
    metrics[f"{label}/loss"] = value
    metrics.update({f"{label}/{k}": v for k, v in task_metrics.items()})
  return total, metrics
