"""What image and video sources share, below both: ``sources.py`` and ``video.py`` import
it, it imports neither (so neither imports the other).

- The split of a folder without split folders (``root/<class>/<file>``): in each
  class, files in sorted name order, every ``test_every``-th (the k-th, 2k-th,
  ...) is "test", the others "train". Deterministic and stratified, and the same
  for images and clips, so a folder reads the same way whatever it holds.
- Labels from a CSV file (``labels_from_csv``): one row per file, a ``file`` column
  holding its path relative to the CSV's folder, and any number of label columns. It
  lets a flat folder (GRID's ``s1/*.mpg`` beside ``labels.csv``) be labeled by any of
  its columns without moving a file.
- ``TfdsSource``, the TFDS reader both kinds of record come through.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path


def split_folder(root: Path, split: str, item: str) -> tuple[Path, bool]:
  """(the folder holding ``split``'s class folders, whether it must be split by position):
  ``root/split`` when it exists, else ``root`` itself for train/test when it has no split
  folders. ``item``: what the folder holds, for the error ("image", "clip")."""
  if (root / split).is_dir():
    return root / split, False
  if split in ("train", "test") and not any((root / s).is_dir() for s in ("train", "test")):
    return root, True
  raise FileNotFoundError(f"dataset folder {root} has no split '{split}': use {root}/{split}/<class>/<{item}>, "
                          f"or class folders directly under {root} for a train/test split by {item}")


def take_split(items: list, split: str, test_every: int) -> list:
  """``split``'s share of one class's ``items`` (in sorted order): every ``test_every``-th
  item is "test", the others "train"."""
  if test_every < 2:
    raise ValueError(f"test_every is {test_every}, which leaves no training data: set it to 2 or more "
                     f"(every test_every-th file of a class is a test file)")
  return [x for i, x in enumerate(items) if (i % test_every == test_every - 1) == (split == "test")]


FILE_COLUMN = "file"  # The label file's column naming each file, relative to the file's folder.


def labels_from_csv(path: str | os.PathLike, column: str, root: Path, extensions: tuple[str, ...]
                    ) -> dict[str, str]:
  """{real path: value in ``column``} for each file the CSV ``path`` lists that lies under
  ``root`` (at any depth), exists and has one of ``extensions``: the dataset's labeled files.

  Rows are matched by their ``file`` column, a path relative to the CSV's folder
  (``s1/bbaf2n.mpg`` beside ``s1/``); rows with an empty value leave their file unlabeled,
  and a file listed twice keeps its first row. One-line errors: no such file, no such
  column, no file of ``root`` listed.
  """
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"label file {path} does not exist: give the path of a CSV with a "
                            f"'{FILE_COLUMN}' column and a label column")
  with open(path, newline="", encoding="utf-8-sig") as f:
    rows = csv.DictReader(f)
    columns = rows.fieldnames or []
    listed = ", ".join(columns) or "none"
    if FILE_COLUMN not in columns:
      raise ValueError(f"label file {path} has no {FILE_COLUMN!r} column (columns: {listed}): add one holding "
                       f"each file's path relative to {path.parent}")
    if column not in columns:
      raise ValueError(f"label file {path} has no column {column!r} (columns: {listed}): set label_column "
                       f"to one of them")
    table = [(row[FILE_COLUMN], row[column]) for row in rows]
  top = os.path.realpath(root) + os.sep
  out: dict[str, str] = {}
  for name, value in table:
    if not name or not value or not value.strip():
      continue
    real = os.path.realpath(path.parent / name.strip())
    if real.startswith(top) and real not in out and real.lower().endswith(extensions) and os.path.isfile(real):
      out[real] = value.strip()
  if not out:
    example = table[0][0] if table else "a/b.mp4"
    raise ValueError(f"label file {path} labels none of the files under {root} (its '{FILE_COLUMN}' paths, "
                     f"e.g. {example!r}, are relative to {path.parent}): give the label file of this dataset")
  return out


class TfdsSource:
  """A TFDS ``data_source`` (ArrayRecord) with records mapped to {"image", "label"}."""

  def __init__(self, name: str, split: str, data_dir: str | None = None):
    import tensorflow_datasets as tfds  # Imported here: the package imports slowly.
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises several types; all mean "not prepared here".
      raise FileNotFoundError(
          f"TFDS dataset {name!r} split {split!r} is not readable in data_dir={data_dir!r} "
          f"({type(e).__name__}): prepare it with `tfds build {name} --file_format=array_record` "
          f"and pass --config.data_dir") from None
    features = self._source.dataset_info.features
    self.num_classes = features["label"].num_classes if "label" in features else 0

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    record = self._source[index]
    return {"image": record["image"], "label": int(record.get("label", -1))}
