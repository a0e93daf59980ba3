import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.image import denoising
from tests.pretexts import steps


def _images(sample_images, n):
  return jnp.asarray(sample_images[0][:n] / 255.0, jnp.float32)


def _cfg(**overrides):
  cfg = denoising.default_config()
  cfg.decoder_widths = (8,)
  cfg.update(overrides)
  return cfg


def _make(cfg, images, seed=0):
  inputs, targets = jax.jit(lambda r, x: denoising.make_inputs(r, {"image": x}, cfg))(
      jax.random.PRNGKey(seed), images)
  np.testing.assert_array_equal(targets["image"], images)  # The clean target is never touched.
  return np.asarray(inputs["image"]), np.asarray(targets["corrupted"])


def test_found_by_name_with_contract():
  assert pretexts.get("image.denoising").module is denoising


@pytest.mark.parametrize("unit", ["pixel", "element"])
def test_masking_zeroes_exactly_the_fraction(sample_images, unit):
  images = _images(sample_images, 64)
  corrupted, chosen = _make(_cfg(corruption="masking", fraction=0.3, unit=unit), images)
  clean = np.asarray(images)
  if unit == "pixel":
    assert (chosen == chosen[..., :1]).all()  # All channels of a pixel together.
    np.testing.assert_array_equal(chosen[..., 0].sum(axis=(1, 2)), round(0.3 * 1024))
  else:
    np.testing.assert_array_equal(chosen.sum(axis=(1, 2, 3)), round(0.3 * 3072))
    assert not (chosen == chosen[..., :1]).all()
  assert (corrupted[chosen] == 0).all()
  np.testing.assert_array_equal(corrupted[~chosen], clean[~chosen])
  # Each example draws its own positions; a new key draws new ones.
  assert (chosen[1:] != chosen[:1]).any(axis=(1, 2, 3)).all()
  assert (_make(_cfg(corruption="masking", fraction=0.3, unit=unit), images, seed=1)[1] != chosen).any()


@pytest.mark.parametrize("unit", ["pixel", "element"])
def test_salt_and_pepper_sets_the_fraction_to_0_or_1_by_a_fair_coin(sample_images, unit):
  images = _images(sample_images, 64)
  corrupted, chosen = _make(_cfg(corruption="salt_pepper", fraction=0.2, unit=unit), images)
  per_example = chosen.reshape(64, -1).sum(-1)
  np.testing.assert_array_equal(per_example, round(0.2 * (1024 if unit == "pixel" else 3072)) * (
      3 if unit == "pixel" else 1))
  values = corrupted[chosen]
  assert set(np.unique(values)) == {0.0, 1.0}
  units = values.size // (3 if unit == "pixel" else 1)
  # Binomial(units, 1/2): the share of salt is within 5 standard deviations of a half.
  assert abs(values.mean() - 0.5) < 5 * 0.5 / np.sqrt(units)
  if unit == "pixel":
    salt = corrupted == 1.0
    assert (salt[chosen[..., 0]] == salt[chosen[..., 0]][:, :1]).all()  # One coin per pixel.
  np.testing.assert_array_equal(corrupted[~chosen], np.asarray(images)[~chosen])


def test_gaussian_noise_has_the_right_std_and_is_not_clipped(sample_images):
  images = _images(sample_images, 64)
  corrupted, _ = _make(_cfg(corruption="gaussian", sigma=0.15), images)
  noise = corrupted - np.asarray(images)
  assert abs(noise.std() - 0.15) < 0.003 and abs(noise.mean()) < 0.003
  assert corrupted.min() < 0.0 and corrupted.max() > 1.0
  # Independent across pixels and channels.
  flat = noise.reshape(-1, 3)
  assert abs(np.corrcoef(flat[:, 0], flat[:, 1])[0, 1]) < 0.02


def test_validate_names_the_fix():
  config = ml_collections.ConfigDict({"pretext": _cfg(), "image_size": 32})
  denoising.validate(config)
  config.pretext.fraction = 1.0
  with pytest.raises(ValueError, match=r"set --config.pretext.fraction in \(0, 1\)"):
    denoising.validate(config)
  config.pretext.corruption = "blur"
  with pytest.raises(ValueError, match="unknown corruption 'blur'"):
    denoising.validate(config)


@pytest.mark.parametrize("loss", ["l2", "xent"])
def test_loss_decreases_on_real_images(sample_images, loss):
  cfg = _cfg(corruption="salt_pepper", loss=loss)
  values, metrics = steps.losses_over_steps(denoising, cfg, {"image": _images(sample_images, 16)}, steps=15)
  assert values[-1] < (0.6 * values[0] if loss == "l2" else values[0] - 0.05), values
  assert 0.0 <= float(metrics["corrupted_mse"]) < 0.2


def test_pictures_show_original_corrupted_and_reconstruction(sample_images):
  cfg = _cfg(corruption="masking", loss="xent")
  images = _images(sample_images, 2)
  model = steps.build(denoising, cfg)
  inputs, _ = denoising.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  predict = lambda x: model.apply(variables, x, train=False)[0]  # noqa: E731
  grid = denoising.pictures(predict, np.asarray(images), rng=jax.random.PRNGKey(0), cfg=cfg)["denoising"]
  assert grid.dtype == np.uint8 and grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
  tile = lambda r, c: grid[1 + 33 * r: 33 * (r + 1), 1 + 33 * c: 33 * (c + 1)].astype(int)  # noqa: E731
  corrupted = np.round(np.asarray(inputs["image"]) * 255).astype(int)
  reconstruction = np.round(np.asarray(predict(inputs)["reconstruction"]) * 255).astype(int)
  for r in range(2):
    np.testing.assert_allclose(tile(r, 0), np.round(np.asarray(images[r]) * 255), atol=1)
    np.testing.assert_allclose(tile(r, 1), corrupted[r], atol=1)
    assert (tile(r, 1) == 0).all(axis=-1).mean() >= 0.25  # The masked pixels are black.
    np.testing.assert_allclose(tile(r, 2), reconstruction[r], atol=1)


def test_validate_fraction_bound_is_one_corrupted_unit():
  # 4 px images, whole pixels: 16 units. 1/16 corrupts exactly one, 0.03 rounds to none.
  inside = steps.experiment_config(_cfg(fraction=1 / 16), image_size=4)
  denoising.validate(inside)
  images = jnp.full((2, 4, 4, 3), 0.5)
  _, targets = denoising.make_inputs(jax.random.PRNGKey(0), {"image": images}, inside.pretext)
  assert np.asarray(targets["corrupted"])[..., 0].sum(axis=(1, 2)).tolist() == [1, 1]
  outside = steps.experiment_config(_cfg(fraction=0.03), image_size=4)
  with pytest.raises(ValueError, match=r"fraction 0.03 of the 16 pixels of a 4 px image corrupts 0: set "
                                       r"--config.pretext.fraction to corrupt 1 to 15"):
    denoising.validate(outside)
  _, targets = denoising.make_inputs(jax.random.PRNGKey(0), {"image": images}, outside.pretext)
  assert not np.asarray(targets["corrupted"]).any()  # What validate prevents: nothing to denoise.
  outside.pretext.unit = "element"  # 48 units: 0.03 * 48 rounds to 1.
  denoising.validate(outside)


def test_validate_output_size_is_the_image_size():
  config = steps.experiment_config(_cfg(output_size=32), image_size=32)
  denoising.validate(config)
  config.image_size = 16
  with pytest.raises(ValueError, match=r"output_size 32 differs from image_size 16.*"
                                       r"--config.pretext.output_size=16"):
    denoising.validate(config)
