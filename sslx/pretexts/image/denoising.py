"""Denoising autoencoder (Vincent, Larochelle, Bengio & Manzagol, "Extracting and Composing
Robust Features with Denoising Autoencoders", ICML 2008; Vincent, Larochelle, Lajoie, Bengio &
Manzagol, "Stacked Denoising Autoencoders", JMLR 2010).

- The input is corrupted by a stochastic mapping; the network reconstructs the
  clean input from it, so it must capture the dependencies between input
  dimensions rather than copy them.
- Corruptions (the JMLR paper's three):
  "gaussian": additive isotropic Gaussian noise, x + N(0, sigma^2 I), not clipped;
  "masking": a fraction nu of the input components, chosen at random for each
  example, forced to 0 (the ICML paper's "destroyed" inputs: a fixed number
  nu * d of components per example);
  "salt_pepper": a fraction nu, chosen at random for each example, set to the
  minimum or the maximum (0 or 1) by a fair coin flip.
- The papers' components are scalar input dimensions (grey pixels). For RGB,
  ``unit="pixel"`` (default) corrupts whole pixels, all channels alike (one
  coin per pixel for salt-and-pepper), so a destroyed value cannot be read off
  its pixel's other channels; ``unit="element"`` corrupts channel values
  independently, the literal reading. Both draw exactly round(nu * count)
  units per example, as the papers' fixed fraction.
- Reconstruction loss: squared error, or the cross-entropy the papers use for
  inputs in [0, 1] (``loss="xent"``: the decoder then outputs logits). We
  average both over pixels and channels.
- The network is the backbone as encoder and a small convolutional decoder
  from its deepest block, without skip connections (a skip would let the
  decoder denoise from shallow features and leave the deep ones idle).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import losses
from sslx.models.decoder import Decoder, EncoderDecoder
from sslx.montage import montage

CORRUPTIONS = ("gaussian", "masking", "salt_pepper")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.denoising"
  cfg.corruption = "masking"
  cfg.fraction = 0.25  # nu for masking and salt_pepper.
  cfg.sigma = 0.2  # Gaussian std, in [0, 1] RGB units.
  cfg.unit = "pixel"  # or "element": what one corrupted component is.
  cfg.loss = "l2"  # or "xent".
  cfg.decoder_widths = (64, 32, 16)
  cfg.upsample = "resize"
  # Only for the bare head outside ``model`` (e.g. in a multi-task model): the image size.
  cfg.output_size = ml_collections.config_dict.placeholder(int)
  return cfg


def validate(config) -> None:
  cfg = config.pretext
  if cfg.corruption not in CORRUPTIONS:
    raise ValueError(f"denoising: unknown corruption {cfg.corruption!r}: use one of {CORRUPTIONS}")
  if cfg.unit not in ("pixel", "element"):
    raise ValueError(f"denoising: unknown unit {cfg.unit!r}: use 'pixel' or 'element'")
  if cfg.loss not in ("l2", "xent"):
    raise ValueError(f"denoising: unknown loss {cfg.loss!r}: use 'l2' or 'xent'")
  if cfg.corruption != "gaussian" and not 0.0 < cfg.fraction < 1.0:
    raise ValueError(f"denoising: fraction {cfg.fraction} corrupts nothing or everything: set "
                     f"--config.pretext.fraction in (0, 1), e.g. 0.25")
  if cfg.corruption == "gaussian" and not cfg.sigma > 0.0:
    raise ValueError(f"denoising: sigma {cfg.sigma} adds no noise: set --config.pretext.sigma > 0, e.g. 0.2")
  if cfg.corruption != "gaussian":
    # Exactly round(fraction * units) units per example are corrupted (choose_exactly).
    units = config.image_size ** 2 * (1 if cfg.unit == "pixel" else 3)
    chosen = round(cfg.fraction * units)
    if not 1 <= chosen < units:
      raise ValueError(f"denoising: fraction {cfg.fraction} of the {units} {cfg.unit}s of a "
                       f"{config.image_size} px image corrupts {chosen}: set --config.pretext.fraction to "
                       f"corrupt 1 to {units - 1}, e.g. 0.25")
  if cfg.get("output_size") is not None and cfg.output_size != config.image_size:
    # The bare head (multi-task) decodes to output_size; the loss compares it with the image_size image.
    raise ValueError(f"denoising: output_size {cfg.output_size} differs from image_size {config.image_size}: "
                     f"set --config.pretext.output_size={config.image_size}")


def choose_exactly(rng, shape, fraction: float):
  """Booleans of ``shape`` (B, ...): exactly ``round(fraction * n)`` of the n entries of each example
  are True, chosen uniformly at random (the positions of the largest values of uniform noise)."""
  batch, count = shape[0], int(np.prod(shape[1:]))
  chosen = round(fraction * count)
  _, positions = jax.lax.top_k(jax.random.uniform(rng, (batch, count)), chosen)
  mask = jnp.zeros((batch, count), bool).at[jnp.arange(batch)[:, None], positions].set(True)
  return mask.reshape(shape)


def corrupt(rng, images, cfg):
  """-> (corrupted images, (B, H, W, C) booleans: which values the corruption chose)."""
  if cfg.corruption == "gaussian":
    noise = cfg.sigma * jax.random.normal(rng, images.shape, images.dtype)
    return images + noise, jnp.ones(images.shape, bool)
  unit_shape = images.shape[:3] + ((1,) if cfg.unit == "pixel" else images.shape[3:])
  pick_rng, coin_rng = jax.random.split(rng)
  chosen = jnp.broadcast_to(choose_exactly(pick_rng, unit_shape, cfg.fraction), images.shape)
  if cfg.corruption == "masking":
    return jnp.where(chosen, 0.0, images).astype(images.dtype), chosen
  if cfg.corruption == "salt_pepper":
    salt = jnp.broadcast_to(jax.random.bernoulli(coin_rng, 0.5, unit_shape), images.shape)
    return jnp.where(chosen, salt.astype(images.dtype), images), chosen
  raise ValueError(f"denoising: unknown corruption {cfg.corruption!r}: use one of {CORRUPTIONS}")


def make_inputs(rng, batch, cfg, *, state=None):
  """-> ({"image": corrupted}, {"image": the clean image, "corrupted": which values were changed})."""
  images = batch["image"]
  corrupted, chosen = corrupt(rng, images, cfg)
  return {"image": corrupted}, {"image": images, "corrupted": chosen}


def _decoder(cfg) -> Decoder:
  return Decoder(widths=tuple(cfg.decoder_widths), upsample=cfg.upsample, skips=False,
                 output="linear" if cfg.loss == "xent" else "sigmoid", size=cfg.output_size)


def head(cfg) -> nn.Module:
  return _decoder(cfg)


def model(backbone, cfg) -> nn.Module:
  return EncoderDecoder(backbone=backbone, decoder=_decoder(cfg), logits=cfg.loss == "xent")


def loss(outputs, targets, *, cfg):
  if not isinstance(outputs, dict):  # The bare head (e.g. inside a multi-task model).
    outputs = {"logits": outputs, "reconstruction": nn.sigmoid(outputs)} if cfg.loss == "xent" else {
        "reconstruction": outputs}
  clean = targets["image"]
  mse = losses.masked_l2(predictions=outputs["reconstruction"], targets=clean)
  metrics = {"mse": mse,
             "corrupted_mse": losses.masked_l2(predictions=outputs["reconstruction"], targets=clean,
                                               mask=targets["corrupted"])}
  if cfg.loss == "l2":
    return mse, metrics
  # sigmoid_xent sums over pixels and channels; the mean keeps the scale of the squared error.
  per_value = clean[0].size
  return losses.sigmoid_xent(logits=outputs["logits"], labels=clean) / per_value, metrics


def pictures(predict, images, *, rng, cfg, state=None, train_images=None):
  """One row per image: original | corrupted | reconstruction."""
  images = jnp.asarray(images, jnp.float32)
  inputs, _ = make_inputs(rng, {"image": images}, cfg)
  reconstruction = predict(inputs)["reconstruction"]
  corrupted = np.clip(np.asarray(inputs["image"]), 0.0, 1.0)  # Gaussian noise leaves [0, 1].
  rows = np.stack([np.asarray(images), corrupted, np.asarray(reconstruction)], axis=1)
  return {"denoising": montage(rows)}
