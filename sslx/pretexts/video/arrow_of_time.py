"""Arrow of time (Wei, Lim, Zisserman & Freeman, "Learning and Using the Arrow
of Time", CVPR 2018).

- Binary: is the clip playing forwards (label 0) or backwards (label 1)? A clip
  of ``clip_frames`` frames, consecutive among those the host delivers, starts
  at a uniformly random offset of them and is reversed in time with
  probability 1/2, each example on its own (a reversed clip is exactly
  ``clip[::-1]``). The delivered frames are a window of consecutive frames (as
  in the paper) or, with ``video.sampling="spread"`` (the egogestar config),
  spread over the whole video, where these clips hold most of their direction.
- Here a 3D backbone sees the clip, pooled features -> Dense(2). Wei et al.'s
  model is different: T-CAM, a 2D VGG-16 trunk applied to short stacks of
  optical flow frames, the stacks' feature maps fused late and globally
  average-pooled so that a class activation map shows where the arrow of time
  is seen. Optical flow is not computed on the device here. ``input`` says what
  the backbone sees: ``"rgb"``, the frames (the default), or ``"diff"``, the
  differences of consecutive frames, ``(x_{t+1} - x_t + 1) / 2`` (``clip_frames
  - 1`` of them, 0.5 where nothing changes), taken after the reversal, so a
  reversed clip's are exactly those of the reversed frames. Like the paper's
  flow, differences show the motion and hide the still appearance of a scene,
  which a network can otherwise memorise clip by clip (docs/results.md, "Frame
  order on held-out clips"). Evaluation feeds the backbone the same
  (``clip_input``).
- Wei et al. found that the direction can be read from artificial cues as
  well as from physics: black frame borders, camera conventions (zooms,
  pans) and compression artefacts. The host crop removes none of them on
  purpose; a high probe score on this task alone does not rule them out.

Inputs: ``{"video": (B, clip_frames, H, W, 3)}`` (``clip_frames - 1`` frames for ``"diff"``); targets: ``{"label": (B,),
"start": (B,)}`` (the clip's first frame, in forward order, in the window).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses

INPUTS = ("rgb", "diff")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.arrow_of_time"
  cfg.clip_frames = 16  # A 3D backbone's usual clip (C3D, R3D); our choice, not the paper's.
  cfg.reverse_probability = 0.5
  cfg.input = "rgb"  # "rgb" or "diff" (frame differences); the paper uses optical flow.
  return cfg


def _too_short(cfg, num_frames) -> str:
  return (f"arrow_of_time needs video.num_frames >= clip_frames = {cfg.clip_frames}, got {num_frames}: "
          f"raise --config.video.num_frames or lower --config.pretext.clip_frames")


def validate(config) -> None:
  """Before compilation: the delivered window holds a clip; only RGB input exists."""
  cfg = config.pretext
  if "video" not in config:
    raise ValueError("arrow_of_time needs video data (config.video): start the experiment config "
                     "from configs.base_video()")
  if cfg.input not in INPUTS:
    raise ValueError(f"arrow_of_time: input {cfg.input!r} is not implemented (no optical flow on the "
                     f"device): use --config.pretext.input=rgb or --config.pretext.input=diff")
  if cfg.clip_frames < 2:
    raise ValueError(f"arrow_of_time: clip_frames {cfg.clip_frames} has no direction: set "
                     f"--config.pretext.clip_frames >= 2")
  if not 0.0 < cfg.reverse_probability < 1.0:
    raise ValueError(f"arrow_of_time: reverse_probability {cfg.reverse_probability} leaves one class "
                     f"empty: set --config.pretext.reverse_probability in (0, 1), e.g. 0.5")
  if config.video.num_frames < cfg.clip_frames:
    raise ValueError(_too_short(cfg, config.video.num_frames))


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) -> ({"video": clips, some reversed}, {"label", "start"})."""
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  if cfg.input not in INPUTS:
    raise ValueError(f"arrow_of_time: input {cfg.input!r} is not implemented: use 'rgb' or 'diff'")
  if num_frames < cfg.clip_frames:
    raise ValueError(_too_short(cfg, num_frames))
  start_rng, label_rng = jax.random.split(rng)
  start = jax.random.randint(start_rng, (batch_size,), 0, num_frames - cfg.clip_frames + 1,
                             dtype=jnp.int32)
  label = jax.random.bernoulli(label_rng, cfg.reverse_probability, (batch_size,)).astype(jnp.int32)
  steps = jnp.arange(cfg.clip_frames)
  # Frame i of a reversed clip is frame clip_frames - 1 - i of the forward one.
  offsets = jnp.where(label[:, None] == 1, cfg.clip_frames - 1 - steps, steps)
  clips = jax.vmap(lambda v, f: v[f])(video, start[:, None] + offsets)
  return {"video": clip_input(clips, cfg)}, {"label": label, "start": start}


def clip_input(clips, cfg):
  """``(N, T, H, W, 3)`` clips in [0, 1], in the order shown -> what the backbone sees, in [0, 1]:
  the clips (``input="rgb"``) or their ``T - 1`` frame differences, ``(x_{t+1} - x_t + 1) / 2``."""
  if cfg.input == "diff":
    return (clips[:, 1:] - clips[:, :-1] + 1.0) / 2.0
  return clips


class Head(nn.Module):
  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    return nn.Dense(2, name="classifier")(features["pooled"].astype(jnp.float32))


def head(cfg) -> nn.Module:
  del cfg
  return Head()


def loss(outputs, targets, *, cfg):
  del cfg
  labels = targets["label"]
  return losses.classification(logits=outputs, labels=labels)
