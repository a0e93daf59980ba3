"""Audio-visual synchronisation: is the sound in time with the video? After Owens & Efros,
"Audio-Visual Scene Analysis with Self-Supervised Multisensory Features" (ECCV 2018), with the
curriculum of Korbar, Tran & Torresani (AVTS, NeurIPS 2018) as an option.

- **Pairs** (Owens & Efros's "both examples"): every clip gives two examples that share its
  video window: the audio that was recorded with it (label 1) and the same clip's audio
  shifted in time (label 0), so exactly half of each batch is negative. The shift is drawn
  uniformly in +-[``min_shift_seconds``, ``max_shift_seconds``] (sign uniform), in samples.
  The official code samples 4.2 s windows from 10 s clips and shifts by seconds; GRID clips
  last 3 s, so here windows are ``video.num_frames`` frames (0.32 s in the experiment) and
  shifts 0.2-0.6 s: at least 5 frames, a syllable's length, so a negative is never a near
  copy of the positive. The host delivers the window's audio plus ``audio.margin_seconds``
  on each side (sslx/data/video.py), which must cover ``max_shift_seconds`` (``validate``).
- **Curriculum** (AVTS, optional): for the first ``curriculum_steps`` steps the negatives are
  easy, the audio of another clip of the global batch at the same position, then the shifted
  audio of the same clip (0: shifted from the start, Owens & Efros).
- **Fusion** ``"early"`` (the paper's): the visual trunk is ``config.model`` (a 3D backbone cut
  after its second block: ``r3d`` with ``stages=2``), the audio tower ``cfg.audio_model``
  (the paper's strided 1-D convolutions on the waveform, sslx/models/waveform.py). The audio
  tower's last map is max-pooled in time to the trunk's time steps, a 3-tap temporal
  convolution makes ``fusion_channels`` (128) features per step, which are tiled over space
  and concatenated to the visual map; a 1x1x1 convolution (512 channels, then 128, with a
  shortcut of the first 64 visual and last 64 audio channels, as there) merges them; then
  further 3D residual stages (``fused_channels``; the paper: ResNet-18's conv3-conv5),
  global average pooling and one logit, sigmoid cross-entropy. ``"late"``: a whole 3D
  backbone and the audio tower meet only after pooling: per-time-step features of each,
  concatenated, a temporal convolution, max over time, one logit.
- Evaluation (sslx/evaluate/sync.py) scores one video window against its audio at many
  offsets: the model takes ``k * B`` audio clips for ``B`` video windows and pairs audio
  ``j`` with video ``j mod B`` (the same tiling that trains "both examples").

Defaults that differ from the paper (experiments/synchronization_r3d_grid.py): a small R3D
trunk on 32 px crops of the mouth where the paper has a ResNet-18-sized 3D network on 224 px
frames; 16 kHz mono audio (21 kHz stereo there); plain BatchNorm (batch renormalisation there);
AdamW on a CPU schedule.

Inputs: ``{"video": (B, T, H, W, 3), "audio": (2B, T / fps * sample_rate)}`` (aligned audio
first, then the negatives); targets: ``{"label": (2B,), "shift": (2B,)}`` (the audio's offset
from the aligned position, in samples; for the curriculum's other-clip negatives, the
partner's batch position is in ``partner``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from sslx import losses, models
from sslx.models import r3d
from sslx.pretexts.audiovisual import correspondence

FUSIONS = ("early", "late")


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "audiovisual.synchronization"
  cfg.fusion = "early"
  cfg.fps = 25.0  # The data's frame rate (config.video.fps; validate checks it).
  cfg.min_shift_seconds = 0.2
  cfg.max_shift_seconds = 0.6
  cfg.curriculum_steps = 0  # AVTS: other-clip negatives for this many steps first.
  cfg.fusion_channels = 128  # The paper's sf/conv5_1 and merge output.
  cfg.merge_channels = 512  # The paper's first 1x1x1 merge convolution.
  cfg.fused_channels = (128, 256)  # Residual 3D stages after the fusion (stride 2 each).
  cfg.audio_model = ml_collections.ConfigDict({"name": "waveform", "sample_rate": 16000, "width": 1.0})
  return cfg


def window_samples(num_frames: int, cfg) -> int:
  """Audio samples that span ``num_frames`` video frames."""
  return int(round(num_frames / cfg.fps * cfg.audio_model.sample_rate))


def validate(config) -> None:
  """Before compilation: sound, one frame rate, a 3D trunk, shifts the margin can hold."""
  correspondence.check_audio_config(config, "synchronization")
  cfg = config.pretext
  if cfg.fusion not in FUSIONS:
    raise ValueError(f"synchronization: unknown fusion {cfg.fusion!r}: use 'early' (Owens & Efros) or 'late'")
  if cfg.fps != config.video.fps:
    raise ValueError(f"synchronization: pretext.fps {cfg.fps:g} differs from video.fps {config.video.fps:g}: "
                     f"set --config.pretext.fps={config.video.fps:g}")
  if not 0 < cfg.min_shift_seconds <= cfg.max_shift_seconds:
    raise ValueError(f"synchronization: shifts must satisfy 0 < min_shift_seconds <= max_shift_seconds, got "
                     f"{cfg.min_shift_seconds:g} and {cfg.max_shift_seconds:g}: set --config.pretext.min_shift_seconds")
  margin = config.audio.margin_seconds
  if cfg.max_shift_seconds > margin + 1e-9:
    raise ValueError(f"synchronization: a shift of up to {cfg.max_shift_seconds:g} s needs that much audio beyond "
                     f"the window, the host delivers {margin:g} s: raise --config.audio.margin_seconds to "
                     f"{cfg.max_shift_seconds:g} or lower --config.pretext.max_shift_seconds")
  if config.model.name not in ("r3d", "c3d"):
    raise ValueError(f"synchronization fuses sound into a 3D network: model {config.model.name!r} is 2D, use "
                     f"--config.model.name=r3d (with model.stages=2 for early fusion)")


def shifted_windows(audio, starts, length: int):
  """``length`` samples of each row of ``audio`` from its own ``starts``."""
  return jax.vmap(lambda row, s: jax.lax.dynamic_slice(row, (s,), (length,)))(audio, starts)


def make_inputs(rng, batch, cfg, *, state=None):
  """``batch["video"]`` (B, T, H, W, 3) and ``batch["audio"]`` (B, A) -> ({"video", "audio":
  aligned then negatives}, {"label", "shift", "partner"})."""
  del state
  video, audio = batch["video"], batch["audio"]
  count, num_frames = video.shape[:2]
  length = window_samples(num_frames, cfg)
  rate = cfg.audio_model.sample_rate
  centre = (audio.shape[1] - length) // 2  # The aligned window: the delivered audio's centre.
  max_shift = int(round(cfg.max_shift_seconds * rate))
  if centre < max_shift:
    raise ValueError(f"synchronization: shifts up to {cfg.max_shift_seconds:g} s need {max_shift} samples beyond "
                     f"the window, the batch has {centre}: raise --config.audio.margin_seconds")
  size_rng, sign_rng, pair_rng = jax.random.split(rng, 3)
  magnitude = jax.random.randint(size_rng, (count,), int(round(cfg.min_shift_seconds * rate)), max_shift + 1)
  shift = jnp.where(jax.random.bernoulli(sign_rng, 0.5, (count,)), magnitude, -magnitude)
  aligned = audio[:, centre:centre + length]
  negatives = shifted_windows(audio, centre + shift, length)
  partner = jnp.arange(count)
  if cfg.curriculum_steps > 0:
    # AVTS: easy negatives (another clip, same position) before the hard, shifted ones.
    others, found = correspondence.pair_with_other_clips(pair_rng, batch["index"], 1.0)
    easy = found & (batch.get("step", cfg.curriculum_steps) < cfg.curriculum_steps)
    negatives = jnp.where(easy[:, None], aligned[others], negatives)
    shift = jnp.where(easy, 0, shift)
    partner = jnp.where(easy, others, partner)
  label = jnp.concatenate([jnp.ones(count, jnp.int32), jnp.zeros(count, jnp.int32)])
  return ({"video": video, "audio": jnp.concatenate([aligned, negatives])},
          {"label": label, "shift": jnp.concatenate([jnp.zeros(count, shift.dtype), shift]),
           "partner": jnp.concatenate([jnp.arange(count), partner])})


def pool_time(x, steps: int):
  """``(B, t, C)`` -> ``(B, steps, C)``: the maximum over ``steps`` consecutive stretches of
  (nearly) equal length, as the paper max-pools its sound features to the video's rate."""
  t = x.shape[1]
  if t < steps:
    raise ValueError(f"the audio tower's last map has {t} time steps, fewer than the video trunk's {steps}: "
                     f"use longer windows (video.num_frames) or a shallower audio tower")
  bounds = [round(i * t / steps) for i in range(steps + 1)]
  return jnp.stack([x[:, bounds[i]:bounds[i + 1]].max(axis=1) for i in range(steps)], axis=1)


def tile_to(visual, count: int):
  """Visual rows repeated so that audio row ``j`` meets visual row ``j mod B``."""
  return jnp.tile(visual, (count // visual.shape[0],) + (1,) * (visual.ndim - 1))


def _bn(x, train, name):
  return nn.BatchNorm(use_running_average=not train, name=name)(x)


class Head(nn.Module):
  """The fused network after the two towers: one synchronisation logit per audio row."""
  fusion: str = "early"
  fusion_channels: int = 128
  merge_channels: int = 512
  fused_channels: tuple = (128, 256)

  @nn.compact
  def __call__(self, visual, heard, *, train: bool):
    v = visual[models.block_names(visual)[-1]].astype(jnp.float32)  # (B, T', H', W', C)
    a = heard[models.block_names(heard)[-1]].astype(jnp.float32)  # (kB, t, C) from a 1-D tower.
    if a.ndim == 4:  # A spectrogram tower's (kB, time, freq, C): its frequencies pooled away.
      a = a.max(axis=2)
    if self.fusion not in FUSIONS:
      raise ValueError(f"synchronization: unknown fusion {self.fusion!r}: use one of {FUSIONS}")
    steps = v.shape[1]
    a = pool_time(a, steps)
    a = nn.relu(_bn(nn.Conv(self.fusion_channels, (3,), padding="SAME", name="audio_conv")(a), train,
                    "audio_bn"))
    v = tile_to(v, a.shape[0])
    if self.fusion == "late":
      x = jnp.concatenate([v.mean(axis=(2, 3)), a], axis=-1)  # (kB, T', Cv + C)
      x = nn.relu(_bn(nn.Conv(self.fusion_channels, (3,), padding="SAME", name="fused_conv")(x), train,
                      "fused_bn"))
      return nn.Dense(1, name="classifier")(x.max(axis=1))[:, 0]
    a = jnp.broadcast_to(a[:, :, None, None, :], v.shape[:4] + (a.shape[-1],))
    x = jnp.concatenate([v, a], axis=-1)
    half = self.fusion_channels // 2
    shortcut = jnp.concatenate([x[..., :half], x[..., -half:]], axis=-1)
    x = nn.relu(_bn(nn.Dense(self.merge_channels, use_bias=False, name="merge1")(x), train, "merge1_bn"))
    x = nn.Dense(self.fusion_channels, name="merge2")(x)
    x = nn.relu(_bn(x + shortcut, train, "merge_bn"))
    for i, channels in enumerate(self.fused_channels):
      x = r3d.BasicBlock(channels, 2, "3d", jnp.float32, name=f"fused{i + 1}")(x, train=train)
    return nn.Dense(1, name="classifier")(x.mean(axis=(1, 2, 3)))[:, 0]


def head(cfg) -> nn.Module:
  return Head(fusion=cfg.fusion, fusion_channels=cfg.fusion_channels, merge_channels=cfg.merge_channels,
              fused_channels=tuple(cfg.fused_channels))


def model(backbone, cfg) -> nn.Module:
  """The visual trunk (``backbone``) and the audio tower (``cfg.audio_model``) under the fused head."""
  return models.AudioVisualModel(backbone=backbone, audio=models.get_backbone(cfg.audio_model),
                                 head=head(cfg))


def loss(outputs, targets, *, cfg):
  del cfg
  return losses.binary_classification(logits=outputs, labels=targets["label"])


def offset_scores(outputs):
  """Higher for a better-synchronised pair (sslx/evaluate/sync.py): the sync logit itself."""
  return outputs
