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
size (choose one that suits the patch pretexts, e.g. 64 px). ``validate`` refuses,
in one line, the tasks this cannot mix: a multitask, video pretexts, stateful
ones (DeepCluster, colorization) and any whose ``combinable`` is False.
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


def _refuse(label: str, pretext: pretexts.Pretext) -> None:
  """One-line errors for the tasks one backbone on the shared images cannot mix, before they fail
  at trace time: the multitask itself, video pretexts, stateful ones (the explicit state is one
  pretext's), and those that say they cannot be combined."""
  name = pretext.name
  if name == "multitask":
    raise ValueError(f"multitask: task {label!r} is itself a multitask: list its pretexts directly")
  if name.startswith("video."):
    raise ValueError(f"multitask: task {label!r} ({name}) is a video pretext: multitask mixes image "
                     f"pretexts on one image backbone; remove pretext.tasks.{label} or train it alone")
  if pretext.stateful:
    raise ValueError(f"multitask: task {label!r} ({name}) is stateful (the train state carries one "
                     f"pretext's state, not one per task): remove pretext.tasks.{label} or train it alone")
  if not pretext.combinable:
    raise ValueError(f"multitask: task {label!r} ({name}) is not combinable (combinable is False): "
                     f"remove pretext.tasks.{label} or train it alone")


def _tasks(cfg) -> list[tuple[str, pretexts.Pretext, Any]]:
  """(label, pretext, config) per task, in a fixed (sorted) order; refused tasks raise."""
  out = []
  for label in sorted(cfg.tasks.keys()):
    sub = cfg.tasks[label]
    pretext = pretexts.get(sub.name)
    _refuse(label, pretext)
    out.append((label, pretext, sub))
  return out


def validate(config) -> None:
  """Before compilation: tasks exist, weights are sane, each task's own checks pass."""
  cfg = config.pretext
  if not cfg.tasks:
    raise ValueError("multitask: no tasks: add some, e.g. cfg.tasks.rotation = "
                     "multitask.task('image.rotation', weight=1.0)")
  for label, pretext, sub in _tasks(cfg):
    if sub.get("weight") is None or sub.weight < 0:
      raise ValueError(f"multitask: task {label!r} needs a weight >= 0, got {sub.get('weight')}: "
                       f"set --config.pretext.tasks.{label}.weight")
    # The task's own checks see the shared config (image size, video window) with its sub-config as
    # the pretext; its overrides then live under pretext.tasks.<label>.
    try:
      pretext.validate(ml_collections.ConfigDict(dict(config.to_dict(), pretext=sub.to_dict())))
    except ValueError as e:
      message = re.sub(r"\bpretext\.(?!tasks\.)", f"pretext.tasks.{label}.", str(e))
      raise ValueError(f"multitask task {label!r} ({sub.name}): {message}") from None


def make_inputs(rng, batch, cfg, *, state=None):
  inputs, targets = {}, {}
  del state  # Every task is stateless (see _refuse).
  for i, (label, pretext, sub) in enumerate(_tasks(cfg)):
    inputs[label], targets[label] = pretext.make_inputs(jax.random.fold_in(rng, i), batch, sub)
  return inputs, targets


class Heads(nn.Module):
  """One head per task: {label: backbone features} -> {label: outputs}."""
  heads: dict

  def __call__(self, features, *, train: bool):
    return {label: self.heads[label](features[label], train=train) for label in self.heads}


def head(cfg) -> nn.Module:
  return Heads(heads={label: pretext.head(sub) for label, pretext, sub in _tasks(cfg)})


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
  for label, pretext, sub in _tasks(cfg):
    value, task_metrics = pretext.loss(outputs[label], targets[label], cfg=sub)
    total = total + sub.weight * value
    metrics[f"{label}/loss"] = value
    metrics.update({f"{label}/{k}": v for k, v in task_metrics.items()})
  return total, metrics
