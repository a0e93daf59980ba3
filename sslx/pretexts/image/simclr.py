"""SimCLR (Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of
Visual Representations", ICML 2020; official code google-research/simclr).

- Two views of every image, each from its own random draw of the same augmentation family
  (Appendix A): an Inception-style crop covering 8-100 % of the area with aspect ratio 3/4-4/3,
  resized back to the input size; a horizontal flip with probability 1/2; with probability 0.8
  colour jitter of strength s (brightness, contrast and saturation factors within 0.8 s of 1, a
  hue shift of up to 0.2 s turns, in a random order per image); greyscale with probability 0.2;
  on ImageNet a Gaussian blur with probability 1/2, std 0.1-2.0 px, kernel about 10 % of the side.
  The paper finds the crop + colour pair the one composition that matters most.
- CIFAR-10: strength 0.5 and no blur (Appendix B.9; the official README's CIFAR command, which
  also sets temperature 0.5 at batch 512). Those are the defaults here; the ImageNet defaults
  are s = 1, blur probability 0.5 and temperature 0.1 at batch 4096.
- Encoder f gives h (the backbone's ``pooled`` features); the projection head g is an MLP with
  one hidden layer of h's width and ReLU, projecting to 128 dims (z). The loss acts on z, but h
  is the representation evaluated (the paper's linear probe on h beats one on z by over 10
  points). The official code puts BatchNorm after both layers of g (no bias on the last).
- Loss: NT-Xent (``sslx.losses.nt_xent``) over the 2N views of a batch of N images; each view
  must find its partner by cosine similarity / temperature among the 2N - 1 others. No memory
  bank: the negatives are the other images of the batch, hence the paper's large batches.
- Data parallel: the trainer's jit over a mesh sees global arrays, so the negatives are the
  whole global batch, and BatchNorm statistics are global too (the paper's "global BN", which
  keeps a device from spotting its own positives through local batch statistics).

Layout: ``inputs["image"]`` is ``(2N, H, W, 3)`` with the two views of image i at rows 2i and
2i + 1. Interleaved, each device augments and encodes its own images' views: the compiled
8-device program has no collective, where stacking [all a; all b] needs an all-to-all.
``targets`` is empty, the pairing being that layout. Metric
``accuracy``: the fraction of views whose most similar other view is their partner.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses
from sslx.models.layers import dense_bn_relu
from sslx.montage import montage


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.simclr"
  cfg.temperature = 0.5  # CIFAR-10; the paper's ImageNet default is 0.1.
  cfg.projection_dim = 128
  cfg.hidden_dim = ml_collections.config_dict.placeholder(int)  # None: the width of h, as the paper.
  cfg.output_batchnorm = True  # BatchNorm on z, as the official code.
  cfg.crop_scale = (0.08, 1.0)  # Fraction of the image's area.
  cfg.crop_ratio = (3 / 4, 4 / 3)  # Aspect ratio, width / height.
  cfg.flip_probability = 0.5
  cfg.jitter_strength = 0.5  # s: 0.5 for CIFAR-10, 1.0 for ImageNet.
  cfg.jitter_probability = 0.8
  cfg.grey_probability = 0.2
  cfg.blur_probability = 0.0  # CIFAR-10: no blur; 0.5 for ImageNet.
  cfg.blur_sigma = (0.1, 2.0)  # Pixels.
  return cfg


def validate(config) -> None:
  """Config checks before compilation, one line each."""
  cfg = config.pretext
  if cfg.temperature <= 0:
    raise ValueError(f"simclr: temperature must be > 0, got {cfg.temperature}: set "
                     f"--config.pretext.temperature=0.5 (CIFAR-10; 0.1 for ImageNet with large batches)")
  if config.batch_size < 2:
    raise ValueError(f"simclr: batch_size {config.batch_size} leaves no negatives (each image's views are "
                     f"contrasted with the other images'): set --config.batch_size=256 or any value >= 2")
  for name in ("flip_probability", "jitter_probability", "grey_probability", "blur_probability"):
    if not 0.0 <= cfg[name] <= 1.0:
      raise ValueError(f"simclr: {name} must be in [0, 1], got {cfg[name]}: set --config.pretext.{name}")
  if cfg.jitter_strength < 0:
    raise ValueError(f"simclr: jitter_strength must be >= 0, got {cfg.jitter_strength}: "
                     f"set --config.pretext.jitter_strength=0.5 (CIFAR-10) or 1.0 (ImageNet)")
  low, high = cfg.crop_scale
  if not 0.0 < low <= high <= 1.0:
    raise ValueError(f"simclr: crop_scale {tuple(cfg.crop_scale)} must satisfy 0 < low <= high <= 1: "
                     f"set --config.pretext.crop_scale='(0.08, 1.0)'")
  low, high = cfg.crop_ratio
  if not 0.0 < low <= high:
    raise ValueError(f"simclr: crop_ratio {tuple(cfg.crop_ratio)} must satisfy 0 < low <= high (box width / "
                     f"height, log-uniform): set --config.pretext.crop_ratio='(0.75, 1.3333)'")


def blur_kernel_size(side: int) -> int:
  """The odd kernel size of about 10 % of the side the official code uses (23 at 224 px, 3 at 32)."""
  return 2 * (side // 20) + 1


def augment_views(rng, images, cfg):
  """``(M, H, W, 3)`` in [0, 1] -> M independently augmented views, same shape, in [0, 1]."""
  crop_rng, flip_rng, jitter_rng, grey_rng, blur_rng = jax.random.split(rng, 5)
  s = cfg.jitter_strength
  x = augment.random_resized_crop(crop_rng, images, scale=tuple(cfg.crop_scale), ratio=tuple(cfg.crop_ratio))
  x = augment.random_flip(flip_rng, x, cfg.flip_probability)
  x = augment.colour_jitter(jitter_rng, x, brightness=0.8 * s, contrast=0.8 * s, saturation=0.8 * s,
                            hue=0.2 * s, probability=cfg.jitter_probability)
  x = augment.random_grey(grey_rng, x, cfg.grey_probability)
  if cfg.blur_probability > 0:
    x = augment.random_blur(blur_rng, x, probability=cfg.blur_probability, sigma_range=tuple(cfg.blur_sigma),
                            kernel_size=blur_kernel_size(min(images.shape[1], images.shape[2])))
  return jnp.clip(x, 0.0, 1.0)


@functools.partial(jax.jit, static_argnums=2)
def _two_views_each(rng, images, frozen_cfg):
  # Compiled once per config and shape: called eagerly (notebooks, pictures, tests) the many small
  # colour ops would dispatch one by one; inside the train step's jit it is simply inlined.
  return augment_views(rng, jnp.repeat(images, 2, axis=0), frozen_cfg)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["image"]`` (N, H, W, 3) -> ({"image": (2N, H, W, 3)}, {}): views of image i at 2i, 2i + 1."""
  return {"image": _two_views_each(rng, batch["image"], ml_collections.FrozenConfigDict(cfg))}, {}


class ProjectionHead(nn.Module):
  """g: pooled features h -> Dense + BN + ReLU -> Dense (+ BN) -> z."""
  projection_dim: int
  hidden_dim: int | None = None
  output_batchnorm: bool = True

  @nn.compact
  def __call__(self, features, *, train: bool):
    h = features["pooled"].astype(jnp.float32)
    x = dense_bn_relu(h, self.hidden_dim or h.shape[-1], name="hidden", train=train)
    z = nn.Dense(self.projection_dim, use_bias=not self.output_batchnorm, name="projection")(x)
    if self.output_batchnorm:
      z = nn.BatchNorm(use_running_average=not train, use_bias=False, name="projection_bn")(z)
    return z


def head(cfg) -> nn.Module:
  return ProjectionHead(projection_dim=cfg.projection_dim, hidden_dim=cfg.hidden_dim,
                        output_batchnorm=cfg.output_batchnorm)


def split_views(outputs):
  """(2N, ...) in the interleaved layout -> (view a (N, ...), view b (N, ...))."""
  pairs = outputs.reshape((-1, 2) + outputs.shape[1:])
  return pairs[:, 0], pairs[:, 1]


def contrastive_accuracy(embeddings_a, embeddings_b):
  """Fraction of the 2N views whose most cosine-similar other view is their partner."""
  n = embeddings_a.shape[0]
  z = jnp.concatenate([embeddings_a, embeddings_b], 0).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  similarity = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, z @ z.T)
  partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  return jnp.mean((jnp.argmax(similarity, axis=-1) == partner).astype(jnp.float32))


def loss(outputs, targets, *, cfg):
  del targets  # The pairing is the layout.
  a, b = split_views(outputs)
  value = losses.nt_xent(embeddings_a=a, embeddings_b=b, temperature=cfg.temperature)
  return value, {"accuracy": contrastive_accuracy(a, b)}


def pictures(predict, images, *, rng, cfg, state=None, train_images=None):
  """Two grids over real images: ``views``, one row per image [original | view a | view b]
  (the augmentations the network must see through), and ``matches``, one row per image
  [view a | the view b the model ranks most similar among all images' | the true view b]."""
  images = jnp.asarray(images, jnp.float32)
  n = images.shape[0]
  inputs, _ = make_inputs(rng, {"image": images, "index": jnp.arange(n, dtype=jnp.int32)}, cfg)
  view_a, view_b = (np.asarray(v) for v in split_views(inputs["image"]))
  z_a, z_b = (np.asarray(z, np.float32) for z in split_views(predict(inputs)))
  z_a = z_a / np.maximum(np.linalg.norm(z_a, axis=-1, keepdims=True), 1e-12)
  z_b = z_b / np.maximum(np.linalg.norm(z_b, axis=-1, keepdims=True), 1e-12)
  best = np.argmax(z_a @ z_b.T, axis=1)
  return {"views": montage(np.stack([np.asarray(images), view_a, view_b], axis=1)),
          "matches": montage(np.stack([view_a, view_b[best], view_b], axis=1))}
