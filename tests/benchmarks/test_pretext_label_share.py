"""The pretext-label-share benchmark in --quick mode (the full run is benchmarks/pretext_label_share.py)."""


import jax
import numpy as np
import pytest

from sslx import configs, pretexts, run
from sslx.pretexts.image import jigsaw
from sslx.pretexts.video import opn
from tests.benchmarks import load_benchmark
from tests.conftest import REPO



def test_quick_run_prints_positive_times_and_shares(capsys):
  share = load_benchmark("pretext_label_share")
  # One config builds and compiles three programs, ~30 s on 2 cores (CI's budget); the clip
  # path's batches and labels are checked without a model below.
  names = ["rotation_convnet_sample.py"]
  rows = share.main(["--quick", "--configs", ",".join(names)])
  assert [r["config"] for r in rows] == [f"{n}:quick" for n in names]
  for row in rows:
    assert row["batch_size"] == 4 and row["repeats"] == 2
    assert row["step_spread"] >= 0
    for key in ("step_ms", "labels_ms", "given_ms"):
      assert row[key] > 0 and np.isfinite(row[key]), (row["config"], key)
    assert 0 < row["label_share"] <= 1 and np.isfinite(row["in_step_share"]) and row["in_step_share"] < 1
    # (c) runs (a)'s program on (b)'s outputs (the benchmark checks this itself, at 1e-4).
    assert row["loss_given"] == pytest.approx(row["loss_step"], rel=1e-4)
    assert row["grad_norm_given"] == pytest.approx(row["grad_norm_step"], rel=1e-4)
  rotation, = rows
  # Rotation: all four turns of every image, labels 0..3 in turn; a 4-way head.
  assert rotation["model_inputs"] == 16 and rotation["classes"] == 4
  np.testing.assert_array_equal(rotation["labels"], np.tile(np.arange(4), 4))

  lines = capsys.readouterr().out.splitlines()
  table = [line for line in lines if line.startswith("|")]
  assert len(table) == 3 and "(b)/(a)" in table[0] and "((a)-(c))/(a)" in table[0]
  for line, row in zip(table[2:], rows):
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == row["config"] and cells[1] == "4"
    assert float(cells[4]) == pytest.approx(row["step_ms"], abs=0.051)
    assert float(cells[7]) == pytest.approx(row["labels_ms"] / row["step_ms"], abs=0.00051)
    assert float(cells[9]) == pytest.approx(1 - row["given_ms"] / row["step_ms"], abs=0.00051)


def _labels(share, name, batch_size):
  """The benchmark's batch of ``name`` (quick) through its label maker, without a model."""
  config = configs.load(REPO / "experiments" / name, "quick")
  pretext = pretexts.get(config.pretext.name)
  state = run.TrainState(step=np.int32(3), params={}, batch_stats={}, opt_state={},
                           rng=jax.random.PRNGKey(0), pretext_state={})
  batch = share.real_batch(config, batch_size)
  inputs, targets = share.label_fn(config, pretext)(state, batch)
  return config, batch, jax.device_get(inputs), jax.device_get(targets)


def test_label_maker_gives_each_pretexts_classes():
  share = load_benchmark("pretext_label_share")
  config, batch, inputs, targets = _labels(share, "jigsaw_convnet_cifar10.py", 16)
  assert batch["image"].shape == (16, 64, 64, 3) and batch["image"].dtype == np.uint8
  _, tile = jigsaw.tile_geometry(64, config.pretext)
  assert inputs["image"].shape == (16 * 9, tile, tile, 3)
  labels = targets["label"]
  assert labels.min() >= 0 and labels.max() < config.pretext.num_permutations == 100
  perms = jigsaw.permutation_set(9, config.pretext.num_permutations, config.pretext.permutation_seed)
  np.testing.assert_array_equal(targets["permutation"], perms[labels])

  config, batch, inputs, targets = _labels(share, "opn_convnet_egogestar.py", 8)
  assert batch["video"].shape == (8, config.video.num_frames, 32, 32, 3) and batch["video"].dtype == np.uint8
  size = config.pretext.crop_size
  assert inputs["image"].shape == (8 * 4, size, size, 3)
  assert [opn.class_of(o) for o in targets["order"]] == targets["label"].tolist()
  assert targets["label"].max() < opn.num_classes(4) == 12
  # Standardised, as the network sees them: not the [0, 1] range make_inputs works in.
  assert inputs["image"].min() < -0.5
