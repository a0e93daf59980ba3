"""Backbones and the wrapper that puts a pretext head on top of one.

A backbone is found by name: ``model.name = "resnet"`` imports
``sslx.models.resnet`` and builds its ``Backbone`` from the remaining fields of
the model config. Every backbone maps images ``(B, H, W, 3)`` to a dict of
feature maps, one per block (``"block1"``, ``"block2"``, ...), plus
``"pooled"``: the global average of the last block, ``(B, C)``. 3D backbones
(``c3d``, ``r3d``) map clips ``(B, T, H, W, 3)`` to 5D maps and mark themselves
with the class attribute ``takes_video = True``.
"""

from __future__ import annotations

import importlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Model config fields that pick how a model runs, not what it is: every value builds the same
# parameters and computes the same function (sslx/models/conv.py), so a checkpoint written under
# one resumes or evaluates under another, and comparisons of a saved model config leave them out.
# "conv_weight_grad" is conv_kernels' name in checkpoints written before "onednn" (still accepted).
RUNTIME_KEYS = ("conv_kernels", "conv_weight_grad")


def block_names(features: dict[str, Any]) -> list[str]:
  """The per-block feature names of a backbone's output, shallow to deep."""
  names = [k for k in features if k.startswith("block")]
  return sorted(names, key=lambda k: int(k[len("block"):]))


def _module(name: str):
  try:
    return importlib.import_module(f"sslx.models.{name}")
  except ModuleNotFoundError:
    raise ValueError(f"unknown model name {name!r}: use one of 'convnet', 'resnet', 'c3d', 'r3d', "
                     f"'l3_audio', 'waveform', 'stacked_frames' (a module under sslx/models/)") from None


def conv_kernels(model_config) -> str | None:
  """The model's ``conv_kernels`` (its old name accepted; the backbone's default where unset),
  or None for a backbone without that choice (c3d, r3d: XLA's own 3D convolutions)."""
  default = getattr(_module(model_config["name"]).Backbone, "conv_kernels", None)
  if default is None:
    return None
  return model_config.get("conv_kernels") or model_config.get("conv_weight_grad") or default


def get_backbone(model_config) -> nn.Module:
  """Builds ``sslx.models.<name>.Backbone(**other fields)`` from a model config."""
  kwargs = dict(model_config)
  module = _module(kwargs.pop("name"))
  old_name = kwargs.pop("conv_weight_grad", None)  # conv_kernels in checkpoints before "onednn".
  if old_name is not None:
    kwargs.setdefault("conv_kernels", old_name)
  if "dtype" in kwargs and isinstance(kwargs["dtype"], str):
    kwargs["dtype"] = jnp.dtype(kwargs["dtype"])
  for key, value in kwargs.items():
    if isinstance(value, list):
      kwargs[key] = tuple(value)
  return module.Backbone(**kwargs)


class PretextModel(nn.Module):
  """A backbone with a pretext head: ``inputs["image"]`` -> (head outputs, backbone features).

  Patch pretexts (jigsaw, relative location) put their patches on the batch
  axis, ``(B * patches, h, w, C)``, so the one backbone is a siamese encoder
  with shared weights; their heads regroup the per-patch features. A pretext
  that needs another wiring (multi-task) defines ``model(backbone, cfg)``; the
  backbone's parameters must stay under the name ``backbone`` for evaluation.
  """
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    # "image": (N, H, W, C) for 2D backbones (video frames on the batch axis for
    # per-frame siamese encoders); "video": (N, T, H, W, C) for 3D backbones.
    features = self.backbone(inputs["video"] if "video" in inputs else inputs["image"], train=train)
    return self.head(features, train=train), features


def max_pool_all(features) -> jnp.ndarray:
  """``(B, ..., C)`` -> ``(B, C)``: the maximum over every axis between batch and channels
  (space, time or frequency), in float32, as L3-Net pools its towers' last maps."""
  return features.reshape(features.shape[0], -1, features.shape[-1]).astype(jnp.float32).max(axis=1)


class AudioVisualModel(nn.Module):
  """A visual backbone and an audio tower under one head: ``inputs["image"]`` (frames, or
  ``inputs["video"]`` clips for a 3D backbone) and ``inputs["audio"]`` (waveforms ``(B, N)``)
  -> (head outputs, the visual backbone's features).

  The visual backbone's parameters stay under ``backbone`` (evaluation and ``load_backbone``
  find it there) and the audio tower's under ``audio``; the head gets both feature dicts,
  ``head(visual_features, audio_features, train=...)``.
  """
  backbone: nn.Module
  audio: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    visual = self.backbone(inputs["video"] if "video" in inputs else inputs["image"], train=train)
    heard = self.audio(inputs["audio"], train=train)
    return self.head(visual, heard, train=train), visual
