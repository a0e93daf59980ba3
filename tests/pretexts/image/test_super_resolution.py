import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.image import super_resolution as sr
from tests.pretexts import steps


def _images(sample_images, n):
  return jnp.asarray(sample_images[0][:n] / 255.0, jnp.float32)


def _cfg(**overrides):
  cfg = sr.default_config()
  cfg.decoder_widths = (8,)
  cfg.perceptual_widths = (8, 8)
  cfg.update(overrides)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("image.super_resolution").module is sr


@pytest.mark.parametrize("factor", [2, 4])
def test_antialiased_downsampling_turns_fine_patterns_grey(factor):
  checkerboard = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)
  low = np.asarray(sr.downsample(jnp.asarray(checkerboard)[None, ..., None].repeat(3, -1), factor))
  assert low.shape == (1, 32 // factor, 32 // factor, 3)
  assert np.abs(low - 0.5).max() < 0.02
  # Stripes 0110 repeating: sampling without antialiasing aliases them to a flat 1 at factor 4.
  stripes = jnp.asarray(np.tile(np.array([0, 1, 1, 0], np.float32), (32, 8)))[None, ..., None]
  low = np.asarray(sr.downsample(stripes, factor))
  aliased = np.asarray(jax.image.resize(stripes, low.shape, "cubic", antialias=False))
  assert np.abs(low - 0.5).max() < 0.1
  if factor == 4:
    assert np.abs(aliased - 0.5).min() > 0.4


def test_inputs_are_full_size_low_resolution_images(sample_images):
  images = _images(sample_images, 8)
  previous = 0.0
  for factor, max_error in ((2, 0.08), (4, 0.15)):
    inputs, targets = sr.make_inputs(jax.random.PRNGKey(0), {"image": images}, _cfg(factor=factor))
    x = np.asarray(inputs["image"])
    assert x.shape == images.shape and x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_array_equal(targets["image"], images)
    error = np.abs(x - np.asarray(images)).mean()
    assert 0.005 < error < max_error  # Close to the image, but its detail is gone.
    if factor == 4:
      assert error > previous
    previous = error
  # A smooth image survives almost unchanged.
  ramp = jnp.broadcast_to(jnp.linspace(0.2, 0.8, 32)[None, :, None], (1, 32, 32, 3))
  smooth = sr.make_inputs(jax.random.PRNGKey(0), {"image": ramp}, _cfg())[0]["image"]
  assert np.abs(np.asarray(smooth) - np.asarray(ramp))[:, 4:-4, 4:-4].max() < 0.01


def test_validate_names_the_fix():
  config = ml_collections.ConfigDict({"pretext": _cfg(factor=4), "image_size": 32})
  sr.validate(config)
  config.pretext.factor = 3
  with pytest.raises(ValueError, match="set --config.pretext.factor=2 or 4"):
    sr.validate(config)
  config.pretext.factor, config.image_size = 4, 12
  with pytest.raises(ValueError, match="leave 3 px, too small"):
    sr.validate(config)


def test_loss_network_is_fixed_by_its_seed_and_never_a_model_parameter(sample_images):
  cfg = _cfg(perceptual_weight=1.0)
  images = _images(sample_images, 8)
  (inputs, a), (_, b) = (sr.make_inputs(jax.random.PRNGKey(k), {"image": images}, cfg) for k in (0, 1))
  for x, y, z in zip(jax.tree.leaves(a["perceptual_params"]), jax.tree.leaves(b["perceptual_params"]),
                     jax.tree.leaves(sr.perceptual_params(cfg))):
    np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(x, z)
  other_seed = sr.perceptual_params(_cfg(perceptual_weight=1.0, perceptual_seed=1))
  assert not np.array_equal(jax.tree.leaves(other_seed)[1], jax.tree.leaves(a["perceptual_params"])[1])
  # The trainer updates the model's parameters only: the loss network is not among them.
  model = steps.build(sr, cfg)
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  assert set(variables["params"]) == {"backbone", "decoder"}

  # The feature term is live: it changes the decoder's gradient.
  def decoder_grad(weight):
    c = _cfg(perceptual_weight=weight)
    def fn(params):
      (out, _), _ = model.apply(dict(variables, params=params), inputs, train=True, mutable=["batch_stats"])
      return sr.loss(out, a, cfg=c)[0]
    return jax.tree.leaves(jax.jit(jax.grad(fn))(variables["params"])["decoder"])
  assert any(not np.allclose(x, y) for x, y in zip(decoder_grad(0.0), decoder_grad(1.0)))


@pytest.mark.parametrize("overrides", [{}, {"pixel_loss": "l1", "perceptual_weight": 1.0, "factor": 4}])
def test_loss_decreases_on_real_images(sample_images, overrides):
  cfg = _cfg(**overrides)
  values, metrics = steps.losses_over_steps(sr, cfg, {"image": _images(sample_images, 16)}, steps=15)
  assert values[-1] < 0.7 * values[0], values
  assert float(metrics["psnr"]) > 10.0
  assert ("feature" in metrics) == bool(overrides)


def test_pictures_show_original_low_resolution_and_reconstruction(sample_images):
  cfg = _cfg()
  images = _images(sample_images, 2)
  model = steps.build(sr, cfg)
  inputs, _ = sr.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  predict = lambda x: model.apply(variables, x, train=False)[0]  # noqa: E731
  grid = sr.pictures(predict, np.asarray(images), rng=jax.random.PRNGKey(0), cfg=cfg)["super_resolution"]
  assert grid.dtype == np.uint8 and grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
  tile = lambda r, c: grid[1 + 33 * r: 33 * (r + 1), 1 + 33 * c: 33 * (c + 1)].astype(int)  # noqa: E731
  reconstruction = np.asarray(predict(inputs)["reconstruction"])
  for r in range(2):
    np.testing.assert_allclose(tile(r, 0), np.round(np.asarray(images[r]) * 255), atol=1)
    np.testing.assert_allclose(tile(r, 1), np.round(np.asarray(inputs["image"][r]) * 255), atol=1)
    np.testing.assert_allclose(tile(r, 2), np.round(reconstruction[r] * 255), atol=1)


def test_validate_output_size_is_the_image_size():
  config = ml_collections.ConfigDict({"pretext": _cfg(output_size=32), "image_size": 32})
  sr.validate(config)
  config.image_size = 64
  with pytest.raises(ValueError, match=r"output_size 32 differs from image_size 64"):
    sr.validate(config)
