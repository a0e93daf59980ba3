import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import pretexts
from sslx.pretexts import multitask
from sslx.pretexts.image import jigsaw, rotation
from tests.pretexts import steps


def mixed_cfg():
  cfg = multitask.default_config()
  cfg.tasks.rotation = multitask.task("image.rotation", weight=1.0)
  cfg.tasks.jigsaw = multitask.task("image.jigsaw", weight=0.5, grid=2, num_permutations=24)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("multitask") is multitask


def test_loss_is_the_weighted_sum_of_single_task_losses(sample_images):
  cfg = mixed_cfg()
  model = steps.build(multitask, cfg)
  images = jnp.asarray(sample_images[0][:8] / 255.0, jnp.float32)
  rng = jax.random.PRNGKey(0)
  inputs, targets = multitask.make_inputs(rng, {"image": images}, cfg)
  variables = model.init(jax.random.PRNGKey(1), inputs, train=False)
  (outputs, _) = model.apply(variables, inputs, train=False)
  total, metrics = multitask.loss(outputs, targets, cfg=cfg)
  # Each task alone: same backbone parameters, its own head, its own inputs.
  expected = 0.0
  for i, (label, module) in enumerate(sorted({"jigsaw": jigsaw, "rotation": rotation}.items())):
    sub_inputs, sub_targets = module.make_inputs(jax.random.fold_in(rng, i), {"image": images},
                                                 cfg.tasks[label])
    np.testing.assert_array_equal(sub_inputs["image"], inputs[label]["image"])
    single = steps.build(module, cfg.tasks[label])
    single_vars = {"params": {"backbone": variables["params"]["backbone"],
                              "head": variables["params"]["head"][f"heads_{label}"]},
                   "batch_stats": {"backbone": variables["batch_stats"]["backbone"],
                                   **({"head": variables["batch_stats"]["head"][f"heads_{label}"]}
                                      if f"heads_{label}" in variables["batch_stats"].get("head", {}) else {})}}
    out, _ = single.apply(single_vars, sub_inputs, train=False)
    value, _ = module.loss(out, sub_targets, cfg=cfg.tasks[label])
    np.testing.assert_allclose(metrics[f"{label}/loss"], value, rtol=1e-5)
    expected += cfg.tasks[label].weight * float(value)
  np.testing.assert_allclose(float(total), expected, rtol=1e-5)
  assert set(metrics) >= {"rotation/accuracy", "jigsaw/accuracy", "rotation/loss", "jigsaw/loss"}


def test_unknown_task_name_is_a_one_line_error():
  cfg = multitask.default_config()
  cfg.tasks.typo = ml_collections.ConfigDict({"name": "image.rotatoin", "weight": 1.0})
  with pytest.raises(ValueError, match=r"unknown pretext 'image.rotatoin'"):
    multitask.validate(ml_collections.ConfigDict({"pretext": cfg}))
  with pytest.raises(ValueError, match=r"no tasks"):
    multitask.validate(ml_collections.ConfigDict({"pretext": multitask.default_config()}))


def test_loss_decreases_on_real_images(sample_images):
  images = jnp.asarray(sample_images[0][:16] / 255.0, jnp.float32)
  values, metrics = steps.losses_over_steps(multitask, mixed_cfg(), {"image": images}, steps=20)
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["jigsaw/accuracy"]) <= 1.0
