import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.image import jigsaw
from tests.conftest import REPO
from tests.pretexts import steps


def small_cfg(**overrides):
  cfg = jigsaw.default_config()
  cfg.grey_probability = 0.0
  cfg.channel_jitter = 0.0
  cfg.update(overrides)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("image.jigsaw").module is jigsaw


@pytest.mark.parametrize("size,criterion", [(100, "maxmin"), (1000, "maxmin"), (100, "mean")])
def test_permutation_set_size_unique_and_distance(size, criterion):
  perms = jigsaw.permutation_set(9, size, seed=0, criterion=criterion)
  assert perms.shape == (size, 9)
  assert all(sorted(p) == list(range(9)) for p in perms)
  assert len({tuple(p) for p in perms}) == size
  distances = jigsaw.pairwise_hamming(perms)[np.triu_indices(size, 1)]
  print(f"P={size} {criterion}: min Hamming {distances.min()}, mean {distances.mean():.2f}")
  if criterion == "maxmin":
    assert distances.min() >= jigsaw.guaranteed_min_distance(9, size)
  assert distances.min() >= 2


def test_guaranteed_distance_bound_is_a_true_bound():
  # The ball sizes: 1 + C(9,2)*1 + C(9,3)*2 = 1 + 36 + 168 permutations within distance 3.
  assert jigsaw.hamming_ball(9, 3) == 1 + 36 + 168
  assert sum(jigsaw.hamming_ball(4, r) - jigsaw.hamming_ball(4, r - 1) for r in range(1, 5)) + 1 == 24
  assert jigsaw.guaranteed_min_distance(9, 100) >= 5
  # Exhaustive check on 4 tiles: greedy max-min over all 24 achieves at least the bound.
  for size in range(2, 25):
    perms = jigsaw.permutation_set(4, size, seed=size)
    assert jigsaw.pairwise_hamming(perms)[np.triu_indices(size, 1)].min() >= \
        jigsaw.guaranteed_min_distance(4, size)


def test_permutation_set_is_deterministic_per_seed():
  a = jigsaw.permutation_set(9, 50, seed=3)
  assert np.array_equal(a, jigsaw.permutation_set(9, 50, seed=3))
  assert not np.array_equal(a, jigsaw.permutation_set(9, 50, seed=4))


def test_too_many_permutations_is_a_one_line_error():
  with pytest.raises(ValueError, match=r"exceeds the 24 permutations.*use at most 24"):
    jigsaw.permutation_set(4, 25)


def test_tiles_lie_inside_their_cells():
  # Pixel values encode (row, column), so each tile tells where it was cut.
  size = 63
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  image = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)[None]
  cfg = small_cfg()
  cell, tile = jigsaw.tile_geometry(size, cfg)
  tiles = np.asarray(jigsaw.cut_tiles(jax.random.PRNGKey(1), jnp.asarray(image), cfg))
  assert tiles.shape == (1, 9, tile, tile, 3)
  for i in range(9):
    r, c = divmod(i, 3)
    top, left = tiles[0, i, 0, 0, 0], tiles[0, i, 0, 0, 1]
    assert r * cell <= top and top + tile <= (r + 1) * cell
    assert c * cell <= left and left + tile <= (c + 1) * cell


def test_shuffle_then_inverse_of_label_restores_tiles(sample_images):
  cfg = small_cfg(num_permutations=100)
  images = jnp.asarray(jax.image.resize(sample_images[0][:6] / 255.0, (6, 64, 64, 3), "bilinear"))
  rng = jax.random.PRNGKey(7)
  inputs, targets = jax.jit(lambda r, b: jigsaw.make_inputs(r, b, cfg))(rng, {"image": images})
  _, tile = jigsaw.tile_geometry(64, cfg)
  assert inputs["image"].shape == (6 * 9, tile, tile, 3)
  perms = jigsaw.permutation_set(9, 100)
  labels = np.asarray(targets["label"])
  assert np.array_equal(np.asarray(targets["permutation"]), perms[labels])
  shown = inputs["image"].reshape(6, 9, tile, tile, 3)
  restored = np.asarray(jigsaw.unshuffle(shown, jnp.asarray(perms[labels])))
  # The same key cuts the same tiles: standardise them and compare with the restored ones.
  tile_rng = jax.random.split(rng, 4)[0]
  expected = np.asarray(jigsaw.augment.standardize_patches(jigsaw.cut_tiles(tile_rng, images, cfg)))
  np.testing.assert_allclose(restored, expected, atol=1e-4)
  tile_stats = np.asarray(inputs["image"]).reshape(54, -1)
  np.testing.assert_allclose(tile_stats.mean(1), 0, atol=1e-4)
  np.testing.assert_allclose(tile_stats.std(1), 1, atol=1e-2)


def test_small_image_is_a_one_line_error():
  with pytest.raises(ValueError, match=r"image_size >= 3 \* 9 = 27 .*\(got 16: 5 px cells, 4 px tiles\): "
                                       r"raise --config.image_size to 27"):
    jigsaw.make_inputs(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 16, 16, 3))}, small_cfg())


def test_experiment_and_default_configs_pass_validate():
  jigsaw.validate(configs.load(REPO / "experiments" / "jigsaw_convnet_cifar10.py"))
  jigsaw.validate(steps.experiment_config(jigsaw.default_config(), image_size=32))


@pytest.mark.parametrize("grid,permutations,smallest", [(3, 100, 27), (2, 24, 18)])
def test_validate_bound_is_the_one_make_inputs_needs(grid, permutations, smallest):
  cfg = small_cfg(grid=grid, num_permutations=permutations)
  assert jigsaw.min_image_size(cfg) == smallest
  inside = steps.experiment_config(cfg, image_size=smallest)
  jigsaw.validate(inside)
  assert steps.abstract_inputs(jigsaw, inside)["image"] == (2 * grid ** 2, 8, 8, 3)  # 8 px tiles.
  outside = steps.experiment_config(cfg, image_size=smallest - 1)
  with pytest.raises(ValueError, match=rf"jigsaw needs image_size >= {grid} \* 9 = {smallest} for 8 px tiles "
                                       rf".*\(got {smallest - 1}: .*raise --config.image_size to {smallest}"):
    jigsaw.validate(outside)
  with pytest.raises(ValueError, match=r"jigsaw needs image_size"):
    steps.abstract_inputs(jigsaw, outside)


def test_validate_errors_name_the_fix():
  def config(**overrides):
    return steps.experiment_config(small_cfg(**overrides), image_size=64)
  with pytest.raises(ValueError, match=r"num_permutations 25 is not available for a 2x2 grid, which has 24 "
                                       r"orders.*--config.pretext.num_permutations in \[2, 24\]"):
    jigsaw.validate(config(grid=2, num_permutations=25))
  with pytest.raises(ValueError, match=r"num_permutations 1 is not available"):
    jigsaw.validate(config(num_permutations=1))
  with pytest.raises(ValueError, match=r"grid 4 is not supported: set --config.pretext.grid to 3"):
    jigsaw.validate(config(grid=4))
  with pytest.raises(ValueError, match=r"tile_fraction 1.2 must be in \(0, 1\]"):
    jigsaw.validate(config(tile_fraction=1.2))
  with pytest.raises(ValueError, match=r"unknown criterion 'min'"):
    jigsaw.validate(config(criterion="min"))
  with pytest.raises(ValueError, match=r"channel_jitter 1.0 must be in \[0, 1\)"):
    jigsaw.validate(config(channel_jitter=1.0))
  with pytest.raises(ValueError, match=r"jigsaw cuts images.*configs.base\(\)"):
    jigsaw.validate(steps.experiment_config(small_cfg(), image_size=64, num_frames=8))


def test_loss_decreases_2x2_on_real_images(sample_images):
  cfg = small_cfg(grid=2, num_permutations=24)
  images = jnp.asarray(sample_images[0][:16] / 255.0, jnp.float32)
  values, metrics = steps.losses_over_steps(jigsaw, cfg, {"image": images}, steps=20)
  assert values[0] > math.log(24) - 0.7
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_all_permutations_of_4_when_p_is_24():
  perms = jigsaw.permutation_set(4, 24)
  assert {tuple(p) for p in perms} == set(itertools.permutations(range(4)))
