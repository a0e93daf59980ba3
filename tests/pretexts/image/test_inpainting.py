import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.image import inpainting
from tests.pretexts import steps


def _images(sample_images, n):
  return jnp.asarray(sample_images[0][:n] / 255.0, jnp.float32)


def _cfg(**overrides):
  cfg = inpainting.default_config()
  cfg.decoder_widths = (8, 8)
  cfg.discriminator_widths = (8, 8)
  cfg.update(overrides)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("image.inpainting").module is inpainting


def test_central_mask_is_the_centred_half_side_square_filled_with_the_mean(sample_images):
  images = _images(sample_images, 4)
  cfg = _cfg(mask="central")
  inputs, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  hole = np.asarray(targets["mask"])[..., 0]
  expected = np.zeros((32, 32), bool)
  expected[8:24, 8:24] = True
  np.testing.assert_array_equal(hole, np.broadcast_to(expected, hole.shape))
  assert hole.mean() == 0.25  # Exactly a quarter of the area.
  masked = np.asarray(inputs["image"])
  fill = np.broadcast_to(cfg.fill, masked[:, expected].shape)
  np.testing.assert_allclose(masked[:, expected], fill, rtol=1e-6)
  np.testing.assert_array_equal(masked[:, ~expected], np.asarray(images)[:, ~expected])
  np.testing.assert_array_equal(targets["image"], images)  # The clean target is untouched.


@pytest.mark.parametrize("mask", ["random_block", "random_region"])
def test_random_masks_cover_about_a_quarter_and_vary(mask):
  cfg = _cfg(mask=mask)
  images = jnp.zeros((256, 32, 32, 3))
  make = jax.jit(lambda r: inpainting.make_inputs(r, {"image": images}, cfg)[1]["mask"][..., 0])
  a, b = np.asarray(make(jax.random.PRNGKey(0))), np.asarray(make(jax.random.PRNGKey(1)))
  coverage = a.mean(axis=(1, 2))
  assert coverage.max() <= 0.25 + 1e-6
  assert 0.22 <= coverage.mean() <= 0.25, coverage.mean()
  if mask == "random_region":
    np.testing.assert_array_equal(coverage, 256 / 1024)  # The quantile threshold drops exactly 256 px.
    # Blobs, not scattered pixels: far fewer hole/context transitions than an i.i.d. mask (~0.375).
    assert (a[:, 1:] != a[:, :-1]).mean() < 0.1
  assert (a != a[:1]).any(axis=(1, 2)).mean() > 0.9  # One mask per image, not one per batch.
  assert (a != b).any(axis=(1, 2)).all()  # New masks for a new key.


def test_overlap_ring_gets_the_larger_weight():
  cfg = _cfg(mask="central", overlap=2)
  _, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": jnp.zeros((1, 32, 32, 3))}, cfg)
  weights = np.asarray(targets["loss_weights"])[0, ..., 0]
  assert (weights[8:24, 8:24] == 1.0).all()
  ring = np.zeros((32, 32), bool)
  ring[6:26, 6:26] = True
  ring[8:24, 8:24] = False
  assert (weights[ring] == 10.0).all()
  assert (weights[~ring & (weights != 1.0)] == 0.0).all() and (weights == 0).sum() == 1024 - 400


def test_validate_rejects_masks_that_do_not_fit():
  config = ml_collections.ConfigDict({"pretext": _cfg(mask="central"), "image_size": 32})
  inpainting.validate(config)
  config.pretext.central_fraction = 1.5
  with pytest.raises(ValueError, match=r"48 px hole .* set --config\.pretext\.central_fraction"):
    inpainting.validate(config)
  config.pretext.central_fraction, config.pretext.overlap = 0.5, 9
  with pytest.raises(ValueError, match=r"32 px image: set --config\.pretext\.overlap to at most 8"):
    inpainting.validate(config)
  config.pretext.mask, config.pretext.overlap = "random_block", 0
  config.pretext.block_size_range = (0.5, 2.0)
  with pytest.raises(ValueError, match="larger than the 32 px image"):
    inpainting.validate(config)
  config.pretext.mask, config.pretext.coverage = "random_region", 1.0
  with pytest.raises(ValueError, match=r"set --config.pretext.coverage in \(0, 1\)"):
    inpainting.validate(config)
  config.pretext.mask = "stripes"
  with pytest.raises(ValueError, match="unknown mask 'stripes'"):
    inpainting.validate(config)


def test_each_adversarial_term_trains_only_its_own_side(sample_images):
  cfg = _cfg(adversarial=True, mask="central")
  model = steps.build(inpainting, cfg)
  inputs, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": _images(sample_images, 8)}, cfg)
  variables = model.init(jax.random.PRNGKey(1), inputs, train=False)
  terms = ("reconstruction", "generator", "discriminator")

  def term_values(params):
    (outputs, _), _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, inputs,
                                  train=True, mutable=["batch_stats"])
    metrics = inpainting.loss(outputs, targets, cfg=cfg)[1]
    return jnp.stack([metrics[t] for t in terms])

  # The gradient of each term separately (the loss is their weighted sum), per parameter group.
  jacobian = jax.jit(jax.jacrev(term_values))(variables["params"])
  largest = {group: np.max([np.abs(np.asarray(x)).reshape(3, -1).max(-1) for x in jax.tree.leaves(tree)],
                           axis=0) for group, tree in jacobian.items()}
  grads = {t: {group: float(v[i]) for group, v in largest.items()} for i, t in enumerate(terms)}
  assert grads["generator"]["discriminator"] == 0.0
  assert grads["generator"]["decoder"] > 0.0 and grads["generator"]["backbone"] > 0.0
  assert grads["discriminator"]["discriminator"] > 0.0
  assert grads["discriminator"]["decoder"] == 0.0 and grads["discriminator"]["backbone"] == 0.0
  assert grads["reconstruction"]["discriminator"] == 0.0 and grads["reconstruction"]["decoder"] > 0.0


@pytest.mark.parametrize("adversarial", [False, True])
def test_loss_decreases_on_real_images(sample_images, adversarial):
  cfg = _cfg(mask="random_block", adversarial=adversarial)
  batch = {"image": _images(sample_images, 16)}
  values, metrics = steps.losses_over_steps(inpainting, cfg, batch, steps=15)
  if not adversarial:
    assert values[-1] < 0.7 * values[0], values
    return
  # The total is mostly the discriminator's term; the reconstruction term must fall as well: from
  # about 0.1 (a sigmoid decoder starts near grey), as in the run without the discriminator.
  assert values[-1] < values[0] - 0.1, values
  assert float(metrics["reconstruction"]) < 0.05
  assert float(metrics["discriminator_accuracy"]) > 0.5


def test_pictures_show_original_masked_and_inpainted(sample_images):
  cfg = _cfg(mask="central")
  images = _images(sample_images, 3)
  model = steps.build(inpainting, cfg)
  inputs, _ = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
  predict = lambda x: model.apply(variables, x, train=False)[0]  # noqa: E731
  grid = inpainting.pictures(predict, np.asarray(images), rng=jax.random.PRNGKey(0), cfg=cfg)["inpainting"]
  assert grid.dtype == np.uint8 and grid.shape == (3 * 33 + 1, 3 * 33 + 1, 3)
  tile = lambda r, c: grid[1 + 33 * r: 33 * (r + 1), 1 + 33 * c: 33 * (c + 1)].astype(int)  # noqa: E731
  original = np.round(np.asarray(images) * 255).astype(int)
  for r in range(3):
    np.testing.assert_allclose(tile(r, 0), original[r], atol=1)
    fill = np.broadcast_to(np.round(np.array(cfg.fill) * 255), (16, 16, 3))
    np.testing.assert_allclose(tile(r, 1)[8:24, 8:24], fill, atol=1)
    np.testing.assert_allclose(tile(r, 2)[:8], original[r][:8], atol=1)  # Context kept...
    assert np.abs(tile(r, 2)[8:24, 8:24] - original[r][8:24, 8:24]).mean() > 5  # ...the hole predicted.


def test_validate_region_cells_and_blocks():
  config = steps.experiment_config(_cfg(mask="random_region", region_cells=2), image_size=16)
  inpainting.validate(config)
  images = jnp.zeros((2, 16, 16, 3))
  _, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": images}, config.pretext)
  np.testing.assert_allclose(np.asarray(targets["mask"]).mean(), 0.25)
  config.pretext.region_cells = 1
  with pytest.raises(ValueError, match=r"region_cells 1 gives no blobs.*--config.pretext.region_cells >= 2"):
    inpainting.validate(config)
  _, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": images}, config.pretext)
  assert np.asarray(targets["mask"]).all()  # What validate prevents: the whole image dropped.
  config = steps.experiment_config(_cfg(mask="random_block", max_blocks=0), image_size=16)
  with pytest.raises(ValueError, match=r"max_blocks 0 drops no block"):
    inpainting.validate(config)
  config = steps.experiment_config(_cfg(output_size=16), image_size=32)
  with pytest.raises(ValueError, match=r"output_size 16 differs from image_size 32"):
    inpainting.validate(config)


def test_validate_requires_the_fill_to_be_the_configs_dataset_mean():
  from sslx.data import image_ops
  config = steps.experiment_config(_cfg(), image_size=32)
  inpainting.validate(config)  # configs.base() normalises with CIFAR-10's mean, the default fill.
  config.normalize.mean = image_ops.IMAGENET_MEAN
  with pytest.raises(ValueError, match=r"fill .* is not the dataset mean, normalize.mean .*"
                                       r"set --config.pretext.fill=.*c.pretext.fill = c.normalize.mean"):
    inpainting.validate(config)
  config.pretext.fill = config.normalize.mean
  inpainting.validate(config)
  inputs, targets = inpainting.make_inputs(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 32, 32, 3))},
                                           config.pretext)
  hole = np.asarray(targets["mask"])[..., 0] > 0
  np.testing.assert_allclose(np.asarray(inputs["image"])[hole],
                             np.broadcast_to(image_ops.IMAGENET_MEAN, (hole.sum(), 3)), rtol=1e-6)
  config.pretext.fill = (0.5, 0.5)
  with pytest.raises(ValueError, match=r"fill \(0.5, 0.5\) is not an RGB colour in \[0, 1\]"):
    inpainting.validate(config)


def test_experiment_config_fills_with_its_normalize_mean():
  from sslx import configs
  from tests.conftest import REPO
  for arg in (None, "quick"):
    config = configs.load(REPO / "experiments" / "inpainting_convnet_cifar10.py", arg)
    assert tuple(config.pretext.fill) == tuple(config.normalize.mean)
    inpainting.validate(config)
