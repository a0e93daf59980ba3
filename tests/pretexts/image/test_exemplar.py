import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts.image import exemplar
from tests.pretexts import steps


def test_found_by_name_with_contract():
  assert pretexts.get("image.exemplar").module is exemplar


def test_surrogate_classes_are_source_indices_and_head_has_n_classes(sample_images):
  cfg = exemplar.default_config()
  cfg.num_classes = 500
  images = jnp.asarray(sample_images[0][:8] / 255.0, jnp.float32)
  index = jnp.asarray([3, 17, 0, 499, 250, 42, 7, 99], jnp.int32)
  inputs, targets = exemplar.make_inputs(jax.random.PRNGKey(0), {"image": images, "index": index}, cfg)
  assert inputs["image"].shape == images.shape
  np.testing.assert_array_equal(targets["label"], index)
  head = exemplar.head(cfg)
  params = head.init(jax.random.PRNGKey(0), {"pooled": jnp.zeros((2, 16))}, train=False)
  assert head.apply(params, {"pooled": jnp.zeros((2, 16))}, train=False).shape == (2, 500)


def test_augmentation_is_deterministic_per_key_and_varies_across_keys(sample_images):
  cfg = exemplar.default_config()
  cfg.copies = 4
  images = jnp.asarray(sample_images[0][:4] / 255.0, jnp.float32)
  batch = {"image": images, "index": jnp.arange(4, dtype=jnp.int32)}
  make = jax.jit(lambda r, b: exemplar.make_inputs(r, b, cfg))
  a, _ = make(jax.random.PRNGKey(1), batch)
  b, _ = make(jax.random.PRNGKey(1), batch)
  c, _ = make(jax.random.PRNGKey(2), batch)
  np.testing.assert_array_equal(a["image"], b["image"])
  assert np.abs(np.asarray(a["image"]) - np.asarray(c["image"])).mean() > 0.02
  x = np.asarray(a["image"])
  assert x.shape == (16, 32, 32, 3) and x.min() >= 0.0 and x.max() <= 1.0
  # Copies of one image differ from each other (independent draws).
  assert np.abs(x[0] - x[1]).mean() > 0.02


def test_hsv_round_trip(sample_images):
  rgb = jnp.asarray(sample_images[0][:4] / 255.0, jnp.float32)
  back = exemplar.augment.hsv_to_rgb(exemplar.augment.rgb_to_hsv(rgb))
  np.testing.assert_allclose(back, rgb, atol=1e-5)


def test_validate_ties_classes_to_kept_images():
  config = ml_collections.ConfigDict({"pretext": exemplar.default_config(), "train_examples": None})
  with pytest.raises(ValueError, match=r"set --config.train_examples=8000"):
    exemplar.validate(config)
  config.train_examples = 8000
  exemplar.validate(config)
  config.pretext.mode = "triplet"
  with pytest.raises(ValueError, match=r"copies >= 2"):
    exemplar.validate(config)


@pytest.mark.parametrize("mode", ["classes", "triplet"])
def test_loss_decreases_on_real_images(sample_images, mode):
  cfg = exemplar.default_config()
  cfg.mode = mode
  cfg.num_classes = 16
  cfg.copies = 1 if mode == "classes" else 4
  images = jnp.asarray(sample_images[0][:16] / 255.0, jnp.float32)
  batch = {"image": images, "index": jnp.arange(16, dtype=jnp.int32)}
  values, metrics = steps.losses_over_steps(exemplar, cfg, batch, steps=20)
  assert values[-1] < values[0] - 0.1, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
