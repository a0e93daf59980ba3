import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sslx import configs, pretexts
from sslx.data import image_ops
from sslx.pretexts.image import rotation
from tests.conftest import REPO
from tests.pretexts import steps


def test_found_by_name_with_contract():
  module = pretexts.get("image.rotation").module
  assert module is rotation
  for name in pretexts.REQUIRED:
    assert callable(getattr(module, name))


def test_all_rotations_match_np_rot90(sample_images):
  images = sample_images[0][:5]
  inputs, targets = rotation.make_inputs(jax.random.PRNGKey(0), {"image": jnp.asarray(images)},
                                         rotation.default_config())
  assert inputs["image"].shape == (20, 32, 32, 3)
  labels = np.asarray(targets["label"])
  np.testing.assert_array_equal(labels, np.tile(np.arange(4), 5))
  for i, (image, k) in enumerate(zip(np.asarray(inputs["image"]), labels)):
    np.testing.assert_array_equal(image, np.rot90(images[i // 4], k))


def test_label_one_is_counter_clockwise():
  image = np.zeros((1, 2, 2, 1), np.uint8)
  image[0, 0, 1, 0] = 1  # Top-right pixel; a quarter turn counter-clockwise puts it top-left.
  cfg = rotation.default_config()
  inputs, _ = rotation.make_inputs(jax.random.PRNGKey(0), {"image": jnp.asarray(image)}, cfg)
  assert np.asarray(inputs["image"])[1, 0, 0, 0] == 1


def test_one_random_rotation_per_image(sample_images):
  images = jnp.asarray(sample_images[0])
  cfg = rotation.default_config()
  cfg.all_rotations = False
  make = jax.jit(lambda rng, x: rotation.make_inputs(rng, {"image": x}, cfg))
  inputs, targets = make(jax.random.PRNGKey(3), images)
  labels = np.asarray(targets["label"])
  assert inputs["image"].shape == images.shape
  assert set(labels) == {0, 1, 2, 3}  # 64 draws: every class appears.
  for image, original, k in zip(np.asarray(inputs["image"]), sample_images[0], labels):
    np.testing.assert_array_equal(image, np.rot90(original, k))
  other = make(jax.random.PRNGKey(4), images)[1]["label"]
  assert not np.array_equal(labels, np.asarray(other))


def test_rotation_loss_decreases_on_real_images(sample_images):
  images = image_ops.normalize(jnp.asarray(sample_images[0][:32]))
  values, metrics = steps.losses_over_steps(rotation, rotation.default_config(), {"image": images})
  assert values[0] > np.log(4) - 0.2
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_validate_accepts_images_of_any_size_and_rejects_clips():
  for name in ("rotation_convnet_cifar10.py", "rotation_resnet50_imagenet.py"):
    rotation.validate(configs.load(REPO / "experiments" / name))
  # No size bound: even 1 px images turn (the pipeline always delivers image_size squares).
  smallest = steps.experiment_config(rotation.default_config(), image_size=1)
  rotation.validate(smallest)
  assert steps.abstract_inputs(rotation, smallest)["image"] == (8, 1, 1, 3)
  # Clips are the one geometry rotation cannot take: a clear error before make_inputs' KeyError.
  clips = steps.experiment_config(rotation.default_config(), image_size=32, num_frames=8)
  with pytest.raises(ValueError, match=r"rotation turns images, but this config has a video section.*"
                                       r"configs.base\(\)"):
    rotation.validate(clips)
  with pytest.raises(KeyError, match="image"):
    steps.abstract_inputs(rotation, clips)
