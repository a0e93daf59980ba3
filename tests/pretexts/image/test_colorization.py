import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.image import colorization
from tests.pretexts import steps


def _cfg(stride=2):
  cfg = colorization.default_config()
  cfg.prediction_stride = stride
  return cfg


def _images(sample_images, n):
  return jnp.asarray(sample_images[0][:n] / 255.0, jnp.float32)


def test_found_by_name_with_stateful_contract():
  module = pretexts.get("image.colorization").module
  assert module is colorization
  for name in ("init_state", "collect", "update_state", "update_interval", "model", "backbone_input",
               "validate", "pictures"):
    assert callable(getattr(module, name))
  assert colorization.update_interval(ml_collections.ConfigDict(), 50000) == 0


def test_lab_known_values():
  rgb = jnp.asarray([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
  lab = np.asarray(colorization.rgb_to_lab(rgb))
  np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-3)  # D65 white.
  np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.01)  # sRGB red.
  np.testing.assert_allclose(lab[2], [0.0, 0.0, 0.0], atol=1e-3)
  np.testing.assert_allclose(lab[3, 1:], [0.0, 0.0], atol=1e-3)  # Greys are neutral.
  assert 53.0 < lab[3, 0] < 54.0  # sRGB 0.5 is about L = 53.4 (gamma, not linear).


def test_lab_round_trip(sample_images):
  images = _images(sample_images, 16)
  back = colorization.lab_to_rgb(colorization.rgb_to_lab(images))
  np.testing.assert_allclose(np.asarray(back), np.asarray(images), atol=2e-4)
  # And from the Lab side, for in-gamut Lab values.
  lab = colorization.rgb_to_lab(jnp.asarray(np.random.default_rng(0).uniform(size=(500, 3)), jnp.float32))
  np.testing.assert_allclose(colorization.rgb_to_lab(colorization.lab_to_rgb(lab)), lab, atol=2e-2)


def test_313_in_gamut_bins():
  bins = colorization.ab_bins()
  assert bins.shape == (313, 2) and len(np.unique(bins, axis=0)) == 313
  np.testing.assert_array_equal(bins % 10, 0)
  assert bins[:, 0].min() == -90 and bins[:, 0].max() == 100
  assert bins[:, 1].min() == -110 and bins[:, 1].max() == 100
  as_set = set(map(tuple, bins.astype(int)))
  # Points at the edge of Zhang et al.'s released set: in, and just out.
  for kept in [(-90, 50), (-90, 90), (100, -90), (100, 0), (40, 90), (-50, 100), (60, -110), (0, 0)]:
    assert kept in as_set, kept
  for left_out in [(80, 80), (-90, 40), (110, -60), (-60, 100), (-20, -60), (100, 10)]:
    assert left_out not in as_set, left_out
  # Every sRGB colour's own 10x10 cell is a bin.
  grid = np.linspace(0.0, 1.0, 18)
  rgb = np.stack(np.meshgrid(grid, grid, grid), axis=-1).reshape(-1, 3)
  ab = np.asarray(colorization.rgb_to_lab(jnp.asarray(rgb, jnp.float32)))[:, 1:]
  assert set(map(tuple, (np.round(ab / 10) * 10).astype(int))) <= as_set
  assert tuple(bins[colorization.neutral_bin()]) == (0.0, 0.0)


def test_soft_targets_sum_to_one_and_favour_the_nearest_bin(sample_images):
  ab = colorization.target_ab(_images(sample_images, 8), _cfg())
  soft, nearest = colorization.soft_encode(ab)
  soft, nearest = np.asarray(soft), np.asarray(nearest)
  assert soft.shape == (8, 16, 16, 313)
  np.testing.assert_allclose(soft.sum(-1), 1.0, atol=1e-5)
  assert np.all((soft > 0).sum(-1) == 5)
  np.testing.assert_array_equal(soft.argmax(-1), nearest)
  np.testing.assert_array_equal(nearest, np.asarray(colorization.nearest_bin(ab)))
  # At a bin centre: the 4 next bins are 10 away, exp(-100 / 50) each, relative to 1.
  centre_soft, centre_bin = colorization.soft_encode(jnp.zeros((1, 2)))
  assert int(centre_bin[0]) == colorization.neutral_bin()
  np.testing.assert_allclose(float(centre_soft[0].max()), 1.0 / (1.0 + 4.0 * np.exp(-2.0)), rtol=1e-5)


def test_smoothed_prior_and_rebalancing_weights():
  counts = np.zeros(313)
  counts[colorization.neutral_bin()] = 1.0
  prior = colorization.smooth_prior(counts, sigma=5.0)
  np.testing.assert_allclose(prior.sum(), 1.0)
  bins = colorization.ab_bins()
  right = np.flatnonzero(np.all(bins == [0, 10], axis=1))[0]
  np.testing.assert_allclose(prior[right] / prior[colorization.neutral_bin()], np.exp(-2.0), rtol=1e-6)

  p = np.random.default_rng(1).dirichlet(np.full(313, 0.3))
  w = colorization.rebalancing_weights(p, 0.5)
  np.testing.assert_allclose(np.sum(p * w), 1.0, rtol=1e-9)
  order = np.argsort(p)
  assert np.all(np.diff(w[order]) <= 1e-12)  # Rarer colours weigh more.
  np.testing.assert_allclose(colorization.rebalancing_weights(p, 1.0), np.ones(313), rtol=1e-9)


def test_state_from_real_images(sample_images):
  cfg = _cfg()
  state = colorization.init_state(cfg)
  assert state["prior"].shape == state["class_weights"].shape == (313,)
  np.testing.assert_array_equal(state["class_weights"], 1.0)
  collected = jax.jit(lambda b: colorization.collect(None, b, cfg))({"image": _images(sample_images, 64)})
  counts = np.asarray(collected["ab_counts"])
  assert counts.shape == (64, 313)
  np.testing.assert_array_equal(counts.sum(-1), 16 * 16)
  new = colorization.update_state(state, collected, rng=jax.random.PRNGKey(0), cfg=cfg)
  prior, weights = np.asarray(new["prior"], np.float64), np.asarray(new["class_weights"], np.float64)
  np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.sum(prior * weights), 1.0, rtol=1e-5)
  # Grey is common in real photos, so it weighs less than an average bin.
  assert weights[colorization.neutral_bin()] < 1.0 < weights.max()
  # make_inputs weights each pixel by its nearest bin's class weight.
  _, targets = colorization.make_inputs(None, {"image": _images(sample_images, 4)}, cfg, state=new)
  nearest = np.asarray(targets["bin"])
  np.testing.assert_allclose(np.asarray(targets["weights"]), np.asarray(new["class_weights"])[nearest])


def test_inputs_are_scaled_lightness(sample_images):
  images = _images(sample_images, 4)
  cfg = _cfg()
  inputs, targets = colorization.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  assert set(inputs) == {"lightness"}  # Not "image": the trainer must not standardise it.
  x = np.asarray(inputs["lightness"])
  assert x.shape == (4, 32, 32, 1) and -1.0 <= x.min() and x.max() <= 1.0
  np.testing.assert_allclose(x, np.asarray(colorization.rgb_to_lab(images))[..., :1] / 50 - 1, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(colorization.backbone_input(images, cfg)), x)
  assert targets["soft_ab"].shape == (4, 16, 16, 313) and targets["weights"].shape == (4, 16, 16)
  np.testing.assert_array_equal(np.asarray(targets["weights"]), 1.0)  # No state: unit weights.


def test_annealed_mean_between_mode_and_mean():
  logits = jnp.asarray(np.random.default_rng(2).normal(size=(3, 313)) * 3, jnp.float32)
  bins = colorization.ab_bins()
  mode = bins[np.argmax(np.asarray(logits), axis=-1)]
  np.testing.assert_allclose(colorization.annealed_mean(logits, 1e-3), mode, atol=1e-3)
  probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
  np.testing.assert_allclose(colorization.annealed_mean(logits, 1.0), probs @ bins, atol=1e-3)
  # T = 0.38 lies between: further from the mean than T = 1 is, towards the mode.
  annealed = np.asarray(colorization.annealed_mean(logits, 0.38))
  assert np.all(np.linalg.norm(annealed - mode, axis=-1) < np.linalg.norm(probs @ bins - mode, axis=-1))


def test_greyscale_data_is_refused(sample_images):
  cfg = _cfg()
  grey = jnp.repeat(_images(sample_images, 8).mean(-1, keepdims=True), 3, axis=-1)
  collected = colorization.collect(None, {"image": grey}, cfg)
  with pytest.raises(ValueError, match=r"^colorization: the training images carry no colour \(.*\): "
                                       r"train on colour images$"):
    colorization.update_state(colorization.init_state(cfg), collected, rng=None, cfg=cfg)
  config = ml_collections.ConfigDict({"pretext": cfg, "image_size": 32, "dataset": "tfds:mnist"})
  with pytest.raises(ValueError, match=r"dataset tfds:mnist is greyscale.*train colorization on colour"):
    colorization.validate(config)
  config.dataset = "folder:cifar10"
  colorization.validate(config)
  config.pretext.prediction_stride = 3
  with pytest.raises(ValueError, match=r"prediction_stride 3 does not divide image_size 32"):
    colorization.validate(config)


def test_loss_decreases_on_real_images(sample_images):
  cfg = _cfg()
  images = _images(sample_images, 32)
  state = colorization.update_state(colorization.init_state(cfg),
                                    colorization.collect(None, {"image": images}, cfg), rng=None, cfg=cfg)
  values, metrics = steps.losses_over_steps(colorization, cfg, {"image": images}, steps=12, state=state)
  assert values[0] > 4.0  # About log(313) = 5.7 at initialisation.
  assert values[-1] < values[0] - 0.5, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
  assert np.isfinite(float(metrics["mean_weight"]))


def test_pictures_show_original_grey_and_colorized(sample_images):
  cfg = _cfg()
  images = _images(sample_images, 3)
  net = steps.build(colorization, cfg)
  inputs, _ = colorization.make_inputs(None, {"image": images}, cfg)
  variables = net.init(jax.random.PRNGKey(0), inputs, train=False)

  def predict(x):
    return net.apply(variables, x, train=False)[0]

  picture = colorization.pictures(predict, images, rng=jax.random.PRNGKey(0), cfg=cfg)["colorization"]
  assert picture.dtype == np.uint8 and picture.shape == (3 * 33 + 1, 3 * 33 + 1, 3)
  tile = lambda r, c: picture[1 + 33 * r:33 * (r + 1), 1 + 33 * c:33 * (c + 1)]  # noqa: E731
  for r in range(3):
    expected = (np.clip(np.asarray(images[r]), 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(tile(r, 0), expected)
    grey = tile(r, 1).astype(int)
    assert np.abs(grey - grey[..., :1]).max() <= 1  # R = G = B.
    lab_grey = np.asarray(colorization.rgb_to_lab(jnp.asarray(grey / 255.0, jnp.float32)))
    lab_true = np.asarray(colorization.rgb_to_lab(images[r]))
    np.testing.assert_allclose(lab_grey[..., 0], lab_true[..., 0], atol=1.0)  # The input's L.
    # The third tile: the input's L with the annealed-mean ab of the network's prediction.
    coloured = np.asarray(colorization.colorize(images, predict(inputs), 0.38)[r])
    np.testing.assert_array_equal(tile(r, 2), (coloured * 255 + 0.5).astype(np.uint8))
    assert np.abs(tile(r, 2).astype(int) - grey).max() > 5  # It is not the grey tile.


def test_colorize_with_certain_logits(sample_images):
  images = _images(sample_images, 4)
  _, targets = colorization.make_inputs(None, {"image": images}, _cfg(stride=1))
  # Certain of each pixel's nearest bin: the image comes back, up to the bin size.
  certain = 50.0 * jax.nn.one_hot(targets["bin"], 313)
  restored = np.asarray(colorization.colorize(images, certain, 0.38))
  assert np.abs(restored - np.asarray(images)).mean() < 0.03
  # Certain of grey: the L-only image, R = G = B.
  grey = np.asarray(colorization.colorize(images, 50.0 * jax.nn.one_hot(
      jnp.full(targets["bin"].shape, colorization.neutral_bin()), 313), 0.38))
  assert np.abs(grey - grey[..., :1]).max() < 1e-3
  np.testing.assert_allclose(np.asarray(colorization.rgb_to_lab(grey))[..., 0],
                             np.asarray(colorization.rgb_to_lab(images))[..., 0], atol=0.05)
