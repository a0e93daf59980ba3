"""Rotation prediction (Gidaris, Singh & Komodakis, "Unsupervised Representation
Learning by Predicting Image Rotations", ICLR 2018; official code
gidariss/FeatureLearningRotNet).

- 4 classes: label k means the image turned k x 90 degrees counter-clockwise,
  exactly ``np.rot90(image, k)`` on the (H, W) axes.
- As in RotNet, every image of the batch appears in all four rotations in the
  same batch (the paper reports this beats one random rotation per image); a
  batch of B images becomes 4B inputs. ``all_rotations=False`` draws one
  rotation per image from the PRNG key instead.
- The four copies of an image sit next to each other, so on a data-parallel
  mesh each device rotates its own images and no example moves between devices.
- Rotations are made here, on the device, after the host pipeline resized the
  image: a resized rotated image would carry interpolation artefacts that tell
  the rotation away.
- Head: global average pool of the last block, then a linear 4-way classifier
  (the NIN RotNet's classifier is global pooling + linear as well).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses

NUM_ROTATIONS = 4


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.rotation"
  cfg.all_rotations = True  # RotNet: all 4 rotations of every image in the batch.
  return cfg


def validate(config) -> None:
  """Before compilation. Any square image turns exactly (the pipeline crops image_size squares), so
  the only geometry that can clash is clips instead of images."""
  if config.get("video") is not None:
    raise ValueError("rotation turns images, but this config has a video section (clips): start the "
                     "experiment config from configs.base()")


def all_rotations(images):
  """(B, H, W, C) -> (B, 4, H, W, C): each image turned 0, 90, 180, 270 degrees."""
  return jnp.stack([jnp.rot90(images, r, axes=(1, 2)) for r in range(NUM_ROTATIONS)], axis=1)


def rotate(images, k):
  """Rotates a batch (B, H, W, C) by the per-example counts k (B,) of 90 degrees."""
  return jnp.take_along_axis(all_rotations(images), k[:, None, None, None, None], axis=1)[:, 0]


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["image"]`` (B, H, W, C) -> ({"image": rotated}, {"label": k})."""
  images = batch["image"]
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"rotation needs square images, got H x W = {images.shape[1]} x "
                     f"{images.shape[2]}: crop to a square in the input pipeline")
  batch_size = images.shape[0]
  if cfg.all_rotations:
    inputs = all_rotations(images).reshape((batch_size * NUM_ROTATIONS,) + images.shape[1:])
    labels = jnp.tile(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), batch_size)
  else:
    labels = jax.random.randint(rng, (batch_size,), 0, NUM_ROTATIONS, dtype=jnp.int32)
    inputs = rotate(images, labels)
  return {"image": inputs}, {"label": labels}


class Head(nn.Module):
  num_classes: int = NUM_ROTATIONS

  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    return nn.Dense(self.num_classes, dtype=jnp.float32, name="classifier")(features["pooled"])


def head(cfg) -> nn.Module:
  del cfg
  return Head()


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
