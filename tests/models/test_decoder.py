import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import models
from sslx.models import decoder

CONVNET = {"name": "convnet", "widths": (8, 16, 16)}
RESNET = {"name": "resnet", "depth": 18, "stem": "cifar", "width": 0.125}
RESNET_IMAGENET_STEM = {"name": "resnet", "depth": 18, "stem": "imagenet", "width": 0.125}


def _apply(model_config, size, abstract=False, **decoder_kwargs):
  model = decoder.EncoderDecoder(backbone=models.get_backbone(model_config),
                                 decoder=decoder.Decoder(widths=(8, 8, 8), **decoder_kwargs))
  inputs = {"image": jnp.ones((2, size, size, 3))}

  def run(inputs):
    variables = model.init(jax.random.PRNGKey(0), inputs, train=False)
    (outputs, features), _ = model.apply(variables, inputs, train=True, mutable=["batch_stats"])
    return outputs, features, variables

  return jax.eval_shape(run, inputs) if abstract else run(inputs)


def test_output_is_an_image_in_0_1():
  outputs, features, _ = _apply(CONVNET, 32)
  image = np.asarray(outputs["reconstruction"])
  assert image.shape == (2, 32, 32, 3)
  assert image.min() >= 0.0 and image.max() <= 1.0 and image.std() > 0  # Sigmoid output.
  assert set(features) >= {"block1", "pooled"}  # The backbone's features pass through for the probe.


@pytest.mark.parametrize("model_config,size", [(CONVNET, 32), (CONVNET, 64), (RESNET, 32), (RESNET, 64),
                                               (RESNET_IMAGENET_STEM, 64)])
def test_output_has_the_input_size(model_config, size):
  outputs, _, _ = _apply(model_config, size, abstract=True)
  assert outputs["reconstruction"].shape == (2, size, size, 3)


@pytest.mark.parametrize("kwargs", [{"upsample": "transpose"}, {"channel_fc": True}, {"skips": True},
                                    {"output": "linear", "block": "block2"}])
def test_variants_keep_the_shape(kwargs):
  outputs, _, variables = _apply(CONVNET, 32, abstract=True, **kwargs)
  assert outputs["reconstruction"].shape == (2, 32, 32, 3)
  params = variables["params"]["decoder"]
  if kwargs.get("channel_fc"):
    # One (hw x hw) matrix per channel of the 8x8x16 block3 map.
    assert params["channel_fc"]["kernel"].shape == (16, 64, 64)
  if kwargs.get("block") == "block2":
    assert "up2" not in params  # 16 -> 32 px is a single x2 stage.


def test_skip_free_decoder_ignores_shallow_blocks():
  dec = decoder.Decoder(size=32, widths=(8,))
  rng = jax.random.PRNGKey(0)
  feats = {"block1": jax.random.normal(rng, (1, 32, 32, 4)), "block2": jnp.ones((1, 8, 8, 4)),
           "pooled": jnp.ones((1, 4))}
  variables = dec.init(rng, feats, train=False)
  other = dict(feats, block1=feats["block1"] * 0.0)
  apply = lambda module, v, f: np.asarray(module.apply(v, f, train=False))  # noqa: E731
  np.testing.assert_array_equal(apply(dec, variables, feats), apply(dec, variables, other))
  with_skips = decoder.Decoder(size=32, widths=(8,), skips=True)
  variables = with_skips.init(rng, feats, train=False)
  assert not np.allclose(apply(with_skips, variables, feats), apply(with_skips, variables, other))


def test_sizes_that_are_not_a_power_of_two_times_the_map():
  dec = decoder.Decoder(widths=(8,))
  feats = {"block1": jnp.ones((1, 7, 7, 4)), "pooled": jnp.ones((1, 4))}
  variables = dec.init(jax.random.PRNGKey(0), feats, train=False, size=(24, 30))
  assert dec.apply(variables, feats, train=False, size=(24, 30)).shape == (1, 24, 30, 3)


def test_missing_size_is_a_one_line_error():
  feats = {"block1": jnp.ones((1, 8, 8, 4)), "pooled": jnp.ones((1, 4))}
  with pytest.raises(ValueError, match="no output size"):
    decoder.Decoder().init(jax.random.PRNGKey(0), feats, train=False)
