import json

import numpy as np
import pytest

from sslx.evaluate import lowshot


def test_subsets_are_balanced_seeded_and_independent_of_other_settings():
  labels = np.repeat(np.arange(4), [30, 50, 20, 100])
  five = lowshot.balanced_subset(labels, seed=0, shots=5)
  assert np.bincount(labels[five]).tolist() == [5, 5, 5, 5] and len(set(five)) == 20
  np.testing.assert_array_equal(five, lowshot.balanced_subset(labels, seed=0, shots=5))
  assert not np.array_equal(five, lowshot.balanced_subset(labels, seed=1, shots=5))
  tenth = lowshot.balanced_subset(labels, seed=0, fraction=0.1)
  assert np.bincount(labels[tenth]).tolist() == [3, 5, 2, 10]
  assert np.bincount(labels[lowshot.balanced_subset(labels, seed=0, fraction=0.01)]).tolist() == [1, 1, 1, 1]
  with pytest.raises(ValueError, match="class 2 has 20"):
    lowshot.balanced_subset(labels, seed=0, shots=21)
  with pytest.raises(ValueError, match="shots must be >= 1"):
    lowshot.check_setting(shots=0)
  with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
    lowshot.check_setting(fraction=1.5)


def test_probes_of_few_examples_get_at_least_min_steps():
  assert lowshot.probe_epochs(10, batch_size=256, epochs=30, min_steps=300) == 300  # One step an epoch.
  assert lowshot.probe_epochs(5000, batch_size=256, epochs=30, min_steps=300) == 30  # 19 steps an epoch.
  assert lowshot.probe_epochs(1024, batch_size=256, epochs=30, min_steps=300) == 75


def test_separable_features_beat_noise_at_every_setting():
  import ml_collections
  rng = np.random.default_rng(0)
  train_y, test_y = np.repeat(np.arange(4), 50), np.repeat(np.arange(4), 25)
  centres = 3 * rng.normal(size=(4, 8))
  features = {"pretrained": {"b": (centres[train_y] + rng.normal(size=(200, 8)),
                                   centres[test_y] + rng.normal(size=(100, 8)))},
              "random_init": {"b": (rng.normal(size=(200, 8)), rng.normal(size=(100, 8)))}}
  train_f = {n: {b: v[0] for b, v in f.items()} for n, f in features.items()}
  test_f = {n: {b: v[1] for b, v in f.items()} for n, f in features.items()}
  cfg = ml_collections.ConfigDict(dict(batch_size=64, epochs=5, learning_rate=1e-2, weight_decay=0.0, seed=0))
  table, skipped = lowshot.lowshot_table(train_f, train_y, test_f, test_y, num_classes=4, cfg=cfg,
                                         shots=(1, 5, 60), fractions=(0.1,), seeds=3, min_steps=50)
  assert list(table) == ["1-shot", "5-shot", "10%"] and "class 0 has 50" in skipped["60-shot"]
  assert table["5-shot"]["examples"] == 20 and table["10%"]["examples"] == 20
  for setting in table.values():
    row = setting["blocks"]["b"]
    assert len(row["pretrained_runs"]) == 3 and row["pretrained_std"] == pytest.approx(np.std(row["pretrained_runs"]))
    assert row["pretrained"] > 0.8 and row["random_init"] < 0.45  # Chance is 0.25.


def test_script_on_a_real_run(trained_workdir):
  workdir, _, _ = trained_workdir
  results = lowshot.evaluate(workdir, shots=(1, 2, 500), fractions=(0.01,), seeds=2, min_steps=20)
  assert list(results["settings"]) == ["1-shot", "2-shot", "1%"] and "500-shot" in results["skipped_settings"]
  assert results["settings"]["1%"]["examples"] == 20  # 200 training images per class in the sample.
  for setting in results["settings"].values():
    assert set(setting["blocks"]) == {"block1", "block2", "block3"}
    for row in setting["blocks"].values():
      assert all(0.0 <= a <= 1.0 for a in row["pretrained_runs"] + row["random_init_runs"])
  saved = json.loads(open(results["written_to"]).read())
  assert saved["settings"]["2-shot"]["blocks"]["block2"] == results["settings"]["2-shot"]["blocks"]["block2"]
  with pytest.raises(ValueError, match="shots must be >= 1"):
    lowshot.evaluate(workdir, shots=(0,))
