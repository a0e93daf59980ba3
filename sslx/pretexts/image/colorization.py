"""Colorization (Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016;
official code richzhang/colorization).

- Colour space: CIE Lab of sRGB (D65 white). The network sees only the
  lightness L and predicts, at every position of a reduced-resolution grid, a
  distribution over quantised ab values; Zhang et al. predict at a quarter of
  the input side (``prediction_stride``; the CIFAR config uses 2).
- Output space: the ab plane on a grid of step 10, keeping the Q = 313 bins
  that are in gamut. The bins are computed here (``ab_bins``), never loaded:
  a grid point is kept when it lies within one grid step, in both a and b (an
  L-infinity distance of 10), of the convex hull of the ab values of all sRGB
  colours. The paper only says "in gamut"; this rule gives exactly the 313
  points of the authors' released ``pts_in_hull.npy`` (checked against a
  published listing of them), whereas testing each bin centre alone for being
  in gamut at some L gives 225 to 233 (by the L values scanned and the
  tolerance), and the cells that some 8-bit sRGB colour rounds into, 261.
- Targets: soft encoding. Each pixel's ab goes to its 5 nearest bins with
  Gaussian weights (sigma 5), normalised to sum 1.
- Class rebalancing: the loss of a pixel is weighted by w(q*) of its nearest
  bin q*, with w proportional to ((1 - lambda) p~ + lambda / Q)^-1, lambda =
  1/2, p~ the empirical ab distribution of the training set smoothed with a
  Gaussian of sigma 5 in ab space, and w normalised so that E_p~[w] = 1. The
  prior is explicit pretext state: ``collect`` counts each image's nearest
  bins, ``update_state`` sums, smooths and turns them into weights, once
  before training (``update_interval`` 0).
- Loss: the rebalanced multinomial cross-entropy, summed over bins and
  averaged over pixels.
- Decoding: the annealed mean of the predicted distribution, softmax(log z / T)
  with T = 0.38, between the mean (T = 1) and the mode (T -> 0).
- Evaluation: the network only ever sees greyscale, so the linear probe gives
  it the L channel as well (``backbone_input``); Zhang et al. discuss this
  train/test gap between colour and grey input.

Inputs: ``{"lightness": (B, H, W, 1)}``, L / 50 - 1 (in [-1, 1]; not keyed
"image", so the trainer does not standardise it with RGB statistics); targets:
``{"soft_ab": (B, h, w, 313), "weights": (B, h, w), "bin": (B, h, w)}`` (the
nearest bin, for the accuracy metric) with h = H / stride, encoded from the
area-averaged ab of each stride x stride cell.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses, models
from sslx.models.layers import ConvBN
from sslx.montage import montage

GRID = 10  # ab bin spacing.
NUM_BINS = 313
NEUTRAL_AB = (0.0, 0.0)

# sRGB primaries (IEC 61966-2-1) in CIE XYZ; the white is the XYZ of RGB (1, 1, 1),
# D65 to the matrix's precision, so that greys have a = b = 0 exactly.
_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE = _RGB_TO_XYZ.sum(axis=1)
_DELTA = 6.0 / 29.0  # CIE Lab: cube root above DELTA^3, linear below.


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.colorization"
  cfg.prediction_stride = 4  # Zhang et al.: ab predicted at 1/4 of the input side.
  cfg.neighbours = 5  # Soft encoding: nearest bins per pixel,
  cfg.sigma = 5.0  # with Gaussian weights of this width (ab units).
  cfg.prior_sigma = 5.0  # Smoothing of the empirical ab prior.
  cfg.rebalance_lambda = 0.5  # Mix of the prior with the uniform distribution.
  cfg.temperature = 0.38  # Annealed-mean decoding.
  cfg.head_width = 64
  return cfg


# ---------------------------------------------------------------- colour space


def _srgb_to_linear(c, xp):
  return xp.where(c <= 0.04045, c / 12.92, ((xp.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c, xp):
  return xp.where(c <= 0.0031308, 12.92 * c, 1.055 * xp.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055)


def _lab_f(t, xp):
  return xp.where(t > _DELTA ** 3, xp.cbrt(xp.maximum(t, _DELTA ** 3)), t / (3 * _DELTA ** 2) + 4.0 / 29.0)


def _lab_f_inverse(f, xp):
  return xp.where(f > _DELTA, f ** 3, 3 * _DELTA ** 2 * (f - 4.0 / 29.0))


def _rgb_to_lab(rgb, xp, matmul):
  xyz = matmul(_srgb_to_linear(rgb, xp), (_RGB_TO_XYZ / _WHITE[:, None]).T.astype(rgb.dtype))
  f = _lab_f(xyz, xp)
  return xp.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                   200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def rgb_to_lab(rgb):
  """sRGB in [0, 1] ``(..., 3)`` -> CIE Lab ``(..., 3)``: L in [0, 100], a and b about [-110, 110]."""
  rgb = jnp.asarray(rgb, jnp.float32)
  return _rgb_to_lab(rgb, jnp, augment.exact_matmul)


def lab_to_rgb(lab):
  """CIE Lab ``(..., 3)`` -> sRGB ``(..., 3)``, not clipped: out-of-gamut colours leave [0, 1]."""
  lab = jnp.asarray(lab, jnp.float32)
  fy = (lab[..., 0] + 16.0) / 116.0
  f = jnp.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
  xyz = _lab_f_inverse(f, jnp)
  linear = augment.exact_matmul(xyz, jnp.asarray(np.linalg.inv(_RGB_TO_XYZ / _WHITE[:, None]).T, jnp.float32))
  return _linear_to_srgb(linear, jnp)


def lightness_input(images):
  """RGB in [0, 1] ``(B, H, W, 3)`` -> the network's input, L / 50 - 1 ``(B, H, W, 1)``."""
  return rgb_to_lab(images)[..., :1] / 50.0 - 1.0


def backbone_input(images, cfg):
  """What the backbone saw in training for RGB images in [0, 1]: the scaled L channel."""
  del cfg
  return lightness_input(images)


# ---------------------------------------------------------------- the 313 bins


def _cross(u, v):
  return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _convex_hull(points: np.ndarray) -> np.ndarray:
  """Counter-clockwise hull vertices of 2-D points (Andrew's monotone chain)."""
  pts = np.unique(np.round(points, 9), axis=0)  # Sorted by x, then y.

  def half(sequence):
    chain = []
    for p in sequence:
      while len(chain) >= 2 and _cross(chain[-1] - chain[-2], p - chain[-2]) <= 0:
        chain.pop()
      chain.append(p)
    return chain[:-1]

  return np.array(half(pts) + half(pts[::-1]))


def _inside_convex(points: np.ndarray, hull: np.ndarray, tol: float = 1e-6) -> np.ndarray:
  edges = np.roll(hull, -1, axis=0) - hull
  rel = points[:, None, :] - hull[None]
  return np.all(_cross(edges[None], rel) >= -tol, axis=1)


def _srgb_surface(steps: int = 65) -> np.ndarray:
  """Colours on the six faces of the RGB cube: the image of the cube's surface holds
  the boundary of the gamut's ab projection."""
  t = np.linspace(0.0, 1.0, steps)
  u, v = [x.ravel() for x in np.meshgrid(t, t)]
  faces = []
  for axis in range(3):
    for value in (0.0, 1.0):
      face = np.empty((u.size, 3))
      face[:, axis] = value
      face[:, [i for i in range(3) if i != axis]] = np.stack([u, v], axis=-1)
      faces.append(face)
  return np.concatenate(faces)


@functools.lru_cache(maxsize=None)
def _ab_bins() -> np.ndarray:
  ab = _rgb_to_lab(_srgb_surface(), np, np.matmul)[:, 1:]
  hull = _convex_hull(ab)
  # Minkowski sum of the hull with the square [-GRID, GRID]^2: the points within
  # one grid step (L-infinity) of the hull.
  corners = GRID * np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]], np.float64)
  widened = _convex_hull((hull[:, None, :] + corners[None]).reshape(-1, 2))
  axis = np.arange(-15, 16) * GRID
  grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.float64)
  bins = grid[_inside_convex(grid, widened)].astype(np.float32)  # Ordered by a, then b.
  bins.setflags(write=False)
  return bins


def ab_bins() -> np.ndarray:
  """The ``(313, 2)`` in-gamut ab bin centres (a, b), ordered by a then b (read-only)."""
  return _ab_bins()


def neutral_bin() -> int:
  """Index of the grey bin, a = b = 0."""
  return int(np.flatnonzero(np.all(ab_bins() == np.asarray(NEUTRAL_AB, np.float32), axis=1))[0])


# ---------------------------------------------------------------- targets and prior


def _squared_distances(ab):
  """(..., 2) -> (..., Q) squared distances to the bin centres, elementwise (exact)."""
  centres = jnp.asarray(ab_bins())
  return (ab[..., :1] - centres[:, 0]) ** 2 + (ab[..., 1:] - centres[:, 1]) ** 2


def nearest_bin(ab):
  """(..., 2) ab -> (...,) index of the nearest bin."""
  return jnp.argmin(_squared_distances(ab), axis=-1).astype(jnp.int32)


def soft_encode(ab, *, neighbours: int = 5, sigma: float = 5.0):
  """(..., 2) ab -> ((..., Q) soft targets, (...,) nearest bin).

  The ``neighbours`` nearest bins get Gaussian weights exp(-d^2 / (2 sigma^2)),
  normalised to sum 1; every other bin gets 0.
  """
  d2 = _squared_distances(ab.astype(jnp.float32))
  # The barrier keeps XLA:CPU from rewriting top_k, once fused with its consumers,
  # into a full sort of the 313 distances (15x slower on the CIFAR batch).
  negated, index = jax.lax.optimization_barrier(jax.lax.top_k(-d2, neighbours))  # Nearest first.
  # Relative to the nearest: the same normalised weights, no underflow far out.
  weights = jnp.exp((negated - negated[..., :1]) / (2.0 * sigma ** 2))
  weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
  bins = jnp.arange(d2.shape[-1])
  soft = sum(jnp.where(bins == index[..., k:k + 1], weights[..., k:k + 1], 0.0) for k in range(neighbours))
  return soft, index[..., 0]


def downsample_ab(ab, stride: int):
  """Area average of ``(B, H, W, 2)`` over stride x stride cells -> ``(B, H/stride, W/stride, 2)``."""
  if stride == 1:
    return ab
  b, h, w, c = ab.shape
  return ab.reshape(b, h // stride, stride, w // stride, stride, c).mean(axis=(2, 4))


def target_ab(images, cfg):
  """The ab values the network predicts: RGB ``(B, H, W, 3)`` -> ``(B, h, w, 2)``."""
  return downsample_ab(rgb_to_lab(images)[..., 1:], cfg.prediction_stride)


def smooth_prior(counts, sigma: float = 5.0) -> np.ndarray:
  """Bin counts ``(Q,)`` -> the empirical distribution smoothed by a Gaussian in ab space."""
  centres = ab_bins().astype(np.float64)
  d2 = np.sum((centres[:, None] - centres[None]) ** 2, axis=-1)
  kernel = np.exp(-d2 / (2.0 * sigma ** 2))
  p = np.asarray(counts, np.float64)
  p = kernel @ (p / p.sum())
  return p / p.sum()


def rebalancing_weights(prior, rebalance_lambda: float = 0.5) -> np.ndarray:
  """w proportional to ((1 - lambda) p + lambda / Q)^-1, scaled so that sum(p * w) = 1."""
  p = np.asarray(prior, np.float64)
  w = 1.0 / ((1.0 - rebalance_lambda) * p + rebalance_lambda / p.size)
  return w / np.sum(p * w)


def init_state(cfg):
  """Before the prior is known: uniform prior, unit weights."""
  del cfg
  return {"prior": jnp.full((NUM_BINS,), 1.0 / NUM_BINS, jnp.float32),
          "class_weights": jnp.ones((NUM_BINS,), jnp.float32)}


def collect(predict, batch, cfg):
  """Per image: how many of its target pixels fall nearest to each bin, ``(B, Q)``."""
  del predict  # The prior is a property of the data, not of the model.
  nearest = nearest_bin(target_ab(batch["image"], cfg))
  return {"ab_counts": jnp.sum(jax.nn.one_hot(nearest, NUM_BINS, dtype=jnp.float32), axis=(1, 2))}


def update_state(state, collected, *, rng, cfg):
  """Summed counts -> smoothed prior and class weights (host-side, numpy)."""
  del state, rng
  counts = np.asarray(collected["ab_counts"], np.float64).reshape(-1, NUM_BINS).sum(axis=0)
  total = counts.sum()
  chromatic = 1.0 - counts[neutral_bin()] / max(total, 1.0)
  if total == 0 or chromatic < 0.01:
    raise ValueError(f"colorization: the training images carry no colour ({100 * chromatic:.2f}% of "
                     f"{int(total)} target pixels are off the grey ab bin, under 1%): train on colour images")
  prior = smooth_prior(counts, cfg.prior_sigma)
  weights = rebalancing_weights(prior, cfg.rebalance_lambda)
  return {"prior": jnp.asarray(prior, jnp.float32), "class_weights": jnp.asarray(weights, jnp.float32)}


def update_interval(config, num_examples: int | None = None) -> int:
  """The prior is computed once, before the first step."""
  del config, num_examples
  return 0


# ---------------------------------------------------------------- the task


GREYSCALE_DATASETS = ("mnist", "fashion_mnist", "kmnist", "emnist", "binarized_mnist", "omniglot",
                      "smallnorb", "quickdraw_bitmap")


def validate(config) -> None:
  """Before compilation: a prediction grid that fits the images, colour data, sane constants."""
  cfg = config.pretext
  stride = cfg.prediction_stride
  if stride < 1 or config.image_size % stride:
    raise ValueError(f"colorization: prediction_stride {stride} does not divide image_size "
                     f"{config.image_size}: set --config.pretext.prediction_stride to a divisor of it "
                     f"(Zhang et al. predict at 1/4 of the side)")
  dataset = str(config.dataset)
  name = dataset.split(":", 1)[1].split("/")[0] if dataset.startswith("tfds:") else ""
  if name in GREYSCALE_DATASETS:
    raise ValueError(f"colorization: dataset {dataset} is greyscale, so there is no colour to predict: "
                     f"train colorization on colour images")
  if not 1 <= cfg.neighbours <= NUM_BINS or cfg.sigma <= 0 or cfg.prior_sigma <= 0:
    raise ValueError(f"colorization: neighbours {cfg.neighbours} must be in [1, {NUM_BINS}] and sigma "
                     f"{cfg.sigma}, prior_sigma {cfg.prior_sigma} positive: Zhang et al. use 5, 5.0, 5.0")
  if not 0.0 <= cfg.rebalance_lambda <= 1.0 or cfg.temperature <= 0:
    raise ValueError(f"colorization: rebalance_lambda {cfg.rebalance_lambda} must be in [0, 1] and "
                     f"temperature {cfg.temperature} positive: Zhang et al. use 0.5 and 0.38")


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["image"]`` (B, H, W, 3) in [0, 1] -> ({"lightness"}, {"soft_ab", "weights"})."""
  del rng  # Deterministic: the targets are the image's own colours.
  images = batch["image"]
  stride = cfg.prediction_stride
  if images.shape[1] % stride or images.shape[2] % stride:
    raise ValueError(f"colorization: prediction_stride {stride} does not divide the image size "
                     f"{images.shape[1]} x {images.shape[2]}: set --config.pretext.prediction_stride")
  state = init_state(cfg) if state is None else state
  soft, nearest = soft_encode(target_ab(images, cfg), neighbours=cfg.neighbours, sigma=cfg.sigma)
  weights = jnp.asarray(state["class_weights"], jnp.float32)[nearest]
  return {"lightness": lightness_input(images)}, {"soft_ab": soft, "weights": weights, "bin": nearest}


class Head(nn.Module):
  """Deepest block -> ``(B, h, w, Q)`` logits: upsampled to the prediction grid, then
  a 1x1 classifier over the bins.

  When the grid is a whole factor f larger than the block, the upsampling is a
  transposed convolution with an f x f kernel and stride f (each feature vector
  becomes an f x f patch), computed as a matmul and a depth-to-space reshape:
  XLA:CPU runs the same layer as a convolution 6x slower. Otherwise a bilinear
  resize and a 1x1 convolution.
  """
  width: int = 64
  num_bins: int = NUM_BINS

  @nn.compact
  def __call__(self, features, *, train: bool, size=None):
    x = features[models.block_names(features)[-1]].astype(jnp.float32)
    b, h, w, _ = x.shape
    size = tuple(size) if size is not None else tuple(features["block1"].shape[1:3])
    f = size[0] // h
    if f > 1 and size == (f * h, f * w):
      x = nn.Dense(f * f * self.width, use_bias=False, name="upsample")(x)
      x = x.reshape(b, h, w, f, f, self.width).transpose(0, 1, 3, 2, 4, 5).reshape(b, f * h, f * w, -1)
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, name="upsample_bn")(x))
    else:
      if (h, w) != size:
        x = jax.image.resize(x, (b,) + size + (x.shape[-1],), "bilinear")
      x = ConvBN(self.width, 1, name="conv")(x, train=train)
    return nn.Dense(self.num_bins, name="classifier")(x)


def head(cfg) -> nn.Module:
  return Head(width=cfg.head_width)


class Model(nn.Module):
  """The backbone sees ``inputs["lightness"]``; the head predicts at 1/stride of its side."""
  backbone: nn.Module
  head: nn.Module
  stride: int

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    lightness = inputs["lightness"]
    features = self.backbone(lightness, train=train)
    size = (lightness.shape[1] // self.stride, lightness.shape[2] // self.stride)
    return self.head(features, train=train, size=size), features


def model(backbone, cfg) -> nn.Module:
  return Model(backbone=backbone, head=head(cfg), stride=cfg.prediction_stride)


def loss(outputs, targets, *, cfg):
  """Rebalanced multinomial cross-entropy, averaged over the predicted pixels."""
  del cfg
  soft, weights = targets["soft_ab"], targets["weights"]
  per_pixel = losses.softmax_xent_soft(logits=outputs, targets=soft, reduction=False, weights=weights)
  return jnp.mean(per_pixel), {"accuracy": losses.accuracy(logits=outputs, labels=targets["bin"]),
                               "mean_weight": jnp.mean(weights)}


def annealed_mean(logits, temperature: float = 0.38):
  """``(..., Q)`` logits -> ``(..., 2)`` ab: the mean of softmax(log z / T).

  T = 1 gives the mean of the predicted distribution z, T -> 0 its mode.
  """
  probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return augment.exact_matmul(probs, jnp.asarray(ab_bins()))


def colorize(images, logits, temperature: float = 0.38):
  """The images' own L with the annealed-mean ab of ``logits`` (bilinearly upsampled
  to full size) -> RGB in [0, 1]."""
  lightness = rgb_to_lab(images)[..., :1]
  ab = annealed_mean(logits, temperature)
  ab = jax.image.resize(ab, lightness.shape[:-1] + (2,), "bilinear")
  return jnp.clip(lab_to_rgb(jnp.concatenate([lightness, ab], axis=-1)), 0.0, 1.0)


def pictures(predict, images, *, rng, cfg, state=None, train_images=None):
  """One row per image: original | L only (grey) | colorized (annealed mean, T = cfg.temperature)."""
  images = jnp.asarray(images, jnp.float32)
  inputs, _ = make_inputs(rng, {"image": images}, cfg)
  coloured = colorize(images, predict(inputs), cfg.temperature)
  lightness = rgb_to_lab(images)[..., :1]
  grey = jnp.clip(lab_to_rgb(jnp.concatenate([lightness, jnp.zeros_like(lightness).repeat(2, -1)], -1)), 0, 1)
  rows = np.stack([np.asarray(images), np.asarray(grey), np.asarray(coloured)], axis=1)
  return {"colorization": montage(rows)}
