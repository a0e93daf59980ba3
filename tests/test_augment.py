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
