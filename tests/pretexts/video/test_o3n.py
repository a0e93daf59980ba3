import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import configs, pretexts
from sslx.pretexts.video import o3n
from tests.conftest import REPO
from tests.pretexts import steps


def moving_squares(batch, frames, size, seed=0):
  """Videos of a bright square moving on a fixed noisy background, one direction per video."""
  rng = np.random.default_rng(seed)
  video = np.repeat(rng.uniform(0, 0.5, (batch, 1, size, size, 3)), frames, axis=1).astype(np.float32)
  for b in range(batch):
    y, x = rng.integers(0, size - 4, 2)
    dy, dx = rng.choice([-1, 1], 2)
    for t in range(frames):
      top, left = (y + dy * t) % (size - 3), (x + dx * t) % (size - 3)
      video[b, t, top:top + 4, left:left + 4] = 1.0
  return jnp.asarray(video)


def config_with(num_frames, **pretext):
  cfg = o3n.default_config()
  cfg.update(pretext)
  return ml_collections.ConfigDict({"pretext": cfg, "video": {"num_frames": num_frames}})


def test_found_by_name_with_contract():
  assert pretexts.get("video.o3n").module is o3n


def test_nth_permutation_is_itertools_order():
  for n in (3, 4):
    ranks = jnp.arange(math.factorial(n))
    got = [tuple(p) for p in np.asarray(o3n.nth_permutation(ranks, n))]
    assert got == list(itertools.permutations(range(n)))
  rank = 4321
  assert tuple(np.asarray(o3n.nth_permutation(jnp.array(rank), 7))) == \
      list(itertools.permutations(range(7)))[rank]


def test_non_identity_permutations_cover_all_others():
  perms = np.asarray(o3n.random_non_identity_permutation(jax.random.PRNGKey(0), (3000,), 4))
  assert all(sorted(p) == [0, 1, 2, 3] for p in perms)
  seen = {tuple(p) for p in perms}
  assert (0, 1, 2, 3) not in seen
  assert len(seen) == 23


def test_questions_odd_position_uniform_and_only_odd_unsorted():
  cfg = o3n.default_config()
  batch_size, k, w = 3000, cfg.num_elements, cfg.element_frames
  video = jax.random.uniform(jax.random.PRNGKey(1), (batch_size, 10, 2, 2, 3))
  inputs, targets = jax.jit(lambda r, b: o3n.make_inputs(r, b, cfg))(
      jax.random.PRNGKey(2), {"video": video, "index": jnp.arange(batch_size)})
  assert inputs["image"].shape == (batch_size * k, 2, 2, 3)
  labels, positions = np.asarray(targets["label"]), np.asarray(targets["positions"])
  assert positions.shape == (batch_size, k, w)
  assert positions.min() >= 0 and positions.max() < 10
  assert np.all(np.diff(np.sort(positions, axis=-1), axis=-1) > 0)  # Distinct frames per element.
  increasing = np.all(np.diff(positions, axis=-1) > 0, axis=-1)  # (B, K)
  # Exactly one element per question is out of order, and it is the labelled one.
  assert np.array_equal(increasing.sum(1), np.full(batch_size, k - 1))
  assert np.array_equal(np.argmin(increasing, axis=1), labels)
  counts = np.bincount(labels, minlength=k)
  expected = batch_size / k
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 25.0, counts  # 5 degrees of freedom: P(chi2 > 25) ~ 1e-4 when uniform.


def test_dynamic_image_weights_constant_and_order():
  np.testing.assert_array_equal(np.asarray(o3n.rank_pooling_weights(6)), [-5, -3, -1, 1, 3, 5])
  still = jnp.broadcast_to(jax.random.uniform(jax.random.PRNGKey(3), (1, 8, 8, 3)), (6, 8, 8, 3))
  np.testing.assert_allclose(np.asarray(o3n.dynamic_image(still)), 0.0, atol=1e-4)
  frames = moving_squares(1, 6, 12)[0]
  forward = np.asarray(o3n.dynamic_image(frames))
  backward = np.asarray(o3n.dynamic_image(frames[::-1]))
  assert forward.min() == 0.0 and forward.max() == pytest.approx(1.0)
  assert np.abs(forward - backward).max() > 0.5
  # Reversing the order negates the pooled image, so the rescaled one flips.
  np.testing.assert_allclose(backward, 1.0 - forward, atol=1e-5)
  shuffled = np.asarray(o3n.dynamic_image(frames[jnp.array([0, 2, 1, 3, 4, 5])]))
  assert np.abs(forward - shuffled).max() > 0.1


def test_inputs_are_dynamic_images_of_the_shown_frames():
  cfg = o3n.default_config()
  video = moving_squares(3, 9, 12, seed=4)
  inputs, targets = jax.jit(lambda r, b: o3n.make_inputs(r, b, cfg))(jax.random.PRNGKey(5), {"video": video})
  positions = np.asarray(targets["positions"])
  shown = np.stack([np.asarray(video)[b][positions[b]] for b in range(3)])  # (B, K, W, H, W, 3)
  expected = np.asarray(o3n.dynamic_image(jnp.asarray(shown)))
  np.testing.assert_allclose(np.asarray(inputs["image"]).reshape(expected.shape), expected, atol=1e-5)


def test_evaluation_input_is_the_dynamic_image_of_every_run_of_frames():
  cfg = o3n.default_config()  # element_frames 6.
  video = moving_squares(2, 9, 12, seed=6)
  runs = np.asarray(o3n.clip_input(video, cfg))
  assert runs.shape == (2, 4, 12, 12, 3)  # 9 - 6 + 1 runs.
  for t in range(4):
    np.testing.assert_allclose(runs[:, t], np.asarray(o3n.dynamic_image(video[:, t:t + 6])), atol=1e-6)
  # The backbone was trained on these, not on frames: a still clip gives blank (zero) images.
  still = jnp.repeat(video[:, :1], 9, axis=1)
  assert np.abs(np.asarray(o3n.clip_input(still, cfg))).max() == 0.0
  with pytest.raises(ValueError, match="shorter than element_frames = 6"):
    o3n.clip_input(video[:, :5], cfg)


def test_video_features_of_a_2d_backbone_go_through_the_clip_input():
  from sslx import configs, models
  from sslx import run
  from sslx.evaluate import common
  config = configs.base_video()
  config.pretext = o3n.default_config()
  backbone = models.get_backbone(ml_collections.ConfigDict(steps.TINY_CONVNET))
  clips = (255 * moving_squares(2, 8, 16, seed=7)).astype(jnp.uint8)  # (B, T, H, W, 3)
  variables = backbone.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
  to_input, clip_fn = run.backbone_input_fn(config), run.clip_input_fn(config)
  with_dynamic = common.video_feature_fn(backbone, to_input, 64, clip_fn=clip_fn)(variables, clips)
  # The same features by hand: dynamic images of the 3 runs of 6 frames, encoded, meaned over runs.
  dynamic = 255.0 * o3n.clip_input(clips.astype(jnp.float32) / 255.0, config.pretext)
  maps = backbone.apply(variables, to_input(dynamic.reshape((-1, 16, 16, 3))), train=False)
  expected = common.pool_block(maps["block1"], 64).reshape(2, 3, -1).mean(axis=1)
  np.testing.assert_allclose(np.asarray(with_dynamic["block1"]), np.asarray(expected), rtol=1e-4, atol=1e-5)
  frames_only = common.video_feature_fn(backbone, to_input, 64)(variables, clips)
  assert not np.allclose(np.asarray(frames_only["block1"]), np.asarray(expected), atol=1e-3)


def test_sum_of_differences_is_the_pairwise_sum():
  x = jax.random.normal(jax.random.PRNGKey(6), (2, 5, 7))
  explicit = sum(x[:, j] - x[:, i] for i in range(5) for j in range(i + 1, 5))
  np.testing.assert_allclose(np.asarray(o3n.sum_of_differences(x)), np.asarray(explicit), atol=1e-5)


@pytest.mark.parametrize("fusion", ["sum_of_differences", "concat"])
def test_both_fusions_give_one_logit_per_element(fusion):
  cfg = o3n.default_config()
  cfg.fusion = fusion
  model = steps.build(o3n, cfg)
  video = jax.ShapeDtypeStruct((6, 10, 16, 16, 3), jnp.float32)
  inputs, _ = jax.eval_shape(lambda v: o3n.make_inputs(jax.random.PRNGKey(0), {"video": v}, cfg), video)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), inputs)
  logits, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
  assert inputs["image"].shape == (6 * cfg.num_elements, 16, 16, 3)
  assert logits.shape == (6, cfg.num_elements)


def test_loss_decreases():
  cfg = o3n.default_config()  # Sum of differences fusion.
  video = moving_squares(6, 10, 16, seed=7)
  values, metrics = steps.losses_over_steps(o3n, cfg, {"video": video}, steps=15)
  assert values[0] > math.log(6) - 0.7
  assert values[-1] < values[0] - 0.3, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_validate_one_line_errors():
  o3n.validate(config_with(16))
  with pytest.raises(ValueError, match=r"video.num_frames >= element_frames = 6, got 4.*num_frames"):
    o3n.validate(config_with(4))
  with pytest.raises(ValueError, match=r"unknown fusion"):
    o3n.validate(config_with(16, fusion="max"))
  with pytest.raises(ValueError, match=r"only \('dynamic_image',\)"):
    o3n.validate(config_with(16, input="frame_stack"))
  with pytest.raises(ValueError, match=r"element_frames 1 must be"):
    o3n.validate(config_with(16, element_frames=1))
  with pytest.raises(ValueError, match=r"configs.base_video"):
    o3n.validate(ml_collections.ConfigDict({"pretext": o3n.default_config()}))


def test_experiment_config_passes_validate():
  for arg in (None, "quick"):
    o3n.validate(configs.load(REPO / "experiments" / "o3n_convnet_egogestar.py", arg))


def test_validate_bound_is_the_one_make_inputs_needs():
  # The window must hold one element's frames: num_frames == element_frames runs, one less does not.
  cfg = o3n.default_config()
  inside = steps.experiment_config(cfg, image_size=8, num_frames=cfg.element_frames)
  o3n.validate(inside)
  assert steps.abstract_inputs(o3n, inside)["image"] == (2 * cfg.num_elements, 8, 8, 3)
  outside = steps.experiment_config(cfg, image_size=8, num_frames=cfg.element_frames - 1)
  with pytest.raises(ValueError, match=r"video.num_frames >= element_frames = 6, got 5: raise "
                                       r"--config.video.num_frames"):
    o3n.validate(outside)
  with pytest.raises(ValueError, match=r"element_frames = 6, got 5"):
    steps.abstract_inputs(o3n, outside)


def test_validate_checks_the_probes_clip_length():
  cfg = o3n.default_config()
  config = steps.experiment_config(cfg, image_size=8, num_frames=12)
  config.evaluate.num_frames = cfg.element_frames
  o3n.validate(config)
  clips = jax.ShapeDtypeStruct((2, cfg.element_frames, 8, 8, 3), jnp.float32)
  assert jax.eval_shape(lambda c: o3n.clip_input(c, cfg), clips).shape == (2, 1, 8, 8, 3)
  config.evaluate.num_frames = cfg.element_frames - 1
  with pytest.raises(ValueError, match=r"evaluate.num_frames 5 is below element_frames = 6.*raise "
                                       r"--config.evaluate.num_frames to 6"):
    o3n.validate(config)
  with pytest.raises(ValueError, match=r"clips of 5 frames are shorter than element_frames = 6"):
    o3n.clip_input(jnp.zeros((2, 5, 8, 8, 3)), cfg)
