"""The audio towers: L3-Net's audio subnetwork and Owens & Efros' waveform tower, found by name.

Shapes come from ``jax.eval_shape`` (no compute); the few real runs use tiny widths and a
quarter second of audio so that the file stays fast on a 2-core CPU."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import models


def _shapes(config, num_samples, *, channels=()):
  backbone = models.get_backbone(config)
  x = jax.ShapeDtypeStruct((2, num_samples, *channels), jnp.float32)
  variables = jax.eval_shape(lambda w: backbone.init(jax.random.PRNGKey(0), w, train=False), x)
  features = jax.eval_shape(lambda v, w: backbone.apply(v, w, train=False), variables, x)
  return {k: v.shape for k, v in features.items()}, variables


def test_l3_audio_at_48khz_is_the_papers_tower():
  # 1 s at 48 kHz -> L3-Net's 257 x 199 log-spectrogram (time first here), pooled 2x2 after
  # blocks 1-3: the paper's conv4 map is 32 x 24 (frequency x time).
  shapes, variables = _shapes({"name": "l3_audio", "sample_rate": 48000, "width": 0.125}, 48000)
  assert shapes == {"block1": (2, 199, 257, 8), "block2": (2, 99, 128, 16),
                    "block3": (2, 49, 64, 32), "block4": (2, 24, 32, 64), "pooled": (2, 64)}
  assert variables["batch_stats"]["input_bn"]["mean"].shape == (257,)  # Per frequency bin.
  assert "input_bn" not in variables["params"]  # The input normalisation has no parameters.


def test_l3_audio_at_16khz_and_log_mel():
  shapes, _ = _shapes({"name": "l3_audio", "sample_rate": 16000, "width": 0.25}, 16000)
  assert shapes == {"block1": (2, 65, 257, 16), "block2": (2, 32, 128, 32),
                    "block3": (2, 16, 64, 64), "block4": (2, 8, 32, 128), "pooled": (2, 128)}
  shapes, _ = _shapes({"name": "l3_audio", "sample_rate": 16000, "width": 0.25, "mel_bins": 64},
                      16000)
  assert shapes["block1"] == (2, 65, 64, 16) and shapes["block4"] == (2, 8, 8, 128)


def test_waveform_tower_at_16khz():
  shapes, variables = _shapes({"name": "waveform", "width": 0.25}, 16000)
  assert shapes == {"block1": (2, 4000, 16), "block2": (2, 250, 32), "block3": (2, 63, 32),
                    "block4": (2, 16, 64), "pooled": (2, 64)}
  params = variables["params"]
  assert params["block1_conv"]["kernel"].shape == (65, 1, 16)  # 65 taps, stride 4.
  assert params["block2"]["conv1"]["kernel"].shape == (15, 16, 32)
  assert "shortcut" in params["block2"] and "shortcut" not in params["block3"]  # 128 -> 128.
  stereo, variables = _shapes({"name": "waveform", "width": 0.25}, 16000, channels=(2,))
  assert stereo == shapes  # Owens & Efros' input was stereo: (B, N, 2) works too.
  assert variables["params"]["block1_conv"]["kernel"].shape == (65, 2, 16)


@pytest.mark.parametrize("name,rate", [("l3_audio", 16000), ("waveform", 16000)])
def test_width_multiplies_channels(name, rate):
  narrow, _ = _shapes({"name": name, "sample_rate": rate, "width": 0.125}, rate // 4)
  wide, _ = _shapes({"name": name, "sample_rate": rate, "width": 0.25}, rate // 4)
  for block in ("block1", "block2", "block3", "block4", "pooled"):
    assert wide[block][-1] == 2 * narrow[block][-1]
    assert wide[block][:-1] == narrow[block][:-1]


def test_found_by_name_and_marked_as_audio():
  l3 = models.get_backbone({"name": "l3_audio", "width": 0.5, "dtype": "bfloat16"})
  assert type(l3).__module__ == "sslx.models.l3_audio" and l3.takes_audio
  assert l3.dtype == jnp.bfloat16
  assert models.conv_kernels({"name": "l3_audio"}) == "auto"  # sslx.models.layers.ConvBN.
  waveform = models.get_backbone({"name": "waveform"})
  assert type(waveform).__module__ == "sslx.models.waveform" and waveform.takes_audio
  assert models.conv_kernels({"name": "waveform"}) is None  # XLA's own 1-D convolutions.


def test_bfloat16_compute_keeps_float32_params():
  for config in ({"name": "l3_audio", "sample_rate": 16000, "width": 0.0625, "dtype": "bfloat16"},
                 {"name": "waveform", "width": 0.0625, "dtype": "bfloat16"}):
    backbone = models.get_backbone(config)
    x = jax.ShapeDtypeStruct((2, 4000), jnp.float32)
    variables = jax.eval_shape(lambda w: backbone.init(jax.random.PRNGKey(0), w, train=False), x)
    features = jax.eval_shape(lambda v, w: backbone.apply(v, w, train=False), variables, x)
    assert features["block1"].dtype == jnp.bfloat16
    assert features["pooled"].dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("config", [{"name": "l3_audio", "sample_rate": 16000, "width": 0.0625},
                                    {"name": "waveform", "width": 0.0625}])
def test_jitted_init_train_and_eval_are_fast_and_finite(config):
  backbone = models.get_backbone(config)
  x = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (2, 4000))  # A quarter second.

  @jax.jit  # One program (init, a training gradient, an evaluation pass): one compilation.
  def run(x):
    variables = backbone.init(jax.random.PRNGKey(0), x, train=False)

    def loss(params):
      features, updates = backbone.apply({**variables, "params": params}, x,
                                         train=True, mutable=["batch_stats"])
      return jnp.mean(features["pooled"] ** 2), updates

    grads, updates = jax.grad(loss, has_aux=True)(variables["params"])
    return grads, backbone.apply({"params": variables["params"], **updates}, x, train=False)

  start = time.perf_counter()
  grads, features = jax.block_until_ready(run(x))
  elapsed = time.perf_counter() - start
  leaves = jax.tree.leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0
  assert all(bool(jnp.all(jnp.isfinite(f))) for f in jax.tree.leaves(features))
  assert elapsed < 60, f"compiling and running a tiny tower took {elapsed:.0f} s"


def test_wrong_input_rank_is_one_line_error():
  backbone = models.get_backbone({"name": "l3_audio", "width": 0.0625})
  with pytest.raises(ValueError, match="l3_audio takes mono waveforms"):
    backbone.init(jax.random.PRNGKey(0), jnp.zeros((2, 1, 48000)), train=False)
  backbone = models.get_backbone({"name": "waveform", "width": 0.0625})
  with pytest.raises(ValueError, match=r"waveform takes waveforms \(B, N\)"):
    backbone.init(jax.random.PRNGKey(0), jnp.zeros((48000,)), train=False)


def test_waveform_compands_before_the_first_convolution():
  from sslx.models import waveform
  x = np.array([-1.0, -0.01, 0.0, 0.01, 1.0], np.float32)
  y = np.asarray(waveform.compand(jnp.asarray(x)))
  np.testing.assert_allclose(y[[0, 2, 4]], [-1.0, 0.0, 1.0], atol=1e-6)
  assert y[3] > 0.2 and np.allclose(y[1], -y[3])  # 1% of full scale -> about a third.
