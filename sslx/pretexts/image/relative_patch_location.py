"""Relative patch location (Doersch, Gupta & Efros, "Unsupervised Visual
Representation Learning by Context Prediction", ICCV 2015; official code
cdoersch/deepcontext).

- A 3x3 layout of square patches with a gap between neighbours (paper: 96 px
  patches, 48 px gap, i.e. half a patch) and an independent random jitter of
  each patch (paper: up to 7 px), placed at a random offset in the image, so
  the task cannot be solved by continuing edges or textures across borders.
- The label is where the neighbour sits relative to the centre patch, 8
  classes in raster order: 0 top-left, 1 top, 2 top-right, 3 left, 4 right,
  5 bottom-left, 6 bottom, 7 bottom-right.
- Against chromatic aberration, a shortcut the paper found the network to
  exploit: ``colour="drop"`` keeps one random channel per patch and replaces
  the others with Gaussian noise of 1/100 its std, ``"project"`` removes the
  green-magenta axis (-1, 2, -1) from every pixel (the paper's two remedies).
- With probability 1/3 a patch loses its fine detail as if downsampled
  (deepcontext's random downsampling), then every patch is standardised on its
  own (per-patch normalisation, Kolesnikov et al. 2019).
- A siamese encoder with shared weights (the one backbone over the patches on
  the batch axis), per-patch fc6 on the flattened last block, the two patch
  features fused by concatenation (centre first), fc7, 8-way classifier.
- ``all_pairs=True`` (Kolesnikov et al. 2019) encodes the 9 patches once and
  classifies all 8 (centre, neighbour) pairs; ``False`` draws one neighbour
  per image as the paper does.

Inputs: ``(B * 9, p, p, C)`` (raster order) or ``(B * 2, p, p, C)`` (centre,
neighbour); targets ``{"label": (B * 8,) or (B,)}``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses
from sslx.models import layers

NUM_CLASSES = 8
CENTRE = 4
# Grid cell (raster index 0..8, centre 4 excluded) of each label.
NEIGHBOUR_CELLS = np.array([0, 1, 2, 3, 5, 6, 7, 8])
# (row, column) offset of the neighbour from the centre, per label.
OFFSETS = np.stack(np.divmod(NEIGHBOUR_CELLS, 3), -1) - 1
COLOURS = ("drop", "project", "none")  # Chromatic-aberration countermeasures (see the docstring).


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.relative_patch_location"
  # Sizes in pixels, the paper's proportions (gap = patch / 2, jitter ~ 7/96 of a
  # patch) scaled to 64 px images (CIFAR upsampled): 3 * 15 + 2 * 7 + 2 * 1 <= 64.
  cfg.patch_size = 15
  cfg.gap = 7
  cfg.jitter = 1
  cfg.all_pairs = True
  cfg.colour = "drop"  # 'drop', 'project' or 'none'.
  cfg.downsample_probability = 1 / 3
  cfg.downsample_min_fraction = 0.25
  cfg.standardize = True
  cfg.fc6 = 256
  cfg.fc7 = 512
  return cfg


def layout_extent(cfg) -> int:
  """Pixels the jittered 3x3 layout can span."""
  return 3 * cfg.patch_size + 2 * cfg.gap + 2 * cfg.jitter


def _check_extent(image_size: int, cfg) -> None:
  extent = layout_extent(cfg)
  if extent > image_size:
    raise ValueError(f"relative_patch_location needs image_size >= 3*patch_size + 2*gap + 2*jitter = "
                     f"3*{cfg.patch_size} + 2*{cfg.gap} + 2*{cfg.jitter} = {extent} (got {image_size}): "
                     f"raise --config.image_size to {extent} or lower --config.pretext.patch_size/gap/jitter")


def validate(config) -> None:
  """Before compilation: the jittered 3x3 layout fits the image, and known options."""
  cfg = config.pretext
  if config.get("video") is not None:
    raise ValueError("relative_patch_location cuts images, but this config has a video section (clips): "
                     "start the experiment config from configs.base()")
  if cfg.patch_size < 1 or cfg.gap < 0 or cfg.jitter < 0:
    raise ValueError(f"relative_patch_location: patch_size {cfg.patch_size} must be >= 1 and gap {cfg.gap}, "
                     f"jitter {cfg.jitter} >= 0 (a negative one overlaps or misplaces patches): the paper's "
                     f"proportions at 64 px are 15, 7, 1")
  if cfg.colour not in COLOURS:
    raise ValueError(f"relative_patch_location: unknown colour {cfg.colour!r}: use one of {COLOURS}")
  if not 0.0 <= cfg.downsample_probability <= 1.0 or not 0.0 < cfg.downsample_min_fraction <= 1.0:
    raise ValueError(f"relative_patch_location: downsample_probability {cfg.downsample_probability} must be "
                     f"in [0, 1] and downsample_min_fraction {cfg.downsample_min_fraction} in (0, 1] (the blur "
                     f"is 0.5 / fraction px): deepcontext uses 1/3 and 0.25")
  _check_extent(config.image_size, cfg)


def patch_corners(rng, batch_size: int, image_size: int, cfg):
  """Top-left corners ``(B, 9, 2)`` (row, column) of the 9 patches, raster order."""
  _check_extent(image_size, cfg)
  extent = layout_extent(cfg)
  origin_rng, jitter_rng = jax.random.split(rng)
  origin = jax.random.randint(origin_rng, (batch_size, 1, 2), 0, image_size - extent + 1) + cfg.jitter
  step = cfg.patch_size + cfg.gap
  cells = jnp.asarray(np.stack(np.divmod(np.arange(9), 3), -1) * step)
  jitter = jax.random.randint(jitter_rng, (batch_size, 9, 2), -cfg.jitter, cfg.jitter + 1)
  return origin + cells[None] + jitter


def _prepare(rng, patches, cfg):
  """Colour countermeasure, random downsampling, per-patch standardisation."""
  colour_rng, down_rng = jax.random.split(rng)
  if cfg.colour == "drop":
    patches = augment.drop_colour(colour_rng, patches)
  elif cfg.colour == "project":
    patches = augment.project_colour(patches)
  elif cfg.colour != "none":
    raise ValueError(f"relative_patch_location: unknown colour {cfg.colour!r}: use one of {COLOURS}")
  if cfg.downsample_probability > 0:
    patches = augment.random_downsample(down_rng, patches, cfg.downsample_probability,
                                        cfg.downsample_min_fraction)
  return augment.standardize_patches(patches) if cfg.standardize else patches


def make_inputs(rng, batch, cfg, *, state=None):
  images = batch["image"]
  batch_size, size = images.shape[0], images.shape[1]
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"relative_patch_location needs square images, got {images.shape[1]} x {images.shape[2]}: "
                     f"crop to a square in the input pipeline")
  corner_rng, label_rng, prep_rng = jax.random.split(rng, 3)
  corners = patch_corners(corner_rng, batch_size, size, cfg)
  if cfg.all_pairs:
    labels = jnp.tile(jnp.arange(NUM_CLASSES, dtype=jnp.int32), batch_size)
    chosen = corners  # (B, 9, 2): all patches; the head pairs the centre with each neighbour.
  else:
    labels = jax.random.randint(label_rng, (batch_size,), 0, NUM_CLASSES, dtype=jnp.int32)
    neighbour = jnp.take_along_axis(corners, jnp.asarray(NEIGHBOUR_CELLS)[labels][:, None, None], axis=1)
    chosen = jnp.concatenate([corners[:, CENTRE:CENTRE + 1], neighbour], axis=1)  # (B, 2, 2)
  per_image = chosen.shape[1]
  patches = augment.crop(jnp.repeat(images, per_image, axis=0), chosen[..., 0].reshape(-1),
                         chosen[..., 1].reshape(-1), cfg.patch_size)
  return {"image": _prepare(prep_rng, patches, cfg)}, {"label": labels, "corners": chosen}


class Head(nn.Module):
  """fc6 per patch, (centre, neighbour) concatenated, fc7, 8-way classifier."""
  all_pairs: bool
  fc6: int
  fc7: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = layers.dense_bn_relu(layers.flatten_last_block(features), self.fc6, name="fc6", train=train)
    if self.all_pairs:
      x = x.reshape(-1, 9, self.fc6)
      centre = jnp.broadcast_to(x[:, CENTRE:CENTRE + 1], (x.shape[0], NUM_CLASSES, self.fc6))
      pairs = jnp.concatenate([centre, x[:, NEIGHBOUR_CELLS]], axis=-1)
    else:
      pairs = x.reshape(-1, 2 * self.fc6)
    pairs = pairs.reshape(-1, 2 * self.fc6)
    x = layers.dense_bn_relu(pairs, self.fc7, name="fc7", train=train)
    return nn.Dense(NUM_CLASSES, name="classifier")(x)


def head(cfg) -> nn.Module:
  return Head(all_pairs=cfg.all_pairs, fc6=cfg.fc6, fc7=cfg.fc7)


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
