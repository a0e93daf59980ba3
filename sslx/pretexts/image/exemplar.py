"""Exemplar (Dosovitskiy, Springenberg, Riedmiller & Brox, "Discriminative
Unsupervised Feature Learning with Convolutional Neural Networks", NIPS 2014 /
Exemplar-CNN, TPAMI 2016), and its triplet variant (Kolesnikov, Zhai & Beyer,
"Revisiting Self-Supervised Visual Representation Learning", CVPR 2019).

- Every seed image is a surrogate class; the network sees heavily augmented
  copies of it. The paper draws N seed patches (up to 32,000; 8,000 and 16,000
  in its main tables) and about 100 samples per class.
- Augmentations, on the device, with the paper's ranges: translation up to 0.2
  of the side, scale 0.7-1.4, rotation up to 20 degrees; "contrast 1": the
  projections of every pixel on the principal components of the pixels
  (computed here over the batch) multiplied by factors in [0.5, 2]; "contrast
  2": saturation and value raised to a power in [0.25, 4], multiplied by
  [0.7, 1.4], plus [-0.1, 0.1]; "colour": hue plus [-0.1, 0.1].
- ``mode="classes"``: N-way softmax over the surrogate classes. The class of
  an example is its index in the training set, so the experiment keeps the
  first N images (``train_examples = num_classes``, checked by ``validate``).
- ``mode="triplet"``: for large datasets, where N-way classification is
  impractical, Kolesnikov et al. make ``copies`` (8) augmented copies of each
  image of the batch and train an embedding with the semi-hard triplet loss,
  margin 0.5, the image being the label. We L2-normalise each embedding (their
  code normalises over the batch axis instead, which we take to be a slip).

Inputs: ``(B * copies, H, W, C)``, the copies of one image adjacent; targets:
``{"label": (B * copies,)}`` (the surrogate class, or the image's position in
the batch for the triplet mode).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.exemplar"
  cfg.mode = "classes"  # or "triplet".
  cfg.num_classes = 8000  # Surrogate classes (mode "classes").
  cfg.copies = 1  # Augmented copies per image in a batch (Kolesnikov et al.: 8, triplet mode).
  cfg.embedding_dim = 128  # Triplet mode.
  cfg.margin = 0.5
  cfg.max_translation = 0.2
  cfg.scale_range = (0.7, 1.4)
  cfg.max_rotation_degrees = 20.0
  cfg.pca_factor_range = (0.5, 2.0)
  cfg.power_range = (0.25, 4.0)
  cfg.multiply_range = (0.7, 1.4)
  cfg.add_range = (-0.1, 0.1)
  cfg.max_hue_shift = 0.1
  return cfg


def validate(config) -> None:
  """Before compilation: the surrogate classes must be the kept training images."""
  cfg = config.pretext
  if cfg.mode not in ("classes", "triplet"):
    raise ValueError(f"exemplar: unknown mode {cfg.mode!r}: use 'classes' or 'triplet'")
  if cfg.mode == "classes" and config.get("train_examples") != cfg.num_classes:
    raise ValueError(f"exemplar: {cfg.num_classes} surrogate classes need exactly that many training "
                     f"images, but train_examples is {config.get('train_examples')}: set "
                     f"--config.train_examples={cfg.num_classes}")
  if cfg.mode == "triplet" and cfg.copies < 2:
    raise ValueError(f"exemplar: triplet mode needs copies >= 2 (positives), got {cfg.copies}: "
                     f"set --config.pretext.copies=8 as Kolesnikov et al.")


def _uniform(rng, shape, bounds):
  return jax.random.uniform(rng, shape, minval=bounds[0], maxval=bounds[1])


def pca_contrast(rng, images, factor_range):
  """Scales each pixel's projection on the principal colour axes, per image and axis."""
  pixels = images.reshape(-1, 3)
  mean = pixels.mean(0)
  _, vectors = jnp.linalg.eigh(jnp.cov((pixels - mean).T))
  factors = _uniform(rng, (images.shape[0], 1, 1, 3), factor_range)
  projected = augment.exact_matmul(images - mean, vectors)
  return augment.exact_matmul(projected * factors, vectors.T) + mean


def augment_copies(rng, images, cfg):
  """``(N, H, W, 3)`` in [0, 1] -> N independently augmented images, same shape."""
  n, size = images.shape[0], images.shape[1]
  keys = jax.random.split(rng, 9)
  angle = _uniform(keys[0], (n,), (-1, 1)) * np.deg2rad(cfg.max_rotation_degrees)
  log_scale = _uniform(keys[1], (n,), np.log(np.asarray(cfg.scale_range)))
  shift = _uniform(keys[2], (n, 2), (-1, 1)) * cfg.max_translation * size
  matrices = augment.similarity_matrix(angle, jnp.exp(log_scale), shift[:, 0], shift[:, 1])
  x = augment.warp(images, matrices)
  x = jnp.clip(pca_contrast(keys[3], x, cfg.pca_factor_range), 0.0, 1.0)
  hsv = augment.rgb_to_hsv(x)
  per_image = (n, 1, 1)
  power = jnp.exp(_uniform(keys[4], (n, 1, 1, 2), np.log(np.asarray(cfg.power_range))))
  multiply = _uniform(keys[5], (n, 1, 1, 2), cfg.multiply_range)
  add = _uniform(keys[6], (n, 1, 1, 2), cfg.add_range)
  sat_val = jnp.clip(hsv[..., 1:] ** power * multiply + add, 0.0, 1.0)
  hue = (hsv[..., 0] + _uniform(keys[7], per_image, (-cfg.max_hue_shift, cfg.max_hue_shift))) % 1.0
  return augment.hsv_to_rgb(jnp.concatenate([hue[..., None], sat_val], -1))


def make_inputs(rng, batch, cfg, *, state=None):
  images = batch["image"]
  copies = jnp.repeat(images, cfg.copies, axis=0)
  inputs = augment_copies(rng, copies, cfg)
  if cfg.mode == "classes":
    labels = jnp.repeat(batch["index"].astype(jnp.int32), cfg.copies)
  else:
    labels = jnp.repeat(jnp.arange(images.shape[0], dtype=jnp.int32), cfg.copies)
  return {"image": inputs}, {"label": labels}


class Head(nn.Module):
  """Surrogate-class classifier, or an L2-normalised embedding (triplet mode)."""
  mode: str
  num_classes: int
  embedding_dim: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    x = features["pooled"].astype(jnp.float32)
    if self.mode == "classes":
      return nn.Dense(self.num_classes, name="classifier")(x)
    embedding = nn.Dense(self.embedding_dim, name="embedding")(x)
    return embedding / (jnp.linalg.norm(embedding, axis=-1, keepdims=True) + 1e-6)


def head(cfg) -> nn.Module:
  return Head(mode=cfg.mode, num_classes=cfg.num_classes, embedding_dim=cfg.embedding_dim)


def loss(outputs, targets, *, cfg):
  labels = targets["label"]
  if cfg.mode == "classes":
    return losses.classification(logits=outputs, labels=labels)
  value = losses.triplet_semihard(embeddings=outputs, labels=labels, margin=cfg.margin)
  # Retrieval accuracy: is each copy's nearest other embedding a copy of the same image?
  similarity = outputs @ outputs.T - 2.0 * jnp.eye(outputs.shape[0])
  nearest = jnp.argmax(similarity, axis=-1)
  return value, {"accuracy": jnp.mean((labels[nearest] == labels).astype(jnp.float32))}
