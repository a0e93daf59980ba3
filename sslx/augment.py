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


# --- Views for contrastive learning (SimCLR, Chen et al., ICML 2020, Appendix A). -------------


def _linear_resize_weights(start, length, in_size: int, out_size: int):
  """``(out_size, in_size)`` weights that resample the span [start, start + length) of an axis
  (pixel centres at i + 0.5) onto ``out_size`` pixels: a triangle (bilinear) kernel, widened by
  the shrink factor when the span shrinks (antialiasing), renormalised at the image's edges."""
  stride = length / out_size
  centres = start + (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * stride
  width = jnp.maximum(stride, 1.0)
  pixels = jnp.arange(in_size, dtype=jnp.float32) + 0.5
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(pixels[None, :] - centres[:, None]) / width)
  return weights / jnp.maximum(weights.sum(axis=1, keepdims=True), 1e-12)


def crop_and_resize(images, top, left, box_height, box_width, out_size: tuple[int, int] | None = None):
  """Resizes the box at (``top``, ``left``) of size ``box_height`` x ``box_width`` (per example,
  ``(B,)``, pixels, sub-pixel allowed) of ``images (B, H, W, C)`` to ``out_size`` ((h, w);
  default the input's), bilinearly; antialiased when a box shrinks. An integer box at scale 1
  is a plain slice. Two small matmuls per image (full float32), quick to compile."""
  _, height, width, _ = images.shape
  out_h, out_w = out_size or (height, width)

  def one(image, t, l, h, w):
    rows = _linear_resize_weights(t, h, height, out_h)
    cols = _linear_resize_weights(l, w, width, out_w)
    x = jnp.einsum("oh,hwc->owc", rows, image, precision=jax.lax.Precision.HIGHEST)
    return jnp.einsum("pw,owc->opc", cols, x, precision=jax.lax.Precision.HIGHEST)

  boxes = [jnp.asarray(v, jnp.float32) for v in (top, left, box_height, box_width)]
  return jax.vmap(one)(images, *boxes)


def random_resized_crop(rng, images, *, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        out_size: tuple[int, int] | None = None, tries: int = 10):
  """Inception-style random crops of ``images (B, H, W, C)``, resized to ``out_size``.

  Each box covers a uniform fraction ``scale`` of the image's area with a log-uniform aspect ratio
  (width / height) in ``ratio``, at a uniform position. An example draws ``tries`` boxes and keeps
  the first that fits inside the image (the whole image when none does), as torchvision does.
  """
  batch, height, width, _ = images.shape
  # One draw for everything: each random call adds its own generator to the compiled program.
  u = jax.random.uniform(rng, (batch, 2 * tries + 2))
  area = (scale[0] + (scale[1] - scale[0]) * u[:, :tries]) * height * width
  log_low, log_high = jnp.log(ratio[0]), jnp.log(ratio[1])
  aspect = jnp.exp(log_low + (log_high - log_low) * u[:, tries:2 * tries])
  box_w, box_h = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
  fits = (box_w <= width) & (box_h <= height)
  first = jnp.argmax(fits, axis=1)[:, None]
  found = fits.any(axis=1)
  box_w = jnp.where(found, jnp.take_along_axis(box_w, first, 1)[:, 0], width)
  box_h = jnp.where(found, jnp.take_along_axis(box_h, first, 1)[:, 0], height)
  top = u[:, -2] * (height - box_h)
  left = u[:, -1] * (width - box_w)
  return crop_and_resize(images, top, left, box_h, box_w, out_size)


def random_flip(rng, images, probability: float = 0.5):
  """Mirrors each image of ``(B, H, W, C)`` left-right with the given probability."""
  flip = jax.random.bernoulli(rng, probability, (images.shape[0],))
  return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)


def _per_image(values, images):
  return values.reshape((-1,) + (1,) * (images.ndim - 1))


def adjust_brightness(images, factor):
  """Multiplies each image of ``(B, ..., 3)`` by its ``factor (B,)``."""
  return images * _per_image(factor, images)


def adjust_contrast(images, factor):
  """Moves each image towards (factor < 1) or away from its mean luma, as torchvision does."""
  mean = to_grey(images)[..., :1].mean(axis=tuple(range(1, images.ndim)), keepdims=True)
  return mean + _per_image(factor, images) * (images - mean)


def adjust_saturation(images, factor):
  """Moves each pixel towards (factor < 1) or away from its own grey value."""
  grey = to_grey(images)
  return grey + _per_image(factor, images) * (images - grey)


def shift_hue(images, delta):
  """Rotates each image's hue by ``delta (B,)`` turns (1 = a full turn)."""
  hsv = rgb_to_hsv(images)
  hue = (hsv[..., 0] + _per_image(delta, hsv[..., 0])) % 1.0
  return hsv_to_rgb(jnp.concatenate([hue[..., None], hsv[..., 1:]], -1))


def random_orders(rng, batch: int, n: int):
  """``(batch, n)``: an independent uniform permutation of ``range(n)`` per example."""
  return jnp.argsort(jax.random.uniform(rng, (batch, n)), axis=1)


def unshuffle(shown, order):
  """Undoes a per-example shuffle along axis 1: ``shown (B, n, ...)`` with ``shown[:, i]`` the
  item ``order[:, i]`` of the original (jigsaw tiles, shuffled frames or clips) -> original order."""
  inverse = jnp.argsort(order, axis=1)
  return jnp.take_along_axis(shown, inverse.reshape(inverse.shape + (1,) * (shown.ndim - 2)), axis=1)


def apply_in_order(images, ops, order):
  """Applies the functions ``ops`` (each maps the whole batch) to ``images (B, ...)`` in a
  per-example order ``(B, len(ops))``. Every op runs at every position and the wanted result is
  selected: len(ops)^2 op evaluations, no data-dependent control flow. A loop over positions
  (not unrolled) keeps the compiled program one position long."""
  def position(step, x):
    candidates = jnp.stack([op(x) for op in ops], axis=1)
    pick = jax.lax.dynamic_index_in_dim(order, step, axis=1, keepdims=False)
    return jnp.take_along_axis(candidates, pick.reshape((-1, 1) + (1,) * (x.ndim - 1)), axis=1)[:, 0]

  return jax.lax.fori_loop(0, len(ops), position, images)


def colour_jitter(rng, images, *, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                  hue: float = 0.0, probability: float = 1.0):
  """torchvision-style colour jitter of ``images (B, H, W, 3)`` in [0, 1], per image.

  With the given probability an image gets brightness, contrast and saturation factors drawn
  uniformly from [max(0, 1 - s), 1 + s] and a hue shift from [-hue, hue] turns, applied in a
  random order of its own and clipped to [0, 1] after each; otherwise it is left unchanged.
  """
  batch = images.shape[0]
  order_rng, u_rng = jax.random.split(rng)
  u = jax.random.uniform(u_rng, (batch, 5))  # One draw (see random_resized_crop).

  def factor(column, spread):
    low = jnp.maximum(0.0, 1.0 - spread)
    return low + (1.0 + spread - low) * u[:, column]

  b, c, s = factor(0, brightness), factor(1, contrast), factor(2, saturation)
  h = hue * (2.0 * u[:, 3] - 1.0)
  ops = [lambda x: jnp.clip(adjust_brightness(x, b), 0.0, 1.0),
         lambda x: jnp.clip(adjust_contrast(x, c), 0.0, 1.0),
         lambda x: jnp.clip(adjust_saturation(x, s), 0.0, 1.0),
         lambda x: jnp.clip(shift_hue(x, h), 0.0, 1.0)]
  jittered = apply_in_order(images, ops, random_orders(order_rng, batch, len(ops)))
  apply = u[:, 4] < probability
  return jnp.where(_per_image(apply, images), jittered, images)


def random_blur(rng, images, *, probability: float, sigma_range=(0.1, 2.0), kernel_size: int = 3):
  """Gaussian blur with the given probability per image, its std uniform in ``sigma_range`` pixels."""
  u = jax.random.uniform(rng, (images.shape[0], 2))
  apply = u[:, 0] < probability
  sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u[:, 1]
  return gaussian_blur(images, jnp.where(apply, sigma, 0.0), kernel_size)
