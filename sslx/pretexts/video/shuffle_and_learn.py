"""Shuffle and Learn: temporal order verification (Misra, Zitnick & Hebert,
"Shuffle and Learn: Unsupervised Learning using Temporal Order Verification",
ECCV 2016; official code imisra/shuffle-tuple).

- From a high-motion window (chosen by the host from mean optical-flow
  magnitude, as the paper samples tuples where motion is high) five frame
  positions a < b < c < d < e are drawn per example, on the device.
- Positive (label 1, "in order"): (b, c, d), or its reverse (d, c, b), which the
  paper counts as correctly ordered too, each with probability 1/2.
  Negatives (label 0): (b, a, d) or (b, e, d), each with probability 1/2: the
  same first and last frame, only the middle one comes from outside [b, d], so
  the network must reason about the middle frame against its two neighbours,
  not about the endpoints.
- ``reverse_negatives`` (default on, our addition) shows a negative backwards
  with probability 1/2 as well, (d, a, b) or (d, e, b): with reversed positives
  only, a backwards tuple would always be a positive and the arrow of time
  alone would give away part of the labels. ``False`` gives the paper's
  negatives exactly.
- ``negative_fraction = 0.75``: the paper's best ratio (25% positives); each
  example is a negative with that probability.
- Gaps, in frames as the host delivers them (``frame_stride`` apart at a fixed
  fps): the positive's span ``d - b`` is at most ``tau_max`` and the negatives'
  outside frames are at least ``tau_min`` away from the tuple, ``b - a >=
  tau_min`` and ``e - d >= tau_min``. The paper uses tau_max = 60 and tau_min =
  15 frames of UCF101 at 25 fps, i.e. 2.4 s and 0.6 s; at r delivered frames
  per second that is 2.4 r and 0.6 r. The defaults, tau_max = 8 and tau_min = 2
  delivered frames, keep its 4:1 ratio at a third of its durations for
  configs.base_video's 10 fps (0.8 s and 0.2 s): egogestar's gestures last 1-9 s,
  and the 13-frame window these need keeps 127 of its 132 clips, where the
  paper's durations (a 37-frame window) would keep 43.
- The window needs ``2 * tau_min + 3`` frames at least (a, tau_min - 1 frames,
  b, c, d, tau_min - 1 frames, e) and ``2 * tau_min + tau_max + 1`` for every
  positive span up to tau_max to be drawn. Drawing: the span ``g = d - b``
  uniform in [2, min(tau_max, T - 1 - 2 tau_min)], then b uniform among the
  starts that leave room for a and e, c uniform strictly between b and d, a
  uniform in [0, b - tau_min], e uniform in [d + tau_min, T - 1].
- Frames are used whole, at the size the host delivers them (the paper takes
  227 px crops of 340 px frames; cropping, flipping and resizing are the
  host's, one per clip, so all three frames share them).
- One frame encoder with shared weights (the backbone over the three frames on
  the batch axis); per frame fc6 (Dense, BatchNorm, ReLU, shared) on the
  flattened last block, the three frame features concatenated in shown order,
  then a binary classifier (paper: CaffeNet fc7 of each frame, 4096-d with
  BatchNorm in the official prototxt, concatenated, fc8 with 2 outputs).
- ``fusion`` (default 0, the paper's head): a hidden layer (Dense, BatchNorm,
  ReLU) of that width on the concatenated frame features before the classifier.
  Our addition, for small networks and data: the paper's fc8 is linear on the
  concatenation, so its score is a sum of one term per shown frame, and such a
  sum cannot tell "between" from "outside" in general. For one clip whose
  frames t = 0..4 change steadily, the positives (0, 1, 2) and (2, 3, 4) and the
  negatives (0, 3, 2) and (2, 1, 4) need s(1) > s(3) from the first pair and
  s(3) > s(1) from the second, where s is the middle frame's term. CaffeNet's
  4096-d features from UCF101 find other cues; a small ConvNet on 99 gesture
  clips stayed at chance on held-out clips (docs/results.md), so the egogestar
  config sets ``fusion``.

Inputs: ``{"image": (B * 3, H, W, 3)}``, each example's three frames adjacent in
shown order; targets: ``{"label": (B,)}`` (1 ordered, 0 shuffled) and
``{"frames": (B, 3)}``, the window positions shown.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses
from sslx.models import layers

TUPLE = 3  # Frames shown per example.


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.shuffle_and_learn"
  cfg.tau_max = 8  # Max d - b, delivered frames (paper: 60 frames at 25 fps).
  cfg.tau_min = 2  # Min b - a and e - d, delivered frames (paper: 15 frames at 25 fps).
  cfg.negative_fraction = 0.75  # Paper's best: 3 negatives per positive.
  cfg.reverse_negatives = True  # Also show negatives backwards (see the docstring).
  cfg.frame_features = "last_block"  # fc6's input: "last_block" (flattened, like pool5) or "pooled".
  cfg.fc6 = 256  # Per-frame hidden width (paper: fc6 and fc7 of 4096); 0: no hidden layer.
  cfg.fusion = 0  # Hidden width on the concatenated frames (see the docstring); 0: the paper's linear fc8.
  return cfg


def min_frames(cfg) -> int:
  """The shortest window the sampling rule works in: a, b, c, d, e with the tau_min gaps."""
  return 2 * cfg.tau_min + 3


def _check(num_frames: int, cfg) -> None:
  if cfg.tau_min < 1 or cfg.tau_max < 2:
    raise ValueError(f"shuffle_and_learn needs tau_min >= 1 and tau_max >= 2 (room for a middle frame), "
                     f"got {cfg.tau_min} and {cfg.tau_max}: the paper's ratio is tau_max = 4 * tau_min")
  if not 0.0 <= cfg.negative_fraction <= 1.0:
    raise ValueError(f"shuffle_and_learn: negative_fraction must be in [0, 1], got "
                     f"{cfg.negative_fraction}: set --config.pretext.negative_fraction=0.75 (the paper's)")
  if num_frames < min_frames(cfg):
    raise ValueError(f"shuffle_and_learn needs video.num_frames >= 2*tau_min+3 = {min_frames(cfg)}, "
                     f"got {num_frames}: raise --config.video.num_frames or lower pretext.tau_min")


def validate(config) -> None:
  """Before compilation: the delivered window fits the sampling rule."""
  _check(config.video.num_frames, config.pretext)
  if config.pretext.frame_features not in layers.FRAME_FEATURES:
    raise ValueError(f"shuffle_and_learn: unknown frame_features {config.pretext.frame_features!r}: "
                     f"use one of {layers.FRAME_FEATURES}")


# --- Tuples. ---------------------------------------------------------------------------------


def sample_positions(rng, batch_size: int, num_frames: int, cfg):
  """``(B, 5)`` int32 window positions a < b < c < d < e per example (see the docstring)."""
  _check(num_frames, cfg)
  tau_min = cfg.tau_min
  max_gap = min(cfg.tau_max, num_frames - 1 - 2 * tau_min)
  gap_rng, b_rng, c_rng, a_rng, e_rng = jax.random.split(rng, 5)
  shape = (batch_size,)
  gap = jax.random.randint(gap_rng, shape, 2, max_gap + 1)
  b = jax.random.randint(b_rng, shape, tau_min, num_frames - tau_min - gap)
  d = b + gap
  c = jax.random.randint(c_rng, shape, b + 1, d)
  a = jax.random.randint(a_rng, shape, 0, b - tau_min + 1)
  e = jax.random.randint(e_rng, shape, d + tau_min, num_frames)
  return jnp.stack([a, b, c, d, e], axis=1).astype(jnp.int32)


def make_tuples(rng, batch_size: int, num_frames: int, cfg):
  """Positions, the three shown frames and labels, without touching pixels.

  Returns ``{"positions": (B, 5) a..e, "frames": (B, 3), "label": (B,)}``; the
  shown frames are ``(b, x, d)`` or reversed, x = c for a positive (label 1),
  a or e for a negative (label 0).
  """
  pos_rng, label_rng, side_rng, reverse_rng = jax.random.split(rng, 4)
  positions = sample_positions(pos_rng, batch_size, num_frames, cfg)
  a, b, c, d, e = (positions[:, i] for i in range(5))
  negative = jax.random.bernoulli(label_rng, cfg.negative_fraction, (batch_size,))
  outside = jnp.where(jax.random.bernoulli(side_rng, 0.5, (batch_size,)), e, a)
  middle = jnp.where(negative, outside, c)
  reverse = jax.random.bernoulli(reverse_rng, 0.5, (batch_size,))
  if not cfg.reverse_negatives:
    reverse = reverse & ~negative
  first, last = jnp.where(reverse, d, b), jnp.where(reverse, b, d)
  frames = jnp.stack([first, middle, last], axis=1)
  return {"positions": positions, "frames": frames, "label": (~negative).astype(jnp.int32)}


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> three frames per example on the batch axis."""
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  tuples = make_tuples(rng, batch_size, num_frames, cfg)
  shown = jnp.take_along_axis(video, tuples["frames"][:, :, None, None, None], axis=1)
  inputs = shown.reshape((batch_size * TUPLE,) + video.shape[2:])
  return {"image": inputs}, {"label": tuples["label"], "frames": tuples["frames"]}


# --- Head and loss. --------------------------------------------------------------------------


class Head(nn.Module):
  """Per-frame fc6 (shared), the three frames concatenated in shown order, an optional fusion
  layer, binary classifier."""
  frame_features: str
  fc6: int
  fusion: int = 0

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = layers.frame_feature_vector(features, self.frame_features)
    if self.fc6:
      x = layers.dense_bn_relu(x, self.fc6, name="fc6", train=train)
    x = x.reshape(-1, TUPLE * x.shape[-1])
    if self.fusion:
      x = layers.dense_bn_relu(x, self.fusion, name="fusion", train=train)
    return nn.Dense(2, name="classifier")(x)


def head(cfg) -> nn.Module:
  return Head(frame_features=cfg.frame_features, fc6=cfg.fc6, fusion=cfg.get("fusion", 0))


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
