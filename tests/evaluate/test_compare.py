import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from sslx.evaluate import compare

# One result of each evaluation script, in the shape it writes (keys as in its evaluate()).
EXAMPLES = {
    "linear": {"blocks": {"block1": {"dims": 512, "pretrained": 0.46, "random_init": 0.43},
                          "block2": {"dims": 512, "pretrained": 0.48, "random_init": 0.42}}},
    "knn": {"k": [20, 200], "blocks": {
        "block1": {"dims": 512, "pretrained": 0.40, "random_init": 0.35,
                   "by_k": {"20": {"pretrained": 0.40, "random_init": 0.35},
                            "200": {"pretrained": 0.38, "random_init": 0.33}}}}},
    "lowshot": {"settings": {"1-shot": {"shots": 1, "examples": 10, "blocks": {
        "block1": {"pretrained": 0.2, "pretrained_std": 0.01, "random_init": 0.15, "random_init_std": 0.02}}}},
        "skipped_settings": {}},
    "retrieval": {"k": [1, 5], "blocks": {"block1": {"pretrained": {"1": 0.3, "5": 0.6},
                                                     "random_init": {"1": 0.2, "5": 0.5}}}},
    "sync": {"pretrained": {"exact": 0.12, "within_1": 0.3, "mean_abs_error_frames": 5.4, "predicted": [0, 3]},
             "random_init": {"exact": 0.03, "within_1": 0.11, "mean_abs_error_frames": 8.1, "predicted": [1, 2]}},
    "correspondence": {"pretrained": {"accuracy": 0.56, "video_to_audio": {"1": 0.03, "5": 0.12}},
                       "random_init": {"accuracy": 0.5, "video_to_audio": {"1": 0.01, "5": 0.03}}},
    "pretext": {"pretrained": {"accuracy": 0.75, "balanced_accuracy": 0.56, "majority_share": 0.76,
                               "label_shares": [0.76, 0.24], "loss": 0.51},
                "random_init": {"accuracy": 0.36, "balanced_accuracy": 0.5, "majority_share": 0.76,
                                "label_shares": [0.76, 0.24], "loss": 0.69}, "num_classes": 2},
    "localization": {"pretrained": {"peak_in_box": 0.0, "mass_in_box": 0.1},
                     "random_init": {"peak_in_box": 0.0, "mass_in_box": 0.07}},
    "propagate": {"sequences": {"dog": {"pretrained": {"J": 0.6}}},
                  "mean": {"pretrained": {"J": 0.58, "F": 0.49, "J&F": 0.54},
                           "random_init": {"J": 0.43, "F": 0.33, "J&F": 0.38},
                           "pixels": {"J": 0.55, "F": 0.49, "J&F": 0.52}}},
    "segment": {"mean": {"pretrained": {"J": 0.03}, "random_init": {"J": 0.09}, "centre_prior": {"J": 0.23}}},
    "future": {"steps": [{"psnr": 26.0, "psnr_copy_last": 25.4}, {"psnr": 22.7, "psnr_copy_last": 21.8}]},
    "finetune": {"runs": {"pretrained": "a", "random_init": "b"},
                 "pretrained": {"train_loss": 1.2, "train_top1": 0.6, "top1": 0.55},
                 "random_init": {"train_loss": 1.5, "train_top1": 0.5, "top1": 0.45}},
}


def test_every_evaluation_script_has_an_example_here():
  package = Path(compare.__file__).resolve().parents[1]
  writers = {p.stem for p in package.rglob("*.py") if re.search(r"common\.write_results\(", p.read_text())}
  assert writers == set(EXAMPLES), "add an example of each evaluation's JSON to EXAMPLES"


@pytest.mark.parametrize("stem", sorted(EXAMPLES))
def test_each_evaluation_gives_rows_with_its_random_init(stem):
  rows = compare.flatten(stem, EXAMPLES[stem])
  assert rows and all(r["evaluation"] == stem for r in rows)
  if stem != "future":  # The only one without a random-init counterpart (its baseline is the copy).
    assert all(r["random_init"] is not None for r in rows)
  metrics = {(r["metric"], r["block"]) for r in rows}
  expected = {"linear": {("top-1", "block1"), ("top-1", "block2")},
              "knn": {("k=20", "block1"), ("k=200", "block1")},
              "lowshot": {("1-shot", "block1")},
              "retrieval": {("top-1", "block1"), ("top-5", "block1")},
              "sync": {("exact", ""), ("within_1", ""), ("mean_abs_error_frames", "")},
              "correspondence": {("accuracy", ""), ("video_to_audio@1", ""), ("video_to_audio@5", "")},
              "propagate": {("J", ""), ("F", ""), ("J&F", "")},
              "pretext": {("accuracy", ""), ("balanced_accuracy", ""), ("majority_share", ""), ("loss", "")}}
  if stem in expected:
    assert metrics == expected[stem]


def test_table_csv_and_plot_of_two_runs(trained_workdir, tmp_path):
  workdir, _, _ = trained_workdir
  runs = []
  for name, shift in (("rotation", 0.0), ("other", 0.05)):
    run = tmp_path / name
    run.mkdir()
    shutil.copy(Path(workdir) / "config.json", run / "config.json")  # A real run's config and logs.
    shutil.copytree(Path(workdir) / "tensorboard", run / "tensorboard")
    (run / "eval").mkdir()
    for stem in ("linear", "knn", "sync"):
      result = json.loads(json.dumps(EXAMPLES[stem]))
      for row in result.get("blocks", {}).values():
        row["pretrained"] += shift
      (run / "eval" / f"{stem}.json").write_text(json.dumps(result))
    runs.append(str(run))
  out = compare.compare(runs, out_dir=str(tmp_path / "out"))
  assert [r["pretext"] for r in out["runs"]] == ["image.rotation"] * 2 and out["runs"][0]["steps"] == 2
  table = Path(out["written"]["md"]).read_text()
  assert "| linear | top-1 | block2 | 48.0 / 42.0 | 53.0 / 42.0 |" in table
  assert "| sync | mean_abs_error_frames |  | 5.4 / 8.1 | 5.4 / 8.1 |" in table
  with open(out["written"]["csv"]) as f:
    lines = list(csv.DictReader(f))
  assert len(lines) == 2 * (2 + 2 + 3) and {line["run"] for line in lines} == {"rotation", "other"}
  # Panels: linear top-1, knn k=20, knn k=200 -> one row of three, 520 x 380 px each at 100 dpi.
  picture = np.asarray(PIL.Image.open(out["written"]["png"]))
  assert picture.shape[:2] == (380, 3 * 520)
  assert picture.std() > 10  # Lines and text drawn, not a blank canvas.


def test_runs_without_results_fail_in_one_line(trained_workdir, tmp_path):
  assert compare.main([]) == 2
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(Path(trained_workdir[0]) / "config.json", empty / "config.json")
  with pytest.raises(ValueError, match="has evaluation results"):
    compare.compare([str(empty)], out_dir=str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match="config.json is missing"):
    compare.compare([str(tmp_path)], out_dir=str(tmp_path / "out"))
