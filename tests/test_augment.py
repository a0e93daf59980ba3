import jax
import jax.numpy as jnp
import numpy as np

from sslx import augment


def test_crop_at_offsets():
  images = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.float32).reshape(2, 6, 6, 1)
  out = np.asarray(augment.crop(images, jnp.array([0, 2]), jnp.array([1, 3]), 3))
  np.testing.assert_array_equal(out[0], np.asarray(images)[0, 0:3, 1:4])
  np.testing.assert_array_equal(out[1], np.asarray(images)[1, 2:5, 3:6])


def test_standardize_patches_zero_mean_unit_std():
  x = jax.random.uniform(jax.random.PRNGKey(0), (5, 4, 4, 3)) * 7 + 3
  y = np.asarray(augment.standardize_patches(x)).reshape(5, -1)
  np.testing.assert_allclose(y.mean(1), 0, atol=1e-5)
  np.testing.assert_allclose(y.std(1), 1, atol=1e-3)


def test_warp_identity_and_quarter_turn_match_rot90():
  images = jax.random.uniform(jax.random.PRNGKey(1), (2, 9, 9, 3))
  one = jnp.ones(2)
  identity = augment.similarity_matrix(0 * one, one, 0 * one, 0 * one)
  np.testing.assert_allclose(augment.warp(images, identity), images, atol=1e-5)
  turn = augment.similarity_matrix(np.pi / 2 * one, one, 0 * one, 0 * one)
  # Counter-clockwise on screen, like np.rot90 on the (H, W) axes.
  np.testing.assert_allclose(augment.warp(images, turn), np.rot90(np.asarray(images), 1, axes=(1, 2)), atol=1e-4)


def test_warp_translation_moves_content():
  image = np.zeros((1, 11, 11, 1), np.float32)
  image[0, 5, 5] = 1.0
  shift = augment.similarity_matrix(jnp.zeros(1), jnp.ones(1), jnp.array([2.0]), jnp.array([-3.0]))
  out = np.asarray(augment.warp(jnp.asarray(image), shift))
  assert np.unravel_index(out[0, ..., 0].argmax(), (11, 11)) == (2, 7)


def test_homography_moves_corners_as_asked():
  offsets = jnp.asarray([[[1.0, -2.0], [0.5, 0.5], [-1.0, 1.5], [2.0, 0.0]]])
  h = np.asarray(augment.homography_from_corners(offsets, 9))[0]
  corners = np.array([[-4, -4], [4, -4], [4, 4], [-4, 4]], np.float32)
  mapped = np.c_[corners, np.ones(4)] @ h.T
  np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], corners + np.asarray(offsets[0]), atol=1e-4)


def test_hsv_round_trip_and_known_colours():
  rgb = jax.random.uniform(jax.random.PRNGKey(2), (50, 3))
  np.testing.assert_allclose(augment.hsv_to_rgb(augment.rgb_to_hsv(rgb)), rgb, atol=1e-5)
  np.testing.assert_allclose(augment.rgb_to_hsv(jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5]])),
                             [[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 0.5]], atol=1e-6)


def test_gaussian_blur_zero_is_identity_and_preserves_mean():
  images = jax.random.uniform(jax.random.PRNGKey(3), (2, 8, 8, 3))
  out = augment.gaussian_blur(images, jnp.array([0.0, 1.5]))
  np.testing.assert_allclose(out[0], images[0], atol=1e-6)
  assert float(jnp.abs(out[1] - images[1]).mean()) > 0.05
  assert float(out[1].std()) < float(images[1].std())


def test_random_grey_probability_extremes():
  images = jax.random.uniform(jax.random.PRNGKey(4), (4, 5, 5, 3))
  grey = np.asarray(augment.random_grey(jax.random.PRNGKey(0), images, 1.0))
  np.testing.assert_allclose(grey[..., 0], grey[..., 2])
  np.testing.assert_array_equal(augment.random_grey(jax.random.PRNGKey(0), images, 0.0), images)


def test_crop_and_resize_integer_box_is_a_slice_and_full_box_is_identity():
  images = jax.random.uniform(jax.random.PRNGKey(5), (2, 8, 8, 3))
  crop = jax.jit(augment.crop_and_resize, static_argnums=5)  # Jitted: eager dispatch is slow here.
  out = crop(images, jnp.array([2.0, 0.0]), jnp.array([3.0, 1.0]), jnp.full(2, 4.0), jnp.full(2, 4.0), (4, 4))
  np.testing.assert_allclose(out[0], images[0, 2:6, 3:7], atol=1e-6)
  np.testing.assert_allclose(out[1], images[1, 0:4, 1:5], atol=1e-6)
  full = crop(images, jnp.zeros(2), jnp.zeros(2), jnp.full(2, 8.0), jnp.full(2, 8.0), None)
  np.testing.assert_allclose(full, images, atol=1e-6)


def test_random_resized_crop_boxes_follow_area_and_aspect_ranges():
  # Channel 0 holds each pixel's x and channel 1 its y, so every output reads back its box.
  size, n = 64, 256
  ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  ramp = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.float32) / (size - 1)
  out = np.asarray(jax.jit(augment.random_resized_crop)(jax.random.PRNGKey(0), np.repeat(ramp[None], n, 0)))
  assert out.shape == (n, size, size, 3) and out.min() >= 0.0 and out.max() <= 1.0
  # Output pixel centres span (size - 1) / size of the box; bilinear reads the ramp exactly inside.
  width = (out[:, 0, -1, 0] - out[:, 0, 0, 0]) * (size - 1) * size / (size - 1)
  height = (out[:, -1, 0, 1] - out[:, 0, 0, 1]) * (size - 1) * size / (size - 1)
  area, aspect = width * height / size**2, width / height
  # 3 % slack: pixels beyond the image's outer pixel centres read the border value.
  assert area.min() > 0.08 * 0.97 and area.max() <= 1.0 + 1e-4, (area.min(), area.max())
  assert aspect.min() > 0.75 * 0.97 and aspect.max() < 4 / 3 / 0.97, (aspect.min(), aspect.max())
  assert 0.4 < area.mean() < 0.6 and aspect.min() < 0.85 and aspect.max() > 1.2
  left = out[:, 0, 0, 0] * (size - 1)
  assert left.min() < 2 and left.max() > 20  # Boxes move around, not just centred.


def test_random_flip_mirrors_whole_images():
  images = jax.random.uniform(jax.random.PRNGKey(6), (64, 4, 5, 3))
  mirrored = np.asarray(images)[:, :, ::-1]
  out = np.asarray(augment.random_flip(jax.random.PRNGKey(1), images))
  flipped = np.all(out == mirrored, axis=(1, 2, 3))
  assert np.all(flipped ^ np.all(out == np.asarray(images), axis=(1, 2, 3)))
  assert 16 < flipped.sum() < 48
  np.testing.assert_array_equal(augment.random_flip(jax.random.PRNGKey(1), images, 1.0), mirrored)


def test_colour_adjustments_known_values():
  shift_hue, saturation, contrast, grey = (jax.jit(f) for f in (
      augment.shift_hue, augment.adjust_saturation, augment.adjust_contrast, augment.to_grey))
  red = jnp.zeros((1, 2, 2, 3)).at[..., 0].set(1.0)
  np.testing.assert_allclose(shift_hue(red, jnp.array([1 / 3])), np.roll(np.asarray(red), 1, -1), atol=1e-6)
  x = jax.random.uniform(jax.random.PRNGKey(7), (2, 5, 5, 3))
  np.testing.assert_allclose(saturation(x, jnp.zeros(2)), grey(x), atol=1e-6)
  flat = np.asarray(contrast(x, jnp.zeros(2)))
  np.testing.assert_allclose(flat[:, 0, 0, 0], np.asarray(grey(x))[..., 0].mean((1, 2)), atol=1e-6)
  assert flat.std(axis=(1, 2, 3)).max() < 1e-6
  np.testing.assert_allclose(contrast(x, jnp.full(2, 2.0)) - flat, 2 * (x - flat), atol=1e-5)
  np.testing.assert_allclose(augment.adjust_brightness(x, jnp.array([0.5, 2.0]))[1], 2 * x[1], atol=1e-6)


def test_apply_in_order_follows_each_examples_order_and_orders_are_uniform_permutations():
  ops = [lambda x: x + 1.0, lambda x: x * 2.0]
  in_order = jax.jit(lambda x, order: augment.apply_in_order(x, ops, order))
  out = in_order(jnp.ones((2, 3)), jnp.array([[0, 1], [1, 0]]))
  np.testing.assert_allclose(out, [[4.0] * 3, [3.0] * 3])
  orders = np.asarray(augment.random_orders(jax.random.PRNGKey(0), 2400, 4))
  assert (np.sort(orders, 1) == np.arange(4)).all()
  counts = np.unique(orders, axis=0, return_counts=True)[1]
  assert len(counts) == 24 and counts.min() > 60  # 100 expected for each of the 24.


def test_unshuffle_inverts_a_per_example_shuffle_along_axis_1():
  original = jax.random.uniform(jax.random.PRNGKey(2), (3, 5, 2, 2, 3))
  order = augment.random_orders(jax.random.PRNGKey(3), 3, 5)
  shown = jnp.take_along_axis(original, order[:, :, None, None, None], axis=1)
  np.testing.assert_array_equal(jax.jit(augment.unshuffle)(shown, order), original)
  # Any trailing shape, including none: (B, n) items.
  np.testing.assert_array_equal(augment.unshuffle(jnp.array([[10, 20, 30]]), jnp.array([[2, 0, 1]])),
                                [[20, 30, 10]])


def test_colour_jitter_ranges_probability_and_identity():
  # Values in [0.2, 0.5]: brightness factors up to 1.8 never clip.
  x = jax.random.uniform(jax.random.PRNGKey(8), (400, 6, 6, 3), minval=0.2, maxval=0.5)
  # Strengths as traced arguments: one compilation serves the three calls.
  jitter = jax.jit(lambda key, x, b, h, p: augment.colour_jitter(key, x, brightness=b, hue=h, probability=p))
  out = np.asarray(jitter(jax.random.PRNGKey(0), x, 0.8, 0.0, 0.8))
  ratio = (out / np.asarray(x)).reshape(400, -1)
  assert ratio.std(axis=1).max() < 1e-5  # One factor per image.
  factor = ratio[:, 0]
  assert factor.min() >= 0.2 - 1e-6 and factor.max() <= 1.8 + 1e-6
  assert factor.min() < 0.35 and factor.max() > 1.65
  assert 0.12 < np.mean(factor == 1.0) < 0.28  # About 1 - 0.8 of the images left alone.
  same = jitter(jax.random.PRNGKey(0), x, 0.0, 0.0, 1.0)
  np.testing.assert_allclose(same, x, atol=1e-5)
  hued = jitter(jax.random.PRNGKey(1), x, 0.0, 0.1, 1.0)
  to_hsv = jax.jit(augment.rgb_to_hsv)
  before, after = np.asarray(to_hsv(x)), np.asarray(to_hsv(hued))
  np.testing.assert_allclose(after[..., 1:], before[..., 1:], atol=1e-5)
  turn = (after[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5
  assert np.abs(turn).max() <= 0.1 + 1e-4 and np.abs(turn).mean() > 0.03


def test_random_blur_probability_and_smoothing():
  images = jax.random.uniform(jax.random.PRNGKey(9), (64, 8, 8, 3))
  blur = jax.jit(augment.random_blur, static_argnames=("probability", "sigma_range"))
  np.testing.assert_allclose(blur(jax.random.PRNGKey(0), images, probability=0.0), images, atol=1e-6)
  blurred = np.asarray(blur(jax.random.PRNGKey(0), images, probability=1.0, sigma_range=(0.5, 2.0)))
  assert (blurred.std(axis=(1, 2, 3)) < np.asarray(images).std(axis=(1, 2, 3))).all()
  some = np.asarray(blur(jax.random.PRNGKey(0), images, probability=0.5, sigma_range=(0.5, 2.0)))
  changed = np.abs(some - np.asarray(images)).max(axis=(1, 2, 3)) > 1e-3
  assert 16 < changed.sum() < 48
