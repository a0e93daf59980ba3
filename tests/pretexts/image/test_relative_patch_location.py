import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.image import relative_patch_location as rpl
from tests.conftest import REPO
from tests.pretexts import steps


def plain_cfg(**overrides):
  cfg = rpl.default_config()
  cfg.colour = "none"
  cfg.downsample_probability = 0.0
  cfg.standardize = False
  cfg.update(overrides)
  return cfg


def coordinate_images(batch, size):
  """Pixel (r, c) holds (r, c, 0): a patch tells where it was cut from."""
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)
  return jnp.asarray(np.repeat(image[None], batch, 0))


def test_found_by_name_with_contract():
  assert pretexts.get("image.relative_patch_location").module is rpl


def test_label_order_is_raster_around_the_centre():
  assert rpl.OFFSETS.tolist() == [[-1, -1], [-1, 0], [-1, 1], [0, -1], [0, 1], [1, -1], [1, 0], [1, 1]]


@pytest.mark.parametrize("all_pairs", [True, False])
def test_labels_match_true_geometry_for_all_8_positions(all_pairs):
  cfg = plain_cfg(all_pairs=all_pairs)
  p, step = cfg.patch_size, cfg.patch_size + cfg.gap
  images = coordinate_images(64, 64)
  inputs, targets = jax.jit(lambda r, b: rpl.make_inputs(r, b, cfg))(jax.random.PRNGKey(3), {"image": images})
  patches = np.asarray(inputs["image"])
  corners = patches[:, 0, 0, :2]  # (row, column) of each patch's top-left pixel.
  labels = np.asarray(targets["label"])
  if all_pairs:
    corners = corners.reshape(64, 9, 2)
    pairs = [(corners[b, rpl.CENTRE], corners[b, cell]) for b in range(64) for cell in rpl.NEIGHBOUR_CELLS]
  else:
    corners = corners.reshape(64, 2, 2)
    pairs = [(corners[b, 0], corners[b, 1]) for b in range(64)]
  seen = set()
  for (centre, neighbour), label in zip(pairs, labels):
    delta = neighbour - centre
    # Neighbours are one step away, give or take twice the jitter, never overlapping.
    assert np.all(np.abs(delta - rpl.OFFSETS[label] * step) <= 2 * cfg.jitter)
    assert np.all((np.abs(delta) >= p) | (rpl.OFFSETS[label] == 0))
    seen.add(int(label))
  assert seen == set(range(8))
  assert patches.min() >= 0 and patches.max() <= 63


def test_jitter_and_layout_are_random():
  cfg = plain_cfg()
  images = coordinate_images(32, 64)
  inputs, _ = rpl.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  centres = np.asarray(inputs["image"])[:, 0, 0, :2].reshape(32, 9, 2)[:, rpl.CENTRE]
  assert len({tuple(c) for c in centres}) > 5


def test_colour_drop_keeps_one_channel_and_projection_removes_green_magenta(sample_images):
  images = jnp.asarray(jax.image.resize(sample_images[0][:8] / 255.0, (8, 64, 64, 3), "bilinear"))
  cfg = plain_cfg(colour="drop")
  inputs, _ = rpl.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  stds = np.asarray(inputs["image"]).std(axis=(1, 2))  # (patches, 3)
  kept = stds.max(1)
  others = np.sort(stds, 1)[:, :2]
  assert np.all(others <= 0.02 * kept[:, None] + 1e-6)
  cfg = plain_cfg(colour="project")
  inputs, _ = rpl.make_inputs(jax.random.PRNGKey(0), {"image": images}, cfg)
  green_magenta = np.asarray(inputs["image"]) @ np.array([-1.0, 2.0, -1.0])
  np.testing.assert_allclose(green_magenta, 0, atol=1e-5)


def test_too_small_image_is_a_one_line_error():
  with pytest.raises(ValueError, match=r"image_size >= 3\*patch_size \+ 2\*gap \+ 2\*jitter = 3\*15 \+ 2\*7 "
                                       r"\+ 2\*1 = 61 \(got 32\): raise --config.image_size to 61"):
    rpl.make_inputs(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 32, 32, 3))}, rpl.default_config())


def test_experiment_config_passes_validate():
  rpl.validate(configs.load(REPO / "experiments" / "relative_patch_location_convnet_cifar10.py"))
  rpl.validate(configs.load(REPO / "experiments" / "relative_patch_location_convnet_cifar10.py", "quick"))


@pytest.mark.parametrize("all_pairs", [True, False])
def test_validate_bound_is_the_one_make_inputs_needs(all_pairs):
  cfg = rpl.default_config()
  cfg.all_pairs = all_pairs
  extent = rpl.layout_extent(cfg)
  inside = steps.experiment_config(cfg, image_size=extent)
  rpl.validate(inside)
  assert steps.abstract_inputs(rpl, inside)["image"] == ((9 if all_pairs else 2) * 2, 15, 15, 3)
  outside = steps.experiment_config(cfg, image_size=extent - 1)
  with pytest.raises(ValueError, match=rf"= {extent} \(got {extent - 1}\): raise --config.image_size to "
                                       rf"{extent} or lower --config.pretext.patch_size/gap/jitter"):
    rpl.validate(outside)
  with pytest.raises(ValueError, match=rf"= {extent} \(got {extent - 1}\)"):
    steps.abstract_inputs(rpl, outside)


def test_layout_reaches_both_edges_at_the_smallest_image():
  # At image_size == extent the layout fits exactly: corners stay in [0, size - patch_size].
  cfg = rpl.default_config()
  size = rpl.layout_extent(cfg)
  corners = np.asarray(rpl.patch_corners(jax.random.PRNGKey(0), 512, size, cfg))
  assert corners.min() == 0 and corners.max() == size - cfg.patch_size


def test_validate_errors_name_the_fix():
  def config(**overrides):
    cfg = rpl.default_config()
    cfg.update(overrides)
    return steps.experiment_config(cfg, image_size=64)
  rpl.validate(config())
  with pytest.raises(ValueError, match=r"jitter -1 >= 0"):
    rpl.validate(config(jitter=-1))
  with pytest.raises(ValueError, match=r"unknown colour 'grey'"):
    rpl.validate(config(colour="grey"))
  with pytest.raises(ValueError, match=r"downsample_min_fraction 0.0 in \(0, 1\]"):
    rpl.validate(config(downsample_min_fraction=0.0))
  with pytest.raises(ValueError, match=r"relative_patch_location cuts images.*configs.base\(\)"):
    rpl.validate(steps.experiment_config(rpl.default_config(), image_size=64, num_frames=8))


@pytest.mark.parametrize("all_pairs", [True, False])
def test_loss_decreases_on_real_images(sample_images, all_pairs):
  cfg = rpl.default_config()
  cfg.all_pairs = all_pairs
  images = jnp.asarray(jax.image.resize(sample_images[0][:16] / 255.0, (16, 64, 64, 3), "bilinear"))
  values, metrics = steps.losses_over_steps(rpl, cfg, {"image": images}, steps=20)
  assert values[0] > np.log(8) - 0.5
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
