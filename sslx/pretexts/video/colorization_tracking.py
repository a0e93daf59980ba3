"""Tracking by colorization (Vondrick, Shrivastava, Fathi, Guadarrama & Murphy, "Tracking Emerges
by Colorizing Videos", ECCV 2018).

Colour is temporally coherent, so copying it from earlier frames of a video is a pretext whose
solution is to find, for every place of the target frame, the place of the references it came
from: tracking emerges from the embedding that points.

- Frames: 3 reference frames and 1 target frame (the paper's), all greyscale (the scaled L of
  CIE Lab, as ``image.colorization``), through one shared embedding network. Their times are set
  in seconds and converted with the delivered frame rate: references at 0, 0.2 and 0.4 s, the
  target at 0.8 s, at a random position of the delivered window. The paper does not state its
  spacing; this is the spacing of the frame skips (0, 4, 4, 8 at Kinetics' ~25 fps: frames 0,
  5, 10 and 19) of a public re-implementation (wbaek/tracking_via_colorization), rounded to
  0.2 s steps (frames 0, 2, 4 and 8 at 10 fps).
- Embedding: a dense map of ``embedding_dim`` (64, the paper's) vectors on the backbone's
  deepest block, through one 1x1 convolution with BatchNorm and ReLU and a linear 1x1 layer
  (paper: ResNet-18 at stride 8 plus five 3D convolutions across the four frames; here a small
  2D backbone at stride 4, per frame, so that the backbone alone is what is evaluated).
- Pointer: each target location i points at every location j of the three references with
  A_ij = softmax_j(f_i . f_j / T), T = 1 in training (``temperature``; propagation sets its own),
  and predicts the colour labels it points at, sum_j A_ij c_j (``copy_labels``).
- Colours: quantised into 16 clusters (the paper's) by k-means in the ab plane of Lab over the
  training frames' colours at the embedding map's resolution (area-averaged over each cell, as
  the labels are). The centroids are explicit pretext state: ``collect`` takes a fixed set of
  cells of every training clip, ``update_state`` runs k-means (k-means++ seeding, Lloyd
  iterations) once before the first step.
- Loss: cross-entropy of the copied distribution against the target's own cluster
  (``losses.pointer_xent``); a target cell whose cluster no reference cell carries cannot be
  copied and leaves the mean (the ``copyable`` metric is their complement's share).

Inputs: ``{"lightness": (B * 4, H, W, 1)}``, L / 50 - 1, frames of clip b at rows 4b ... 4b + 3
(references, then the target); targets: ``{"colour": (B, 4, h, w)}`` cluster indices on the
embedding grid (h = H / ``label_stride``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import losses
from sslx.models.layers import ConvBN
from sslx.pretexts.image import colorization
from sslx.pretexts.video import check_video_and_rate


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.colorization_tracking"
  cfg.fps = 10.0  # Delivered frames per second (the config sets video.fps / video.frame_stride).
  cfg.reference_seconds = (0.0, 0.2, 0.4)  # Three references (the paper's count).
  cfg.target_seconds = 0.8  # The target, after the references.
  cfg.num_colours = 16  # k-means clusters in ab (the paper's).
  cfg.label_stride = 4  # Pixels per embedding cell: the backbone's deepest block (convnet: 4).
  cfg.embedding_dim = 64  # The paper's.
  cfg.temperature = 1.0  # Pointer softmax in training (the paper's).
  cfg.samples_per_clip = 256  # Cells per training clip that k-means sees.
  cfg.kmeans_iterations = 50
  return cfg


def frame_offsets(cfg) -> tuple[int, ...]:
  """The references' and the target's positions in delivered frames, from the first reference."""
  seconds = tuple(cfg.reference_seconds) + (cfg.target_seconds,)
  return tuple(int(round((s - seconds[0]) * cfg.fps)) for s in seconds)


def _check(cfg, num_frames: int, image_size: int | None = None) -> None:
  offsets = frame_offsets(cfg)
  if len(offsets) < 2 or any(b <= a for a, b in zip(offsets, offsets[1:])):
    raise ValueError(f"colorization_tracking: reference_seconds {tuple(cfg.reference_seconds)} and "
                     f"target_seconds {cfg.target_seconds} give frames {offsets} at {cfg.fps:g} fps, not "
                     f"strictly increasing: space them by at least {1 / cfg.fps:.3f} s, the target last")
  if num_frames < offsets[-1] + 1:
    raise ValueError(f"colorization_tracking needs video.num_frames >= {offsets[-1] + 1} (references and "
                     f"target span {offsets[-1]} frames at {cfg.fps:g} fps), got {num_frames}: raise "
                     f"--config.video.num_frames or bring --config.pretext.target_seconds closer")
  if cfg.num_colours < 2:
    raise ValueError(f"colorization_tracking: num_colours {cfg.num_colours}: set 2 or more (the paper: 16)")
  if image_size is not None and (image_size % cfg.label_stride or image_size // cfg.label_stride < 4):
    raise ValueError(f"colorization_tracking: label_stride {cfg.label_stride} gives no embedding map of at "
                     f"least 4 x 4 whole cells on {image_size} px frames: set --config.pretext.label_stride "
                     f"to the backbone's stride (a divisor of image_size, at most image_size / 4)")


def validate(config) -> None:
  """Before compilation: the frame rate, a window that holds the references and the target,
  an embedding grid that fits the frames."""
  check_video_and_rate(config, "colorization_tracking")
  _check(config.pretext, config.video.num_frames, config.image_size)


def backbone_input(images, cfg):
  """The backbone sees greyscale: the scaled L channel (evaluation feeds the same)."""
  del cfg
  return colorization.lightness_input(images)


# ---------------------------------------------------------------- colours


def cell_ab(frames, stride: int):
  """RGB in [0, 1] ``(..., H, W, 3)`` -> ab ``(..., H / stride, W / stride, 2)``, area-averaged."""
  lead, (h, w) = frames.shape[:-3], frames.shape[-3:-1]
  ab = colorization.rgb_to_lab(frames.reshape((-1, h, w, 3)))[..., 1:]
  ab = colorization.downsample_ab(ab, stride)
  return ab.reshape(lead + ab.shape[1:])


def quantize(ab, centroids):
  """``(..., 2)`` ab -> ``(...,)`` index of the nearest centroid ``(K, 2)``."""
  d2 = (ab[..., :1] - centroids[:, 0]) ** 2 + (ab[..., 1:] - centroids[:, 1]) ** 2
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def init_state(cfg):
  """Before k-means has run: centroids on a circle of radius 30 in ab (a placeholder that gives
  ``make_inputs`` labels outside training; the trainer replaces it before step 1)."""
  angle = 2 * np.pi * np.arange(cfg.num_colours) / cfg.num_colours
  return {"centroids": jnp.asarray(30.0 * np.stack([np.cos(angle), np.sin(angle)], -1), jnp.float32)}


def collect(predict, batch, cfg):
  """Per clip: the ab of ``samples_per_clip`` cells spread evenly over its frames, ``(B, S, 2)``."""
  del predict  # The colours are a property of the data, not of the model.
  video = batch["video"]
  ab = cell_ab(video.reshape((video.shape[0], -1) + video.shape[-3:]), cfg.label_stride)
  ab = ab.reshape(ab.shape[0], -1, 2)
  picks = np.linspace(0, ab.shape[1] - 1, min(cfg.samples_per_clip, ab.shape[1])).round().astype(np.int32)
  return {"ab": ab[:, picks]}


def kmeans(points: np.ndarray, k: int, *, iterations: int, seed: int) -> np.ndarray:
  """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007), ``(N, 2)`` -> ``(k, 2)``;
  an emptied cluster is re-seeded at the point farthest from its centroid."""
  rng = np.random.default_rng(seed)
  points = np.asarray(points, np.float64)
  centroids = [points[rng.integers(len(points))]]
  d2 = np.sum((points - centroids[0]) ** 2, axis=-1)
  for _ in range(1, k):
    centroids.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    d2 = np.minimum(d2, np.sum((points - centroids[-1]) ** 2, axis=-1))
  centroids = np.stack(centroids)
  for _ in range(iterations):
    dist = np.sum((points[:, None] - centroids[None]) ** 2, axis=-1)
    assign = np.argmin(dist, axis=-1)
    nearest = dist[np.arange(len(points)), assign]
    for c in range(k):
      members = assign == c
      if members.any():
        centroids[c] = points[members].mean(axis=0)
      else:
        far = int(np.argmax(nearest))
        centroids[c], nearest[far] = points[far], 0.0
  return centroids


def update_state(state, collected, *, rng, cfg):
  """The collected ab values -> ``num_colours`` k-means centroids (host-side, numpy)."""
  del state
  points = np.asarray(collected["ab"], np.float64).reshape(-1, 2)
  points = points[np.all(np.isfinite(points), axis=-1)]
  distinct = len(np.unique(np.round(points, 1), axis=0))
  if distinct < cfg.num_colours:
    raise ValueError(f"colorization_tracking: the training frames have {distinct} distinct colours (ab, 0.1 "
                     f"steps), fewer than num_colours {cfg.num_colours}: train on colour video or lower "
                     f"--config.pretext.num_colours")
  chromatic = np.mean(np.hypot(points[:, 0], points[:, 1]) > 5.0)
  if chromatic < 0.01:
    raise ValueError(f"colorization_tracking: the training frames carry no colour ({100 * chromatic:.2f}% of "
                     f"{len(points)} cells are more than 5 ab units from grey, under 1%): train on colour video")
  seed = int(jax.random.randint(rng, (), 0, np.iinfo(np.int32).max))
  centroids = kmeans(points, cfg.num_colours, iterations=cfg.kmeans_iterations, seed=seed)
  return {"centroids": jnp.asarray(centroids, jnp.float32)}


def update_interval(config, num_examples: int | None = None) -> int:
  """The clusters are computed once, before the first step."""
  del config, num_examples
  return 0


# ---------------------------------------------------------------- the task


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) in [0, 1] -> ({"lightness"}, {"colour"}): references and
  target at ``frame_offsets`` from a uniform start in the window, their colour clusters per cell."""
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  _check(cfg, num_frames)
  offsets = frame_offsets(cfg)
  start = jax.random.randint(rng, (batch_size, 1), 0, num_frames - offsets[-1])
  frames = jnp.take_along_axis(video, (start + jnp.asarray(offsets, jnp.int32))[:, :, None, None, None], axis=1)  # (B, 4, H, W, 3)
  if frames.shape[2] % cfg.label_stride or frames.shape[3] % cfg.label_stride:
    raise ValueError(f"colorization_tracking: label_stride {cfg.label_stride} does not divide the frame size "
                     f"{frames.shape[2]} x {frames.shape[3]}: set --config.pretext.label_stride")
  state = init_state(cfg) if state is None else state
  colour = quantize(cell_ab(frames, cfg.label_stride), jnp.asarray(state["centroids"], jnp.float32))
  lightness = colorization.lightness_input(frames.reshape((-1,) + frames.shape[2:]))
  return {"lightness": lightness}, {"colour": colour}


class Head(nn.Module):
  """Deepest block ``(N, h, w, C)`` -> embedding map ``(N, h, w, embedding_dim)``."""
  embedding_dim: int = 64

  @nn.compact
  def __call__(self, features, *, train: bool):
    blocks = sorted(k for k in features if k.startswith("block"))
    x = ConvBN(self.embedding_dim, 1, name="hidden")(features[blocks[-1]].astype(jnp.float32), train=train)
    return nn.Dense(self.embedding_dim, name="embedding")(x)


def head(cfg) -> nn.Module:
  return Head(embedding_dim=cfg.embedding_dim)


class Model(nn.Module):
  """The backbone sees ``inputs["lightness"]`` (grey frames); the head embeds its deepest map."""
  backbone: nn.Module
  head: nn.Module

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    features = self.backbone(inputs["lightness"], train=train)
    return self.head(features, train=train), features


def model(backbone, cfg) -> nn.Module:
  return Model(backbone=backbone, head=head(cfg))


def pointer_logits(target, references, temperature: float):
  """``(B, T, D)`` target and ``(B, R, D)`` reference embeddings -> ``(B, T, R)`` f_i . f_j / T."""
  return jnp.einsum("btd,brd->btr", target.astype(jnp.float32), references.astype(jnp.float32)) / temperature


def copy_labels(logits, reference_labels):
  """The pointer's prediction: ``(B, T, R)`` logits and ``(B, R, K)`` reference label
  distributions (one-hot colours, or soft masks) -> ``(B, T, K)`` sum_j softmax(logits)_j l_j."""
  return jnp.einsum("btr,brk->btk", jax.nn.softmax(logits, axis=-1), reference_labels.astype(jnp.float32))


def loss(outputs, targets, *, cfg):
  colour = targets["colour"]
  batch_size, num_frames, h, w = colour.shape
  if outputs.shape[1:3] != (h, w):
    raise ValueError(f"colorization_tracking: the embedding map is {outputs.shape[1]} x {outputs.shape[2]} but "
                     f"the colour labels {h} x {w}: set --config.pretext.label_stride to the backbone's stride")
  embeddings = outputs.reshape(batch_size, num_frames, h * w, -1)
  references = embeddings[:, :-1].reshape(batch_size, (num_frames - 1) * h * w, -1)
  logits = pointer_logits(embeddings[:, -1], references, cfg.temperature)
  reference_colour = colour[:, :-1].reshape(batch_size, -1)
  target_colour = colour[:, -1].reshape(batch_size, -1)
  value = losses.pointer_xent(logits=logits, reference_labels=reference_colour, target_labels=target_colour)
  reference_one_hot = jax.nn.one_hot(reference_colour, cfg.num_colours)
  copied = copy_labels(logits, reference_one_hot)
  # A target cell is copyable when its colour is anywhere in the references: (B, K) presence,
  # not another (B, T, R) comparison.
  present = jnp.max(reference_one_hot, axis=1)
  copyable = jnp.take_along_axis(present, target_colour, axis=1) > 0
  return value, {"accuracy": jnp.mean(jnp.argmax(copied, axis=-1) == target_colour),
                 "copyable": jnp.mean(copyable)}
