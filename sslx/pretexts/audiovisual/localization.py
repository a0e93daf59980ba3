"""Sound localisation: AVOL-Net (Arandjelovic & Zisserman, "Objects that Sound", ECCV 2018).

The audio-visual correspondence task of L3-Net (sslx/pretexts/audiovisual/correspondence.py),
answered through a map: where in this frame is the thing that makes this sound?

- **Pairs**, as in correspondence: the middle frame of the delivered window and
  ``audio_seconds`` (1 s) of audio centred on it; with probability ``negative_probability``
  = 0.5 the audio of another clip, drawn over the whole global batch
  (``correspondence.pair_with_other_clips``). Label 1 = they correspond.
- **Vision**: the visual backbone's last map, kept spatial (no pooling), through two 1x1
  convolutions to ``embedding_dim`` = 128 channels (ReLU between them) and L2-normalised at
  every location: one embedding per place in the frame. The paper's is the 14 x 14 conv5 map
  of its VGG-style tower on 224 px frames.
- **Audio**: the audio tower's last map max-pooled (L3's pool4), FC 128 + ReLU + FC 128,
  L2-normalised: one embedding per clip, in the same space.
- **Fusion**: the scalar product of the audio embedding with every location's embedding (a
  similarity map), calibrated by a 1x1 convolution on that one-channel map (a learnt scalar
  scale and bias), a sigmoid per location, and a max over all locations: multiple-instance
  learning, the pair corresponds if some place in the frame goes with the sound. Logistic
  loss on that maximum. Only the location that wins the max gets the gradient, so the
  network learns to light up the place that sounds, with no location ever labelled.

Logits are kept (the sigmoid is monotonic, so the max of the sigmoids is the sigmoid of the
max logit): the head returns the max logit ``(B,)``, ``Head.logit_map`` the whole map ``(B, h,
w)`` for pictures and the evaluation (sslx/evaluate/localization.py).

The layer sequence is the one the paper's Fig. 4 draws (arXiv 1712.06651: conv5 14 x 14
x 512 -> 1x1 conv 128 -> 1x1 conv 128 -> L2 norm; pool4 -> fc 128 -> fc 128 -> L2 norm; scalar
products -> 1x1 conv -> sigmoid -> max pool); the public re-implementation
github.com/kyuyeonpooh/objects-that-sound (model/avolnet.py) builds the same sequence, without
the L2 normalisations. The ReLU between the two visual 1x1 convolutions mirrors the one between
the audio FCs. Defaults that differ or that the paper leaves open:
- The map's resolution is the backbone's: the small ConvNet of
  experiments/localization_avol_grid.py keeps 16 x 16 at block3 on its 64 px crops (8 x 8
  in the 32 px quick mode), where the paper has 14 x 14 on 224 px frames.
- The calibration starts at scale ``calibration_scale`` = 10 and bias ``calibration_bias`` =
  -5 (logit 0 at cosine 0.5): scalar parameters move by about the learning rate per Adam step,
  so from a start at scale 1 the logits would stay near [-1, 1] through a CPU run. The paper
  gives no initial values that we found.
- Frames, audio rate and towers as in correspondence (small 2D backbone, 16 kHz, L3's audio
  subnetwork at a width multiplier), not the paper's 224 px frames and 48 kHz audio.

Inputs: ``{"image": (B, H, W, 3), "audio": (B, audio_seconds * sample_rate)}``; targets:
``{"label": (B,), "partner": (B,)}`` (the batch position whose audio each example got).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses, models
from sslx.pretexts.audiovisual import correspondence


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "audiovisual.localization"
  cfg.negative_probability = 0.5  # The paper's: half the pairs mismatched.
  cfg.audio_seconds = 1.0  # Audio per example, centred on the frame.
  cfg.embedding_dim = 128  # The paper's per-location and audio embeddings.
  cfg.calibration_scale = 10.0  # Initial scale of the similarity (see the module docstring).
  cfg.calibration_bias = -5.0  # Initial bias: logit 0 at cosine similarity 0.5.
  # The audio tower (a backbone under sslx/models/ taking (B, N) waveforms); its sample_rate
  # must be the data's (config.audio.sample_rate; validate checks it).
  cfg.audio_model = ml_collections.ConfigDict({"name": "l3_audio", "sample_rate": 16000, "width": 1.0})
  return cfg


def last_map_shape(config) -> tuple[int, ...]:
  """The visual backbone's last block map for one frame of ``config.image_size``, from
  ``jax.eval_shape`` (traced, never compiled): ``(1, h, w, C)``."""
  backbone = models.get_backbone(config.model)
  size = config.image_size
  frame = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: backbone.init(jax.random.PRNGKey(0), x, train=False), frame)
  features = jax.eval_shape(lambda v, x: backbone.apply(v, x, train=False), variables, frame)
  return tuple(features[models.block_names(features)[-1]].shape)


def validate(config) -> None:
  """Before compilation: sound in the config, a mixed batch of both labels, enough delivered
  audio for ``audio_seconds``, and a per-frame backbone whose last map still has places."""
  correspondence.check_audio_config(config, "localization")
  cfg = config.pretext
  if not 0.0 < cfg.negative_probability < 1.0:
    raise ValueError(f"localization: negative_probability {cfg.negative_probability} leaves one class "
                     f"empty: set --config.pretext.negative_probability in (0, 1), e.g. 0.5")
  delivered = correspondence.delivered_audio_seconds(config)
  if cfg.audio_seconds > delivered + 1e-9:
    raise ValueError(f"localization: audio_seconds {cfg.audio_seconds:g} is longer than the "
                     f"{delivered:.3f} s the host delivers: raise --config.audio.margin_seconds to at least "
                     f"{(cfg.audio_seconds - delivered) / 2 + config.audio.margin_seconds:.3f}")
  if getattr(models.get_backbone(config.model), "takes_video", False):
    raise ValueError(f"localization: model {config.model.name!r} is a 3D backbone but the task maps one "
                     f"frame: use a 2D backbone (convnet, resnet)")
  shape = last_map_shape(config)
  if len(shape) != 4 or shape[1] * shape[2] < 2:
    raise ValueError(f"localization: the backbone's last map is {'x'.join(map(str, shape[1:-1]))} at "
                     f"image_size {config.image_size}, no places to localise in: raise --config.image_size "
                     f"or use a backbone that downsamples less")


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3), ``batch["audio"]`` (B, A), ``batch["index"]`` ->
  ({"image": middle frames, "audio": own or another clip's audio}, {"label", "partner"}),
  exactly correspondence's pairs."""
  del state
  video = batch["video"]
  frames = video[:, video.shape[1] // 2]
  audio = correspondence.centre_audio(batch["audio"], cfg.audio_seconds, cfg.audio_model.sample_rate)
  partner, negative = correspondence.pair_with_other_clips(rng, batch["index"], cfg.negative_probability)
  label = 1 - negative.astype(jnp.int32)
  return {"image": frames, "audio": audio[partner]}, {"label": label, "partner": partner}


def _unit(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


class Head(nn.Module):
  """AVOL-Net's head on both towers' feature dicts: ``embed`` (unit embeddings per location
  and per clip), ``logit_map`` (calibrated similarity per location, before the sigmoid), and
  the call: the map's maximum, the correspondence logit ``(B,)``."""
  embedding_dim: int = 128
  calibration_scale: float = 10.0
  calibration_bias: float = -5.0

  def setup(self):
    # A 1x1 convolution is a dense layer on the channel axis at every location.
    self.visual_conv1, self.visual_conv2 = nn.Dense(self.embedding_dim), nn.Dense(self.embedding_dim)
    self.audio_fc1, self.audio_fc2 = nn.Dense(self.embedding_dim), nn.Dense(self.embedding_dim)
    self.scale = self.param("scale", nn.initializers.constant(self.calibration_scale), ())
    self.bias = self.param("bias", nn.initializers.constant(self.calibration_bias), ())

  def embed(self, visual, heard):
    """Feature dicts -> unit embeddings: per location ``(B, h, w, D)`` from the visual
    backbone's last map, per clip ``(B, D)`` from the audio tower's max-pooled last map."""
    spatial = visual[models.block_names(visual)[-1]].astype(jnp.float32)
    places = _unit(self.visual_conv2(nn.relu(self.visual_conv1(spatial))))
    pooled = models.max_pool_all(heard[models.block_names(heard)[-1]])
    return places, _unit(self.audio_fc2(nn.relu(self.audio_fc1(pooled))))

  def logit_map(self, visual, heard):
    """The calibrated similarity of every location with the sound, ``(B, h, w)``: its sigmoid
    is the probability that this place makes this sound."""
    places, sound = self.embed(visual, heard)
    similarity = jnp.einsum("bhwd,bd->bhw", places, sound, precision=jax.lax.Precision.HIGHEST)
    return self.scale * similarity + self.bias

  def __call__(self, visual, heard, *, train: bool):
    del train
    return self.logit_map(visual, heard).max(axis=(1, 2))


def head(cfg) -> nn.Module:
  return Head(embedding_dim=cfg.embedding_dim, calibration_scale=cfg.calibration_scale,
              calibration_bias=cfg.calibration_bias)


def model(backbone, cfg) -> nn.Module:
  """The visual backbone and the audio tower (``cfg.audio_model``) under the AVOL head."""
  return models.AudioVisualModel(backbone=backbone, audio=models.get_backbone(cfg.audio_model),
                                 head=head(cfg))


def loss(outputs, targets, *, cfg):
  """Logistic loss on the max logit; accuracy: the sign of the logit against the label."""
  del cfg
  return losses.binary_classification(logits=outputs, labels=targets["label"])
