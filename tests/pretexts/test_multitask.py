import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts import multitask
from sslx.pretexts.image import jigsaw, rotation
from tests.conftest import REPO
from tests.pretexts import steps


def mixed_cfg():
  cfg = multitask.default_config()
  cfg.tasks.rotation = multitask.task("image.rotation", weight=1.0)
  cfg.tasks.jigsaw = multitask.task("image.jigsaw", weight=0.5, grid=2, num_permutations=24)
  return cfg


def test_found_by_name_with_contract():
  assert pretexts.get("multitask").module is multitask


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


def test_experiment_config_passes_validate():
  for arg in (None, "quick"):
    multitask.validate(configs.load(REPO / "experiments" / "multitask_convnet_cifar10.py", arg))


def test_validate_runs_each_tasks_checks_on_the_shared_image_size():
  # mixed_cfg's jigsaw is 2x2: 18 px images give 9 px cells and 8 px tiles, 17 px do not.
  assert jigsaw.min_image_size(mixed_cfg().tasks.jigsaw) == 18
  inside = steps.experiment_config(mixed_cfg(), image_size=18)
  multitask.validate(inside)
  shapes = steps.abstract_inputs(multitask, inside)
  assert shapes["jigsaw"]["image"] == (8, 8, 8, 3) and shapes["rotation"]["image"] == (8, 18, 18, 3)
  outside = steps.experiment_config(mixed_cfg(), image_size=17)
  with pytest.raises(ValueError, match=r"multitask task 'jigsaw' \(image.jigsaw\): jigsaw needs image_size >= "
                                       r"2 \* 9 = 18 .*\(got 17: .*raise --config.image_size to 18"):
    multitask.validate(outside)
  with pytest.raises(ValueError, match=r"jigsaw needs image_size >= 2 \* 9 = 18"):
    steps.abstract_inputs(multitask, outside)


def test_task_errors_point_at_the_tasks_own_fields():
  cfg = mixed_cfg()
  cfg.tasks.jigsaw.num_permutations = 25
  with pytest.raises(ValueError, match=r"multitask task 'jigsaw' .*num_permutations 25 is not available.*"
                                       r"set --config.pretext.tasks.jigsaw.num_permutations in \[2, 24\]"):
    multitask.validate(steps.experiment_config(cfg, image_size=32))
  cfg = mixed_cfg()
  cfg.tasks.transformation = multitask.task("image.relative_transformation", view_size=40)
  with pytest.raises(ValueError, match=r"multitask task 'transformation' .*view_size 40 exceeds the 32 x 32 "
                                       r"images: set --config.pretext.tasks.transformation.view_size <= 32"):
    multitask.validate(steps.experiment_config(cfg, image_size=32))
  with pytest.raises(ValueError, match=r"multitask task 'jigsaw' .*jigsaw cuts images.*video section"):
    multitask.validate(steps.experiment_config(mixed_cfg(), image_size=32, num_frames=8))


def _with_task(name, **overrides):
  cfg = mixed_cfg()
  cfg.tasks.extra = multitask.task(name, **overrides) if name != "multitask" else multitask.default_config()
  return cfg


@pytest.mark.parametrize("name,why", [
    ("multitask", r"'extra' is itself a multitask"),
    ("video.opn", r"'extra' \(video.opn\) is a video pretext"),
    ("image.deepcluster", r"'extra' \(image.deepcluster\) is stateful"),
    ("image.colorization", r"'extra' \(image.colorization\) is stateful"),
    ("supervised", r"'extra' \(supervised\) is not combinable")])
def test_validate_refuses_tasks_it_cannot_combine_in_one_line(name, why):
  cfg = _with_task(name)
  with pytest.raises(ValueError, match=why) as error:
    multitask.validate(steps.experiment_config(cfg, image_size=32))
  assert "\n" not in str(error.value)
  # The same error, not a trace-time failure, where the trainer would build the step.
  with pytest.raises(ValueError, match=why):
    multitask.make_inputs(jax.random.PRNGKey(0), {"image": jnp.zeros((2, 32, 32, 3))}, cfg)


def test_validate_refuses_a_pretext_that_says_it_is_not_combinable(monkeypatch):
  monkeypatch.setattr(rotation, "combinable", False, raising=False)
  with pytest.raises(ValueError, match=r"task 'rotation' \(image.rotation\) is not combinable .*"
                                       r"remove pretext.tasks.rotation"):
    multitask.validate(steps.experiment_config(mixed_cfg(), image_size=32))
