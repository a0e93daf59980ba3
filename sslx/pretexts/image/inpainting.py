"""Context encoder / inpainting (Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context
Encoders: Feature Learning by Inpainting", CVPR 2016; official code pathak22/context-encoder).

- A region of the image is dropped; the encoder (our backbone) sees the rest,
  the decoder regresses the missing pixels. Encoder and decoder meet through a
  channel-wise fully connected layer (each channel's map fully connected to
  itself, then a stride-1 convolution across channels), so that every decoder
  unit can reason about the whole image; there are no skip connections, which
  would let the decoder copy the context instead of understanding it.
- Dropped pixels are filled with the dataset's mean colour (the official code
  writes the ImageNet mean into the hole), which the trainer's standardisation
  turns into zeros. ``make_inputs`` sees only the pretext's settings, so the
  colour is the explicit ``cfg.fill`` (RGB in [0, 1]): experiment configs set it
  from ``c.normalize.mean``, and ``validate`` refuses a config whose ``fill`` is
  not its ``normalize.mean`` (e.g. an ImageNet-normalised config left at the
  default, ``configs.base()``'s CIFAR-10 mean), so no run fills holes with
  another dataset's mean.
- Masks: "central", a centred square of half the side (1/4 of the area);
  "random_block", several smaller, possibly overlapping rectangles covering
  up to 1/4 of the image; "random_region", arbitrary shapes covering about 1/4.
  The paper finds the central mask gives features that latch onto the hole's
  boundary, block and region masks similarly general features, and uses
  random regions for all its feature-learning experiments.
- Random regions: the paper pastes deformed PASCAL VOC 2012 segmentation
  shapes at random places. We cannot download those, so (as the official
  ``train_random.lua`` does with a noise pattern) each image gets smooth noise
  -- uniform noise on a ``region_cells`` x ``region_cells`` grid, bicubically
  upsampled -- thresholded at its own ``coverage`` quantile: blobs of random
  shape covering ``coverage`` of the image (the official code keeps windows
  20-30% covered). Drawn on the device, one mask per image (the official
  code draws one per batch).
- Loss: the L2 distance between the prediction and the image on the dropped
  region, normalised (here: the mean over the hole's pixels and channels).
  The paper predicts a slightly larger region overlapping the context by 7 px
  with a 10x weight on that overlap (the official code: 4 px at 128 px crops);
  ``overlap`` (pixels, 0 = off) and ``overlap_weight`` (10) do that: the hole
  keeps its size, a ring of ``overlap`` visible pixels around it joins the
  loss with the larger weight. The official random-region command has no
  overlap, nor do our defaults.
- Optional adversarial loss (``adversarial=True``): a discriminator tells the
  real image from the context with the prediction pasted into the hole (not
  conditioned on the context, the official code's default); joint loss
  ``0.999 * L_rec + 0.001 * L_adv`` as the paper. The features the paper
  evaluates were trained with the reconstruction loss alone (the official
  README's feature model), hence the default.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import losses
from sslx.data import image_ops
from sslx.models.decoder import Decoder
from sslx.montage import montage

MASKS = ("central", "random_block", "random_region")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.inpainting"
  cfg.mask = "random_region"  # Paper: random regions for all feature-learning experiments.
  cfg.central_fraction = 0.5  # Side of the central square / image side: 1/4 of the area.
  cfg.coverage = 0.25  # Random masks: fraction of the image dropped (blocks: at most this).
  cfg.block_size_range = (0.125, 0.375)  # Random block sides, fractions of the image side.
  cfg.max_blocks = 16  # Candidate blocks per image; each is kept if the union stays <= coverage.
  cfg.region_cells = 4  # Random regions: noise grid cells across the image (larger: smaller blobs).
  # Colour of the dropped pixels, RGB in [0, 1]: the dataset mean, config.normalize.mean (validate
  # checks); this default is configs.base()'s.
  cfg.fill = image_ops.CIFAR10_MEAN
  cfg.overlap = 0  # Pixels of context around the hole also reconstructed (paper: 7 at 227 px).
  cfg.overlap_weight = 10.0
  # Decoder (sslx/models/decoder.py): from the deepest block, no skips.
  cfg.decoder_widths = (64, 32, 16)
  cfg.channel_fc = True
  cfg.upsample = "resize"
  # Only for the bare head outside ``model`` (e.g. in a multi-task model): the image size.
  cfg.output_size = ml_collections.config_dict.placeholder(int)
  # Adversarial loss: the paper's joint weights; the discriminator's own term has weight 1.
  cfg.adversarial = False
  cfg.reconstruction_weight = 0.999
  cfg.adversarial_weight = 0.001
  cfg.discriminator_weight = 1.0
  cfg.discriminator_widths = (32, 64, 128)
  return cfg


def validate(config) -> None:
  """Before compilation: the hole's colour is the dataset mean, the mask fits the image and its
  settings make sense."""
  cfg, size = config.pretext, config.image_size
  fill = np.asarray(cfg.fill, np.float64)
  if fill.shape != (3,) or not ((0.0 <= fill) & (fill <= 1.0)).all():
    raise ValueError(f"inpainting: fill {cfg.fill} is not an RGB colour in [0, 1]: set "
                     f"--config.pretext.fill to the dataset mean, config.normalize.mean")
  normalize = config.get("normalize")
  if normalize is not None and not np.allclose(fill, normalize.mean, rtol=0.0, atol=1e-6):
    raise ValueError(f"inpainting: fill {tuple(cfg.fill)} is not the dataset mean, normalize.mean "
                     f"{tuple(normalize.mean)}: set --config.pretext.fill='{tuple(normalize.mean)}' "
                     f"(in a config file: c.pretext.fill = c.normalize.mean)")
  if cfg.mask not in MASKS:
    raise ValueError(f"inpainting: unknown mask {cfg.mask!r}: use one of {MASKS}")
  if cfg.overlap < 0:
    raise ValueError(f"inpainting: overlap {cfg.overlap} < 0: set --config.pretext.overlap to 0 or more")
  if cfg.mask == "central":
    side = round(cfg.central_fraction * size)
    if not 0.0 < cfg.central_fraction < 1.0 or side < 1:
      raise ValueError(f"inpainting: central_fraction {cfg.central_fraction} makes a {side} px hole in "
                       f"the {size} px image: set --config.pretext.central_fraction in (0, 1), e.g. 0.5")
    if side + 2 * cfg.overlap > size:
      raise ValueError(f"inpainting: the {side} px central hole plus {cfg.overlap} px overlap on each side "
                       f"is larger than the {size} px image: set --config.pretext.overlap to at most "
                       f"{(size - side) // 2}")
  elif not 0.0 < cfg.coverage < 1.0:
    raise ValueError(f"inpainting: coverage {cfg.coverage} drops no pixel or the whole image: set "
                     f"--config.pretext.coverage in (0, 1), e.g. 0.25 as the paper")
  if cfg.mask == "random_block":
    low, high = cfg.block_size_range
    if not 0.0 < low <= high <= 1.0 or round(low * size) < 1:
      raise ValueError(f"inpainting: block_size_range {tuple(cfg.block_size_range)} gives blocks larger "
                       f"than the {size} px image or under 1 px: set --config.pretext.block_size_range to "
                       f"fractions 0 < low <= high <= 1, e.g. (0.125, 0.375)")
    if high * high > cfg.coverage:
      raise ValueError(f"inpainting: a {high} x {high} block alone exceeds coverage {cfg.coverage}: lower "
                       f"--config.pretext.block_size_range's upper end below {np.sqrt(cfg.coverage):.3f}")
    if cfg.max_blocks < 1:
      raise ValueError(f"inpainting: max_blocks {cfg.max_blocks} drops no block: set "
                       f"--config.pretext.max_blocks >= 1, e.g. 16")
  if cfg.mask == "random_region" and cfg.region_cells < 2:
    # One cell upsamples to a constant, all of it at the coverage quantile: the whole image is dropped.
    raise ValueError(f"inpainting: region_cells {cfg.region_cells} gives no blobs (uniform noise on a 1x1 grid "
                     f"is flat): set --config.pretext.region_cells >= 2, e.g. 4")
  if cfg.get("output_size") is not None and cfg.output_size != config.image_size:
    # The bare head (multi-task) decodes to output_size; the loss compares it with the image_size image.
    raise ValueError(f"inpainting: output_size {cfg.output_size} differs from image_size {config.image_size}: "
                     f"set --config.pretext.output_size={config.image_size}")


# --- Masks: (B, H, W) booleans, True where the pixel is dropped. -------------------------------------


def central_mask(batch: int, height: int, width: int, fraction: float):
  """A centred square of side ``round(fraction * min(H, W))`` in every image."""
  side = round(fraction * min(height, width))
  top, left = (height - side) // 2, (width - side) // 2
  rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
  square = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
  return jnp.broadcast_to(square, (batch, height, width))


def random_block_mask(rng, batch: int, height: int, width: int, *, coverage: float,
                      size_range: Sequence[float], max_blocks: int):
  """Up to ``max_blocks`` random rectangles per image; each is added only while the union
  stays within ``coverage`` of the image, so the masks cover up to (and near) that fraction."""
  keys = jax.random.split(rng, 4)
  shape = (max_blocks, batch)
  low, high = size_range
  sides = jax.random.uniform(keys[0], (2,) + shape, minval=low, maxval=high)
  block_h = jnp.clip(jnp.round(sides[0] * height), 1, height)
  block_w = jnp.clip(jnp.round(sides[1] * width), 1, width)
  top = jnp.floor(jax.random.uniform(keys[2], shape) * (height - block_h + 1))
  left = jnp.floor(jax.random.uniform(keys[3], shape) * (width - block_w + 1))
  rows = jnp.arange(height, dtype=jnp.float32)[None, :, None]
  cols = jnp.arange(width, dtype=jnp.float32)[None, None, :]

  def add(mask, block):
    h, w, t, l = (v[:, None, None] for v in block)
    rect = (rows >= t) & (rows < t + h) & (cols >= l) & (cols < l + w)
    union = mask | rect
    fits = union.mean(axis=(1, 2)) <= coverage + 1e-6
    return jnp.where(fits[:, None, None], union, mask), None

  mask, _ = jax.lax.scan(add, jnp.zeros((batch, height, width), bool), (block_h, block_w, top, left))
  return mask


def random_region_mask(rng, batch: int, height: int, width: int, *, coverage: float, cells: int):
  """Blobs of random shape: smooth noise (a ``cells`` x ``cells`` uniform grid, bicubically
  upsampled) below its own ``coverage`` quantile, i.e. ``round(coverage * H * W)`` pixels."""
  noise = jax.random.uniform(rng, (batch, cells, cells, 1))
  smooth = jax.image.resize(noise, (batch, height, width, 1), "cubic").reshape(batch, -1)
  count = max(1, round(coverage * height * width))
  threshold = jnp.sort(smooth, axis=-1)[:, count - 1]
  return (smooth <= threshold[:, None]).reshape(batch, height, width)


def make_mask(rng, batch: int, height: int, width: int, cfg):
  if cfg.mask == "central":
    return central_mask(batch, height, width, cfg.central_fraction)
  if cfg.mask == "random_block":
    return random_block_mask(rng, batch, height, width, coverage=cfg.coverage,
                             size_range=cfg.block_size_range, max_blocks=cfg.max_blocks)
  if cfg.mask == "random_region":
    return random_region_mask(rng, batch, height, width, coverage=cfg.coverage, cells=cfg.region_cells)
  raise ValueError(f"inpainting: unknown mask {cfg.mask!r}: use one of {MASKS}")


def loss_weights(mask, overlap: int, overlap_weight: float):
  """(B, H, W) mask -> (B, H, W, 1) weights: 1 in the hole, ``overlap_weight`` on the ring of
  context pixels within ``overlap`` pixels of it (a square dilation), 0 elsewhere."""
  hole = mask.astype(jnp.float32)[..., None]
  if overlap <= 0:
    return hole
  window = (1, 2 * overlap + 1, 2 * overlap + 1, 1)
  grown = jax.lax.reduce_window(hole, -jnp.inf, jax.lax.max, window, (1, 1, 1, 1), "SAME")
  return hole + overlap_weight * (grown - hole)


def make_inputs(rng, batch, cfg, *, state=None):
  """-> ({"image": masked image [, "real", "mask" for the discriminator]},
         {"image": the clean image, "mask": (B, H, W, 1), "loss_weights": (B, H, W, 1)})."""
  images = batch["image"]
  b, h, w = images.shape[:3]
  mask = make_mask(rng, b, h, w, cfg)
  hole = mask[..., None]
  fill = jnp.asarray(cfg.fill, images.dtype)
  masked = jnp.where(hole, fill, images)
  inputs = {"image": masked}
  if cfg.adversarial:
    # Not seen by the encoder: the discriminator compares the real image with the prediction
    # pasted into the hole. "real" is not named "image", so it stays in [0, 1] like the output.
    inputs.update(real=images, mask=hole.astype(images.dtype))
  targets = {"image": images, "mask": hole.astype(jnp.float32),
             "loss_weights": loss_weights(mask, cfg.overlap, cfg.overlap_weight)}
  return inputs, targets


class Discriminator(nn.Module):
  """Strided 4x4 convolutions with leaky ReLUs (DCGAN style), then one logit per image.

  No BatchNorm: the frozen copy below is then a pure function of the
  parameters, and real and fake batches do not share statistics.
  """
  widths: Sequence[int] = (32, 64, 128)

  @nn.compact
  def __call__(self, images):
    x = images.astype(jnp.float32) * 2.0 - 1.0
    for i, width in enumerate(self.widths):
      x = nn.leaky_relu(nn.Conv(width, (4, 4), (2, 2), padding="SAME", name=f"conv{i + 1}")(x), 0.2)
    return nn.Dense(1, name="logit")(x.reshape(x.shape[0], -1))[:, 0]


class ContextEncoder(nn.Module):
  """Backbone (encoder) -> decoder, plus the discriminator's three views when there is one.

  The trainer has one optimizer and differentiates one scalar with respect to
  all parameters, so each adversarial term is made to reach only its own side:
  the discriminator's term scores the real image and a stop-gradient copy of
  the composite (no gradient into the encoder-decoder); the generator's term
  scores the composite with an unbound copy of the discriminator applied to
  stop-gradient copies of its variables (no gradient into the discriminator).
  """
  backbone: nn.Module
  decoder: nn.Module
  discriminator: Discriminator | None = None

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    image = inputs["image"]
    features = self.backbone(image, train=train)
    reconstruction = self.decoder(features, train=train, size=image.shape[1:3])
    outputs = {"reconstruction": reconstruction}
    if self.discriminator is not None:
      real, hole = inputs["real"], inputs["mask"]
      composite = hole * reconstruction + (1.0 - hole) * real
      outputs["real_logits"] = self.discriminator(real)
      outputs["fake_logits"] = self.discriminator(jax.lax.stop_gradient(composite))
      frozen = jax.lax.stop_gradient(self.discriminator.variables)
      detached = Discriminator(widths=self.discriminator.widths, parent=None)
      outputs["generator_logits"] = detached.apply(frozen, composite)
    return outputs, features


def _decoder(cfg) -> Decoder:
  return Decoder(widths=tuple(cfg.decoder_widths), channel_fc=cfg.channel_fc, upsample=cfg.upsample,
                 skips=False, size=cfg.output_size)


def head(cfg) -> nn.Module:
  """The decoder alone (reconstruction loss only). Its output size is the input's when built by
  ``model``; a head used elsewhere (e.g. in a multi-task model) needs ``cfg.output_size``."""
  return _decoder(cfg)


def model(backbone, cfg) -> nn.Module:
  disc = Discriminator(widths=tuple(cfg.discriminator_widths)) if cfg.adversarial else None
  return ContextEncoder(backbone=backbone, decoder=_decoder(cfg), discriminator=disc)


def loss(outputs, targets, *, cfg):
  if not isinstance(outputs, dict):  # The bare head (e.g. inside a multi-task model).
    outputs = {"reconstruction": outputs}
  reconstruction = losses.masked_l2(predictions=outputs["reconstruction"], targets=targets["image"],
                                    mask=targets["loss_weights"])
  metrics = {"reconstruction": reconstruction}
  if not cfg.adversarial:
    return reconstruction, metrics
  if "fake_logits" not in outputs:
    raise ValueError("inpainting: adversarial=True needs the discriminator of inpainting.model(...): "
                     "build the model with it, or set --config.pretext.adversarial=False")
  generator = losses.gan_generator_loss(fake_logits=outputs["generator_logits"])
  discriminator = losses.gan_discriminator_loss(real_logits=outputs["real_logits"],
                                                fake_logits=outputs["fake_logits"])
  total = (cfg.reconstruction_weight * reconstruction + cfg.adversarial_weight * generator
           + cfg.discriminator_weight * discriminator)
  correct = jnp.concatenate([outputs["real_logits"] > 0, outputs["fake_logits"] < 0])
  metrics.update(generator=generator, discriminator=discriminator,
                 discriminator_accuracy=jnp.mean(correct.astype(jnp.float32)))
  return total, metrics


def pictures(predict, images, *, rng, cfg, state=None, train_images=None):
  """One row per image: original | masked (as the network sees it) | inpainted (the
  prediction in the hole, the context elsewhere)."""
  images = jnp.asarray(images, jnp.float32)
  inputs, targets = make_inputs(rng, {"image": images}, cfg)
  reconstruction = predict(inputs)["reconstruction"]
  hole = targets["mask"]
  inpainted = hole * reconstruction + (1.0 - hole) * images
  rows = np.stack([np.asarray(images), np.asarray(inputs["image"]), np.asarray(inpainted)], axis=1)
  return {"inpainting": montage(rows)}
