"""Order Prediction Network, sorting shuffled frames (Lee, Huang, Singh & Yang,
"Unsupervised Representation Learning by Sorting Sequences", ICCV 2017;
official code HsinYingLee/OPN).

- 4 frames from a high-motion window (chosen by the host from mean optical-flow
  magnitude, as the paper picks its tuples where motion is high), here evenly
  spaced ``frame_gap`` delivered frames apart at a random start in the window
  (our choice: equal gaps give no cue through unequal motion between frames;
  the paper's tuples come precomputed). The default gap, 2 frames, is 0.2 s at
  configs.base_video's 10 fps, a 0.7 s tuple. The window needs
  ``(tuple_length - 1) * frame_gap + 1`` frames; a longer one varies the start.
- 12 classes: a sequence and its reverse are one class (4!/2 = 12), since
  many actions are as plausible backwards as forwards (the paper: opening and
  closing a door), so the arrow of time is not asked for. Class
  k's representative is the k-th permutation, in lexicographic order, of those
  with ``p[0] < p[-1]``; an example draws k uniformly and shows the
  representative or its reverse with probability 1/2 each, so all 24 orders
  appear. Shown position j holds the j-th frame of the order, i.e. temporal
  frame ``order[j]``. ``tuple_length`` 3 or 5 gives 3 or 60 classes.
- Spatial jittering: every frame is cropped to ``crop_size`` around one
  location per example, each at its own random offset of up to ``max_jitter``
  pixels (paper: 80 px patches, +-5 px), so the frames cannot be ordered by
  aligning them pixel to pixel. The location is uniform over the frame (the
  paper crops around a moving region, here the host's window is already the
  high-motion one).
- Channel splitting: one colour channel of each frame, chosen at random per
  frame, copied to all three, against low-level colour cues (the paper's
  countermeasure; ``channel_split`` turns it off).
- One frame encoder with shared weights (the backbone over the frames on the
  batch axis); per frame fc6 (shared); for each of the 6 pairs (i < j) of shown
  positions, the two fc6 features concatenated, fc7 (shared by all pairs), then
  the 6 pair features concatenated and a 12-way classifier (paper: fc6 1024 on
  pool5, fc7 512, fc8 12). Each hidden layer is Dense, BatchNorm, ReLU.

Inputs: ``{"image": (B * 4, crop, crop, 3)}``, each example's frames adjacent in
shown order; targets: ``{"label": (B,)}`` and ``{"order": (B, 4)}``.
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


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.opn"
  cfg.tuple_length = 4  # Paper: 4 frames, 12 classes.
  cfg.frame_gap = 2  # Delivered frames between consecutive sampled frames.
  cfg.crop_size = 48  # Paper: 80 px patches of 320x240 UCF101 frames.
  cfg.max_jitter = 3  # Per-frame offset in pixels (paper: 5 of 80).
  cfg.channel_split = True
  cfg.frame_features = "last_block"  # fc6's input: "last_block" (flattened, like pool5) or "pooled".
  cfg.fc6 = 256  # Per frame (paper: 1024); 0: no fc6.
  cfg.fc7 = 128  # Per pair (paper: 512).
  return cfg


def num_classes(tuple_length: int) -> int:
  return math.factorial(tuple_length) // 2


def window_frames(cfg) -> int:
  """Delivered frames one tuple spans."""
  return (cfg.tuple_length - 1) * cfg.frame_gap + 1


def _check(num_frames: int, height: int | None, width: int | None, cfg) -> None:
  if not 3 <= cfg.tuple_length <= 6:
    raise ValueError(f"opn: tuple_length must be in [3, 6] ({num_classes(3)} to {num_classes(6)} classes), "
                     f"got {cfg.tuple_length}: the paper uses 4")
  if cfg.frame_gap < 1:
    raise ValueError(f"opn: frame_gap must be >= 1, got {cfg.frame_gap}: set --config.pretext.frame_gap")
  if num_frames < window_frames(cfg):
    raise ValueError(f"opn needs video.num_frames >= (tuple_length-1)*frame_gap+1 = {window_frames(cfg)}, "
                     f"got {num_frames}: raise --config.video.num_frames or lower pretext.frame_gap")
  if cfg.crop_size < 1 or cfg.max_jitter < 0:
    raise ValueError(f"opn: crop_size {cfg.crop_size} must be >= 1 and max_jitter {cfg.max_jitter} >= 0: "
                     f"set --config.pretext.crop_size / max_jitter (the paper: 80 and 5)")
  need = cfg.crop_size + 2 * cfg.max_jitter
  for side, size in (("height", height), ("width", width)):
    if size is not None and size < need:
      raise ValueError(f"opn: frame {side} {size} px is below crop_size+2*max_jitter = {need}: raise "
                       f"--config.image_size or lower pretext.crop_size / pretext.max_jitter")


def validate(config) -> None:
  """Before compilation: the window and the frames fit the sampling and the crops."""
  size = config.get("image_size")
  _check(config.video.num_frames, size, size, config.pretext)
  if config.pretext.frame_features not in layers.FRAME_FEATURES:
    raise ValueError(f"opn: unknown frame_features {config.pretext.frame_features!r}: "
                     f"use one of {layers.FRAME_FEATURES}")


# --- Classes. --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _order_classes(n: int) -> np.ndarray:
  perms = [p for p in itertools.permutations(range(n)) if p[0] < p[-1]]
  return np.array(perms, dtype=np.int32)


def order_classes(n: int = 4) -> np.ndarray:
  """``(n!/2, n)``: each class's representative, the permutation with ``p[0] < p[-1]``."""
  return _order_classes(n).copy()


def class_of(order) -> int:
  """The class of a shown order (a permutation of ``range(n)``): its own or its reverse's."""
  order = tuple(int(i) for i in order)
  canonical = order if order[0] < order[-1] else order[::-1]
  return [tuple(p) for p in _order_classes(len(order))].index(canonical)


def sample_orders(rng, batch_size: int, n: int):
  """``(labels (B,), orders (B, n))``: a uniform class, its representative or reverse."""
  classes = jnp.asarray(_order_classes(n))
  label_rng, reverse_rng = jax.random.split(rng)
  labels = jax.random.randint(label_rng, (batch_size,), 0, classes.shape[0], dtype=jnp.int32)
  orders = classes[labels]
  reverse = jax.random.bernoulli(reverse_rng, 0.5, (batch_size, 1))
  return labels, jnp.where(reverse, orders[:, ::-1], orders)


unshuffle = augment.unshuffle  # The tests restore what the network was shown.


# --- Frames and crops. -----------------------------------------------------------------------


def sample_positions(rng, batch_size: int, num_frames: int, cfg):
  """``(B, n)`` window positions, ``frame_gap`` apart from a uniform start."""
  span = window_frames(cfg)
  start = jax.random.randint(rng, (batch_size, 1), 0, num_frames - span + 1)
  return (start + cfg.frame_gap * jnp.arange(cfg.tuple_length)).astype(jnp.int32)


def crop_offsets(rng, batch_size: int, height: int, width: int, cfg):
  """``(base (B, 2), top (B, n), left (B, n))``: one location per example, a jitter per frame.

  ``base`` is the unjittered top-left corner; every crop's corner is within
  ``max_jitter`` of it on each axis and the crop lies inside the frame.
  """
  jitter = cfg.max_jitter
  base_rng, jitter_rng = jax.random.split(rng)
  high = jnp.array([height, width]) - cfg.crop_size - jitter + 1
  base = jax.random.randint(base_rng, (batch_size, 2), jitter, high)
  shift = jax.random.randint(jitter_rng, (batch_size, cfg.tuple_length, 2), -jitter, jitter + 1)
  corner = base[:, None, :] + shift
  return base, corner[..., 0], corner[..., 1]


def split_channels(rng, frames):
  """``(B, n, h, w, 3)``: per frame, one random channel copied to all three (channel splitting)."""
  channel = jax.random.randint(rng, frames.shape[:2], 0, frames.shape[-1])
  kept = jnp.take_along_axis(frames, channel[:, :, None, None, None], axis=-1)
  return jnp.repeat(kept, frames.shape[-1], axis=-1)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> the jittered, split, shuffled frames on the batch axis."""
  video = batch["video"]
  batch_size, num_frames, height, width, channels = video.shape
  _check(num_frames, height, width, cfg)
  n, size = cfg.tuple_length, cfg.crop_size
  frame_rng, crop_rng, split_rng, order_rng = jax.random.split(rng, 4)
  positions = sample_positions(frame_rng, batch_size, num_frames, cfg)
  frames = jnp.take_along_axis(video, positions[:, :, None, None, None], axis=1)
  _, top, left = crop_offsets(crop_rng, batch_size, height, width, cfg)
  crops = augment.crop(frames.reshape((batch_size * n, height, width, channels)), top.reshape(-1),
                       left.reshape(-1), size).reshape((batch_size, n, size, size, channels))
  if cfg.channel_split:
    crops = split_channels(split_rng, crops)
  labels, orders = sample_orders(order_rng, batch_size, n)
  shown = jnp.take_along_axis(crops, orders[:, :, None, None, None], axis=1)
  return {"image": shown.reshape((batch_size * n, size, size, channels))}, {"label": labels,
                                                                             "order": orders}


# --- Head and loss. --------------------------------------------------------------------------


class Head(nn.Module):
  """Per-frame fc6, fc7 on every pair of frames (shared), the pairs concatenated, classifier."""
  tuple_length: int
  frame_features: str
  fc6: int
  fc7: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = layers.frame_feature_vector(features, self.frame_features)
    if self.fc6:
      x = layers.dense_bn_relu(x, self.fc6, name="fc6", train=train)
    x = x.reshape(-1, self.tuple_length, x.shape[-1])
    first, second = (list(i) for i in zip(*itertools.combinations(range(self.tuple_length), 2)))
    pairs = jnp.concatenate([x[:, first], x[:, second]], axis=-1)  # (B, pairs, 2 * fc6).
    h = layers.dense_bn_relu(pairs.reshape(-1, pairs.shape[-1]), self.fc7, name="fc7", train=train)
    h = h.reshape(pairs.shape[0], len(first) * self.fc7)
    return nn.Dense(num_classes(self.tuple_length), name="classifier")(h)


def head(cfg) -> nn.Module:
  return Head(tuple_length=cfg.tuple_length, frame_features=cfg.frame_features, fc6=cfg.fc6, fc7=cfg.fc7)


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
