"""Odd-one-out networks, O3N (Fernando, Bilen, Gavves & Gould, "Self-Supervised
Video Representation Learning With Odd-One-Out Networks", CVPR 2017).

- A question is N + 1 elements (subsequences) of one video (default N + 1 = 6):
  N with their frames in temporal order and one, the odd one, with its frames
  in a wrong order. The task is (N + 1)-way: which position holds the odd one.
  The odd position is uniform over the N + 1 positions.
- Each element is ``element_frames`` frames at sorted random distinct
  positions of the window the host delivered; elements may share frames. The
  odd element's frames are then shown in a uniformly random non-identity order
  (a plain shuffle could return the true order and make the label wrong).
- Each element enters the network as one dynamic image (Bilen, Fernando,
  Gavves, Vedaldi & Gould, CVPR 2016), as in the paper: approximate rank
  pooling of its frames with weights ``alpha_t = 2t - W - 1`` (t = 1..W in the
  order shown, so the weights sum to zero and a still element pools to zero),
  then rescaled per image to [0, 1] by its min and max, as the dynamic-image
  code rescales to an image range. The rescaling divides by at least
  ``MIN_RANGE`` so an element with no motion stays a zero image instead of
  amplified rounding noise. Only ``input = "dynamic_image"`` is implemented.
- One 2D backbone with shared weights encodes the N + 1 dynamic images (they
  sit on the batch axis); per element a Dense + ReLU (``element_fc``; the paper
  fuses CaffeNet's fully connected activations, this layer stands in for
  them), then fusion across elements and a linear (N + 1)-way classifier.
  ``fusion = "sum_of_differences"`` (the paper's best): the sum over all pairs
  i < j of ``f_j - f_i``, which equals ``sum_k (2k - N - 2) f_k`` (k = 1..N+1)
  i.e. approximate rank pooling of the element features; ``"concat"``: the
  features concatenated in shown order.

Inputs: ``{"image": (B * (N + 1), H, W, 3)}``, one question's dynamic images
adjacent; targets: ``{"label": (B,)}``, the odd position, and ``{"positions":
(B, N + 1, W)}``, the frame indices (in the delivered window) each element
shows, in the order shown.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses

FUSIONS = ("sum_of_differences", "concat")
INPUTS = ("dynamic_image",)
MAX_ELEMENT_FRAMES = 12  # 12! < 2**31: the non-identity order is drawn as an int32 rank.
MIN_RANGE = 1e-3  # Floor of the dynamic image's (max - min) when rescaling; frames are in [0, 1].


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.o3n"
  cfg.num_elements = 6  # N + 1; the paper's default question size.
  cfg.element_frames = 6  # W, frames per element (our default for ~16-frame windows).
  cfg.input = "dynamic_image"  # The paper's input; the only one implemented.
  cfg.fusion = "sum_of_differences"  # The paper's best; or "concat".
  cfg.element_fc = 128  # Per-element Dense + ReLU before fusion (0: fuse the pooled features).
  return cfg


def validate(config) -> None:
  """Before compilation: the delivered window holds an element, and known options."""
  cfg = config.pretext
  if "video" not in config:
    raise ValueError("o3n needs video data (config.video): start the experiment config from "
                     "configs.base_video()")
  if cfg.input not in INPUTS:
    raise ValueError(f"o3n: unknown input {cfg.input!r}: only {INPUTS} is implemented")
  if cfg.fusion not in FUSIONS:
    raise ValueError(f"o3n: unknown fusion {cfg.fusion!r}: use one of {FUSIONS}")
  if cfg.num_elements < 2:
    raise ValueError(f"o3n: num_elements {cfg.num_elements} leaves no odd one out among others: "
                     f"set --config.pretext.num_elements >= 2 (the paper uses 6)")
  if not 2 <= cfg.element_frames <= MAX_ELEMENT_FRAMES:
    raise ValueError(f"o3n: element_frames {cfg.element_frames} must be in [2, {MAX_ELEMENT_FRAMES}] "
                     f"(one frame has no order to break): set --config.pretext.element_frames")
  if config.video.num_frames < cfg.element_frames:
    raise ValueError(f"o3n needs video.num_frames >= element_frames = {cfg.element_frames}, got "
                     f"{config.video.num_frames}: raise --config.video.num_frames or lower "
                     f"--config.pretext.element_frames")
  # The probes see every run of element_frames frames of their clips (clip_input) as a dynamic image.
  evaluate = config.get("evaluate")
  eval_frames = evaluate.get("num_frames") if evaluate is not None else None
  if eval_frames is not None and eval_frames < cfg.element_frames:
    raise ValueError(f"o3n: evaluate.num_frames {eval_frames} is below element_frames = {cfg.element_frames}, "
                     f"so the probes' clips hold no dynamic image: raise --config.evaluate.num_frames to "
                     f"{cfg.element_frames} or more, or unset it (video.num_frames)")


# --- Orders and dynamic images. -------------------------------------------------------------


def nth_permutation(rank, n: int):
  """``rank`` (...,) int in [0, n!) -> (..., n): the permutation of that rank in lexicographic
  order (``itertools.permutations(range(n))`` order; rank 0 is the identity)."""
  remaining = jnp.ones(rank.shape + (n,), bool)
  picks = []
  for i in range(n):
    digit = (rank // math.factorial(n - 1 - i)) % (n - i)  # Factorial-base (Lehmer) digit.
    order_among_remaining = jnp.cumsum(remaining, axis=-1) - 1
    pick = jnp.argmax(remaining & (order_among_remaining == digit[..., None]), axis=-1)
    picks.append(pick)
    remaining = remaining & (jnp.arange(n) != pick[..., None])
  return jnp.stack(picks, axis=-1).astype(jnp.int32)


def random_non_identity_permutation(rng, shape, n: int):
  """Uniform over the n! - 1 permutations of range(n) other than the identity, ``shape + (n,)``."""
  rank = jax.random.randint(rng, shape, 1, math.factorial(n), dtype=jnp.int32)
  return nth_permutation(rank, n)


def rank_pooling_weights(n: int):
  """Approximate rank pooling weights ``alpha_t = 2t - n - 1``, t = 1..n (they sum to zero)."""
  return 2.0 * jnp.arange(1, n + 1, dtype=jnp.float32) - n - 1


def rescale(dynamic):
  """Per image (the last three axes) min-max to [0, 1]; ranges below ``MIN_RANGE`` are not blown up."""
  low = dynamic.min(axis=(-3, -2, -1), keepdims=True)
  high = dynamic.max(axis=(-3, -2, -1), keepdims=True)
  return (dynamic - low) / jnp.maximum(high - low, MIN_RANGE)


def dynamic_image(frames):
  """``(..., W, H, W', C)`` frames in the order shown -> ``(..., H, W', C)`` in [0, 1]."""
  frames = frames.astype(jnp.float32)
  n = frames.shape[-4]
  # alpha is antisymmetric (alpha_t = -alpha_{n+1-t}): pooling differences of mirrored frames makes
  # a still element exactly zero, with no rounding left for the rescaling to amplify.
  half = n // 2
  weights = rank_pooling_weights(n)[n - half:]
  diffs = frames[..., n - half:, :, :, :] - frames[..., :half, :, :, :][..., ::-1, :, :, :]
  return rescale(jnp.einsum("t,...thwc->...hwc", weights, diffs))


def clip_input(clips, cfg):
  """Evaluation input: ``(N, T, H, W, 3)`` clips in [0, 1] -> ``(N, T - W + 1, H, W, 3)``, the
  dynamic image of every run of ``element_frames`` consecutive frames (the backbone never saw a
  single frame; Fernando et al. also classify actions from dynamic images)."""
  w = cfg.element_frames
  if clips.shape[1] < w:
    raise ValueError(f"o3n: clips of {clips.shape[1]} frames are shorter than element_frames = {w}: "
                     f"raise --config.evaluate.num_frames or video.num_frames")
  runs = jnp.stack([clips[:, t:t + w] for t in range(clips.shape[1] - w + 1)], axis=1)
  return dynamic_image(runs)


def sample_positions(rng, batch_size: int, num_elements: int, element_frames: int, num_frames: int):
  """(B, N + 1, W): sorted distinct random frame indices in [0, T) for every element."""
  noise = jax.random.uniform(rng, (batch_size, num_elements, num_frames))
  return jnp.sort(jnp.argsort(noise, axis=-1)[..., :element_frames], axis=-1).astype(jnp.int32)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> ({"image": dynamic images}, {"label", "positions"})."""
  video = batch["video"].astype(jnp.float32)
  batch_size, num_frames = video.shape[:2]
  k, w = cfg.num_elements, cfg.element_frames
  if cfg.input not in INPUTS:
    raise ValueError(f"o3n: unknown input {cfg.input!r}: only {INPUTS} is implemented")
  if num_frames < w:
    raise ValueError(f"o3n needs video.num_frames >= element_frames = {w}, got {num_frames}: raise "
                     f"--config.video.num_frames or lower --config.pretext.element_frames")
  position_rng, odd_rng, order_rng = jax.random.split(rng, 3)
  positions = sample_positions(position_rng, batch_size, k, w, num_frames)
  label = jax.random.randint(odd_rng, (batch_size,), 0, k, dtype=jnp.int32)
  order = random_non_identity_permutation(order_rng, (batch_size,), w)
  shuffled = jnp.take_along_axis(positions, order[:, None, :], axis=-1)
  is_odd = (jnp.arange(k) == label[:, None])[..., None]
  positions = jnp.where(is_odd, shuffled, positions)
  # Rank pooling is linear in the frames: one (B, N + 1, T) weight matrix per
  # question and a contraction over T, instead of gathering B (N + 1) W frames.
  pooling = jnp.einsum("bktf,t->bkf", jax.nn.one_hot(positions, num_frames, dtype=jnp.float32),
                       rank_pooling_weights(w))
  dynamic = jnp.einsum("bkf,bfhwc->bkhwc", pooling, video, precision=jax.lax.Precision.HIGHEST)
  images = rescale(dynamic)
  return {"image": images.reshape((batch_size * k,) + images.shape[2:])}, {
      "label": label, "positions": positions}


# --- Head and loss. --------------------------------------------------------------------------


def sum_of_differences(features):
  """``(B, K, D)`` -> ``(B, D)``: the sum over pairs i < j of ``f_j - f_i``, in closed form:
  element k (1-based) is added k - 1 times and subtracted K - k times."""
  k = features.shape[1]
  return jnp.einsum("bkd,k->bd", features, rank_pooling_weights(k))


class Head(nn.Module):
  """Per-element Dense + ReLU, fusion across the question's elements, (N + 1)-way classifier."""
  num_elements: int
  fusion: str
  element_fc: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    x = features["pooled"].astype(jnp.float32)
    if self.element_fc:
      x = nn.relu(nn.Dense(self.element_fc, name="element_fc")(x))
    x = x.reshape(-1, self.num_elements, x.shape[-1])
    if self.fusion == "sum_of_differences":
      fused = sum_of_differences(x)
    elif self.fusion == "concat":
      fused = x.reshape(x.shape[0], -1)
    else:
      raise ValueError(f"o3n: unknown fusion {self.fusion!r}: use one of {FUSIONS}")
    return nn.Dense(self.num_elements, name="classifier")(fused)


def head(cfg) -> nn.Module:
  return Head(num_elements=cfg.num_elements, fusion=cfg.fusion, element_fc=cfg.element_fc)


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
