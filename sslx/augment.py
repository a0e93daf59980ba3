"""Image operations that run on the device, inside the jitted step.

Pretexts build their inputs with these from a PRNG key: crops at given
offsets, per-patch standardisation, colour countermeasures against
low-level shortcuts, projective warps, and colour jitter in HSV. Images are
float arrays in [0, 1], ``(..., H, W, C)``; every function is pure and
jit-able, and batched over the leading axes where it says so.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Colour and coordinate arithmetic at full float32: GPUs (TF32) and TPUs (bf16
# passes) lower default-precision matmuls, which would leave ~1e-3 of the
# green-magenta axis after projection and put 224 px warps off by up to a pixel.
exact_matmul = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def crop(images, top, left, size: int):
  """Square crops ``(B, size, size, C)`` of ``images (B, H, W, C)`` at per-example offsets."""
  def one(image, t, l):
    return jax.lax.dynamic_slice(image, (t, l, 0), (size, size, image.shape[-1]))
  return jax.vmap(one)(images, top, left)


def standardize_patches(patches, eps: float = 1e-5):
  """Each patch (last three axes) to zero mean and unit standard deviation.

  Noroozi & Favaro and Kolesnikov et al. normalise every tile on its own, so
  that the network cannot match tiles by their overall brightness or contrast.
  """
  mean = patches.mean(axis=(-3, -2, -1), keepdims=True)
  std = patches.std(axis=(-3, -2, -1), keepdims=True)
  return (patches - mean) / (std + eps)


def to_grey(images):
  """ITU-R 601 luma, repeated on the three channels."""
  luma = exact_matmul(images, jnp.asarray([0.299, 0.587, 0.114], images.dtype))
  return jnp.repeat(luma[..., None], images.shape[-1], axis=-1)


def random_grey(rng, images, probability: float):
  """Turns each image of ``(B, ..., C)`` grey with the given probability."""
  grey = jax.random.bernoulli(rng, probability, (images.shape[0],))
  return jnp.where(grey.reshape((-1,) + (1,) * (images.ndim - 1)), to_grey(images), images)


def drop_colour(rng, patches, noise_ratio: float = 0.01):
  """Doersch et al. 2015 colour dropping: keep one random channel per patch,
  replace the other two by Gaussian noise with 1/100 of the kept channel's std.

  ``patches``: ``(N, h, w, 3)``. Removes chromatic aberration, which otherwise
  tells a patch's position in the lens' field.
  """
  keep_rng, noise_rng = jax.random.split(rng)
  keep = jax.random.randint(keep_rng, (patches.shape[0],), 0, 3)
  kept = jnp.take_along_axis(patches, keep[:, None, None, None], axis=-1)
  centred = kept - kept.mean(axis=(1, 2, 3), keepdims=True)
  scale = noise_ratio * centred.std(axis=(1, 2, 3), keepdims=True)
  noise = scale * jax.random.normal(noise_rng, patches.shape, patches.dtype)
  mask = jax.nn.one_hot(keep, 3, dtype=patches.dtype)[:, None, None, :]
  return mask * centred + (1 - mask) * noise


def project_colour(patches):
  """Doersch et al. 2015 "projection": removes the green-magenta axis a = (-1, 2, -1)
  from every pixel, B = I - a^T a / (a a^T), the direction chromatic aberration shifts."""
  a = jnp.asarray([-1.0, 2.0, -1.0], patches.dtype)
  projection = jnp.eye(3, dtype=patches.dtype) - jnp.outer(a, a) / jnp.dot(a, a)
  return exact_matmul(patches, projection)


def gaussian_blur(images, sigma, kernel_size: int = 7):
  """Blurs each image of ``(B, H, W, C)`` with its own Gaussian std ``sigma (B,)``
  (pixels; 0 leaves it unchanged). Separable, edges replicated."""
  half = kernel_size // 2
  offsets = jnp.arange(-half, half + 1, dtype=jnp.float32)

  def one(image, s):
    weights = jnp.exp(-0.5 * (offsets / jnp.maximum(s, 1e-3)) ** 2)
    weights = weights / weights.sum()
    padded = jnp.pad(image, ((half, half), (half, half), (0, 0)), mode="edge")
    height, width = image.shape[0], image.shape[1]
    rows = sum(w * padded[k: k + height] for k, w in enumerate(weights))
    return sum(w * rows[:, k: k + width] for k, w in enumerate(weights))

  return jax.vmap(one)(images, sigma)


def random_downsample(rng, patches, probability: float, min_fraction: float):
  """Doersch et al. 2015: with the given probability, a patch loses its fine detail as
  if shrunk to a random fraction in [min_fraction, 1) of its side and scaled back up,
  so that texture at one scale is not the only cue. Emulated by a Gaussian blur of
  std 0.5 / fraction pixels (the anti-aliasing such a resize needs), shape kept."""
  apply_rng, size_rng = jax.random.split(rng)
  n = patches.shape[0]
  apply = jax.random.bernoulli(apply_rng, probability, (n,))
  fraction = jax.random.uniform(size_rng, (n,), minval=min_fraction, maxval=1.0)
  return gaussian_blur(patches, jnp.where(apply, 0.5 / fraction, 0.0))


# --- Geometry: 3x3 matrices acting on centred pixel coordinates (x right, y down). -------------


def similarity_matrix(angle, scale, tx, ty):
  """Forward transforms ``(..., 3, 3)``: scale, then rotate by ``angle`` radians
  (counter-clockwise as seen on screen), then translate by (tx, ty) pixels."""
  cos, sin = jnp.cos(angle) * scale, jnp.sin(angle) * scale
  zero, one = jnp.zeros_like(cos), jnp.ones_like(cos)
  # y points down, so a visually counter-clockwise turn has +sin in the x row.
  rows = [jnp.stack([cos, sin, tx], -1), jnp.stack([-sin, cos, ty], -1), jnp.stack([zero, zero, one], -1)]
  return jnp.stack(rows, -2)


def homography_from_corners(corners, size: float):
  """The homographies ``(B, 3, 3)`` moving the corners of a ``size`` square (centred
  coordinates, order TL, TR, BR, BL) by ``corners (B, 4, 2)`` pixel offsets."""
  half = (size - 1) / 2
  src = jnp.asarray([[-half, -half], [half, -half], [half, half], [-half, half]], jnp.float32)

  def one(offsets):
    dst = src + offsets
    rows = []
    for (x, y), (u, v) in zip(src, dst):
      rows.append(jnp.stack([x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y]))
      rows.append(jnp.stack([0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y]))
    h = jnp.linalg.solve(jnp.stack(rows), dst.reshape(-1))
    return jnp.append(h, 1.0).reshape(3, 3)

  return jax.vmap(one)(corners.astype(jnp.float32))


def warp(images, matrices, out_size: int | None = None):
  """Applies forward transforms ``matrices (B, 3, 3)`` to ``images (B, H, W, C)``.

  Output pixel p shows the input at M^-1 p (centred coordinates, bilinear,
  reflected at the border), on an ``out_size`` square centred like the input.
  """
  _, height, width, _ = images.shape
  out_size = out_size or height
  inverse = jnp.linalg.inv(matrices)
  grid = jnp.arange(out_size, dtype=jnp.float32) - (out_size - 1) / 2
  ys, xs = jnp.meshgrid(grid, grid, indexing="ij")
  points = jnp.stack([xs, ys, jnp.ones_like(xs)], -1).reshape(-1, 3)

  def one(image, inv):
    src = exact_matmul(points, inv.T)
    src_x = src[:, 0] / src[:, 2] + (width - 1) / 2
    src_y = src[:, 1] / src[:, 2] + (height - 1) / 2
    channels = [jax.scipy.ndimage.map_coordinates(image[..., c], [src_y, src_x], order=1, mode="reflect")
                for c in range(image.shape[-1])]
    return jnp.stack(channels, -1).reshape(out_size, out_size, -1)

  return jax.vmap(one)(images, inverse)


# --- Colour, Dosovitskiy et al. 2014 / SimCLR style. --------------------------------------------


def rgb_to_hsv(rgb):
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  value = rgb.max(-1)
  minimum = rgb.min(-1)
  delta = value - minimum
  saturation = jnp.where(value > 0, delta / jnp.where(value > 0, value, 1.0), 0.0)
  safe = jnp.where(delta > 0, delta, 1.0)
  hue = jnp.where(value == r, (g - b) / safe, jnp.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
  hue = jnp.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
  return jnp.stack([hue, saturation, value], -1)


def hsv_to_rgb(hsv):
  hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
  k = (jnp.asarray([5.0, 3.0, 1.0]) + hue[..., None] * 6.0) % 6.0
  return value[..., None] - value[..., None] * saturation[..., None] * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0)
