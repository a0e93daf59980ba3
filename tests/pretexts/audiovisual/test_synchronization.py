import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.audiovisual import synchronization
from tests.conftest import REPO
from tests.pretexts import steps
from tests.pretexts.audiovisual.test_correspondence import real_batch

RATE = 16000
TINY_R3D_TRUNK = {"name": "r3d", "width": 0.125, "stages": 2}


def tiny_cfg(fusion="early", **changes):
  cfg = synchronization.default_config()
  cfg.fusion = fusion
  cfg.audio_model = {"name": "waveform", "sample_rate": RATE, "width": 0.0625}
  cfg.fusion_channels, cfg.merge_channels, cfg.fused_channels = 8, 16, (8, 16)
  cfg.update(changes)
  return cfg


def time_coded(batch_size, num_frames=8, margin=0.6, clips=None):
  """Audio whose every sample holds clip * 1e5 + its position in the delivered window (exact in
  float32 for fewer than 167 clips)."""
  length = int(round((num_frames / 25 + 2 * margin) * RATE))
  clips = np.arange(batch_size) if clips is None else np.asarray(clips)
  audio = clips[:, None] * 1e5 + np.arange(length)[None, :]
  return {"video": jnp.zeros((batch_size, num_frames, 2, 2, 3)), "audio": jnp.asarray(audio, jnp.float32),
          "index": jnp.asarray(clips, jnp.int32)}


def test_found_by_name_with_contract():
  assert pretexts.get("audiovisual.synchronization").module is synchronization


def test_half_the_examples_are_the_same_clip_shifted_by_at_least_the_minimum():
  cfg = tiny_cfg()
  batch_size = 160
  batch = time_coded(batch_size)
  inputs, targets = jax.jit(lambda r, b: synchronization.make_inputs(r, b, cfg))(jax.random.PRNGKey(0), batch)
  audio, label, shift = (np.asarray(x) for x in (inputs["audio"], targets["label"], targets["shift"]))
  window = 8 * RATE // 25
  assert audio.shape == (2 * batch_size, window) and inputs["video"].shape[0] == batch_size
  np.testing.assert_array_equal(label, np.repeat([1, 0], batch_size))
  clip = np.round(audio[:, 0] / 1e5).astype(int)
  start = audio[:, 0] - clip * 1e5
  # Every example's audio is its own clip's (row j meets video j mod B) ...
  np.testing.assert_array_equal(clip, np.tile(np.arange(batch_size), 2))
  # ... consecutive samples of it ...
  np.testing.assert_allclose(audio[:, -1] - audio[:, 0], window - 1)
  # ... from the centre (aligned: 0.6 s = 9600 samples in) or shifted as the target says.
  np.testing.assert_allclose(start, 9600 + shift)
  negative = np.abs(shift[batch_size:])
  assert negative.min() >= 0.2 * RATE and negative.max() <= 0.6 * RATE
  assert 0.3 < np.mean(shift[batch_size:] > 0) < 0.7  # Both directions.
  assert np.all(shift[:batch_size] == 0)


def test_curriculum_starts_with_other_clips_then_shifts():
  cfg = tiny_cfg(curriculum_steps=100)
  batch = time_coded(64, clips=np.arange(64) % 40)
  for step, easy in ((0, True), (99, True), (100, False)):
    inputs, targets = synchronization.make_inputs(jax.random.PRNGKey(1), dict(batch, step=jnp.int32(step)), cfg)
    audio = np.asarray(inputs["audio"][64:])
    clip = np.round(audio[:, 0] / 1e5).astype(int)
    own = np.asarray(batch["index"])
    if easy:  # Another clip's aligned audio.
      assert np.all(clip != own) and np.allclose(audio[:, 0] - clip * 1e5, 9600)
      np.testing.assert_array_equal(own[np.asarray(targets["partner"][64:])], clip)
    else:
      assert np.all(clip == own) and np.all(np.abs(np.asarray(targets["shift"][64:])) >= 0.2 * RATE)


def av_config(**changes):
  c = configs.load(REPO / "experiments" / "synchronization_r3d_grid.py")
  for key, value in changes.items():
    node = c
    *parents, name = key.split(".")
    for part in parents:
      node = node[part]
    node[name] = value
  return c


def test_validate_one_line_errors():
  synchronization.validate(av_config())
  with pytest.raises(ValueError, match=r"pretext.fps 25 differs from video.fps 10: set --config.pretext.fps=10"):
    synchronization.validate(av_config(**{"video.fps": 10.0}))
  with pytest.raises(ValueError, match=r"up to 0.6 s needs that much audio beyond the window, the host delivers "
                                       r"0.3 s: raise --config.audio.margin_seconds to 0.6"):
    synchronization.validate(av_config(**{"audio.margin_seconds": 0.3}))
  with pytest.raises(ValueError, match=r"0 < min_shift_seconds <= max_shift_seconds"):
    synchronization.validate(av_config(**{"pretext.min_shift_seconds": 0.8}))
  with pytest.raises(ValueError, match=r"model 'convnet' is 2D, use --config.model.name=r3d"):
    synchronization.validate(av_config(model={"name": "convnet"}))
  with pytest.raises(ValueError, match=r"expects 16000 Hz but the data is resampled to 22050 Hz"):
    synchronization.validate(av_config(**{"audio.sample_rate": 22050}))


def test_pool_time_takes_the_maximum_of_each_stretch():
  x = jnp.asarray([[0.0, 5.0, 1.0, 2.0, 7.0]])[..., None]
  np.testing.assert_array_equal(synchronization.pool_time(x, 2)[0, :, 0], [5.0, 7.0])  # [0:2], [2:5]
  with pytest.raises(ValueError, match="fewer than the video trunk's 8"):
    synchronization.pool_time(x, 8)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_loss_decreases_on_real_clips(fusion):
  c = configs.quick_av(av_config())
  batch = real_batch(8, config=c)
  assert batch["video"].shape[1] == 8 and batch["audio"].shape[1] == round((8 / 25 + 1.2) * RATE)
  # Late fusion takes any 3D backbone; the 2-stage trunk keeps the compilation short.
  values, metrics = steps.losses_over_steps(synchronization, tiny_cfg(fusion), batch, steps=10,
                                            model_config=TINY_R3D_TRUNK, learning_rate=3e-3)
  assert values[0] > math.log(2) - 0.4
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
