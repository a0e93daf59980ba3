import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import configs, pretexts, run
from sslx.pretexts.image import simclr
from tests.pretexts import steps


def _batch(sample_images, n):
  images = jnp.asarray(sample_images[0][:n] / 255.0, jnp.float32)
  return {"image": images, "index": jnp.arange(n, dtype=jnp.int32)}


def test_found_by_name_with_contract():
  assert pretexts.get("image.simclr").module is simclr


@pytest.mark.parametrize("recipe", ["cifar", "imagenet"])
def test_views_differ_keep_shape_and_range_and_are_deterministic(sample_images, recipe):
  cfg = simclr.default_config()
  if recipe == "imagenet":  # Full-strength colour and blur, as the paper's ImageNet recipe.
    cfg.jitter_strength, cfg.blur_probability = 1.0, 0.5
  batch = _batch(sample_images, 8)
  make = jax.jit(lambda r, b: simclr.make_inputs(r, b, cfg))
  inputs, targets = make(jax.random.PRNGKey(0), batch)
  again, _ = make(jax.random.PRNGKey(0), batch)
  other, _ = make(jax.random.PRNGKey(1), batch)
  views = np.asarray(inputs["image"])
  assert views.shape == (16, 32, 32, 3) and views.min() >= 0.0 and views.max() <= 1.0
  assert targets == {}
  np.testing.assert_array_equal(views, np.asarray(again["image"]))
  assert np.abs(views - np.asarray(other["image"])).mean() > 0.05
  original = np.asarray(batch["image"])
  view_a, view_b = views[0::2], views[1::2]  # Interleaved: image i's views at rows 2i and 2i + 1.
  per_image = lambda x, y: np.abs(x - y).mean(axis=(1, 2, 3))  # noqa: E731
  assert (per_image(view_a, view_b) > 0.01).all()
  assert (per_image(view_a, original) > 0.01).all() and (per_image(view_b, original) > 0.01).all()
  # Yet each view is still its own image: closer (on average) to it than to the other images.
  assert per_image(view_a, original).mean() < per_image(view_a, np.roll(original, 1, axis=0)).mean()


def test_loss_reads_the_interleaved_pairs():
  n = 4
  codes = jnp.eye(n, 8)
  interleaved = jnp.repeat(codes, 2, axis=0)  # Rows 2i and 2i + 1 are image i's views.
  cfg = simclr.default_config()
  good, metrics = simclr.loss(interleaved, {}, cfg=cfg)
  assert float(metrics["accuracy"]) == 1.0
  stacked = jnp.concatenate([codes, codes])  # [all views a; all views b]: pairs broken.
  bad, wrong = simclr.loss(stacked, {}, cfg=cfg)
  assert float(wrong["accuracy"]) == 0.0 and float(bad) > float(good) + 1.0


def test_head_is_an_mlp_projecting_pooled_features():
  cfg = simclr.default_config()
  head = simclr.head(cfg)
  features = {"pooled": jnp.ones((4, 24)), "block1": jnp.ones((4, 8, 8, 3))}
  variables = head.init(jax.random.PRNGKey(0), features, train=False)
  assert head.apply(variables, features, train=False).shape == (4, 128)
  params = variables["params"]
  assert params["hidden"]["kernel"].shape == (24, 24)  # Hidden width = h's width, as the paper.
  assert params["projection"]["kernel"].shape == (24, 128) and "bias" not in params["projection"]
  assert "hidden_bn" in variables["batch_stats"] and "projection_bn" in variables["batch_stats"]


def test_loss_decreases_on_real_images(sample_images):
  cfg = simclr.default_config()
  values, metrics = steps.losses_over_steps(simclr, cfg, _batch(sample_images, 8), steps=20)
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_validate_errors_name_the_fix():
  config = ml_collections.ConfigDict({"pretext": simclr.default_config(), "batch_size": 256})
  simclr.validate(config)
  config.pretext.temperature = 0.0
  with pytest.raises(ValueError, match=r"temperature must be > 0.*--config.pretext.temperature="):
    simclr.validate(config)
  config.pretext.temperature = 0.5
  config.batch_size = 1
  with pytest.raises(ValueError, match=r"batch_size 1 leaves no negatives.*--config.batch_size="):
    simclr.validate(config)
  config.batch_size = 256
  config.pretext.grey_probability = 1.5
  with pytest.raises(ValueError, match=r"grey_probability must be in \[0, 1\]"):
    simclr.validate(config)


def _tile(grid, row, col, size=32):
  top, left = 1 + row * (size + 1), 1 + col * (size + 1)
  return grid[top:top + size, left:left + size]


def _uint8(x):
  return (np.clip(np.asarray(x), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def test_pictures_show_original_and_both_views(sample_images):
  cfg = simclr.default_config()
  model = steps.build(simclr, cfg)
  images = np.asarray(sample_images[0][:8] / 255.0, np.float32)
  inputs, _ = simclr.make_inputs(jax.random.PRNGKey(3), {"image": jnp.asarray(images)}, cfg)
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  normalize = configs.base().normalize

  def predict(x):
    standardized = run.standardize_inputs(x, tuple(normalize.mean), tuple(normalize.std))
    return model.apply(variables, standardized, train=False)[0]

  out = simclr.pictures(predict, images, rng=jax.random.PRNGKey(3), cfg=cfg)
  assert set(out) == {"views", "matches"}
  for grid in out.values():
    assert grid.dtype == np.uint8 and grid.shape == (8 * 33 + 1, 3 * 33 + 1, 3)
  views = np.asarray(inputs["image"])
  for i in range(8):
    np.testing.assert_array_equal(_tile(out["views"], i, 0), _uint8(images[i]))
    np.testing.assert_array_equal(_tile(out["views"], i, 1), _uint8(views[2 * i]))
    np.testing.assert_array_equal(_tile(out["views"], i, 2), _uint8(views[2 * i + 1]))
    np.testing.assert_array_equal(_tile(out["matches"], i, 2), _uint8(views[2 * i + 1]))


def test_pictures_matches_show_the_models_pick(sample_images):
  cfg = simclr.default_config()
  images = np.asarray(sample_images[0][:8] / 255.0, np.float32)
  n = len(images)

  def shifted_predict(inputs):
    # View a of image i is most similar to view b of image i + 1 (a wrong, but known, pick).
    codes = jnp.eye(n)
    out = jnp.stack([codes, jnp.roll(codes, 1, axis=0)], axis=1).reshape(2 * n, n)
    assert inputs["image"].shape[0] == 2 * n
    return out

  out = simclr.pictures(shifted_predict, images, rng=jax.random.PRNGKey(3), cfg=cfg)
  inputs, _ = simclr.make_inputs(jax.random.PRNGKey(3), {"image": jnp.asarray(images)}, cfg)
  views = np.asarray(inputs["image"])
  for i in range(n):
    np.testing.assert_array_equal(_tile(out["matches"], i, 0), _uint8(views[2 * i]))
    np.testing.assert_array_equal(_tile(out["matches"], i, 1), _uint8(views[2 * ((i + 1) % n) + 1]))


def test_validate_crop_ratio():
  config = ml_collections.ConfigDict({"pretext": simclr.default_config(), "batch_size": 256})
  config.pretext.crop_ratio = (1.0, 1.0)
  simclr.validate(config)
  config.pretext.crop_ratio = (0.0, 1.0)
  with pytest.raises(ValueError, match=r"crop_ratio \(0.0, 1.0\) must satisfy 0 < low <= high"):
    simclr.validate(config)
