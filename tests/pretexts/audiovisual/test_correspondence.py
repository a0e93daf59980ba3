import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.audiovisual import correspondence
from tests.conftest import with_xla_flags
from tests.pretexts import steps

RATE = 16000
TINY_AUDIO = {"name": "l3_audio", "sample_rate": RATE, "width": 0.0625, "n_fft": 256, "window_length": 160,
              "hop_length": 80}


def tiny_cfg(fusion="concat"):
  cfg = correspondence.default_config()
  cfg.fusion = fusion
  cfg.audio_model = dict(TINY_AUDIO)
  return cfg


def time_coded_batch(batch_size, num_frames=3, samples=RATE + 640, clips=None):
  """Frames whose pixels hold (clip, frame) and audio whose samples hold (clip, sample position),
  so that what make_inputs picked can be read back from the values."""
  clips = np.arange(batch_size) if clips is None else np.asarray(clips)
  video = np.zeros((batch_size, num_frames, 2, 2, 3), np.float32)
  video += clips[:, None, None, None, None] * 100 + np.arange(num_frames)[None, :, None, None, None]
  audio = clips[:, None] * 1e5 + np.arange(samples)[None, :]  # Exact in float32: < 2 ** 24.
  return {"video": jnp.asarray(video), "audio": jnp.asarray(audio, jnp.float32),
          "index": jnp.asarray(clips, jnp.int32)}


def test_found_by_name_with_contract():
  pretext = pretexts.get("audiovisual.correspondence")
  assert pretext.module is correspondence and not pretext.stateful and not pretext.combinable


def test_negatives_come_from_another_clip_and_labels_say_what_was_done():
  cfg = tiny_cfg()
  batch_size = 512
  # Clip ids repeat (a small dataset's batch can hold a clip twice): a negative must still
  # come from another clip, not from another copy of the same one.
  clips = np.arange(batch_size) % 150
  batch = time_coded_batch(batch_size, clips=clips)
  inputs, targets = jax.jit(lambda r, b: correspondence.make_inputs(r, b, cfg))(jax.random.PRNGKey(0), batch)
  frames, audio = np.asarray(inputs["image"]), np.asarray(inputs["audio"])
  labels, partner = np.asarray(targets["label"]), np.asarray(targets["partner"])
  assert frames.shape == (batch_size, 2, 2, 3) and audio.shape == (batch_size, RATE)
  # The middle frame of each window, of its own clip.
  np.testing.assert_array_equal(frames[:, 0, 0, 0], clips * 100 + 1)
  heard_clip = np.round(audio[:, 0] / 1e5).astype(int)
  # The central second of the delivered audio: samples 320 .. 320 + RATE of the 640 extra.
  np.testing.assert_allclose(audio[:, 0] - heard_clip * 1e5, 320)
  positive = labels == 1
  np.testing.assert_array_equal(heard_clip[positive], clips[positive])
  assert np.all(heard_clip[~positive] != clips[~positive])
  np.testing.assert_array_equal(heard_clip, clips[partner])
  assert abs(positive.mean() - 0.5) < 4 * math.sqrt(0.25 / batch_size)
  # Partners are drawn over the whole batch, not from a neighbourhood (one device's shard).
  negatives = np.flatnonzero(~positive)
  assert np.abs(partner[negatives] // 64 - negatives // 64).max() >= 4


def test_a_batch_of_one_clip_stays_positive():
  cfg = tiny_cfg()
  batch = time_coded_batch(8, clips=np.zeros(8, int))
  _, targets = correspondence.make_inputs(jax.random.PRNGKey(1), batch, cfg)
  np.testing.assert_array_equal(targets["label"], 1)


def av_config(**audio):
  c = configs.base_av()
  c.pretext = tiny_cfg()
  c.audio.update(audio)
  return c


def test_validate_one_line_errors():
  c = av_config()
  correspondence.validate(c)
  no_audio = configs.base_video()
  no_audio.pretext = tiny_cfg()
  with pytest.raises(ValueError, match=r"needs video with sound .* configs.base_av\(\)"):
    correspondence.validate(no_audio)
  with pytest.raises(ValueError, match=r"expects 16000 Hz but the data is resampled to 48000 Hz: set "
                                       r"--config.pretext.audio_model.sample_rate=48000"):
    correspondence.validate(av_config(sample_rate=48000))
  with pytest.raises(ValueError, match=r"audio_seconds 1 is longer than the 0.640 s the host delivers: raise "
                                       r"--config.audio.margin_seconds to at least 0.480"):
    correspondence.validate(av_config(margin_seconds=0.3))
  c = av_config()
  c.pretext.fusion = "sum"
  with pytest.raises(ValueError, match="unknown fusion 'sum'"):
    correspondence.validate(c)
  c = av_config()
  c.pretext.negative_probability = 1.0
  with pytest.raises(ValueError, match="leaves one class empty"):
    correspondence.validate(c)


@pytest.mark.parametrize("fusion", ["concat", "distance"])
def test_model_outputs_two_logits_and_keeps_the_towers_apart(fusion):
  cfg = tiny_cfg(fusion)
  batch = time_coded_batch(4)
  inputs, _ = correspondence.make_inputs(jax.random.PRNGKey(0), batch, cfg)
  model = steps.build(correspondence, cfg)
  variables = jax.jit(lambda r, x: model.init(r, x, train=False))(jax.random.PRNGKey(0), inputs)
  assert set(variables["params"]) == {"backbone", "audio", "head"}
  outputs, features = model.apply(variables, inputs, train=False)
  assert outputs.shape == (4, 2) and "pooled" in features
  if fusion == "distance":  # AVE-Net: the logits depend on the towers only through one distance.
    assert variables["params"]["head"]["classifier"]["kernel"].shape == (1, 2)


def real_batch(count=8, config=None):
  """Frames and audio of the embedded talking-face clips (sslx/data/sample_av), as the host
  delivers them for ``config`` (default: base_av's one-frame windows, quick mode)."""
  from sslx.data import sources, video
  config = config if config is not None else configs.quick_av(configs.base_av())
  source = sources.from_config(config, "train")
  preprocess = video.preprocess_from_config(config, train=True)
  records = []
  for i in range(len(source)):
    record = preprocess(dict(source[i], index=i), np.random.default_rng(i))
    if record is not None:
      records.append(record)
    if len(records) == count:
      break
  return {"video": np.stack([r["video"] for r in records]).astype(np.float32) / 255.0,
          "audio": np.stack([r["audio"] for r in records]),
          "index": np.asarray([r["index"] for r in records], np.int32)}


@pytest.mark.parametrize("fusion", ["concat", "distance"])
def test_loss_decreases_on_real_clips(fusion):
  batch = real_batch()
  assert batch["audio"].shape == (8, RATE)
  # AVE-Net reads the pair through one distance, a slower start than concatenation: a larger step.
  values, metrics = steps.losses_over_steps(correspondence, tiny_cfg(fusion), batch, steps=12,
                                            learning_rate=3e-3 if fusion == "concat" else 1e-2)
  assert values[0] > math.log(2) - 0.4
  assert values[-1] < values[0] - (0.2 if fusion == "concat" else 0.1), values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


EIGHT_DEVICES = """
import json, os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec
sys.path.insert(0, sys.argv[1])
from sslx import run
from sslx.pretexts.audiovisual import correspondence
from tests.pretexts import steps
from tests.pretexts.audiovisual.test_correspondence import time_coded_batch, tiny_cfg
assert jax.device_count() == 8
cfg = tiny_cfg()
batch = time_coded_batch(32)
rng = np.random.default_rng(0)
batch["video"] = jnp.asarray(rng.uniform(size=batch["video"].shape), jnp.float32)
batch["audio"] = jnp.asarray(rng.normal(size=batch["audio"].shape) * 0.1, jnp.float32)
model = steps.build(correspondence, cfg)
inputs, _ = correspondence.make_inputs(jax.random.PRNGKey(0), batch, cfg)
variables = model.init(jax.random.PRNGKey(1), inputs, train=False)

@jax.jit
def loss_and_partner(variables, batch):
  inputs, targets = correspondence.make_inputs(jax.random.PRNGKey(3), batch, cfg)
  outputs, _ = model.apply(variables, inputs, train=False)
  return correspondence.loss(outputs, targets, cfg=cfg)[0], targets["partner"]

one = jax.devices()[0]
single, single_partner = loss_and_partner(jax.device_put(variables, one), jax.device_put(batch, one))
sharded_batch = jax.device_put(batch, NamedSharding(run.make_mesh(), PartitionSpec("data")))
sharded, sharded_partner = loss_and_partner(variables, sharded_batch)
partner = np.asarray(sharded_partner)
print(json.dumps({"single": float(single), "sharded": float(sharded),
                  "same_partners": bool((partner == np.asarray(single_partner)).all()),
                  "cross_device": int((partner // 4 != np.arange(32) // 4).sum()),
                  "devices": len({s.device for s in sharded_batch["audio"].addressable_shards})}))
"""


def test_negatives_across_the_global_batch_give_the_same_loss_on_eight_devices():
  from pathlib import Path
  result = subprocess.run([sys.executable, "-c", EIGHT_DEVICES, str(Path(__file__).resolve().parents[3])],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu",
                                   XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=8")))
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8, report
  assert report["same_partners"] and report["cross_device"] > 4, report
  assert abs(report["sharded"] - report["single"]) < 1e-5, report
