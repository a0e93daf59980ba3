"""Relative transformation prediction: two views of one image, related by a
sampled geometric transformation, and a network that tells the transformation.

- Agrawal, Carreira & Malik, "Learning to See by Moving", ICCV 2015: a
  siamese network (one encoder, shared weights) sees two images related by
  the camera's motion; the features of both are concatenated and the motion
  is classified, each parameter into its own bins. ``target="bins"``.
- Zhang, Qi, Wang & Luo, "AET vs. AED: Unsupervised Representation Learning
  by Auto-Encoding Transformations rather than Data", CVPR 2019: regress the
  parameters of an affine or projective transformation from the features of
  the original and the transformed image, with a mean squared error.
  ``target="regression"`` (the default). Their CIFAR ranges: rotation
  +-180 degrees, translation +-0.2 of the side, scale 0.7-1.3, shear +-30
  degrees; the projective variant moves the four corners by up to 0.125 of
  the side.
- DeTone, Malisiewicz & Rabinovich, "Deep Image Homography Estimation", 2016
  (HomographyNet): a homography is parametrised by the offsets of the four
  corners of the view (8 numbers), better conditioned than the 3x3 matrix.
  ``transform="homography"``.

Our ranges are narrower than AET's (rotation +-30 degrees, scale 0.8-1.25,
translation +-0.15 of the view, corners +-0.125) so that the two views of a
32 px image overlap for most of their area and the task is well posed.
Rotation stays within +-30 degrees for two reasons: larger angles teach the
absolute orientation of objects, which is what rotation prediction
(``image.rotation``) already learns; and over the whole circle an angle wraps
around (-180 and +180 are one transformation) which the bins and the
regression target would treat as opposite ends.

Both views are made by warping, so that both carry the same bilinear
interpolation artefacts and the amount of blur does not tell the
transformation: ``view_a = warp(image, A)`` with a small random similarity A,
``view_b = warp(image, T @ A)``, hence ``view_b = warp(view_a, T)`` up to the
borders. Each view is the central ``view_size`` square (24 px for 32 px
images), so the reflected image border rarely shows.

Inputs: ``(B * 2, S, S, C)``, the two views of an image adjacent, ``[view_a,
view_b]``. Targets: ``{"params": (B, K)}`` in [-1, 1] and ``{"matrix": (B, 3,
3)}``, T in centred pixel coordinates of the view (``sslx.augment``):

- similarity, K = 4: (angle / max_angle, log(scale) / log(max_scale),
  tx / (max_translation * S), ty / (max_translation * S)), the angle
  counter-clockwise on screen as in ``augment.similarity_matrix``;
- homography, K = 8: the offsets (dx, dy) of the corners TL, TR, BR, BL,
  divided by ``corner_shift * S``.

Head: the pooled features of the two views concatenated, ``(B, 2C)``, a hidden
Dense layer with BatchNorm and ReLU, then K outputs (regression) or K x
``num_bins`` logits (bins: each parameter's [-1, 1] cut into equal bins, the
loss the sum over parameters of the softmax cross-entropies).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import augment, losses
from sslx.models import layers

TRANSFORMS = ("similarity", "homography")
TARGETS = ("regression", "bins")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.relative_transformation"
  cfg.transform = "similarity"  # or "homography".
  cfg.target = "regression"  # AET; or "bins" (Agrawal et al.).
  cfg.num_bins = 8  # Per parameter, equal bins over [-1, 1] (target="bins").
  cfg.view_size = 24  # Central square of each view, for 32 px images.
  # Similarity T.
  cfg.max_angle = 30.0  # Degrees.
  cfg.max_scale = 1.25  # log(scale) uniform in [-log(max_scale), log(max_scale)].
  cfg.max_translation = 0.15  # Fraction of view_size, each axis.
  # Homography T: corner offsets uniform in [-corner_shift, corner_shift] * view_size.
  cfg.corner_shift = 0.125
  # The small similarity A that makes view_a (same meaning as above).
  cfg.base_angle = 10.0
  cfg.base_scale = 1.1
  cfg.base_translation = 0.05
  cfg.hidden = 256
  return cfg


def num_params(cfg) -> int:
  """K: 4 for a similarity, 8 for a homography."""
  if cfg.transform == "similarity":
    return 4
  if cfg.transform == "homography":
    return 8
  raise ValueError(f"relative_transformation: unknown transform {cfg.transform!r}: use 'similarity' or 'homography'")


def _check_target(cfg):
  if cfg.target not in TARGETS:
    raise ValueError(f"relative_transformation: unknown target {cfg.target!r}: use 'regression' or 'bins'")


def _similarities(rng, batch_size, size, max_angle, max_scale, max_translation):
  """Uniform similarities: (normalised params (B, 4) in [-1, 1], matrices (B, 3, 3))."""
  params = jax.random.uniform(rng, (batch_size, 4), minval=-1.0, maxval=1.0)
  angle = params[:, 0] * math.radians(max_angle)
  scale = jnp.exp(params[:, 1] * math.log(max_scale))
  shift = max_translation * size
  return params, augment.similarity_matrix(angle, scale, params[:, 2] * shift, params[:, 3] * shift)


def sample_transforms(rng, batch_size: int, cfg):
  """T for each image: (normalised params (B, K), matrices (B, 3, 3))."""
  size = cfg.view_size
  if num_params(cfg) == 4:
    return _similarities(rng, batch_size, size, cfg.max_angle, cfg.max_scale, cfg.max_translation)
  params = jax.random.uniform(rng, (batch_size, 8), minval=-1.0, maxval=1.0)
  offsets = params.reshape(batch_size, 4, 2) * (cfg.corner_shift * size)
  return params, augment.homography_from_corners(offsets, size)


def bin_labels(params, num_bins: int):
  """Each normalised parameter in [-1, 1] -> its bin 0..num_bins-1 (equal widths)."""
  bins = jnp.floor((params + 1.0) * (num_bins / 2.0)).astype(jnp.int32)
  return jnp.clip(bins, 0, num_bins - 1)


def make_inputs(rng, batch, cfg):
  """``batch["image"]`` (B, H, W, C) -> ({"image": (B * 2, S, S, C)}, {"params", "matrix"})."""
  images = batch["image"]
  batch_size, height, width = images.shape[:3]
  size = cfg.view_size
  if size > min(height, width):
    raise ValueError(f"relative_transformation: view_size {size} exceeds the {height} x {width} images: "
                     f"set view_size <= {min(height, width)} (24 for 32 px images) or raise --config.image_size")
  if size < 8:
    raise ValueError(f"relative_transformation: view_size {size} is below 8 px, too small for the "
                     f"backbone: set view_size >= 8 (24 for 32 px images)")
  _check_target(cfg)
  base_rng, transform_rng = jax.random.split(rng)
  _, base = _similarities(base_rng, batch_size, size, cfg.base_angle, cfg.base_scale, cfg.base_translation)
  params, matrix = sample_transforms(transform_rng, batch_size, cfg)
  both = jnp.stack([base, augment.exact_matmul(matrix, base)], axis=1).reshape(batch_size * 2, 3, 3)
  views = augment.warp(jnp.repeat(images, 2, axis=0), both, size)
  return {"image": views}, {"params": params, "matrix": matrix}


class Head(nn.Module):
  """Pooled features of the two views concatenated, hidden Dense + BN + ReLU, K (x bins) outputs."""
  num_params: int
  num_bins: int  # 0: regression, one output per parameter.
  hidden: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    pooled = features["pooled"].astype(jnp.float32)
    x = pooled.reshape(-1, 2 * pooled.shape[-1])
    x = layers.dense_bn_relu(x, self.hidden, name="hidden", train=train)
    if not self.num_bins:
      return nn.Dense(self.num_params, name="regressor")(x)
    logits = nn.Dense(self.num_params * self.num_bins, name="classifier")(x)
    return logits.reshape(-1, self.num_params, self.num_bins)


def head(cfg) -> nn.Module:
  _check_target(cfg)
  return Head(num_params=num_params(cfg), num_bins=cfg.num_bins if cfg.target == "bins" else 0,
              hidden=cfg.hidden)


def loss(outputs, targets, *, cfg):
  """Regression: mean squared error over the parameters (AET). Bins: the softmax
  cross-entropies of the parameters, each averaged over examples, summed."""
  _check_target(cfg)
  params = targets["params"]
  if cfg.target == "regression":
    mse = losses.l2_loss(predictions=outputs, targets=params) / params.shape[-1]
    abs_error = jnp.mean(jnp.abs(outputs.astype(jnp.float32) - params))
    return mse, {"mse": mse, "abs_error": abs_error}
  labels = bin_labels(params, cfg.num_bins)
  per_param = losses.softmax_xent(logits=outputs, labels=labels, reduction=False)  # (B, K)
  accuracy = jnp.mean((jnp.argmax(outputs, axis=-1) == labels).astype(jnp.float32))
  return jnp.sum(jnp.mean(per_param, axis=0)), {"accuracy": accuracy}
