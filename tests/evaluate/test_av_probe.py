"""Linear probes of both streams of an audio-visual run: the visual backbone on the frames it saw,
the audio tower on the sound it heard (sslx/evaluate/common.py, linear.py)."""

import json
import types

import jax
import ml_collections
import numpy as np
import pytest

from sslx import checkpoints, configs, run
from sslx.data import sources
from sslx.evaluate import common, linear
from sslx.pretexts.audiovisual import correspondence
from tests.conftest import requires_data, tiny_config


def test_both_streams_of_an_av_run_are_probed_against_random_init(trained_av_workdir, monkeypatch, capsys):
  features = {}
  real_extract = common.extract_pretrained_and_random

  def keep_features(*args, stream="visual", **kwargs):
    out = real_extract(*args, stream=stream, **kwargs)
    features[stream] = out[0]
    return out

  monkeypatch.setattr(common, "extract_pretrained_and_random", keep_features)
  visual = linear.evaluate(trained_av_workdir, epochs=1)
  # The audio stream through the command line's own path (sslx-linear --stream audio).
  args = types.SimpleNamespace(workdir=trained_av_workdir, dataset=None, data_dir=None, epochs=1, patch_grid=None,
                               temporal_segments=None, stream="audio")
  linear._main(args, {})
  assert "Linear probe of the audio tower on sample_av" in capsys.readouterr().out
  with open(f"{trained_av_workdir}/eval/linear-audio.json") as f:
    audio = json.load(f)

  assert visual["written_to"].endswith("eval/linear.json") and audio["written_to"].endswith("eval/linear-audio.json")
  assert "| block4 |" in open(f"{trained_av_workdir}/eval/linear-audio.md").read()
  for results, blocks in ((visual, ["block1", "block2", "block3"]),  # quick mode's 3-block ConvNet.
                          (audio, ["block1", "block2", "block3", "block4"])):  # L3-Net's audio tower.
    assert list(results["blocks"]) == blocks
    assert (results["train_examples"], results["test_examples"], results["skipped_images"]) == (12, 4, 0)
    assert results["labels"] == {"file": None, "column": None, "classes": ["bin", "lay", "place", "set"]}
    for row in results["blocks"].values():
      assert all(0.0 <= row[k] <= 1.0 for k in ("pretrained", "random_init", "pretrained_train"))
  assert (visual["stream"], audio["stream"]) == ("visual", "audio")
  with open(f"{trained_av_workdir}/eval/linear.json") as f:
    assert json.load(f)["stream"] == "visual"  # The visual table stays where it was.

  for stream, blocks in (("visual", 3), ("audio", 4)):
    test_features = features[stream]["test"][0]
    assert len(test_features["pretrained"]) == blocks
    for block, pretrained in test_features["pretrained"].items():
      random_init = test_features["random_init"][block]
      assert pretrained.shape == random_init.shape and pretrained.shape[0] == 4
      assert np.isfinite(pretrained).all() and not np.allclose(pretrained, random_init), (stream, block)


def test_probe_inputs_are_what_the_towers_saw_in_training(trained_av_workdir):
  loaded = checkpoints.load_run(trained_av_workdir)
  config, backbone = loaded.config, loaded.backbone
  rng = np.random.default_rng(0)
  clips = rng.integers(0, 256, (2, 3, 1, config.image_size, config.image_size, 3), dtype=np.uint8)  # K = 3.
  audio = rng.normal(size=(2, 3, run.audio_length(config))).astype(np.float32)
  # Training's inputs of the first window: all examples one clip (index 0), so no negative is drawn.
  inputs, _ = correspondence.make_inputs(jax.random.PRNGKey(0), {"video": clips[:, 0] / 255.0, "audio": audio[:, 0],
                                                                 "index": np.zeros(2, np.int32)}, config.pretext)
  seen = run.standardize_inputs(inputs, tuple(config.normalize.mean), tuple(config.normalize.std))
  prepare = run.prepare_fn(config, backbone)
  np.testing.assert_allclose(prepare(clips[:, 0]), seen["image"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(common.audio_input_fn(config)(audio[:, 0]), seen["audio"])

  # The visual features of a one-frame window: its frame prepared, encoded, each block pooled,
  # then averaged over the clip's K windows.
  with jax.default_matmul_precision("highest"):
    variables = jax.device_get(loaded.variables)
    got = common.feature_fn(backbone, config, 512)(variables, clips)
    frames = clips.transpose(1, 0, 2, 3, 4, 5).reshape((-1,) + clips.shape[2:])  # Window-major (K * B, 1, ...).
    maps = jax.jit(lambda v, x: backbone.apply(v, prepare(x), train=False))(variables, frames)
  per_segment = 512 // config.evaluate.temporal_segments
  assert list(got) == ["block1", "block2", "block3"]
  for block in got:
    pooled = np.asarray(common.pool_block(maps[block], per_segment)).reshape(3, 2, -1)
    np.testing.assert_allclose(got[block], pooled.mean(axis=0), rtol=1e-4, atol=1e-5)


def test_the_audio_stream_needs_an_audio_visual_run():
  with pytest.raises(ValueError, match=r"^the audio stream needs a run trained with sound and an audio tower "
                                       r"\(config.audio, pretext.audio_model\), but this run was trained with "
                                       r"image.rotation: probe the visual stream$"):
    common.check_stream(tiny_config(), "audio")
  with pytest.raises(ValueError, match="unknown stream 'sound'"):
    common.check_stream(tiny_config("correspondence_l3_grid.py"), "sound")
  with pytest.raises(ValueError, match="drop them for --stream audio"):
    linear.evaluate("/nonexistent", stream="audio", patch_grid=2)


@requires_data("grid_av")
def test_evaluate_label_column_override_relabels_a_stored_av_config():
  # As load_run gives it: the config saved beside the checkpoint, through JSON.
  stored = ml_collections.ConfigDict(json.loads(configs.base_av().to_json()))
  config = common.apply_overrides(stored, {"evaluate.label_column": "color"}, "sslx-linear")
  probed = common.labeled_sources(config, ("train", "test"), dataset=config.dataset, data_dir=None, purpose="test")
  assert probed["test"].classes == ["blue", "green", "red", "white"] and len(probed["train"]) == 45
  assert linear.labels_read(config, dataset=config.dataset, data_dir=None)["column"] == "color"
  assert sources.from_config(config, "train").classes == ["bin", "lay", "place", "set"]  # Training: command.
