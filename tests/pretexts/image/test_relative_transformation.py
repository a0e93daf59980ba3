import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage
from sslx import augment, configs, pretexts
from sslx.pretexts.image import relative_transformation as rt
from tests.conftest import REPO
from tests.pretexts import steps

# Synthetic pair: five small Gaussian blobs of distinct colours on black, on a regular
# pentagon (non-collinear) close enough to the centre that every transformation of the
# default ranges keeps them inside the view and apart.
IMAGE, VIEW = 64, 48
_ANGLES = np.radians(100 + 72 * np.arange(5))
BLOBS = 6.3 * np.stack([np.cos(_ANGLES), -np.sin(_ANGLES)], -1)  # (x, y), centred pixels.
COLOURS = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 1, 1)], np.float32)


def _config(transform="similarity", target="regression", view_size=24):
  cfg = rt.default_config()
  cfg.transform, cfg.target, cfg.view_size = transform, target, view_size
  return cfg


def _blob_image(sigma=1.0):
  grid = np.arange(IMAGE) - (IMAGE - 1) / 2
  ys, xs = np.meshgrid(grid, grid, indexing="ij")
  image = np.zeros((IMAGE, IMAGE, 3), np.float32)
  for (x, y), colour in zip(BLOBS, COLOURS):
    image += np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma ** 2))[..., None] * colour
  return image


def _centroids(view):
  """Intensity-weighted centroid (x, y), centred pixels, of each blob, found by its colour."""
  regions, count = ndimage.label(view.max(-1) > 0.1)
  assert count == len(BLOBS), f"{count} blobs visible"
  unit = COLOURS / np.linalg.norm(COLOURS, axis=1, keepdims=True)
  found = np.full((len(BLOBS), 2), np.nan)
  intensity = view.sum(-1)
  for region in range(1, count + 1):
    rows, cols = np.nonzero(regions == region)
    colour = view[rows, cols].sum(0)
    k = int(np.argmax(unit @ (colour / np.linalg.norm(colour))))
    w = intensity[rows, cols]
    found[k] = [(cols * w).sum() / w.sum(), (rows * w).sum() / w.sum()]
  assert not np.isnan(found).any(), "two blobs of one colour"
  return found - (view.shape[0] - 1) / 2


def _fit_similarity(p, q):
  """Least squares u = a x + b y + tx, v = -b x + a y + ty (augment.similarity_matrix's form)."""
  rows, rhs = [], []
  for (x, y), (u, v) in zip(p, q):
    rows += [[x, y, 1, 0], [y, -x, 0, 1]]
    rhs += [u, v]
  a, b, tx, ty = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
  return np.degrees(np.arctan2(b, a)), np.hypot(a, b), tx, ty


def _fit_homography(p, q):
  rows, rhs = [], []
  for (x, y), (u, v) in zip(p, q):
    rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
    rhs += [u, v]
  return np.append(np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0], 1.0).reshape(3, 3)


def _apply(matrix, points):
  mapped = np.c_[points, np.ones(len(points))] @ np.asarray(matrix, np.float64).T
  return mapped[:, :2] / mapped[:, 2:]


def test_found_by_name_with_contract():
  module = pretexts.get("image.relative_transformation").module
  assert module is rt
  for name in pretexts.REQUIRED:
    assert callable(getattr(module, name))
  assert rt.default_config().name == "image.relative_transformation"


@pytest.mark.parametrize("transform,k", [("similarity", 4), ("homography", 8)])
def test_shapes_ranges_and_matrix_under_jit(sample_images, transform, k):
  cfg = _config(transform)
  images = jnp.asarray(sample_images[0][:6], jnp.float32) / 255
  make = jax.jit(lambda rng, x: rt.make_inputs(rng, {"image": x}, cfg))
  inputs, targets = make(jax.random.PRNGKey(0), images)
  assert inputs["image"].shape == (12, 24, 24, 3)
  assert targets["params"].shape == (6, k) and targets["matrix"].shape == (6, 3, 3)
  views, params = np.asarray(inputs["image"]), np.asarray(targets["params"])
  assert views.min() >= -1e-5 and views.max() <= 1 + 1e-5
  assert np.abs(params).max() <= 1.0 and np.abs(params).max() > 0.3
  # The matrix is the transformation the normalised parameters describe.
  if transform == "similarity":
    expected = augment.similarity_matrix(params[:, 0] * np.radians(cfg.max_angle),
                                         np.exp(params[:, 1] * np.log(cfg.max_scale)),
                                         params[:, 2] * cfg.max_translation * 24,
                                         params[:, 3] * cfg.max_translation * 24)
  else:
    expected = augment.homography_from_corners(params.reshape(6, 4, 2) * cfg.corner_shift * 24, 24)
  np.testing.assert_allclose(targets["matrix"], expected, atol=1e-4)
  other = make(jax.random.PRNGKey(1), images)[1]["params"]
  assert not np.allclose(params, other)


def test_similarity_recovered_from_blobs():
  cfg = _config("similarity", view_size=VIEW)
  make = jax.jit(lambda rng, x: rt.make_inputs(rng, {"image": x}, cfg))
  image = jnp.asarray(_blob_image()[None])
  for seed in range(4):
    inputs, targets = make(jax.random.PRNGKey(seed), image)
    views = np.asarray(inputs["image"])
    angle, scale, tx, ty = _fit_similarity(_centroids(views[0]), _centroids(views[1]))
    p = np.asarray(targets["params"][0])
    shift = cfg.max_translation * VIEW
    assert abs(angle - p[0] * cfg.max_angle) < 2.0, (seed, angle, p)
    assert abs(scale / np.exp(p[1] * np.log(cfg.max_scale)) - 1) < 0.03, (seed, scale, p)
    np.testing.assert_allclose([tx, ty], p[2:] * shift, atol=0.7, err_msg=f"seed {seed}")


def test_homography_recovered_from_blobs():
  cfg = _config("homography", view_size=VIEW)
  make = jax.jit(lambda rng, x: rt.make_inputs(rng, {"image": x}, cfg))
  image = jnp.asarray(_blob_image()[None])
  grid = np.stack(np.meshgrid(np.linspace(-8, 8, 5), np.linspace(-8, 8, 5)), -1).reshape(-1, 2)
  for seed in range(4):
    inputs, targets = make(jax.random.PRNGKey(seed), image)
    views = np.asarray(inputs["image"])
    in_a, in_b = _centroids(views[0]), _centroids(views[1])
    matrix = np.asarray(targets["matrix"][0])
    np.testing.assert_allclose(_apply(matrix, in_a), in_b, atol=0.5, err_msg=f"seed {seed}")
    fitted = _fit_homography(in_a, in_b)
    np.testing.assert_allclose(_apply(fitted, grid), _apply(matrix, grid), atol=1.0, err_msg=f"seed {seed}")
    # And the target is not the identity: the blobs did move.
    assert np.abs(in_b - in_a).max() > 1.0


@pytest.mark.parametrize("transform", ["similarity", "homography"])
def test_view_b_is_view_a_warped_by_target(sample_images, transform):
  cfg = _config(transform)
  images = jnp.asarray(sample_images[0][:6], jnp.float32) / 255
  inputs, targets = rt.make_inputs(jax.random.PRNGKey(2), {"image": images}, cfg)
  views = np.asarray(inputs["image"]).reshape(6, 2, 24, 24, 3)
  rewarped = np.asarray(augment.warp(jnp.asarray(views[:, 0]), targets["matrix"], 24))
  grid = np.arange(24) - 11.5
  ys, xs = np.meshgrid(grid, grid, indexing="ij")
  points = np.stack([xs.ravel(), ys.ravel()], -1)
  for i in range(6):
    # Where view_b's pixel comes from inside view_a (1 px margin), both must agree.
    source = _apply(np.linalg.inv(np.asarray(targets["matrix"][i], np.float64)), points)
    inside = (np.abs(source) <= 10.5).all(-1).reshape(24, 24)
    assert inside.mean() > 0.3
    error = np.abs(rewarped[i] - views[i, 1])[inside].mean()
    unaligned = np.abs(views[i, 0] - views[i, 1])[inside].mean()
    assert error < 0.03 and error < 0.5 * unaligned, (i, error, unaligned)


def test_bins_labels_and_summed_cross_entropy():
  cfg = _config(target="bins")
  edges = jnp.asarray([[-1.0, -0.76, -0.74, 0.0, 0.24, 0.26, 0.99, 1.0]])
  np.testing.assert_array_equal(rt.bin_labels(edges, 8), [[0, 0, 1, 4, 4, 5, 7, 7]])
  params = jax.random.uniform(jax.random.PRNGKey(0), (5, 4), minval=-1, maxval=1)
  labels = np.asarray(rt.bin_labels(params, cfg.num_bins))
  assert labels.min() >= 0 and labels.max() < cfg.num_bins
  logits = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 4, cfg.num_bins)))
  value, metrics = rt.loss(jnp.asarray(logits), {"params": params}, cfg=cfg)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]  # (5, 4)
  np.testing.assert_allclose(float(value), -picked.mean(0).sum(), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["accuracy"]), (logits.argmax(-1) == labels).mean(), rtol=1e-6)


@pytest.mark.parametrize("target", ["regression", "bins"])
def test_loss_decreases_on_real_images(sample_images, target):
  cfg = _config(target=target)
  batch = {"image": jnp.asarray(sample_images[0][:32], jnp.float32) / 255}
  values, metrics = steps.losses_over_steps(rt, cfg, batch)
  assert np.isfinite(values).all()
  assert values[-1] < 0.7 * values[0], values
  if target == "regression":
    assert set(metrics) == {"mse", "abs_error"}
    np.testing.assert_allclose(metrics["mse"], values[-1], rtol=1e-5)
  else:
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_view_larger_than_image_is_a_clear_error():
  images = jnp.zeros((2, 32, 32, 3))
  with pytest.raises(ValueError, match=r"view_size 40 exceeds the 32 x 32 images.*set "
                                       r"--config.pretext.view_size <= 32 .*or raise --config.image_size to 40"):
    rt.make_inputs(jax.random.PRNGKey(0), {"image": images}, _config(view_size=40))
  with pytest.raises(ValueError, match=r"view_size 6 is below 8.*set --config.pretext.view_size >= 8"):
    rt.make_inputs(jax.random.PRNGKey(0), {"image": images}, _config(view_size=6))


def test_experiment_config_passes_validate():
  rt.validate(configs.load(REPO / "experiments" / "relative_transformation_convnet_cifar10.py"))
  rt.validate(steps.experiment_config(_config(transform="homography", target="bins"), image_size=32))


@pytest.mark.parametrize("transform", ["similarity", "homography"])
def test_validate_bounds_are_the_ones_make_inputs_needs(transform):
  # The view fits the image: image_size == view_size runs, one pixel less does not.
  inside = steps.experiment_config(_config(transform=transform, view_size=24), image_size=24)
  rt.validate(inside)
  assert steps.abstract_inputs(rt, inside)["image"] == (4, 24, 24, 3)
  outside = steps.experiment_config(_config(transform=transform, view_size=24), image_size=23)
  with pytest.raises(ValueError, match=r"view_size 24 exceeds the 23 x 23 images.*image_size to 24"):
    rt.validate(outside)
  with pytest.raises(ValueError, match=r"view_size 24 exceeds the 23 x 23 images"):
    steps.abstract_inputs(rt, outside)
  # The smallest view: 8 px runs, 7 px does not.
  smallest = steps.experiment_config(_config(transform=transform, view_size=8), image_size=32)
  rt.validate(smallest)
  assert steps.abstract_inputs(rt, smallest)["image"] == (4, 8, 8, 3)
  below = steps.experiment_config(_config(transform=transform, view_size=7), image_size=32)
  with pytest.raises(ValueError, match=r"view_size 7 is below 8 px"):
    rt.validate(below)
  with pytest.raises(ValueError, match=r"view_size 7 is below 8 px"):
    steps.abstract_inputs(rt, below)


def _worst_fold(corner_shift, size):
  """The smallest homogeneous denominator over the view when TL moves inwards and TR, BL up-left by
  the largest offset: negative means part of the view goes through infinity (the view folds)."""
  d = corner_shift * size
  offsets = jnp.asarray([[[d, d], [-d, -d], [0.0, 0.0], [-d, -d]]], jnp.float32)
  matrix = np.asarray(augment.homography_from_corners(offsets, size))[0]
  half = (size - 1) / 2
  ys, xs = np.meshgrid(np.linspace(-half, half, 101), np.linspace(-half, half, 101), indexing="ij")
  return (matrix[2, 0] * xs + matrix[2, 1] * ys + matrix[2, 2]).min()


def test_corner_shift_bound_is_where_the_view_can_fold():
  limit = rt.max_corner_shift(24)
  np.testing.assert_allclose(limit, 23 / 96)
  inside = steps.experiment_config(_config(transform="homography"), image_size=32)
  inside.pretext.corner_shift = limit - 1e-3
  rt.validate(inside)
  assert _worst_fold(limit - 1e-3, 24) > 0
  assert steps.abstract_inputs(rt, inside)["image"] == (4, 24, 24, 3)
  outside = steps.experiment_config(_config(transform="homography"), image_size=32)
  outside.pretext.corner_shift = limit + 1e-3
  assert _worst_fold(limit + 1e-3, 24) < 0
  with pytest.raises(ValueError, match=r"corner_shift 0.24\d* must be in \(0, 0.2396\) for 24 px views.*fold"):
    rt.validate(outside)


def test_validate_errors_name_the_fix():
  def config(image_size=32, **overrides):
    cfg = _config()
    cfg.update(overrides)
    return steps.experiment_config(cfg, image_size=image_size)
  with pytest.raises(ValueError, match=r"unknown transform 'affine'"):
    rt.validate(config(transform="affine"))
  with pytest.raises(ValueError, match=r"unknown target 'xent'"):
    rt.validate(config(target="xent"))
  with pytest.raises(ValueError, match=r"num_bins 1 leaves nothing to classify"):
    rt.validate(config(target="bins", num_bins=1))
  with pytest.raises(ValueError, match=r"max_translation 0.0 > 0 \(else that target has no effect"):
    rt.validate(config(max_translation=0.0))
  with pytest.raises(ValueError, match=r"max_angle 200.0 must be in \(0, 180\]"):
    rt.validate(config(max_angle=200.0))
  with pytest.raises(ValueError, match=r"base_scale 0.9 >= 1"):
    rt.validate(config(base_scale=0.9))
  with pytest.raises(ValueError, match=r"relative_transformation warps images.*configs.base\(\)"):
    rt.validate(steps.experiment_config(_config(), image_size=32, num_frames=8))
