import json

import numpy as np
import pytest

from sslx.evaluate import correspondence


def test_recall_counts_the_own_partner_among_the_top_k():
  scores = np.array([[3.0, 1.0, 0.0],    # Own (0) first.
                     [2.0, 1.0, 0.5],    # Own (1) second.
                     [5.0, 4.0, -1.0]])  # Own (2) last.
  assert correspondence.recall_at(scores, (1, 2, 3)) == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3),
                                                          "3": 1.0}


def test_negative_partners_are_the_same_slot_of_another_clip():
  clip = np.array([4, 4, 7, 7, 9, 9])
  slot = np.array([0, 1, 0, 1, 0, 1])
  partners = correspondence.negative_partners(clip, slot)
  np.testing.assert_array_equal(partners, [2, 3, 4, 5, 0, 1])
  # Another time: the next clip's other slot.
  np.testing.assert_array_equal(correspondence.negative_partners(clip, slot, slot_shift=1), [3, 2, 5, 4, 1, 0])
  with pytest.raises(ValueError, match="at least 2 clips"):
    correspondence.negative_partners(np.zeros(3, int), np.arange(3))


def test_reads_the_checkpoint_and_scores_held_out_clips(trained_av_workdir):
  results = correspondence.evaluate(trained_av_workdir)
  # The sample's 4 test clips, 2 windows each (quick_video's evaluate.num_clips).
  assert results["clips"] == 4 and results["windows"] == 8 and results["skipped"] == 0
  for name in ("pretrained", "random_init"):
    row = results[name]
    assert row["accuracy"] == pytest.approx((row["positives_right"] + row["negatives_right"]) / 2)
    assert row["accuracy_other_time"] == pytest.approx((row["positives_right"] + row["negatives_right_other_time"]) / 2)
    for direction in ("video_to_audio", "audio_to_video"):
      recalls = [row[direction][str(k)] for k in correspondence.RECALL_K]
      assert recalls == sorted(recalls) and recalls[-1] == 1.0  # k = 10 >= 8 windows covers all.
  assert results["pretrained"] != results["random_init"]
  assert json.loads(open(results["written_to"]).read())["windows"] == 8
  both = correspondence.evaluate(trained_av_workdir, splits=("train", "test"), name="all")
  assert both["clips"] == 16 and both["written_to"].endswith("correspondence-all.json")


def test_a_run_without_a_correspondence_head_is_a_one_line_error(trained_workdir):
  workdir, _, _ = trained_workdir
  with pytest.raises(ValueError, match=r"trained with image.rotation, which has no correspondence head"):
    correspondence.evaluate(workdir)
