"""Supervised classification with the dataset's labels: fine-tuning as a config of the one trainer.

Not a pretext task: the objective ``sslx-finetune`` (and any supervised baseline) trains
through the same trainer, with the same sharding, checkpoints, exact resume and
non-finite guard as pretraining. Its parameters start from a pretraining checkpoint when
the config's ``init_from`` names a workdir (sslx/train.py), else from random init.

The protocol of VCOP (Xu et al., CVPR 2019) and of the UCF101 fine-tuning in Shuffle and
Learn (Misra et al., ECCV 2016), OPN (Lee et al., ICCV 2017) and O3N (Fernando et al.,
CVPR 2017): the backbone plus a new linear classifier on its ``pooled`` features, dropout
before it, softmax cross-entropy on the labeled split. A 3D backbone sees the clip whole; a
per-frame 2D backbone's pooled features are averaged over the clip's frames. The backbone
is fed what it saw in pretraining: ``cfg.input_pretext`` names the pretraining pretext
(with its settings in ``cfg.input_cfg``) whose ``backbone_input`` (colorization's L
channel, DeepCluster's Sobel maps) and ``clip_input`` (O3N's dynamic images, the arrow of
time's frame differences) apply here.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from sslx import losses, pretexts


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "supervised"
  cfg.num_classes = ml_collections.config_dict.placeholder(int)
  cfg.dropout = 0.5  # Before the classifier.
  # The pretraining pretext whose input transforms the backbone was trained with (None: RGB).
  cfg.input_pretext = ml_collections.config_dict.placeholder(str)
  cfg.input_cfg = ml_collections.ConfigDict()
  return cfg


def validate(config) -> None:
  cfg = config.pretext
  if not cfg.get("num_classes") or cfg.num_classes < 2:
    raise ValueError(f"supervised training needs pretext.num_classes >= 2, got {cfg.get('num_classes')}: "
                     f"set --config.pretext.num_classes to the dataset's number of classes")


def _input_pretext(cfg):
  return pretexts.get(cfg.input_pretext) if cfg.get("input_pretext") else None


def make_inputs(rng, batch, cfg, *, state=None):
  """Media as the backbone saw them in pretraining; the targets are the labels.

  Images -> ``{"image": (B, H, W, 3)}`` (standardised by the trainer) or, when the
  pretraining pretext has a ``backbone_input``, ``{"input": ...}`` as it makes it. Clips ->
  ``{"video": (B, T, H, W, 3)}``; with ``clip_input``, what it makes of them.
  """
  del rng, state
  source = _input_pretext(cfg)
  labels = batch["label"]
  if "video" in batch:
    clips = batch["video"]
    if source is not None and source.clip_input is not None:
      clips = source.clip_input(clips, cfg.input_cfg)
    custom = source.backbone_input(clips, cfg.input_cfg) if source and source.backbone_input else None
    return ({"video": clips} if custom is None else {"input": custom}), labels
  images = batch["image"]
  custom = source.backbone_input(images, cfg.input_cfg) if source and source.backbone_input else None
  return ({"image": images} if custom is None else {"input": custom}), labels


class Classifier(nn.Module):
  """Backbone -> ``pooled`` -> (mean over a clip's frames, for a per-frame 2D backbone) ->
  dropout -> linear classifier. Parameters: ``backbone`` and ``classifier``."""
  backbone: nn.Module
  num_classes: int
  dropout: float

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    x = next(inputs[k] for k in ("input", "video", "image") if k in inputs)
    per_frame = x.ndim == 5 and not getattr(self.backbone, "takes_video", False)
    group = x.shape[1] if per_frame else 1
    if per_frame:
      x = x.reshape((-1,) + x.shape[2:])
    features = self.backbone(x, train=train)
    pooled = features["pooled"].astype(jnp.float32)
    pooled = pooled.reshape(-1, group, pooled.shape[-1]).mean(axis=1)
    pooled = nn.Dropout(self.dropout, deterministic=not train)(pooled)
    return nn.Dense(self.num_classes, name="classifier")(pooled), features


def head(cfg) -> nn.Module:
  # The classifier needs the clip grouping, so the model is wired in ``model``; a head alone
  # is the linear layer on pooled features.
  return nn.Dense(cfg.num_classes, name="classifier")


def model(backbone, cfg) -> nn.Module:
  return Classifier(backbone=backbone, num_classes=cfg.num_classes, dropout=cfg.dropout)


def loss(outputs, targets, *, cfg):
  del cfg
  return losses.classification(logits=outputs, labels=targets)
