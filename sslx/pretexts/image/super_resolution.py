"""Super-resolution as a pretext: restore an image from an antialiased downsampled copy.

The network reconstructs the full-resolution image with a pixel loss and,
optionally, a feature ("perceptual") loss in the style of Johnson, Alahi &
Fei-Fei, "Perceptual Losses for Real-Time Style Transfer and
Super-Resolution", ECCV 2016.

- Degradation: downsample by ``factor`` (2 or 4; any divisor of the image
  size) with antialiased bicubic interpolation (``jax.image.resize`` with
  ``antialias=True`` stretches the cubic kernel by the factor, so detail
  above the new Nyquist frequency is filtered out, not aliased into false
  patterns that would tell the network what was lost).
- Input: the low-resolution image upsampled back to full size with bicubic
  interpolation, as in SRCNN (Dong, Loy, He & Tang, ECCV 2014). Johnson et al.
  feed the low-resolution image and upsample inside the network instead; we do
  not, because the backbone is the encoder that the linear probe later reads
  on full-size images: trained on bicubic inputs it sees objects at the scale
  and its blocks at the resolution they have at evaluation.
- Pixel loss: mean squared error (``pixel_loss="l2"``) or mean absolute error
  ("l1") against the clean full-resolution image in [0, 1].
- Feature loss (``perceptual_weight > 0``): Johnson et al. use the squared,
  normalised Euclidean distance between feature maps of a frozen loss network
  (VGG-16's relu2_2 for super-resolution). We cannot download VGG, so the
  loss network is a small VGG-like ConvNet with random weights drawn from
  ``perceptual_seed``. Its parameters are a pure function of the config:
  ``make_inputs`` creates them and passes them to the loss in ``targets``,
  outside the model's parameters, so no gradient step or weight decay can
  ever change them.
- Network: the backbone as encoder, a small convolutional decoder from its
  deepest block without skip connections.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import losses
from sslx.models.decoder import Decoder, EncoderDecoder
from sslx.montage import montage


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.super_resolution"
  cfg.factor = 2
  cfg.pixel_loss = "l2"  # or "l1".
  cfg.perceptual_weight = 0.0  # > 0 adds the random-feature loss.
  cfg.perceptual_seed = 0
  cfg.perceptual_widths = (16, 32)  # Two VGG-like stages (two 3x3 convs each, max pool between).
  cfg.decoder_widths = (64, 32, 16)
  cfg.upsample = "resize"
  # Only for the bare head outside ``model`` (e.g. in a multi-task model): the image size.
  cfg.output_size = ml_collections.config_dict.placeholder(int)
  return cfg


def validate(config) -> None:
  cfg, size = config.pretext, config.image_size
  if not isinstance(cfg.factor, int) or cfg.factor < 2 or size % cfg.factor:
    raise ValueError(f"super_resolution: factor {cfg.factor} must be an integer >= 2 dividing the image size "
                     f"{size}: set --config.pretext.factor=2 or 4")
  if size // cfg.factor < 4:
    raise ValueError(f"super_resolution: {size} px images downsampled by {cfg.factor} leave "
                     f"{size // cfg.factor} px, too small for bicubic interpolation: use a smaller "
                     f"--config.pretext.factor or a larger --config.image_size")
  if cfg.pixel_loss not in ("l2", "l1"):
    raise ValueError(f"super_resolution: unknown pixel_loss {cfg.pixel_loss!r}: use 'l2' or 'l1'")
  if cfg.perceptual_weight < 0:
    raise ValueError(f"super_resolution: perceptual_weight {cfg.perceptual_weight} < 0: set "
                     f"--config.pretext.perceptual_weight to 0 (off) or more")
  if cfg.get("output_size") is not None and cfg.output_size != config.image_size:
    # The bare head (multi-task) decodes to output_size; the loss compares it with the image_size image.
    raise ValueError(f"super_resolution: output_size {cfg.output_size} differs from image_size "
                     f"{config.image_size}: set --config.pretext.output_size={config.image_size}")


def downsample(images, factor: int):
  """(B, H, W, C) -> (B, H / factor, W / factor, C), antialiased bicubic."""
  b, h, w, c = images.shape
  return jax.image.resize(images, (b, h // factor, w // factor, c), "cubic", antialias=True)


def upsample(images, size):
  """Bicubic back to ``size`` (H, W), clipped to [0, 1] (cubic overshoots at edges)."""
  b, _, _, c = images.shape
  return jnp.clip(jax.image.resize(images, (b, size[0], size[1], c), "cubic"), 0.0, 1.0)


class RandomFeatures(nn.Module):
  """A small VGG-like loss network: per stage two 3x3 conv + ReLU, 2x2 max pool between stages."""
  widths: Sequence[int] = (16, 32)

  @nn.compact
  def __call__(self, images):
    x = images.astype(jnp.float32) - 0.5
    for i, width in enumerate(self.widths):
      if i:
        x = nn.max_pool(x, (2, 2), (2, 2))
      for j in range(2):
        # He init keeps the activations' scale through the ReLUs, so the feature term's size is
        # comparable to the pixel term's whatever the depth.
        x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", kernel_init=nn.initializers.he_normal(),
                            name=f"stage{i + 1}_conv{j + 1}")(x))
    return x


def perceptual_params(cfg):
  """The loss network's weights: a deterministic function of ``cfg.perceptual_seed``."""
  net = RandomFeatures(widths=tuple(cfg.perceptual_widths))
  return net.init(jax.random.PRNGKey(cfg.perceptual_seed), jnp.zeros((1, 8, 8, 3)))["params"]


def make_inputs(rng, batch, cfg, *, state=None):
  """-> ({"image": bicubic-upsampled low-res image}, {"image": the clean image
  [, "perceptual_params": the frozen loss network's weights]})."""
  del rng  # Deterministic degradation.
  images = batch["image"]
  low = downsample(images, cfg.factor)
  inputs = {"image": upsample(low, images.shape[1:3])}
  targets = {"image": images}
  if cfg.perceptual_weight > 0:
    targets["perceptual_params"] = perceptual_params(cfg)
  return inputs, targets


def _decoder(cfg) -> Decoder:
  return Decoder(widths=tuple(cfg.decoder_widths), upsample=cfg.upsample, skips=False, size=cfg.output_size)


def head(cfg) -> nn.Module:
  return _decoder(cfg)


def model(backbone, cfg) -> nn.Module:
  return EncoderDecoder(backbone=backbone, decoder=_decoder(cfg))


def feature_loss(reconstruction, clean, params, widths):
  """Johnson et al.'s feature reconstruction loss: mean squared distance of the loss network's maps."""
  net = RandomFeatures(widths=tuple(widths))
  predicted = net.apply({"params": params}, reconstruction)
  target = net.apply({"params": params}, clean)
  return losses.masked_l2(predictions=predicted, targets=target)


def loss(outputs, targets, *, cfg):
  reconstruction = outputs["reconstruction"] if isinstance(outputs, dict) else outputs
  clean = targets["image"]
  pixel_fn = losses.masked_l2 if cfg.pixel_loss == "l2" else losses.masked_l1
  pixel = pixel_fn(predictions=reconstruction, targets=clean)
  metrics = {"pixel": pixel, "psnr": jnp.mean(-10.0 * jnp.log10(jnp.maximum(
      losses.masked_l2(predictions=reconstruction, targets=clean, reduction=False), 1e-10)))}
  if cfg.perceptual_weight <= 0:
    return pixel, metrics
  feature = feature_loss(reconstruction, clean, targets["perceptual_params"], cfg.perceptual_widths)
  metrics["feature"] = feature
  return pixel + cfg.perceptual_weight * feature, metrics


def pictures(predict, images, *, rng, cfg, state=None, train_images=None):
  """One row per image: original | low resolution (bicubic back to full size) | reconstruction."""
  images = jnp.asarray(images, jnp.float32)
  inputs, _ = make_inputs(rng, {"image": images}, cfg)
  reconstruction = predict(inputs)["reconstruction"]
  rows = np.stack([np.asarray(images), np.asarray(inputs["image"]), np.asarray(reconstruction)], axis=1)
  return {"super_resolution": montage(rows)}
