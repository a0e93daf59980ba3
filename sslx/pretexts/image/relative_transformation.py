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
MIN_VIEW = 8  # Pixels: a smaller view leaves the backbone almost nothing to compare.


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


def _check_view(height: int, width: int, cfg) -> None:
  size = cfg.view_size
  if size > min(height, width):
    raise ValueError(f"relative_transformation: view_size {size} exceeds the {height} x {width} images: set "
                     f"--config.pretext.view_size <= {min(height, width)} (24 for 32 px images) or raise "
                     f"--config.image_size to {size}")
  if size < MIN_VIEW:
    raise ValueError(f"relative_transformation: view_size {size} is below {MIN_VIEW} px, too small for the "
                     f"backbone: set --config.pretext.view_size >= {MIN_VIEW} (24 for 32 px images)")


def max_corner_shift(view_size: int) -> float:
  """The corner_shift from which the moved corners can fold the view.

  The corners span ``view_size - 1`` px and each moves up to ``corner_shift * view_size`` px per axis;
  moving TL inwards and TR, BL up-left by that much puts TL on the line TR-BL once
  ``4 * corner_shift * view_size >= view_size - 1``: a non-convex quadrilateral, which no homography
  maps the square to without sending part of the view to infinity.
  """
  return (view_size - 1) / (4 * view_size)


def validate(config) -> None:
  """Before compilation: known options, views inside the image, ranges in which every parameter of
  T changes the view (a parameter without effect would be a target of pure noise)."""
  cfg = config.pretext
  if config.get("video") is not None:
    raise ValueError("relative_transformation warps images, but this config has a video section (clips): "
                     "start the experiment config from configs.base()")
  num_params(cfg)  # Raises on an unknown transform.
  _check_target(cfg)
  if cfg.target == "bins" and cfg.num_bins < 2:
    raise ValueError(f"relative_transformation: num_bins {cfg.num_bins} leaves nothing to classify: set "
                     f"--config.pretext.num_bins >= 2, e.g. 8")
  _check_view(config.image_size, config.image_size, cfg)
  if cfg.transform == "similarity" and not (0 < cfg.max_angle <= 180 and cfg.max_scale > 1
                                            and cfg.max_translation > 0):
    raise ValueError(f"relative_transformation: max_angle {cfg.max_angle} must be in (0, 180] (beyond, "
                     f"angles wrap around), max_scale {cfg.max_scale} > 1 and max_translation "
                     f"{cfg.max_translation} > 0 (else that target has no effect on the views): set "
                     f"--config.pretext.max_angle/max_scale/max_translation (defaults 30, 1.25, 0.15)")
  limit = max_corner_shift(cfg.view_size)
  if cfg.transform == "homography" and not 0 < cfg.corner_shift < limit:
    raise ValueError(f"relative_transformation: corner_shift {cfg.corner_shift} must be in (0, {limit:.4f}) "
                     f"for {cfg.view_size} px views: from (view_size - 1) / (4 * view_size) on, the moved "
                     f"corners can fold the view: set --config.pretext.corner_shift, e.g. 0.125")
  if not (0 <= cfg.base_angle <= 180 and cfg.base_scale >= 1 and cfg.base_translation >= 0):
    raise ValueError(f"relative_transformation: base_angle {cfg.base_angle} must be in [0, 180], base_scale "
                     f"{cfg.base_scale} >= 1 and base_translation {cfg.base_translation} >= 0: set "
                     f"--config.pretext.base_angle/base_scale/base_translation (defaults 10, 1.1, 0.05)")


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


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["image"]`` (B, H, W, C) -> ({"image": (B * 2, S, S, C)}, {"params", "matrix"})."""
  images = batch["image"]
  batch_size, height, width = images.shape[:3]
  size = cfg.view_size
  _check_view(height, width, cfg)
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
