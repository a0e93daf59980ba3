import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, losses, models, pretexts
from sslx.pretexts.audiovisual import syncnet
from tests.conftest import REPO
from tests.pretexts import steps
from tests.pretexts.audiovisual.test_correspondence import real_batch
from tests.pretexts.audiovisual.test_synchronization import time_coded

RATE = 16000
TINY_LIP_TOWER = {"name": "stacked_frames", "width": 0.125}


def tiny_cfg(**changes):
  cfg = syncnet.default_config()
  cfg.audio_model.width = 0.0625
  cfg.hidden_dim, cfg.embedding_dim = 32, 16
  cfg.update(changes)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("audiovisual.syncnet").module is syncnet


def test_pairs_are_the_papers_5_frames_and_0_2_s_of_the_same_clip_shifted_by_at_least_2_frames():
  batch_size = 160
  batch = time_coded(batch_size, num_frames=5)
  inputs, targets = jax.jit(lambda r, b: syncnet.make_inputs(r, b, tiny_cfg()))(jax.random.PRNGKey(0), batch)
  audio, label, shift = (np.asarray(x) for x in (inputs["audio"], targets["label"], targets["shift"]))
  assert audio.shape == (2 * batch_size, RATE // 5)  # 0.2 s.
  np.testing.assert_array_equal(label, np.repeat([1, 0], batch_size))
  clip = np.round(audio[:, 0] / 1e5).astype(int)
  np.testing.assert_array_equal(clip, np.tile(np.arange(batch_size), 2))  # Its own clip's audio.
  np.testing.assert_allclose(audio[:, 0] - clip * 1e5, 9600 + shift)  # Where the target says.
  assert np.all(shift[:batch_size] == 0)
  negative = np.abs(shift[batch_size:])
  assert negative.min() >= 2 * RATE // 25 and negative.max() <= 15 * RATE // 25


def test_the_audio_tower_reads_13_mfccs_at_100_hz():
  backbone = models.get_backbone(tiny_cfg().audio_model)
  mfcc = backbone.front_end(jnp.zeros((2, RATE // 5)))
  assert mfcc.shape == (2, 20, 13)  # SyncNet's 13 x 20 input for 0.2 s.


def test_the_lip_tower_stacks_grey_frames_on_channels():
  backbone = models.get_backbone(TINY_LIP_TOWER)
  clips = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 48, 48, 3))
  variables = backbone.init(jax.random.PRNGKey(1), clips, train=False)
  assert variables["params"]["block1_conv1"]["conv"]["kernel"].shape[-2] == 5  # 5 grey frames in.
  features = backbone.apply(variables, clips, train=False)
  assert {k: v.shape for k, v in features.items()} == {
      "block1": (2, 1, 48, 48, 12), "block2": (2, 1, 24, 24, 32), "block3": (2, 1, 12, 12, 32),
      "block4": (2, 1, 6, 6, 64), "pooled": (2, 64)}
  # Grey: a colour change that keeps each pixel's mean changes nothing.
  swapped = clips[..., ::-1]
  np.testing.assert_allclose(backbone.apply(variables, swapped, train=False)["pooled"], features["pooled"],
                             atol=1e-5)
  # Time order matters: the first convolution sees each frame on its own channel.
  reversed_time = backbone.apply(variables, clips[:, ::-1], train=False)["pooled"]
  assert not np.allclose(reversed_time, features["pooled"], atol=1e-4)


def test_contrastive_margin_loss():
  distances = jnp.asarray([0.0, 0.5, 0.25, 2.0])
  labels = jnp.asarray([1, 1, 0, 0])
  loss, metrics = losses.contrastive_margin(distances=distances, labels=labels, margin=1.0)
  # (0 + 0.25 + 0.75^2 + 0) / 2, averaged over 4 pairs.
  np.testing.assert_allclose(float(loss), (0.25 + 0.5625) / 2 / 4, rtol=1e-6)
  # Correct: d < 0.5 for positives (0.0 yes, 0.5 no), d >= 0.5 for negatives (0.25 no, 2.0 yes).
  assert float(metrics["accuracy"]) == 0.5
  per_pair, _ = losses.contrastive_margin(distances=distances, labels=labels, reduction=False)
  assert per_pair.shape == (4,)


def test_the_head_pairs_audio_row_j_with_video_row_j_mod_b():
  head = syncnet.Head(hidden_dim=4, embedding_dim=3)
  visual = {"pooled": jnp.asarray([[1.0, 0.0], [0.0, 1.0]])}
  heard = {"pooled": jnp.asarray([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])}
  params = head.init(jax.random.PRNGKey(0), visual, heard, train=False)["params"]
  # Each tower has its own embedding layers; made equal here, equal inputs embed equally.
  params = dict(params, audio_fc6=params["visual_fc6"], audio_fc7=params["visual_fc7"])
  d = np.asarray(head.apply({"params": params}, visual, heard, train=False)["distance"])
  np.testing.assert_allclose(d[:2], 0.0, atol=1e-5)  # Audio rows 0, 1 meet video rows 0, 1.
  assert d[2] > 1e-3 and d[3] > 1e-3
  np.testing.assert_array_equal(syncnet.offset_scores({"distance": jnp.asarray(d)}), -d)


def av_config(**changes):
  c = configs.load(REPO / "experiments" / "syncnet_grid.py")
  c.update_from_flattened_dict(changes)
  return c


def test_validate_one_line_errors():
  syncnet.validate(av_config())
  with pytest.raises(ValueError, match=r"pretext.fps 25 differs from video.fps 10"):
    syncnet.validate(av_config(**{"video.fps": 10.0}))
  with pytest.raises(ValueError, match=r"the host delivers 0.3 s: raise --config.audio.margin_seconds to 0.6"):
    syncnet.validate(av_config(**{"audio.margin_seconds": 0.3}))
  with pytest.raises(ValueError, match=r"0 < min_shift_seconds <= max_shift_seconds"):
    syncnet.validate(av_config(**{"pretext.min_shift_seconds": 0.0}))
  with pytest.raises(ValueError, match=r"model 'convnet' takes single images, use --config.model.name=stacked_frames"):
    syncnet.validate(av_config(model={"name": "convnet"}))
  with pytest.raises(ValueError, match=r"margin must be positive"):
    syncnet.validate(av_config(**{"pretext.margin": 0.0}))
  with pytest.raises(ValueError, match=r"expects 16000 Hz but the data is resampled to 22050 Hz"):
    syncnet.validate(av_config(**{"audio.sample_rate": 22050}))


def test_loss_decreases_on_real_clips():
  c = configs.quick_av(av_config())
  batch = real_batch(8, config=c)
  assert batch["video"].shape[1:] == (5, 32, 32, 3) and batch["audio"].shape[1] == round((0.2 + 1.2) * RATE)
  values, metrics = steps.losses_over_steps(syncnet, tiny_cfg(), batch, steps=10, model_config=TINY_LIP_TOWER,
                                            learning_rate=3e-3)
  assert math.isfinite(values[0])
  assert values[-1] < 0.6 * values[0], values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
