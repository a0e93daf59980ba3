"""Motion segmentation from a single frame (Pathak, Girshick, Dollár, Darrell & Hariharan,
"Learning Features by Watching Objects Move", CVPR 2017).

What moves together is an object: a network that segments, from one still frame, what motion
segmented in the video has to learn what objects look like.

- Pseudo ground truth from motion, on the host (``video.motion_masks``, sslx/data/video.py,
  ``motion_maps``): Farneback flow from each frame to the next less the frame's median flow (the
  camera's motion) as a magnitude, or frame differences (``video.motion = "diff"``), normalised
  per clip by its 95th percentile and cached with the frames. Here a frame's mask is where that
  map reaches ``threshold`` (0.5). The paper segments its videos with uNLC (an unsupervised
  video segmentation by non-local consensus over motion saliency); that pipeline is not
  reproduced: the masks here are rougher and come from two frames.
- Each clip gives one frame, at a random position of the delivered window; the network sees that
  frame only, never the motion.
- A frame whose mask covers less than ``min_fraction`` (1%) or more than ``max_fraction`` (50%)
  of it gets zero weight: nothing moved, or the camera did (a rule of ours, not the paper's).
- Head: a 1x1 convolution with BatchNorm and ReLU and a 1x1 classifier on the backbone's deepest
  map, one logit per cell (the paper: AlexNet's conv5 and fully connected layers to a fixed-size
  mask); targets are the masks area-averaged over each cell (soft).
- Loss: per-pixel binary cross-entropy (the paper's), averaged over the cells of the weighted
  frames.

Inputs: ``{"image": (B, H, W, 3)}``; targets: ``{"mask": (B, H, W)}`` (0 or 1) and ``{"weight":
(B,)}``. Outputs: ``(B, h, w)`` logits on the deepest map's grid.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses, models
from sslx.models.layers import ConvBN


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.motion_segmentation"
  cfg.threshold = 0.5  # Of the per-clip normalised motion map.
  cfg.min_fraction = 0.01  # Frames whose mask covers less (nothing moved) get zero weight,
  cfg.max_fraction = 0.5  # and those whose mask covers more (the camera moved).
  cfg.head_width = 64
  return cfg


def validate(config) -> None:
  """Before compilation: motion maps from the host, a threshold and fractions that make sense."""
  if "video" not in config:
    raise ValueError("motion_segmentation needs video data (config.video): start the experiment config "
                     "from configs.base_video()")
  if not config.video.get("motion_masks", False):
    raise ValueError("motion_segmentation needs the host's motion maps: set --config.video.motion_masks=True")
  cfg = config.pretext
  if not 0.0 < cfg.threshold < 1.0:
    raise ValueError(f"motion_segmentation: threshold {cfg.threshold} must be in (0, 1) (the motion maps "
                     f"are normalised to [0, 1] per clip)")
  if not 0.0 <= cfg.min_fraction < cfg.max_fraction <= 1.0:
    raise ValueError(f"motion_segmentation: min_fraction {cfg.min_fraction} and max_fraction {cfg.max_fraction} "
                     f"must satisfy 0 <= min < max <= 1")


def motion_mask(motion, cfg):
  """uint8 motion maps ``(..., H, W)`` -> the pseudo ground-truth masks, float 0 or 1."""
  return (motion.astype(jnp.float32) / 255.0 >= cfg.threshold).astype(jnp.float32)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) and ``batch["motion"]`` (B, T, H, W) -> one frame per
  clip, and the mask of what moves in it."""
  del state
  video, motion = batch["video"], batch["motion"]
  batch_size, num_frames = video.shape[:2]
  t = jax.random.randint(rng, (batch_size,), 0, num_frames)
  frame = video[jnp.arange(batch_size), t]
  mask = motion_mask(motion[jnp.arange(batch_size), t], cfg)
  fraction = mask.mean(axis=(1, 2))
  weight = ((fraction >= cfg.min_fraction) & (fraction <= cfg.max_fraction)).astype(jnp.float32)
  return {"image": frame}, {"mask": mask, "weight": weight}


class Head(nn.Module):
  """Deepest block -> ``(B, h, w)`` mask logits."""
  width: int = 64

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = features[models.block_names(features)[-1]].astype(jnp.float32)
    x = ConvBN(self.width, 1, name="hidden")(x, train=train)
    return nn.Dense(1, name="classifier")(x)[..., 0]


def head(cfg) -> nn.Module:
  return Head(width=cfg.head_width)


def cell_targets(mask, grid):
  """``(B, H, W)`` masks -> ``(B, h, w)`` the moving fraction of each cell (area average)."""
  b, h, w = mask.shape
  gh, gw = grid
  if h % gh or w % gw:
    return jax.image.resize(mask, (b, gh, gw), "linear", antialias=True)
  return mask.reshape(b, gh, h // gh, gw, w // gw).mean(axis=(2, 4))


def loss(outputs, targets, *, cfg):
  del cfg
  soft = cell_targets(targets["mask"], outputs.shape[1:3])
  weight = targets["weight"]
  cells = outputs.shape[1] * outputs.shape[2]
  # Summed over a frame's cells, weighted over frames; / cells: the mean per cell.
  value = losses.sigmoid_xent(logits=outputs, labels=soft, weights=weight) / cells
  predicted = outputs > 0
  truth = soft >= 0.5
  intersection = jnp.sum(predicted & truth, axis=(1, 2))
  union = jnp.sum(predicted | truth, axis=(1, 2))
  iou = jnp.where(union > 0, intersection / jnp.maximum(union, 1), 1.0)
  return value, {"iou": jnp.sum(iou * weight) / jnp.maximum(jnp.sum(weight), 1.0),
                 "kept_frames": jnp.mean(weight)}


def predict_masks(logits, size):
  """``(B, h, w)`` logits -> ``(B, H, W)`` boolean masks: bilinear upsampling, then sigmoid > 0.5."""
  upsampled = jax.image.resize(logits.astype(jnp.float32), (logits.shape[0],) + tuple(size), "bilinear")
  return upsampled > 0
