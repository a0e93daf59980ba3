import jax
import jax.numpy as jnp
import pytest

from sslx import models


def _features(config, size=32, train=False):
  backbone = models.get_backbone(config)
  x = jnp.ones((2, size, size, 3))
  variables = backbone.init(jax.random.PRNGKey(0), x, train=False)
  return jax.eval_shape(lambda v: backbone.apply(v, x, train=False), variables), variables


def test_convnet_blocks_and_pooled():
  feats, variables = _features({"name": "convnet", "widths": (8, 16, 24)})
  assert models.block_names(feats) == ["block1", "block2", "block3"]
  assert feats["block1"].shape == (2, 32, 32, 8)
  assert feats["block2"].shape == (2, 16, 16, 16)
  assert feats["block3"].shape == (2, 8, 8, 24)
  assert feats["pooled"].shape == (2, 24)
  assert "batch_stats" in variables


@pytest.mark.parametrize("depth,stem,size,final", [(18, "cifar", 32, (4, 4, 64)),
                                                   (34, "cifar", 32, (4, 4, 64)),
                                                   (50, "imagenet", 64, (2, 2, 256))])
def test_resnet_stages(depth, stem, size, final):
  feats, _ = _features({"name": "resnet", "depth": depth, "stem": stem, "width": 0.125}, size=size)
  assert models.block_names(feats) == ["block1", "block2", "block3", "block4"]
  assert feats["block4"].shape == (2,) + final
  assert feats["pooled"].shape == (2, final[-1])


def test_resnet_depth_counts_parameters():
  count = lambda v: sum(x.size for x in jax.tree.leaves(v["params"]))  # noqa: E731
  _, v18 = _features({"name": "resnet", "depth": 18, "width": 0.25})
  _, v34 = _features({"name": "resnet", "depth": 34, "width": 0.25})
  assert count(v34) > 1.8 * count(v18)


def test_bfloat16_compute_keeps_float32_params():
  feats, variables = _features({"name": "convnet", "widths": (8, 8, 8), "dtype": "bfloat16"})
  assert feats["block1"].dtype == jnp.bfloat16
  assert feats["pooled"].dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables["params"]))


def test_unknown_backbone_is_one_line_error():
  with pytest.raises(ValueError, match="unknown model name 'vgg'"):
    models.get_backbone({"name": "vgg"})


def test_checkpoints_naming_the_conv_kernels_option_by_its_old_name_still_build():
  # Configs saved in checkpoints before "onednn" was added call model.conv_kernels conv_weight_grad.
  old = models.get_backbone({"name": "convnet", "widths": (8, 8, 8), "conv_weight_grad": "taps"})
  assert old.conv_kernels == "taps"
