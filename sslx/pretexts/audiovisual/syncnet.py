"""Audio-visual synchronisation by embedding: SyncNet (Chung & Zisserman, "Out of time: automated
lip sync in the wild", ACCV 2016 workshops).

Two towers embed 0.2 s of each stream into one space where in-sync pairs are close:

- **Visual**: 5 consecutive mouth frames (0.2 s at 25 fps), grey and stacked on the channel
  axis, through a VGG-M-like 2D tower (``config.model``; sslx/models/stacked_frames.py).
- **Audio**: 13 MFCCs at 100 Hz over the same 0.2 s (20 frames), through a 2D ConvNet
  (``cfg.audio_model``: sslx/models/l3_audio.py with ``mfcc_coefficients=13``).
- **Embeddings**: each tower's pooled features through FC ``hidden_dim`` (512, the paper's
  fc6) + ReLU and FC ``embedding_dim`` (256, fc7); not normalised, as in the paper.
- **Pairs**: every clip gives its aligned audio (label 1) and its own audio shifted in time
  (label 0), as sslx/pretexts/audiovisual/synchronization.py draws them (the paper's false
  pairs are the same face track at another time); the shift is uniform in
  +-[``min_shift_seconds``, ``max_shift_seconds``].
- **Loss**: the contrastive loss with a margin on the Euclidean distance,
  ``(y d^2 + (1 - y) max(margin - d, 0)^2) / 2`` (``losses.contrastive_margin``); the paper
  does not give its margin (Chung et al., "Perfect match", 2019, call it hand-tuned):
  ``margin`` = 1 here, and since the embeddings are unnormalised only its scale relative to
  them matters.
- **Offsets** (sslx/evaluate/sync.py): each video window against its clip's audio at every
  offset of +-15 frames; the smallest distance wins. The public SyncNet code averages the
  distances over all windows of a video before taking the minimum, which the evaluation
  reports too (``per clip``).

Defaults that differ from the paper: shifts of 2-15 frames (the paper shifts up to +-2 s in
longer tracks; GRID clips last 3 s); the towers at a width multiplier on 48 px mouth crops where
the paper has 111 px; the audio tower is L3-Net's block layout with 2x2 pools on the MFCC map
(the paper's pools mostly in time); BatchNorm everywhere.

Inputs: ``{"video": (B, 5, H, W, 3), "audio": (2B, 0.2 s * sample_rate)}`` (aligned audio first,
then the shifted); targets: ``{"label": (2B,), "shift": (2B,), "partner": (2B,)}``; outputs:
``{"distance": (2B,)}`` (audio row ``j`` against video row ``j mod B``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from sslx import losses, models
from sslx.pretexts.audiovisual import correspondence, synchronization


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "audiovisual.syncnet"
  cfg.fps = 25.0  # The data's frame rate (config.video.fps; validate checks it).
  cfg.min_shift_seconds = 0.08  # 2 frames at 25 fps.
  cfg.max_shift_seconds = 0.6  # 15 frames: the evaluation's search range.
  cfg.curriculum_steps = 0  # synchronization.make_inputs' AVTS option (other-clip negatives first).
  cfg.margin = 1.0
  cfg.hidden_dim = 512  # The paper's fc6.
  cfg.embedding_dim = 256  # The paper's fc7.
  cfg.audio_model = ml_collections.ConfigDict({"name": "l3_audio", "sample_rate": 16000, "width": 0.25,
                                               "mfcc_coefficients": 13, "n_fft": 512,
                                               "window_length": 400, "hop_length": 160})
  return cfg


def validate(config) -> None:
  """Before compilation: sound, one frame rate, shifts the margin holds, a clip tower, a margin."""
  correspondence.check_audio_config(config, "syncnet")
  cfg = config.pretext
  if cfg.fps != config.video.fps:
    raise ValueError(f"syncnet: pretext.fps {cfg.fps:g} differs from video.fps {config.video.fps:g}: "
                     f"set --config.pretext.fps={config.video.fps:g}")
  if not 0 < cfg.min_shift_seconds <= cfg.max_shift_seconds:
    raise ValueError(f"syncnet: shifts must satisfy 0 < min_shift_seconds <= max_shift_seconds, got "
                     f"{cfg.min_shift_seconds:g} and {cfg.max_shift_seconds:g}: set --config.pretext.min_shift_seconds")
  margin = config.audio.margin_seconds
  if cfg.max_shift_seconds > margin + 1e-9:
    raise ValueError(f"syncnet: a shift of up to {cfg.max_shift_seconds:g} s needs that much audio beyond the "
                     f"window, the host delivers {margin:g} s: raise --config.audio.margin_seconds to "
                     f"{cfg.max_shift_seconds:g} or lower --config.pretext.max_shift_seconds")
  if not getattr(models.get_backbone(config.model), "takes_video", False):
    raise ValueError(f"syncnet embeds a window of frames: model {config.model.name!r} takes single images, use "
                     f"--config.model.name=stacked_frames (SyncNet's lip tower) or a 3D backbone")
  if cfg.margin <= 0:
    raise ValueError(f"syncnet: margin must be positive, got {cfg.margin:g}: set --config.pretext.margin=1")


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3), ``batch["audio"]`` (B, A) -> aligned and shifted pairs,
  exactly as synchronization draws them."""
  return synchronization.make_inputs(rng, batch, cfg, state=state)


class Head(nn.Module):
  """Each tower's pooled features to an embedding; the distance of audio row j to video row
  j mod B."""
  hidden_dim: int = 512
  embedding_dim: int = 256

  @nn.compact
  def __call__(self, visual, heard, *, train: bool):
    del train

    def embed(x, name):
      x = nn.relu(nn.Dense(self.hidden_dim, name=f"{name}_fc6")(x.astype(jnp.float32)))
      return nn.Dense(self.embedding_dim, name=f"{name}_fc7")(x)

    v = embed(visual["pooled"], "visual")
    a = embed(heard["pooled"], "audio")
    v = synchronization.tile_to(v, a.shape[0])
    # sqrt of a clamped sum: its gradient stays finite when a pair coincides.
    return {"distance": jnp.sqrt(jnp.maximum(jnp.sum(jnp.square(v - a), axis=-1), 1e-12))}


def head(cfg) -> nn.Module:
  return Head(hidden_dim=cfg.hidden_dim, embedding_dim=cfg.embedding_dim)


def model(backbone, cfg) -> nn.Module:
  """The lip tower (``backbone``) and the audio tower (``cfg.audio_model``) under the embeddings."""
  return models.AudioVisualModel(backbone=backbone, audio=models.get_backbone(cfg.audio_model),
                                 head=head(cfg))


def loss(outputs, targets, *, cfg):
  return losses.contrastive_margin(distances=outputs["distance"], labels=targets["label"], margin=cfg.margin)


def offset_scores(outputs):
  """Higher for a better-synchronised pair (sslx/evaluate/sync.py): the negative distance."""
  return -outputs["distance"]
