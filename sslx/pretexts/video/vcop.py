"""Video clip order prediction, VCOP (Xu, Xiao, Zhao, Shao, Xie & Zhuang,
"Self-supervised Spatiotemporal Learning via Video Clip Order Prediction",
CVPR 2019; official code xudejing/video-clip-order-prediction).

- A tuple is ``num_clips`` clips (paper: 3) of ``clip_frames`` consecutive
  frames (paper: 16), ``interval`` frames apart (paper: 8): clip i starts at
  ``start + i * (clip_frames + interval)``. The tuple spans
  ``num_clips * clip_frames + (num_clips - 1) * interval`` frames (64 with the
  paper's values) and starts at a uniformly random offset of the delivered
  window (the official code draws the start uniformly in the video).
- The clips are shown in one of the ``num_clips!`` orders, uniformly; the label
  is the order's index in ``itertools.permutations(range(num_clips))``, as in
  the official ``order_class_index``. Position j shows clip ``order[j]``.
- One 3D backbone with shared weights encodes every clip (clips sit on the
  batch axis). Pairwise feature extraction as in OPN and the official VCOPN:
  for every pair of shown positions i < j, ``concat(f_i, f_j)`` -> one shared
  Dense (512 in the paper, ``pair_width``) -> ReLU; all pair features
  concatenated -> dropout (0.5) -> Dense(num_clips!).
- Dropout needs a ``"dropout"`` PRNG stream when ``train=True``
  (``model.apply(..., rngs={"dropout": key})``); without one the head raises
  rather than silently skipping it. ``dropout = 0`` needs none.
- Differences from the official code: every clip here shares the host's one
  crop of the video (the official loader draws a new random crop per clip);
  frames are resampled to a fixed fps by the host, not the video's own rate.

Inputs: ``{"video": (B * num_clips, clip_frames, H, W, 3)}``, a tuple's clips
adjacent in shown order; targets: ``{"label": (B,), "order": (B, num_clips),
"start": (B,)}`` (the tuple's first frame in the delivered window).
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


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.vcop"
  cfg.num_clips = 3  # Paper and official code default (they also try 4 and 5).
  cfg.clip_frames = 16
  cfg.interval = 8
  cfg.pair_width = 512  # The official fc7 on each pair.
  cfg.dropout = 0.5  # Before the classifier, as in the official VCOPN.
  return cfg


def span(cfg) -> int:
  """Frames one tuple covers, first clip's first frame to last clip's last."""
  return cfg.num_clips * cfg.clip_frames + (cfg.num_clips - 1) * cfg.interval


def _too_short(cfg, num_frames) -> str:
  return (f"vcop needs video.num_frames >= clips*clip_frames + (clips-1)*interval = {span(cfg)}, got "
          f"{num_frames}: raise --config.video.num_frames or lower pretext.clip_frames/interval")


def validate(config) -> None:
  """Before compilation: the delivered window holds a whole tuple."""
  cfg = config.pretext
  if "video" not in config:
    raise ValueError("vcop needs video data (config.video): start the experiment config from "
                     "configs.base_video()")
  if not 2 <= cfg.num_clips <= 6:
    raise ValueError(f"vcop: num_clips {cfg.num_clips} must be in [2, 6] ({cfg.num_clips}! classes): "
                     f"the paper uses 3")
  if cfg.clip_frames < 1 or cfg.interval < 0:
    raise ValueError(f"vcop: clip_frames {cfg.clip_frames} must be >= 1 and interval {cfg.interval} "
                     f">= 0 (the paper: 16 and 8)")
  if not 0.0 <= cfg.dropout < 1.0:
    raise ValueError(f"vcop: dropout {cfg.dropout} must be in [0, 1) (the paper: 0.5)")
  if config.video.num_frames < span(cfg):
    raise ValueError(_too_short(cfg, config.video.num_frames))


@functools.lru_cache(maxsize=8)
def _orders(n: int) -> np.ndarray:
  return np.array(list(itertools.permutations(range(n))), dtype=np.int32)


def orders(n: int) -> np.ndarray:
  """``(n!, n)``: the class table, ``itertools.permutations`` order (class 0 is the true order)."""
  return _orders(n).copy()


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> ({"video": shuffled clips}, {"label", "order", "start"})."""
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  if num_frames < span(cfg):
    raise ValueError(_too_short(cfg, num_frames))
  start_rng, label_rng = jax.random.split(rng)
  start = jax.random.randint(start_rng, (batch_size,), 0, num_frames - span(cfg) + 1, dtype=jnp.int32)
  label = jax.random.randint(label_rng, (batch_size,), 0, math.factorial(cfg.num_clips), dtype=jnp.int32)
  order = jnp.asarray(orders(cfg.num_clips))[label]  # (B, K): position j shows clip order[j].
  clip_start = start[:, None] + order * (cfg.clip_frames + cfg.interval)
  frames = clip_start[:, :, None] + jnp.arange(cfg.clip_frames)  # (B, K, clip_frames)
  clips = jax.vmap(lambda v, f: v[f])(video, frames)  # (B, K, clip_frames, H, W, 3)
  return {"video": clips.reshape((-1,) + clips.shape[2:])}, {
      "label": label, "order": order, "start": start}


unshuffle = augment.unshuffle  # The tests restore what the network was shown.


# --- Head and loss. --------------------------------------------------------------------------


class Head(nn.Module):
  """Pairwise features (shared Dense + ReLU on each concatenated pair), dropout, classifier."""
  num_clips: int
  pair_width: int
  dropout: float

  @nn.compact
  def __call__(self, features, *, train: bool):
    x = features["pooled"].astype(jnp.float32)
    x = x.reshape(-1, self.num_clips, x.shape[-1])
    first, second = np.triu_indices(self.num_clips, 1)  # Pairs i < j, row-major as in VCOPN.
    pairs = jnp.concatenate([x[:, first], x[:, second]], axis=-1)  # (B, pairs, 2C)
    pairs = nn.relu(nn.Dense(self.pair_width, name="pair_fc")(pairs))
    h = pairs.reshape(pairs.shape[0], -1)
    if train and self.dropout > 0:
      if not self.has_rng("dropout"):
        raise ValueError(f"vcop: dropout {self.dropout} needs a 'dropout' PRNG stream when training: "
                         f"apply the model with rngs={{'dropout': key}} or set "
                         f"--config.pretext.dropout=0")
      h = nn.Dropout(self.dropout, deterministic=False)(h)
    return nn.Dense(math.factorial(self.num_clips), name="classifier")(h)


def head(cfg) -> nn.Module:
  return Head(num_clips=cfg.num_clips, pair_width=cfg.pair_width, dropout=cfg.dropout)


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
