"""Audio-visual correspondence: L3-Net (Arandjelovic & Zisserman, "Look, Listen and Learn",
ICCV 2017) and, as an option, AVE-Net (Arandjelovic & Zisserman, "Objects that Sound",
ECCV 2018).

Does this frame go with this sound? A binary task, label 1 = they correspond:
- **Inputs**: one frame, the middle frame of the window the host delivers, and
  ``audio_seconds`` (1 s, as in the paper) of the clip's audio centred on that frame's
  presentation time (the host delivers the audio of the frame window plus
  ``audio.margin_seconds`` on each side, sslx/data/video.py; the centre of the delivered
  audio is the centre of the window).
- **Positives**: frame and audio of the same clip at the same time. **Negatives**, with
  probability ``negative_probability`` = 0.5 per example as in the paper: the frame with the
  audio of another clip, drawn on the device among every example of the whole global batch
  whose source index differs (``pair_with_other_clips``), so that 8 devices pair exactly as
  one does and a clip is never its own negative. An example whose batch holds no other
  clip stays a positive, and its label says so.
- **Fusion** ``"concat"`` (L3-Net): each tower's last map max-pooled over all its positions
  (the paper's pool4), the two vectors concatenated, FC 128 + ReLU, FC 2, softmax
  cross-entropy. ``"distance"`` (AVE-Net): each pooled vector through FC 128 + ReLU + FC 128
  and L2-normalised, their Euclidean distance into a 1-to-2 linear layer (a learnt
  threshold), softmax; the normalised embeddings share one space, so they serve cross-modal
  retrieval.
- **Towers**: the visual tower is ``config.model`` (any 2D backbone, parameters under
  ``backbone``), the audio tower ``cfg.audio_model`` (parameters under ``audio``): by default
  L3-Net's audio subnetwork on a log-spectrogram computed on the device
  (sslx/models/l3_audio.py).

Defaults that differ from the paper: L3-Net trains a VGG-style 4-block vision tower on 224 px
frames and 48 kHz audio (257 x 199 log-spectrogram of 1 s); the CPU experiments here use a small
2D backbone on 64 px crops, 16 kHz audio and a width multiplier on the audio tower
(experiments/correspondence_l3_grid.py says which).

Inputs: ``{"image": (B, H, W, 3), "audio": (B, audio_seconds * sample_rate)}``; targets:
``{"label": (B,), "partner": (B,)}`` (the batch position whose audio each example got).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses, models

FUSIONS = ("concat", "distance")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "audiovisual.correspondence"
  cfg.fusion = "concat"  # "concat": L3-Net; "distance": AVE-Net.
  cfg.negative_probability = 0.5  # The paper's: half the pairs mismatched.
  cfg.audio_seconds = 1.0  # Audio per example, centred on the frame.
  cfg.embedding_dim = 128  # L3's fusion FC and AVE-Net's embeddings.
  # The audio tower (a backbone under sslx/models/ taking (B, N) waveforms); its sample_rate
  # must be the data's (config.audio.sample_rate; validate checks it).
  cfg.audio_model = ml_collections.ConfigDict({"name": "l3_audio", "sample_rate": 16000, "width": 1.0})
  return cfg


def delivered_audio_seconds(config) -> float:
  """Seconds of audio the host delivers per example: the frame window plus both margins."""
  v = config.video
  span = (v.num_frames - 1) * v.frame_stride + 1
  return span / v.fps + 2 * config.audio.margin_seconds


def check_audio_config(config, task: str) -> None:
  """The checks every audio-visual pretext shares: video and audio sections, one sample rate."""
  if config.get("video") is None or config.get("audio") is None:
    raise ValueError(f"{task} needs video with sound (config.video and config.audio): start the "
                     f"experiment config from configs.base_av()")
  rate, tower_rate = config.audio.sample_rate, config.pretext.audio_model.sample_rate
  if rate != tower_rate:
    raise ValueError(f"{task}: the audio tower expects {tower_rate} Hz but the data is resampled to "
                     f"{rate} Hz: set --config.pretext.audio_model.sample_rate={rate}")


def validate(config) -> None:
  """Before compilation: sound in the config, a known fusion, a mixed batch of both labels,
  and enough delivered audio for ``audio_seconds``."""
  check_audio_config(config, "correspondence")
  cfg = config.pretext
  if cfg.fusion not in FUSIONS:
    raise ValueError(f"correspondence: unknown fusion {cfg.fusion!r}: use 'concat' (L3-Net) or "
                     f"'distance' (AVE-Net)")
  if not 0.0 < cfg.negative_probability < 1.0:
    raise ValueError(f"correspondence: negative_probability {cfg.negative_probability} leaves one class "
                     f"empty: set --config.pretext.negative_probability in (0, 1), e.g. 0.5")
  delivered = delivered_audio_seconds(config)
  if cfg.audio_seconds > delivered + 1e-9:
    raise ValueError(f"correspondence: audio_seconds {cfg.audio_seconds:g} is longer than the "
                     f"{delivered:.3f} s the host delivers: raise --config.audio.margin_seconds to at least "
                     f"{(cfg.audio_seconds - delivered) / 2 + config.audio.margin_seconds:.3f}")


def pair_with_other_clips(rng, ids, probability: float):
  """For each example, with ``probability``, a partner drawn uniformly among the examples of
  the (global) batch with another ``ids`` value (another clip): ``(partner (B,), negative
  (B,) bool)``, partner = the example itself where no negative was drawn or none exists."""
  count = ids.shape[0]
  want_rng, pick_rng = jax.random.split(rng)
  want = jax.random.bernoulli(want_rng, probability, (count,))
  other = ids[None, :] != ids[:, None]
  # A uniform draw among the allowed partners: the largest of i.i.d. uniforms over them.
  scores = jnp.where(other, jax.random.uniform(pick_rng, (count, count)), -1.0)
  negative = want & other.any(axis=1)
  partner = jnp.where(negative, jnp.argmax(scores, axis=1), jnp.arange(count))
  return partner, negative


def centre_audio(audio, seconds: float, sample_rate: int):
  """The central ``seconds`` of each delivered waveform ``(B, A)``."""
  length = int(round(seconds * sample_rate))
  if length > audio.shape[-1]:
    raise ValueError(f"{seconds:g} s of audio at {sample_rate} Hz needs {length} samples, the batch has "
                     f"{audio.shape[-1]}: raise --config.audio.margin_seconds")
  start = (audio.shape[-1] - length) // 2
  return audio[..., start:start + length]


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3), ``batch["audio"]`` (B, A), ``batch["index"]`` ->
  ({"image": middle frames, "audio": own or another clip's audio}, {"label", "partner"})."""
  del state
  video = batch["video"]
  frames = video[:, video.shape[1] // 2]
  audio = centre_audio(batch["audio"], cfg.audio_seconds, cfg.audio_model.sample_rate)
  partner, negative = pair_with_other_clips(rng, batch["index"], cfg.negative_probability)
  label = 1 - negative.astype(jnp.int32)
  return {"image": frames, "audio": audio[partner]}, {"label": label, "partner": partner}


class Head(nn.Module):
  """Both towers' last maps, max-pooled (``pool``), fused (``fuse``, one of ``FUSIONS``) into
  2 logits, index 1 = they correspond. The evaluation scripts call ``pool`` once per tower and
  ``fuse`` on every pair (retrieval), and AVE-Net's ``embed`` for its shared space."""
  fusion: str = "concat"
  embedding_dim: int = 128

  def setup(self):
    if self.fusion not in FUSIONS:
      raise ValueError(f"correspondence: unknown fusion {self.fusion!r}: use one of {FUSIONS}")
    if self.fusion == "concat":
      self.fc1 = nn.Dense(self.embedding_dim)
    else:  # AVE-Net: FC + ReLU + FC per tower.
      self.visual_fc1, self.visual_fc2 = nn.Dense(self.embedding_dim), nn.Dense(self.embedding_dim)
      self.audio_fc1, self.audio_fc2 = nn.Dense(self.embedding_dim), nn.Dense(self.embedding_dim)
    self.classifier = nn.Dense(2)

  def pool(self, visual, heard):
    """Feature dicts -> the max-pooled last maps (L3-Net's pool4): ``(B, C_v)``, ``(B, C_a)``."""
    return (models.max_pool_all(visual[models.block_names(visual)[-1]]),
            models.max_pool_all(heard[models.block_names(heard)[-1]]))

  def embed(self, v, a):
    """AVE-Net's L2-normalised embeddings of pooled features, one space for both towers."""
    def unit(x):
      return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    return (unit(self.visual_fc2(nn.relu(self.visual_fc1(v)))),
            unit(self.audio_fc2(nn.relu(self.audio_fc1(a)))))

  def fuse(self, v, a):
    """Pooled features of matching rows -> logits ``(..., 2)``."""
    if self.fusion == "concat":
      return self.classifier(nn.relu(self.fc1(jnp.concatenate([v, a], axis=-1))))
    ev, ea = self.embed(v, a)
    return self.classifier(jnp.linalg.norm(ev - ea, axis=-1, keepdims=True))

  def __call__(self, visual, heard, *, train: bool):
    del train
    return self.fuse(*self.pool(visual, heard))


def head(cfg) -> nn.Module:
  return Head(fusion=cfg.fusion, embedding_dim=cfg.embedding_dim)


def model(backbone, cfg) -> nn.Module:
  """The visual backbone and the audio tower (``cfg.audio_model``) under the fusion head."""
  return models.AudioVisualModel(backbone=backbone, audio=models.get_backbone(cfg.audio_model),
                                 head=head(cfg))


def loss(outputs, targets, *, cfg):
  del cfg
  return losses.classification(logits=outputs, labels=targets["label"])
