"""Single-view time-contrastive network (Sermanet, Lynch, Chebotar, Hsu, Jang, Schaal & Levine,
"Time-Contrastive Networks: Self-Supervised Learning from Video", ICRA 2018; official code
tensorflow/models research/tcn, ``svtcn_loss.py``).

Frames close in time should embed close together, frames of the same video farther apart in
time should embed far apart: the embedding has to capture what changes (the state of the
scene), not what stays (the background, the identity of the video).

- Time is set in seconds and converted with the delivered frame rate (``fps / frame_stride``):
  a positive lies within ``positive_seconds`` of its anchor (paper: 0.2 s, 6 frames at 30 fps),
  a negative of the same video more than ``negative_seconds`` away (paper: 0.4 s, 12 frames).
  Frames in between are neither.
- Sampling, on the device: each clip gives ``pairs_per_clip`` anchors, each at a uniform
  position of the delivered window, and for each a positive at a uniform offset of 1 to the
  positive radius either way (inside the window). All ``2 * pairs_per_clip`` frames of a clip
  then enter the loss as the official code does: every frame is an anchor, every other frame
  of the clip within the positive radius a positive, every one beyond the negative radius a
  negative (single view: only the same video; ``negatives_from_other_clips`` also lets other
  clips' frames be negatives, the official multi-sequence mode).
- Embedding: the backbone's pooled features, a fully connected layer to ``embedding_dim`` (32 by
  default, the paper's), L2-normalised (paper: Inception features, two convolutions, spatial
  softmax, FC 32; the official code normalises for the triplet loss).
- Loss: triplet with semi-hard negative mining on squared distances, margin 0.2 (the paper's),
  averaged over every (anchor, positive) pair (``losses.triplet_semihard_masked``); or
  ``loss = "npairs"``: each anchor picks its own positive among all positives of the batch that
  are valid negatives for it (``losses.npairs``, softmax at ``npairs_temperature``; the
  temperature is ours, since normalised dot products are bounded).

Defaults that differ from the paper: a small backbone on the frames the host delivers (a
whole crop), and pairs sampled within one delivered window of a clip rather than from a whole
demonstration video.

Inputs: ``{"image": (B * 2P, H, W, 3)}``, clip b's frames at rows ``b * 2P ... b * 2P + 2P - 1``
(anchor, positive, anchor, positive, ...); targets: ``{"time": (B, 2P)}`` (window positions,
delivered frames), ``{"clip": (B, 2P)}`` (the batch row each frame came from).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses
from sslx.pretexts.video import check_video_and_rate

LOSSES = ("triplet", "npairs")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.time_contrastive"
  cfg.fps = 10.0  # Delivered frames per second (the config sets video.fps / video.frame_stride).
  cfg.positive_seconds = 0.2  # The paper's positive range (6 frames at 30 fps).
  cfg.negative_seconds = 0.4  # The paper's negative margin (12 frames at 30 fps).
  cfg.pairs_per_clip = 4
  cfg.embedding_dim = 32  # The paper's.
  cfg.loss = "triplet"  # Or "npairs".
  cfg.margin = 0.2  # The paper's triplet margin.
  cfg.npairs_temperature = 0.1
  cfg.negatives_from_other_clips = False  # Single view: negatives come from the same video.
  return cfg


def radii(cfg) -> tuple[int, int]:
  """(positive radius, negative radius) in delivered frames."""
  return int(round(cfg.positive_seconds * cfg.fps)), int(round(cfg.negative_seconds * cfg.fps))


def _check(cfg, num_frames: int) -> None:
  positive, negative = radii(cfg)
  if positive < 1:
    raise ValueError(f"time_contrastive: positive_seconds {cfg.positive_seconds} is under one frame at "
                     f"{cfg.fps:g} delivered fps: raise --config.pretext.positive_seconds to >= "
                     f"{0.5 / cfg.fps:.3f} or deliver more frames per second")
  if negative <= positive:
    raise ValueError(f"time_contrastive: negative_seconds {cfg.negative_seconds} gives a negative radius of "
                     f"{negative} frames, not beyond the positive radius {positive}: raise "
                     f"--config.pretext.negative_seconds")
  if num_frames < negative + 2:
    raise ValueError(f"time_contrastive needs video.num_frames >= negative radius + 2 = {negative + 2} "
                     f"(a frame more than {negative} frames from another), got {num_frames}: raise "
                     f"--config.video.num_frames or lower --config.pretext.negative_seconds")
  if cfg.loss not in LOSSES:
    raise ValueError(f"time_contrastive: unknown loss {cfg.loss!r}: use one of {LOSSES}")
  if cfg.pairs_per_clip < 1:
    raise ValueError(f"time_contrastive: pairs_per_clip {cfg.pairs_per_clip}: set it to 1 or more")


def validate(config) -> None:
  """Before compilation: the radii in frames, the window that holds a negative, the loss."""
  check_video_and_rate(config, "time_contrastive")
  _check(config.pretext, config.video.num_frames)


def sample_times(rng, batch_size: int, num_frames: int, cfg):
  """``(B, 2P)`` int32 window positions: anchor, its positive, anchor, its positive, ..."""
  _check(cfg, num_frames)
  positive_radius, _ = radii(cfg)
  shape = (batch_size, cfg.pairs_per_clip)
  anchor_rng, offset_rng = jax.random.split(rng)
  anchor = jax.random.randint(anchor_rng, shape, 0, num_frames)
  # An offset in [-r, r] without 0 whose frame is inside the window: a uniform choice among the
  # valid offsets, by the largest random key over them.
  offsets = jnp.concatenate([jnp.arange(-positive_radius, 0), jnp.arange(1, positive_radius + 1)])
  target = anchor[..., None] + offsets
  inside = (target >= 0) & (target < num_frames)
  keys = jnp.where(inside, jax.random.uniform(offset_rng, shape + offsets.shape), -1.0)
  positive = jnp.take_along_axis(target, jnp.argmax(keys, axis=-1)[..., None], axis=-1)[..., 0]
  return jnp.stack([anchor, positive], axis=-1).reshape(batch_size, 2 * cfg.pairs_per_clip).astype(jnp.int32)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> the sampled frames on the batch axis, their times."""
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  times = sample_times(rng, batch_size, num_frames, cfg)
  frames = jnp.take_along_axis(video, times[:, :, None, None, None], axis=1)
  clip = jnp.broadcast_to(jnp.arange(batch_size, dtype=jnp.int32)[:, None], times.shape)
  return {"image": frames.reshape((-1,) + video.shape[2:])}, {"time": times, "clip": clip}


def pair_masks(times, clips, cfg):
  """Flat ``(N,)`` times and clips -> (positives, negatives), ``(N, N)`` boolean: j is a
  positive of anchor i within the positive radius of the same clip (j != i); a negative
  beyond the negative radius of the same clip (or, with negatives_from_other_clips, any frame
  of another clip)."""
  positive_radius, negative_radius = radii(cfg)
  gap = jnp.abs(times[:, None] - times[None, :])
  same = clips[:, None] == clips[None, :]
  positives = same & (gap <= positive_radius) & ~jnp.eye(times.shape[0], dtype=bool)
  negatives = same & (gap > negative_radius)
  if cfg.negatives_from_other_clips:
    negatives = negatives | ~same
  return positives, negatives


class Head(nn.Module):
  """Pooled features -> FC ``embedding_dim`` -> L2-normalised embedding."""
  embedding_dim: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    x = nn.Dense(self.embedding_dim, name="embedding")(features["pooled"].astype(jnp.float32))
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def head(cfg) -> nn.Module:
  return Head(embedding_dim=cfg.embedding_dim)


def loss(outputs, targets, *, cfg):
  times, clips = targets["time"].reshape(-1), targets["clip"].reshape(-1)
  positives, negatives = pair_masks(times, clips, cfg)
  if cfg.loss == "npairs":
    anchors, partners = outputs[0::2], outputs[1::2]  # Rows alternate anchor, positive.
    # Positive j is a candidate for anchor i when it is a negative of i.
    valid = negatives[0::2, 1::2]
    value = losses.npairs(anchors=anchors, positives=partners, valid=valid, temperature=cfg.npairs_temperature)
  else:
    value = losses.triplet_semihard_masked(embeddings=outputs, positives=positives, negatives=negatives,
                                           margin=cfg.margin)
  # How often a frame's nearest frame in embedding (among its positives and negatives) is a positive;
  # the embeddings are unit vectors, so the nearest is the largest dot product.
  similarity = outputs @ outputs.T
  considered = positives | negatives
  nearest = jnp.argmax(jnp.where(considered, similarity, -jnp.inf), axis=-1)
  has_both = jnp.any(positives, axis=-1) & jnp.any(negatives, axis=-1)
  hit = jnp.take_along_axis(positives, nearest[:, None], axis=-1)[:, 0]
  accuracy = jnp.sum(hit & has_both) / jnp.maximum(jnp.sum(has_both), 1)
  return value, {"accuracy": accuracy}
