import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import models
from sslx.models import r3d

C3D = {"name": "c3d"}
R3D = {"name": "r3d", "conv": "3d"}
R2PLUS1D = {"name": "r3d", "conv": "2plus1d"}


def _backbone(config, **overrides):
  return models.get_backbone(ml_collections.ConfigDict({**config, **overrides}))


def _shapes(backbone, shape):
  """Variables and features as shapes only: nothing is computed, so width 1.0 is cheap."""
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(lambda x: backbone.init(jax.random.PRNGKey(0), x, train=False), x)
  features = jax.eval_shape(lambda v, x: backbone.apply(v, x, train=False), variables, x)
  return features, variables


def _random_variables(backbone, shape, seed=0):
  """He-scaled random weights and fresh BN statistics, drawn with numpy.

  ``backbone.init`` compiles jax.random for every parameter shape, seconds each
  on a loaded 2-core CPU; the weights' values do not matter to these tests.
  """
  _, variables = _shapes(backbone, shape)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      fan_in = np.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(fan_in), leaf.dtype)
    return (jnp.ones if "scale" in name or "var" in name else jnp.zeros)(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, variables)


def _count(variables):
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("config,blocks", [
    (C3D, {"block1": (8, 16, 16, 8), "block2": (4, 8, 8, 16), "block3": (2, 4, 4, 32),
           "block4": (1, 2, 2, 64), "block5": (1, 1, 1, 64)}),
    (R3D, {"stem": (8, 16, 16, 8), "block1": (8, 16, 16, 8), "block2": (4, 8, 8, 16),
           "block3": (2, 4, 4, 32), "block4": (1, 2, 2, 64)}),
    (R2PLUS1D, {"stem": (8, 16, 16, 8), "block1": (8, 16, 16, 8), "block2": (4, 8, 8, 16),
                "block3": (2, 4, 4, 32), "block4": (1, 2, 2, 64)}),
], ids=["c3d", "r3d", "r2plus1d"])
def test_block_and_pooled_shapes(config, blocks):
  feats, variables = _shapes(_backbone(config, width=0.125), (2, 8, 32, 32, 3))
  assert models.block_names(feats) == sorted(k for k in blocks if k.startswith("block"))
  assert {k: v.shape[1:] for k, v in feats.items() if k != "pooled"} == blocks
  assert feats["pooled"].shape == (2, 64) and feats["pooled"].dtype == jnp.float32
  assert "batch_stats" in variables


def test_c3d_conv_parameters_and_fc6_input():
  backbone = _backbone(C3D)
  feats, variables = _shapes(backbone, (1, 16, 112, 112, 3))
  # The eight 3x3x3 kernels of C3D (27.65M; its conv biases are dropped for BN's).
  kernels = [x.size for x in jax.tree.leaves(variables["params"]) if x.ndim == 5]
  assert len(kernels) == 8
  channels = [3, 64, 128, 256, 256, 512, 512, 512, 512]
  assert sum(kernels) == sum(27 * a * b for a, b in zip(channels[:-1], channels[1:]))
  assert feats["block5"].shape == (1, 1, 4, 4, 512)  # the paper's 8192-d fc6 input


def test_r3d_and_r2plus1d_parameter_counts():
  _, v3d = _shapes(_backbone(R3D), (1, 8, 32, 32, 3))
  _, v21d = _shapes(_backbone(R2PLUS1D), (1, 8, 32, 32, 3))
  # torchvision's r3d_18 without its fc layer: 33,166,272 parameters.
  assert abs(_count(v3d) - 33_166_272) < 0.02 * 33_166_272
  # Eq. 1's intermediate channels keep the count: the paper compares the two at equal size.
  assert abs(_count(v21d) - _count(v3d)) < 0.02 * _count(v3d)
  assert r3d.mid_channels(64, 64) == 144  # torchvision's Conv2Plus1D for 64 -> 64


@pytest.mark.parametrize("config", [C3D, R3D, R2PLUS1D], ids=["c3d", "r3d", "r2plus1d"])
def test_features_depend_on_frame_order(config):
  backbone = _backbone(config, width=0.125)
  video = jax.random.normal(jax.random.PRNGKey(1), (1, 8, 32, 32, 3))
  both = jnp.concatenate([video, video[:, ::-1]])  # forward and reversed in one batch
  variables = _random_variables(backbone, both.shape)
  pooled = jax.jit(lambda v, x: backbone.apply(v, x, train=False)["pooled"])(variables, both)
  pooled = np.asarray(pooled)
  assert np.all(np.isfinite(pooled))
  assert not np.allclose(pooled[0], pooled[1], rtol=1e-3, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params():
  backbone = _backbone(R2PLUS1D, width=0.125, dtype="bfloat16")
  feats, variables = _shapes(backbone, (2, 8, 32, 32, 3))
  assert feats["block1"].dtype == jnp.bfloat16
  assert feats["pooled"].dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))


def test_takes_video_is_a_class_attribute():
  for config in (C3D, R3D, R2PLUS1D):
    backbone = _backbone(config, width=0.125)
    assert getattr(backbone, "takes_video", False) is True
    assert "takes_video" not in backbone.__dataclass_fields__
  assert getattr(_backbone({"name": "resnet"}), "takes_video", False) is False


def test_unknown_conv_is_one_line_error():
  with pytest.raises(ValueError, match="r3d conv '2d'"):
    _shapes(_backbone(R3D, conv="2d"), (1, 4, 16, 16, 3))


def test_train_mode_updates_every_batch_norm():
  backbone = _backbone(C3D, width=0.125)
  x = jax.ShapeDtypeStruct((2, 8, 32, 32, 3), jnp.float32)
  _, variables = _shapes(backbone, x.shape)
  _, updates = jax.eval_shape(
      lambda v, x: backbone.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)
  assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(variables["batch_stats"])
  assert len(variables["batch_stats"]) == 8  # one BN per convolution
