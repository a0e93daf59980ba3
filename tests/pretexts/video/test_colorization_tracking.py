import colorsys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from sslx import losses, pretexts
from sslx.pretexts.image import colorization
from sslx.pretexts.video import colorization_tracking as ct
from tests.pretexts import steps
from tests.pretexts.video.test_o3n import moving_squares


def palette(n):
  """n saturated colours of evenly spaced hues, RGB in [0, 1]."""
  return np.array([colorsys.hsv_to_rgb(i / n, 0.9, 0.8) for i in range(n)], np.float32)


def test_found_by_name_with_contract():
  contract = pretexts.get("video.colorization_tracking")
  assert contract.module is ct and contract.stateful and contract.backbone_input is ct.backbone_input


def test_seconds_become_frames_at_the_delivered_rate():
  assert ct.frame_offsets(ct.default_config()) == (0, 2, 4, 8)
  cfg = ct.default_config()
  cfg.fps = 25.0
  assert ct.frame_offsets(cfg) == (0, 5, 10, 20)


def test_references_then_target_at_their_offsets_with_their_own_colours():
  # Time-coded frames: frame t is one flat colour, palette[t], and the clusters are the palette.
  colours = palette(12)
  video = jnp.broadcast_to(jnp.asarray(colours)[None, :, None, None, :], (64, 12, 8, 8, 3))
  centroids = colorization.rgb_to_lab(jnp.asarray(colours))[:, 1:]
  cfg = ct.default_config()
  cfg.num_colours = 12
  inputs, targets = ct.make_inputs(jax.random.PRNGKey(0), {"video": video}, cfg, state={"centroids": centroids})
  times = np.asarray(targets["colour"][:, :, 0, 0])  # The cluster of a frame is its time.
  assert targets["colour"].shape == (64, 4, 2, 2) and (np.asarray(targets["colour"]) == times[:, :, None, None]).all()
  np.testing.assert_array_equal(times - times[:, :1], np.broadcast_to([0, 2, 4, 8], times.shape))
  assert set(times[:, 0]) == set(range(12 - 8))  # Every start that fits the window occurs.
  # The network sees those frames in grey, references first, the target last.
  shown = np.asarray(inputs["lightness"]).reshape(64, 4, 8, 8, 1)
  expected = np.asarray(colorization.lightness_input(jnp.asarray(colours)[times][:, :, None, None, :]))
  np.testing.assert_allclose(shown, np.broadcast_to(expected, shown.shape), atol=1e-5)


def test_pointer_copies_the_label_of_the_one_matching_reference():
  rng = np.random.default_rng(0)
  references = np.eye(16, dtype=np.float32)[None, :12]  # Orthonormal: one match, the rest 0.
  picked = np.array([7, 2, 11, 0, 5])
  target = 50.0 * references[:, picked]  # Each target location matches exactly one reference location.
  labels = jax.nn.one_hot(rng.integers(0, 16, (1, 12)), 16)
  copied = ct.copy_labels(ct.pointer_logits(jnp.asarray(target), jnp.asarray(references), 1.0), labels)
  np.testing.assert_allclose(np.asarray(copied), np.asarray(labels)[:, picked], atol=1e-6)
  # A high temperature blurs the copy towards the references' mean label.
  blurred = ct.copy_labels(ct.pointer_logits(jnp.asarray(target), jnp.asarray(references), 1e6), labels)
  np.testing.assert_allclose(np.asarray(blurred)[0, 0], np.asarray(labels).mean(axis=1)[0], atol=1e-4)


def test_pointer_xent_is_minus_log_of_the_mass_on_matching_references():
  logits = jnp.array([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]]])
  reference_labels = jnp.array([[4, 5, 4]])
  target_labels = jnp.array([[4, 9]])  # Label 9 is on no reference: not copyable.
  per_target = losses.pointer_xent(logits=logits, reference_labels=reference_labels,
                                   target_labels=target_labels, reduction=False)
  p = jax.nn.softmax(logits[0, 0])
  assert float(per_target[0, 0]) == pytest.approx(-np.log(float(p[0] + p[2])), rel=1e-5)
  assert float(per_target[0, 1]) == 0.0
  mean = losses.pointer_xent(logits=logits, reference_labels=reference_labels, target_labels=target_labels)
  assert float(mean) == pytest.approx(float(per_target[0, 0]), rel=1e-6)  # Over the copyable one only.


def test_kmeans_state_finds_the_training_colours():
  colours = palette(4)
  video = np.repeat(np.repeat(colours[:, None, None, :], 8, 1), 8, 2)  # (4, 8, 8, 3): 4 flat frames.
  video = jnp.asarray(np.tile(video[None], (3, 1, 1, 1, 1)))  # 3 clips of those 4 frames.
  cfg = ct.default_config()
  cfg.num_colours = 4
  collected = jax.device_get(ct.collect(None, {"video": video}, cfg))
  state = ct.update_state(None, collected, rng=jax.random.PRNGKey(0), cfg=cfg)
  found = np.asarray(state["centroids"])
  truth = np.asarray(colorization.rgb_to_lab(jnp.asarray(colours))[:, 1:])
  assert np.abs(np.sort(found, axis=0) - np.sort(truth, axis=0)).max() < 1e-3
  grey = jnp.full((3, 4, 8, 8, 3), 0.5)
  with pytest.raises(ValueError, match=r"distinct colours .* train on colour video"):
    ct.update_state(None, jax.device_get(ct.collect(None, {"video": grey}, cfg)), rng=jax.random.PRNGKey(0), cfg=cfg)


def test_window_rate_and_grid_errors_are_one_line():
  config = ml_collections.ConfigDict({"pretext": ct.default_config(), "image_size": 64,
                                      "video": {"num_frames": 9, "fps": 10.0, "frame_stride": 1}})
  ct.validate(config)
  config.video.num_frames = 8
  with pytest.raises(ValueError, match=r"num_frames >= 9 .* got 8"):
    ct.validate(config)
  config.video.num_frames, config.image_size = 9, 12
  with pytest.raises(ValueError, match=r"label_stride 4 gives no embedding map of at least 4 x 4"):
    ct.validate(config)
  config.image_size, config.video.frame_stride = 64, 2
  with pytest.raises(ValueError, match=r"--config.pretext.fps=5"):
    ct.validate(config)
  config.video.frame_stride, config.pretext.reference_seconds = 1, (0.0, 0.04, 0.4)
  with pytest.raises(ValueError, match=r"not strictly increasing"):
    ct.validate(config)


def test_loss_decreases():
  cfg = ct.default_config()
  cfg.embedding_dim = 16
  video = moving_squares(4, 10, 16, seed=2)
  state = ct.update_state(None, jax.device_get(ct.collect(None, {"video": video}, cfg)),
                          rng=jax.random.PRNGKey(0), cfg=cfg)
  values, metrics = steps.losses_over_steps(ct, cfg, {"video": video}, steps=15, state=state)
  assert values[-1] < values[0] - 0.05, values
  assert 0.0 <= float(metrics["accuracy"]) <= 1.0 and float(metrics["copyable"]) > 0.5
