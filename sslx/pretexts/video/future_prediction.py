"""Future-frame prediction with a convolutional LSTM (Srivastava, Mansimov & Salakhutdinov,
"Unsupervised Learning of Video Representations using LSTMs", ICML 2015; Villegas, Yang, Hong,
Lin & Lee, "Decomposing Motion and Content for Natural Video Sequence Prediction" (MCnet), ICLR
2017; convolutional LSTM: Shi et al., NeurIPS 2015).

Predicting what comes next needs what moves and how: the frame encoder has to keep both.

- Frames: ``num_past`` past frames (4) and the ``num_future`` frames after them (2), consecutive
  at the delivered rate, at a random position of the delivered window.
- Default model (Srivastava et al.'s future predictor, with the LSTM made convolutional as in
  Shi et al.): the backbone (the frame encoder, the part that is probed) encodes every past frame;
  a ConvLSTM (``flax.linen.ConvLSTMCell``, ``lstm_features`` channels, 3x3) reads the deepest
  maps in order and then runs ``num_future`` more steps without input (Srivastava et al.'s
  unconditioned decoder); a decoder turns each of those states into a frame.
- ``mcnet=True``: MCnet's split. A motion encoder (its own small ConvNet) encodes the differences
  of consecutive past frames and the ConvLSTM reads those; the content encoder (the backbone) sees
  the last past frame only; the decoder reads the LSTM state and the content map together.
  MCnet's multi-scale residual connections from both encoders to the decoder are left out.
- Decoder: bilinear 2x upsampling and a 3x3 convolution per halving of the stride, down to the
  frame's size. It predicts the change from the last past frame (MCnet's decoder adds residuals
  in the same spirit); its last convolution starts at zero, so an untrained model predicts the
  copy of the last frame, the baseline it has to beat.
- Loss: L2 (``loss = "l2"``) or L1 (``"l1"``) on RGB in [0, 1], plus ``gdl_weight`` (1, MCnet's)
  times the gradient difference loss of Mathieu et al. (ICLR 2016) with exponent
  ``gdl_alpha`` (1): | |d truth| - |d prediction| |^alpha over horizontal and vertical neighbour
  differences, which penalises blur that L2 alone rewards. MCnet's adversarial term is left out.

Inputs: ``{"image": (B * P, H, W, 3)}`` the past frames (``mcnet``: ``(B, H, W, 3)``, the last
one), standardised by the trainer; ``"last"`` ``(B, H, W, 3)`` the last past frame in [0, 1];
with ``mcnet`` ``"differences"`` ``(B, P - 1, H, W, 3)``. Targets: ``{"future": (B, F, H, W,
3)}`` in [0, 1] and ``"last"``. Outputs: the predicted future frames ``(B, F, H, W, 3)``.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses, models

LOSSES = ("l2", "l1")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "video.future_prediction"
  cfg.num_past = 4
  cfg.num_future = 2
  cfg.lstm_features = 64
  cfg.decoder_features = 32
  cfg.mcnet = False  # True: MCnet's motion encoder (frame differences) and content encoder (last frame).
  cfg.motion_features = 32  # MCnet's motion encoder width.
  cfg.loss = "l2"  # Or "l1".
  cfg.gdl_weight = 1.0  # MCnet's weight of the gradient difference loss.
  cfg.gdl_alpha = 1.0  # Mathieu et al.'s exponent.
  return cfg


def _check(cfg, num_frames: int, image_size: int | None = None) -> None:
  if cfg.num_past < (2 if cfg.mcnet else 1) or cfg.num_future < 1:
    raise ValueError(f"future_prediction: num_past {cfg.num_past} and num_future {cfg.num_future}: give at "
                     f"least {2 if cfg.mcnet else 1} past frame(s) (mcnet needs a difference) and 1 future frame")
  if num_frames < cfg.num_past + cfg.num_future:
    raise ValueError(f"future_prediction needs video.num_frames >= num_past + num_future = "
                     f"{cfg.num_past + cfg.num_future}, got {num_frames}: raise --config.video.num_frames or "
                     f"shorten the horizon (--config.pretext.num_future)")
  if cfg.loss not in LOSSES:
    raise ValueError(f"future_prediction: unknown loss {cfg.loss!r}: use one of {LOSSES}")
  if image_size is not None and image_size < 8:
    raise ValueError(f"future_prediction: image_size {image_size} is under 8 px: the decoder needs a "
                     f"frame of at least 8 x 8")


def validate(config) -> None:
  """Before compilation: a window that holds the past and the horizon, a known loss."""
  if "video" not in config:
    raise ValueError("future_prediction needs video data (config.video): start the experiment config "
                     "from configs.base_video()")
  _check(config.pretext, config.video.num_frames, config.image_size)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) in [0, 1] -> past frames in, the frames after them out."""
  del state
  video = batch["video"]
  batch_size, num_frames = video.shape[:2]
  _check(cfg, num_frames)
  span = cfg.num_past + cfg.num_future
  start = jax.random.randint(rng, (batch_size, 1), 0, num_frames - span + 1)
  clip = jnp.take_along_axis(video, (start + jnp.arange(span))[:, :, None, None, None], axis=1)
  past, future = clip[:, :cfg.num_past], clip[:, cfg.num_past:]
  last = past[:, -1]
  inputs = {"last": last}
  if cfg.mcnet:
    inputs["image"] = last
    inputs["differences"] = past[:, 1:] - past[:, :-1]
  else:
    inputs["image"] = past.reshape((-1,) + past.shape[2:])
  return inputs, {"future": future, "last": last}


class MotionEncoder(nn.Module):
  """MCnet's motion encoder, small: frame differences -> a map at ``stride`` (3x3 convolutions,
  each halving the side)."""
  features: int
  stride: int

  @nn.compact
  def __call__(self, x):
    for i in range(int(math.log2(self.stride))):
      x = nn.relu(nn.Conv(self.features, (3, 3), strides=(2, 2), name=f"conv{i + 1}")(x))
    return nn.relu(nn.Conv(self.features, (3, 3), name="out")(x))


class Decoder(nn.Module):
  """A state map -> the change from the last frame at ``size``: 2x bilinear upsampling and a 3x3
  convolution per step; the last convolution starts at zero (the copy of the last frame)."""
  features: int

  @nn.compact
  def __call__(self, x, size):
    steps = max(0, int(round(math.log2(size[0] / x.shape[1]))))
    for i in range(steps):
      b, h, w, c = x.shape
      x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "bilinear")
      x = nn.relu(nn.Conv(self.features, (3, 3), name=f"up{i + 1}")(x))
    if x.shape[1:3] != tuple(size):
      x = jax.image.resize(x, (x.shape[0],) + tuple(size) + (x.shape[-1],), "bilinear")
    return nn.Conv(3, (3, 3), kernel_init=nn.initializers.zeros, name="frame")(x)


class Predictor(nn.Module):
  """The head: a ConvLSTM over the encoded steps ``(B, S, h, w, C)``, ``num_future`` more steps
  without input, each state (with the content map, under MCnet) decoded into the change from
  ``last``: ``(B, F, H, W, 3)`` predictions."""
  num_future: int
  lstm_features: int
  decoder_features: int

  @nn.compact
  def __call__(self, steps, last, content=None):
    batch_size, size = last.shape[0], last.shape[1:3]
    cell = nn.ConvLSTMCell(self.lstm_features, (3, 3), name="conv_lstm")
    shape = (batch_size,) + steps.shape[2:4] + (self.lstm_features,)
    carry = (jnp.zeros(shape), jnp.zeros(shape))
    for t in range(steps.shape[1]):
      carry, _ = cell(carry, steps[:, t])
    decoder = Decoder(self.decoder_features, name="decoder")
    blank = jnp.zeros_like(steps[:, 0])
    predictions = []
    for _ in range(self.num_future):
      carry, hidden = cell(carry, blank)  # The unconditioned future decoder: no input.
      state = hidden if content is None else jnp.concatenate([hidden, content], axis=-1)
      predictions.append(last + decoder(state, size))
    return jnp.stack(predictions, axis=1)


def head(cfg) -> nn.Module:
  return Predictor(num_future=cfg.num_future, lstm_features=cfg.lstm_features,
                   decoder_features=cfg.decoder_features)


class Model(nn.Module):
  """Encoder(s) and the predictor; the backbone's parameters stay under ``backbone``."""
  backbone: nn.Module
  head: nn.Module
  num_past: int
  mcnet: bool
  motion_features: int

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    last = inputs["last"]
    batch_size = last.shape[0]
    features = self.backbone(inputs["image"], train=train)
    deepest = features[models.block_names(features)[-1]].astype(jnp.float32)
    if not self.mcnet:
      steps = deepest.reshape((batch_size, self.num_past) + deepest.shape[1:])
      return self.head(steps, last), features
    differences = inputs["differences"]
    motion = MotionEncoder(self.motion_features, last.shape[1] // deepest.shape[1], name="motion_encoder")(
        differences.reshape((-1,) + differences.shape[2:]))
    steps = motion.reshape((batch_size, self.num_past - 1) + motion.shape[1:])
    return self.head(steps, last, content=deepest), features


def model(backbone, cfg) -> nn.Module:
  return Model(backbone=backbone, head=head(cfg), num_past=cfg.num_past, mcnet=cfg.mcnet,
               motion_features=cfg.motion_features)


def gradient_difference(*, predictions, targets, alpha: float = 1.0, reduction=True):
  """Mathieu et al.'s gradient difference loss per example: the mean over pixels of
  | |d targets| - |d predictions| |^alpha for horizontal and vertical neighbour differences."""
  def grads(x):
    return jnp.abs(x[..., 1:, :, :] - x[..., :-1, :, :]), jnp.abs(x[..., :, 1:, :] - x[..., :, :-1, :])
  (py, px), (ty, tx) = grads(predictions.astype(jnp.float32)), grads(targets.astype(jnp.float32))
  per_example = (jnp.abs(ty - py) ** alpha).reshape(predictions.shape[0], -1).mean(-1) + \
      (jnp.abs(tx - px) ** alpha).reshape(predictions.shape[0], -1).mean(-1)
  return jnp.mean(per_example) if reduction else per_example


def psnr(predictions, targets, axis=(-3, -2, -1)):
  """Peak signal-to-noise ratio in dB for images in [0, 1] (predictions clipped to it)."""
  mse = jnp.mean((jnp.clip(predictions, 0.0, 1.0) - targets) ** 2, axis=axis)
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def loss(outputs, targets, *, cfg):
  future, last = targets["future"], targets["last"]
  pixel = losses.masked_l1 if cfg.loss == "l1" else losses.masked_l2
  value = pixel(predictions=outputs, targets=future)
  gdl = gradient_difference(predictions=outputs, targets=future, alpha=cfg.gdl_alpha)
  copy_last = jnp.broadcast_to(last[:, None], future.shape)
  return value + cfg.gdl_weight * gdl, {
      "pixel_loss": value, "gdl": gdl,
      "psnr_step1": jnp.mean(psnr(outputs[:, 0], future[:, 0])),
      "psnr_step1_copy_last": jnp.mean(psnr(copy_last[:, 0], future[:, 0]))}
