"""Jigsaw puzzles (Noroozi & Favaro, "Unsupervised Learning of Visual
Representations by Solving Jigsaw Puzzles", ECCV 2016; official code
MehdiNoroozi/JigsawPuzzleSolver).

- The image is cut into a 3x3 grid of cells; each tile is a random crop inside
  its cell (paper: 75 px cells, 64 px tiles, so a random gap of 0-22 px between
  tiles keeps edges and lines from being continued across them).
- Each tile is standardised on its own (mean and std), and colour is weakened
  (per-channel gain jitter, whole-image greyscale with probability 0.66 as in
  Kolesnikov et al. 2019), so tiles cannot be matched by low-level statistics.
- The tiles are shuffled by one permutation from a fixed set of P (default 100;
  the paper also uses 1000); the label is the permutation's index, P-way.
- The set is made in code from a seed by greedy selection over all n!
  permutations: ``criterion="maxmin"`` adds the permutation with the largest
  minimum Hamming distance to those chosen (the minimum distance is then at
  least ``guaranteed_min_distance``); ``"mean"`` adds the largest average
  distance, Algorithm 1 of the paper. Nothing is downloaded. Measured with
  seed 0 (minimum / mean pairwise Hamming distance over 9 tiles): max-min
  P=100: 6 / 8.07 (guaranteed >= 5), P=1000: 5 / 8.01 (>= 4); mean criterion
  P=100: 3 / 8.08, P=1000: 2 / 8.01.
- One tile encoder with shared weights for all tiles (the backbone applied to
  the tiles on the batch axis), per-tile fc6 on the flattened last block,
  concatenation in the permuted order, fc7, then the P-way classifier (paper:
  fc6 1024 per tile, fc7 4096).
- ``grid=2``: the 2x2 variant for small images (at most 4! = 24 permutations).

Inputs: ``(B * grid**2, tile, tile, C)``, the tiles of one image adjacent in
the order they are shown; targets: ``{"label": (B,)}`` and ``{"permutation":
(B, grid**2)}`` (position j shows tile ``permutation[j]`` of the raster order).
"""

from __future__ import annotations

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses
from sslx.models import layers

MIN_TILE = 8  # Pixels: smaller tiles carry too little content to be placed.
GRIDS = (2, 3)  # The set is chosen among all (grid**2)! orders: 9! = 362880 for 3x3, 16! is out of reach.


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.jigsaw"
  cfg.grid = 3
  cfg.num_permutations = 100  # Paper: 100 and 1000.
  cfg.permutation_seed = 0
  cfg.criterion = "maxmin"  # or "mean" (the paper's Algorithm 1).
  cfg.tile_fraction = 64 / 75  # Tile side / cell side (paper: 64 px tiles in 75 px cells).
  cfg.grey_probability = 0.66
  cfg.channel_jitter = 0.2  # Per tile and channel gain in [1 - j, 1 + j].
  cfg.fc6 = 256
  cfg.fc7 = 512
  return cfg


# --- The permutation set. -------------------------------------------------------------------


def _derangements(k: int) -> int:
  return round(math.factorial(k) * sum((-1) ** i / math.factorial(i) for i in range(k + 1)))


def hamming_ball(n: int, radius: int) -> int:
  """Permutations of n within Hamming distance ``radius`` of a given one."""
  return sum(math.comb(n, j) * _derangements(j) for j in range(min(radius, n) + 1))


def guaranteed_min_distance(n: int, size: int) -> int:
  """A lower bound on the minimum pairwise distance of a max-min greedy set.

  While k chosen permutations have k * ball(d - 1) < n!, some permutation lies
  at distance >= d from all of them, so the greedy pick does too
  (Gilbert-Varshamov argument).
  """
  d = 1
  while d < n and (size - 1) * hamming_ball(n, d) < math.factorial(n):
    d += 1
  return d


def pairwise_hamming(perms: np.ndarray) -> np.ndarray:
  return (perms[:, None, :] != perms[None, :, :]).sum(-1)


@functools.lru_cache(maxsize=8)
def _permutation_set(n: int, size: int, seed: int, criterion: str) -> np.ndarray:
  if size > math.factorial(n):
    raise ValueError(f"jigsaw: num_permutations {size} exceeds the {math.factorial(n)} permutations of "
                     f"{n} tiles: use at most {math.factorial(n)} or a larger grid")
  if criterion not in ("maxmin", "mean"):
    raise ValueError(f"jigsaw: unknown criterion {criterion!r}: use 'maxmin' or 'mean'")
  candidates = np.array(list(itertools.permutations(range(n))), dtype=np.int8)
  rng = np.random.default_rng(seed)
  chosen = [int(rng.integers(len(candidates)))]
  score = (candidates != candidates[chosen[0]]).sum(1).astype(np.int64)  # min or sum of distances.
  taken = np.zeros(len(candidates), bool)
  taken[chosen[0]] = True
  while len(chosen) < size:
    masked = np.where(taken, -1, score)
    best = np.flatnonzero(masked == masked.max())
    pick = int(best[rng.integers(len(best))])  # Ties broken by the seed.
    chosen.append(pick)
    taken[pick] = True
    distance = (candidates != candidates[pick]).sum(1)
    score = np.minimum(score, distance) if criterion == "maxmin" else score + distance
  return candidates[chosen].astype(np.int32)


def permutation_set(n: int, size: int, seed: int = 0, criterion: str = "maxmin") -> np.ndarray:
  """``(size, n)`` permutations of ``range(n)``, chosen greedily from a seed (cached)."""
  return _permutation_set(n, size, seed, criterion).copy()


# --- Pseudo-labels. --------------------------------------------------------------------------


def min_image_size(cfg) -> int:
  """The smallest image side whose cells hold tiles of ``MIN_TILE`` px (0 < tile_fraction <= 1)."""
  cell = 1
  while round(cell * cfg.tile_fraction) < MIN_TILE:
    cell += 1
  return cfg.grid * cell


def _too_small(image_size: int, cell: int, tile: int, cfg) -> str:
  need = min_image_size(cfg)
  other = ", or use --config.pretext.grid=2" if cfg.grid == 3 else ""
  return (f"jigsaw needs image_size >= {cfg.grid} * {need // cfg.grid} = {need} for {MIN_TILE} px tiles at "
          f"tile_fraction {cfg.tile_fraction:.3f} (got {image_size}: {cell} px cells, {tile} px tiles): "
          f"raise --config.image_size to {need} or more{other}")


def tile_geometry(image_size: int, cfg) -> tuple[int, int]:
  """(cell, tile) sides in pixels; a one-line error when the image is too small."""
  if not 0.0 < cfg.tile_fraction <= 1.0:
    raise ValueError(f"jigsaw: tile_fraction {cfg.tile_fraction} must be in (0, 1], a tile is cut inside "
                     f"its cell: set --config.pretext.tile_fraction (the paper: 64/75 = 0.853)")
  cell = image_size // cfg.grid
  tile = int(round(cell * cfg.tile_fraction))
  if tile < MIN_TILE:
    raise ValueError(_too_small(image_size, cell, tile, cfg))
  return cell, tile


def validate(config) -> None:
  """Before compilation: a known grid, an available permutation count, tiles that fit the image."""
  cfg, size = config.pretext, config.image_size
  if config.get("video") is not None:
    raise ValueError("jigsaw cuts images, but this config has a video section (clips): start the "
                     "experiment config from configs.base()")
  if cfg.grid not in GRIDS:
    raise ValueError(f"jigsaw: grid {cfg.grid} is not supported: set --config.pretext.grid to 3 (the paper) "
                     f"or 2 (small images); the permutation set is chosen among all (grid**2)! orders")
  available = math.factorial(cfg.grid ** 2)
  if not 2 <= cfg.num_permutations <= available:
    raise ValueError(f"jigsaw: num_permutations {cfg.num_permutations} is not available for a "
                     f"{cfg.grid}x{cfg.grid} grid, which has {available} orders of its tiles: set "
                     f"--config.pretext.num_permutations in [2, {available}] (the paper: 100 or 1000)")
  if cfg.criterion not in ("maxmin", "mean"):
    raise ValueError(f"jigsaw: unknown criterion {cfg.criterion!r}: use 'maxmin' or 'mean'")
  if not 0.0 <= cfg.grey_probability <= 1.0:
    raise ValueError(f"jigsaw: grey_probability {cfg.grey_probability} must be in [0, 1]: set "
                     f"--config.pretext.grey_probability (0.66 as Kolesnikov et al.)")
  if not 0.0 <= cfg.channel_jitter < 1.0:
    raise ValueError(f"jigsaw: channel_jitter {cfg.channel_jitter} must be in [0, 1) (gains in [1 - j, 1 + j] "
                     f"stay positive): set --config.pretext.channel_jitter, e.g. 0.2")
  tile_geometry(size, cfg)  # Also checks tile_fraction.


def cut_tiles(rng, images, cfg):
  """``(B, H, W, C)`` -> ``(B, grid**2, tile, tile, C)``: one random crop per cell, raster order."""
  batch, height = images.shape[0], images.shape[1]
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"jigsaw needs square images, got {images.shape[1]} x {images.shape[2]}: "
                     f"crop to a square in the input pipeline")
  cell, tile = tile_geometry(height, cfg)
  cells = cfg.grid * cfg.grid
  row, col = np.divmod(np.arange(cells), cfg.grid)
  offsets = jax.random.randint(rng, (batch, cells, 2), 0, cell - tile + 1)
  top = offsets[..., 0] + row * cell
  left = offsets[..., 1] + col * cell
  repeated = jnp.repeat(images, cells, axis=0)
  tiles = augment.crop(repeated, top.reshape(-1), left.reshape(-1), tile)
  return tiles.reshape((batch, cells) + tiles.shape[1:])


def make_inputs(rng, batch, cfg, *, state=None):
  """Cut, shuffle by a random permutation of the set, decorrelate colour, standardise."""
  images = batch["image"]
  perms = jnp.asarray(permutation_set(cfg.grid ** 2, cfg.num_permutations, cfg.permutation_seed,
                                      cfg.criterion))
  tile_rng, label_rng, grey_rng, gain_rng = jax.random.split(rng, 4)
  images = augment.random_grey(grey_rng, images, cfg.grey_probability)
  tiles = cut_tiles(tile_rng, images, cfg)
  labels = jax.random.randint(label_rng, (images.shape[0],), 0, cfg.num_permutations, dtype=jnp.int32)
  order = perms[labels]
  shuffled = jnp.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
  gain = jax.random.uniform(gain_rng, shuffled.shape[:2] + (1, 1, shuffled.shape[-1]),
                            minval=1 - cfg.channel_jitter, maxval=1 + cfg.channel_jitter)
  shuffled = augment.standardize_patches(shuffled * gain)
  inputs = shuffled.reshape((-1,) + shuffled.shape[2:])
  return {"image": inputs}, {"label": labels, "permutation": order}


unshuffle = augment.unshuffle  # The tests restore what the network was shown.


# --- Head and loss. --------------------------------------------------------------------------


class Head(nn.Module):
  """Per-tile fc6 on the flattened last block, concatenated in shown order, fc7, classifier."""
  tiles: int
  num_classes: int
  fc6: int
  fc7: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = layers.dense_bn_relu(layers.flatten_last_block(features), self.fc6, name="fc6", train=train)
    x = layers.dense_bn_relu(x.reshape(-1, self.tiles * self.fc6), self.fc7, name="fc7", train=train)
    return nn.Dense(self.num_classes, name="classifier")(x)


def head(cfg) -> nn.Module:
  return Head(tiles=cfg.grid ** 2, num_classes=cfg.num_permutations, fc6=cfg.fc6, fc7=cfg.fc7)


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
