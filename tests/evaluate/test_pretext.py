import json

import numpy as np
import pytest

from sslx.evaluate import pretext as pretext_eval


def test_balanced_accuracy_sees_through_the_majority_class():
  # Shuffle and Learn's labels: 75% negatives (0). Always answering 0 is 0.75 accurate, 0.5 balanced.
  labels = np.array([0, 0, 0, 1] * 5)
  always_negative = np.tile([[2.0, -1.0]], (20, 1))
  s = pretext_eval.scores(always_negative, labels, 2)
  assert s["accuracy"] == pytest.approx(0.75) and s["balanced_accuracy"] == pytest.approx(0.5)
  assert s["majority_share"] == pytest.approx(0.75) and s["label_shares"] == pytest.approx([0.75, 0.25])
  # Right on every positive, wrong on 8 of the 15 negatives: recalls 1 and 7 / 15.
  predicted = labels.copy()
  predicted[np.flatnonzero(labels == 0)[::2]] = 1  # 8 of the 15 negatives wrong.
  s = pretext_eval.scores(np.eye(2)[predicted], labels, 2)
  assert s["balanced_accuracy"] == pytest.approx((1 + 7 / 15) / 2)
  assert s["accuracy"] == pytest.approx(np.mean(predicted == labels))


def test_pretext_accuracy_on_held_out_clips(trained_video_workdir):
  workdir, _, _ = trained_video_workdir
  results = pretext_eval.evaluate(workdir, draws=2)
  # The embedded sample's test split: every 4th clip, each drawn twice as training draws it.
  assert results["split"] == "test" and results["num_classes"] == 12  # OPN: 4! / 2 orders.
  assert results["examples"] == 2 * results["sources"] - results["skipped"]  # Skips count per draw.
  assert results["chance_balanced_accuracy"] == pytest.approx(1 / 12)
  for name in ("pretrained", "random_init"):
    row = results[name]
    assert 0.0 <= row["balanced_accuracy"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert sum(row["label_shares"]) == pytest.approx(1.0) and np.isfinite(row["loss"])
  # The same seed draws the same examples and labels: the same figures.
  again = pretext_eval.evaluate(workdir, draws=2, name="again")
  assert again["written_to"].endswith("eval/pretext-again.json")
  assert again["pretrained"] == results["pretrained"] and again["random_init"] == results["random_init"]
  assert json.loads(open(results["written_to"]).read())["pretrained"] == results["pretrained"]
  assert "pretext accuracy on the test split" in pretext_eval.summary_line(results)
  with pytest.raises(ValueError, match="--draws must be >= 1"):
    pretext_eval.evaluate(workdir, draws=0)
