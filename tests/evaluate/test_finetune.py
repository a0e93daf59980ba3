import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import configs, models, train
from sslx.evaluate import finetune


def quick_video_config():
  """A two-step OPN run on the embedded clip sample (2D convnet over frames)."""
  from sslx.pretexts.video import opn
  c = configs.base_video()
  c.pretext = opn.default_config()
  c.pretext.crop_size = 28
  c.pretext.max_jitter = 2
  c.video.num_frames = 7
  c = configs.quick_video(c)
  c.progress_bar = False
  return c


@pytest.fixture(scope="module")
def video_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("opn"))
  train.train(quick_video_config(), workdir)
  return workdir


def test_clip_probabilities_are_averaged_not_logits():
  # One confident clip for class 0, two milder ones for class 1: the mean of the
  # probabilities picks class 1, the mean of the logits would pick class 0.
  logits = np.array([[[10.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]]], np.float32)
  probs = np.asarray(finetune.average_clip_probabilities(jnp.asarray(logits)))
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, softmax.mean(axis=1), rtol=1e-5)
  assert probs.argmax(-1)[0] == 1 and logits.mean(axis=1).argmax(-1)[0] == 0


def test_2d_backbone_classifies_the_mean_of_frame_features():
  config = quick_video_config()
  backbone = models.get_backbone(config.model)
  model = finetune.Classifier(backbone=backbone, num_classes=5, dropout=0.5)
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (2, 3, 4, 16, 16, 3), dtype=np.uint8)  # (B, K, T, H, W, 3)
  x, group = finetune.backbone_rows(clips, is_video=True, three_d=False)
  assert x.shape == (24, 16, 16, 3) and group == 4
  assert finetune.backbone_rows(clips, is_video=True, three_d=True)[0].shape == (6, 4, 16, 16, 3)
  # Positive values from numpy (BatchNorm variances included): no XLA random-number program to compile.
  shapes = jax.eval_shape(lambda: backbone.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)),
                                                train=False))
  inner = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), shapes)
  dense = {"kernel": jnp.asarray(rng.normal(size=(16, 5)), jnp.float32), "bias": jnp.arange(5.0)}
  variables = {"params": {"backbone": inner["params"], "classifier": dense},
               "batch_stats": {"backbone": inner["batch_stats"]}}
  x = jnp.asarray(x, jnp.float32) / 255.0

  @jax.jit
  def both(variables, inner, x):
    return (model.apply(variables, x, group=group, train=False),
            backbone.apply(inner, x, train=False)["pooled"])

  # Full float32 matmuls: on GPUs the default (TF32) differs between the two orders of summation.
  with jax.default_matmul_precision("highest"):
    logits, pooled = both(variables, inner, x)
  expected = pooled.reshape(6, 4, -1).mean(axis=1) @ dense["kernel"] + dense["bias"]
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


def test_finetune_reports_both_and_trains_the_whole_network(video_workdir, monkeypatch):
  fits = []
  real_fit = finetune.FineTuner.fit

  def recording_fit(self, backbone_variables, source, preprocess):
    start = jax.device_get(self.initial_variables(backbone_variables))
    tuned, metrics = real_fit(self, backbone_variables, source, preprocess)
    fits.append((start, jax.device_get(tuned)))
    return tuned, metrics

  monkeypatch.setattr(finetune.FineTuner, "fit", recording_fit)
  results = finetune.evaluate(video_workdir, steps=3, num_clips=2)
  assert results["test_examples"] == 11 and results["num_clips"] == 2  # The sample's 11 test clips.
  assert results["protocol"]["steps"] == 3
  for name in ("pretrained", "random_init"):
    for key in ("video_top1", "clip_top1", "train_top1"):
      assert 0.0 <= results[name][key] <= 1.0
    assert np.isfinite(results[name]["train_loss"])
  with open(f"{video_workdir}/eval/finetune.json") as f:
    saved = json.load(f)
  assert saved["pretrained"] == results["pretrained"] and saved["random_init"] == results["random_init"]
  assert "| random init |" in open(f"{video_workdir}/eval/finetune.md").read()

  # Pretrained, then random init: both start from the same classifier, and in each the
  # gradients reach the first convolution and BatchNorm runs in train mode.
  assert len(fits) == 2
  np.testing.assert_array_equal(fits[0][0]["params"]["classifier"]["kernel"],
                                fits[1][0]["params"]["classifier"]["kernel"])
  for start, tuned in fits:
    first_conv = lambda v: v["params"]["backbone"]["block1_conv1"]["conv"]["kernel"]  # noqa: E731
    assert np.abs(first_conv(tuned) - first_conv(start)).max() > 0
    assert np.abs(tuned["params"]["classifier"]["kernel"] - start["params"]["classifier"]["kernel"]).max() > 0
    assert any(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(start["batch_stats"]),
                                                       jax.tree.leaves(tuned["batch_stats"])))


def test_missing_checkpoint_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="train first"):
    finetune.evaluate(str(tmp_path))


def test_bad_steps_fail_in_one_line():
  with pytest.raises(ValueError, match="steps >= 1"):
    finetune.finetune_config(quick_video_config(), steps=0)
