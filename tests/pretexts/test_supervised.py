import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import configs, models
from sslx.pretexts import supervised
from sslx.pretexts.image import colorization
from tests.pretexts import steps


def _cfg(num_classes=10, **kw):
  cfg = supervised.default_config()
  cfg.num_classes = num_classes
  cfg.update(kw)
  return cfg


def test_per_frame_backbone_classifies_the_mean_of_frame_features():
  backbone = models.get_backbone(ml_collections.ConfigDict(steps.TINY_CONVNET))
  model = supervised.Classifier(backbone=backbone, num_classes=5, dropout=0.5)
  rng = np.random.default_rng(0)
  clips = jnp.asarray(rng.uniform(size=(3, 4, 16, 16, 3)), jnp.float32)  # (B, T, H, W, 3)
  # Positive values from numpy (BatchNorm variances included): no XLA random-number program to compile.
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))
  inner = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), shapes)
  dense = {"kernel": jnp.asarray(rng.normal(size=(16, 5)), jnp.float32), "bias": jnp.arange(5.0)}
  variables = {"params": {"backbone": inner["params"], "classifier": dense},
               "batch_stats": {"backbone": inner["batch_stats"]}}

  @jax.jit
  def both(variables, inner, clips):
    return (model.apply(variables, {"video": clips}, train=False)[0],
            backbone.apply(inner, clips.reshape(-1, 16, 16, 3), train=False)["pooled"])

  # Full float32 matmuls: on GPUs the default (TF32) differs between the two orders of summation.
  with jax.default_matmul_precision("highest"):
    logits, pooled = both(variables, inner, clips)
  expected = pooled.reshape(3, 4, -1).mean(axis=1) @ dense["kernel"] + dense["bias"]
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_inputs_are_what_the_pretraining_pretext_fed_its_backbone(sample_images):
  images = jnp.asarray(sample_images[0][:4], jnp.float32) / 255.0
  labels = jnp.asarray(sample_images[1][:4])
  plain, targets = supervised.make_inputs(None, {"image": images, "label": labels}, _cfg())
  assert set(plain) == {"image"} and np.array_equal(targets, labels)
  cfg = _cfg(input_pretext="image.colorization", input_cfg=colorization.default_config())
  lightness, _ = supervised.make_inputs(None, {"image": images, "label": labels}, cfg)
  expected = colorization.backbone_input(images, colorization.default_config())
  np.testing.assert_allclose(lightness["input"], expected)


def test_num_classes_is_checked_before_compiling():
  config = configs.base()
  config.pretext = supervised.default_config()
  with pytest.raises(ValueError, match="num_classes >= 2"):
    supervised.validate(config)


def test_loss_decreases_under_a_few_gradient_steps(sample_images):
  images, labels = sample_images
  values, metrics = steps.losses_over_steps(
      supervised, _cfg(dropout=0.0), {"image": images[:32] / 255.0, "label": labels[:32]}, steps=20,
      learning_rate=1e-2)
  assert values[-1] < 0.5 * values[0]
  assert metrics["accuracy"] > 0.5
