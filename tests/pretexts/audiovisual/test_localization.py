import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.audiovisual import localization
from tests.pretexts import steps
from tests.pretexts.audiovisual.test_correspondence import TINY_AUDIO, real_batch, time_coded_batch


def tiny_cfg():
  cfg = localization.default_config()
  cfg.audio_model = dict(TINY_AUDIO)
  return cfg


def test_found_by_name_with_contract():
  pretext = pretexts.get("audiovisual.localization")
  assert pretext.module is localization and not pretext.stateful and not pretext.combinable


def identity_head_params(channels, scale, bias):
  """Head parameters whose embeddings are the unit vectors of the (non-negative) features
  themselves: identity 1x1 convolutions and FCs, zero biases."""
  def identity():
    return {"kernel": jnp.eye(channels), "bias": jnp.zeros(channels)}
  return {"visual_conv1": identity(), "visual_conv2": identity(), "audio_fc1": identity(),
          "audio_fc2": identity(), "scale": jnp.float32(scale), "bias": jnp.float32(bias)}


def test_the_map_peaks_where_a_place_looks_like_the_sound_and_the_logit_is_its_calibrated_max():
  channels, scale, bias = 8, 7.0, -2.5
  rng = np.random.default_rng(0)
  visual_map = rng.uniform(0.0, 1.0, (2, 5, 6, channels)).astype(np.float32)
  # The audio tower's last map: (B, time, freq, C); the head max-pools it over time and frequency.
  audio_map = rng.uniform(0.0, 1.0, (2, 4, 3, channels)).astype(np.float32)
  sound = audio_map.reshape(2, -1, channels).max(axis=1)
  visual_map[0, 2, 3] = 3.0 * sound[0]  # Same direction as the sound: cosine 1.
  visual_map[1, 4, 0] = 0.5 * sound[1]
  head = localization.Head(embedding_dim=channels)
  params = identity_head_params(channels, scale, bias)
  visual, heard = {"block1": jnp.asarray(visual_map)}, {"block1": jnp.asarray(audio_map)}
  logit_map = np.asarray(head.apply({"params": params}, visual, heard, method=localization.Head.logit_map))
  assert logit_map.shape == (2, 5, 6)
  unit = visual_map / np.linalg.norm(visual_map, axis=-1, keepdims=True)
  cosine = np.einsum("bhwc,bc->bhw", unit, sound / np.linalg.norm(sound, axis=-1, keepdims=True))
  np.testing.assert_allclose(logit_map, scale * cosine + bias, rtol=1e-5, atol=1e-5)
  assert np.unravel_index(logit_map[0].argmax(), (5, 6)) == (2, 3)
  assert np.unravel_index(logit_map[1].argmax(), (5, 6)) == (4, 0)
  logits = np.asarray(head.apply({"params": params}, visual, heard, train=False))
  np.testing.assert_allclose(logits, [scale + bias, scale + bias], rtol=1e-5)


def test_pairs_are_correspondences_and_labels_say_what_was_done():
  cfg = tiny_cfg()
  batch_size = 256
  clips = np.arange(batch_size) % 100
  batch = time_coded_batch(batch_size, clips=clips)
  inputs, targets = jax.jit(lambda r, b: localization.make_inputs(r, b, cfg))(jax.random.PRNGKey(0), batch)
  frames, audio, labels = np.asarray(inputs["image"]), np.asarray(inputs["audio"]), np.asarray(targets["label"])
  np.testing.assert_array_equal(frames[:, 0, 0, 0], clips * 100 + 1)  # The middle frame of 3.
  # Which clip's audio each example heard, read back by value: the central second of the
  # delivered 1.04 s starts at sample 320.
  delivered = np.asarray(batch["audio"])
  row = np.argmax(audio[:, :1] == delivered[None, :, 320], axis=1)
  np.testing.assert_array_equal(audio, delivered[row, 320:320 + audio.shape[1]])
  heard_clip = clips[row]
  positive = labels == 1
  np.testing.assert_array_equal(heard_clip[positive], clips[positive])
  assert np.all(heard_clip[~positive] != clips[~positive])
  assert abs(positive.mean() - 0.5) < 4 * math.sqrt(0.25 / batch_size)


def av_config(**audio):
  c = configs.base_av()
  c.pretext = tiny_cfg()
  c.model.widths = (8, 16, 16)
  c.audio.update(audio)
  return c


def test_validate_one_line_errors():
  localization.validate(av_config())
  no_audio = configs.base_video()
  no_audio.pretext = tiny_cfg()
  with pytest.raises(ValueError, match=r"localization needs video with sound .* configs.base_av\(\)"):
    localization.validate(no_audio)
  with pytest.raises(ValueError, match=r"expects 16000 Hz but the data is resampled to 48000 Hz"):
    localization.validate(av_config(sample_rate=48000))
  with pytest.raises(ValueError, match=r"audio_seconds 1 is longer than the 0.640 s the host delivers: raise "
                                       r"--config.audio.margin_seconds to at least 0.480"):
    localization.validate(av_config(margin_seconds=0.3))
  c = av_config()
  c.pretext.negative_probability = 0.0
  with pytest.raises(ValueError, match="leaves one class empty"):
    localization.validate(c)
  c = av_config()
  c.image_size = 4  # The ConvNet halves twice: block3 is 1x1.
  with pytest.raises(ValueError, match=r"last map is 1x1 at image_size 4, no places to localise in: raise "
                                       r"--config.image_size"):
    localization.validate(c)
  c = av_config()
  c.model = {"name": "c3d", "width": 0.0625}
  with pytest.raises(ValueError, match="'c3d' is a 3D backbone but the task maps one frame"):
    localization.validate(c)


def test_model_outputs_one_logit_per_pair_and_a_map_per_place():
  cfg = tiny_cfg()
  batch = time_coded_batch(4)
  batch["video"] = jnp.broadcast_to(batch["video"][:, :, :1, :1], (4, 3, 16, 16, 3)) / 400.0
  inputs, _ = localization.make_inputs(jax.random.PRNGKey(0), batch, cfg)
  model = steps.build(localization, cfg)
  # Shapes only: traced, never compiled.
  variables = jax.eval_shape(lambda r, x: model.init(r, x, train=False), jax.random.PRNGKey(0), inputs)
  assert set(variables["params"]) == {"backbone", "audio", "head"}
  outputs, features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
  assert outputs.shape == (4,) and features["block3"].shape[1:3] == (4, 4)


def test_loss_decreases_on_real_clips():
  batch = real_batch()
  values, metrics = steps.losses_over_steps(localization, tiny_cfg(), batch, steps=8, learning_rate=3e-3)
  assert values[0] > math.log(2) - 0.4
  assert values[-1] < values[0] - 0.2, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0
