"""Random-access image sources chosen by one string, the config's ``dataset``.

- ``sample``: 2,000 train + 1,000 test CIFAR-10 images shipped in the package
  (sslx/data/sample, copied from ../shared/data/cifar10), so the first run
  works offline anywhere.
- ``folder:PATH``: ``PATH/<split>/<class>/<image>`` (PNG or JPEG). Images lying
  directly in ``PATH/<split>`` are read as unlabeled (label -1).
- ``tfds:NAME``: a TFDS dataset prepared as ArrayRecord (``tfds build NAME
  --file_format=array_record``), read through ``tfds.data_source``, which needs
  no TensorFlow and gives grain random access.

Each source has ``len``, ``[i] -> {"image": encoded bytes or HxWxC uint8,
"label": int}`` and ``num_classes``. Bytes are read here, decoding happens in
the pipeline, so that an unreadable file is skipped and counted there.
"""

from __future__ import annotations

import os
from pathlib import Path

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class FolderSource:
  """Images under ``root/split/<class>/``; class ids are the sorted folder names."""

  def __init__(self, root: str | os.PathLike, split: str):
    split_dir = Path(root) / split
    if not split_dir.is_dir():
      raise FileNotFoundError(
          f"dataset folder {split_dir} does not exist: expected {Path(root)}/<split>/<class>/<image> "
          f"with split '{split}'")
    self.classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(self.classes):
      for path in sorted((split_dir / name).iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS:
          paths.append(str(path))
          labels.append(label)
    for path in sorted(split_dir.iterdir()):  # Unlabeled images directly in the split folder.
      if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        paths.append(str(path))
        labels.append(-1)
    if not paths:
      raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}: put them in "
                       f"{split_dir}/<class>/ or directly in {split_dir}")
    self.paths, self.labels = paths, labels
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    try:
      with open(self.paths[index], "rb") as f:
        encoded = f.read()
    except OSError:
      encoded = None  # Counted as unreadable by the pipeline's decode step.
    return {"image": encoded, "label": self.labels[index], "path": self.paths[index]}

  def __repr__(self):
    return f"FolderSource({len(self)} images, {self.num_classes} classes)"


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


def get_source(spec: str, split: str, data_dir: str | None = None):
  """Parses a dataset spec ('sample', 'folder:PATH', 'tfds:NAME') into a source."""
  if spec == "sample":
    return FolderSource(SAMPLE_DIR, split)
  if spec.startswith("folder:"):
    return FolderSource(os.path.expanduser(spec[len("folder:"):]), split)
  if spec.startswith("tfds:"):
    return TfdsSource(spec[len("tfds:"):], split, data_dir)
  raise ValueError(f"unknown dataset spec {spec!r}: use 'sample', 'folder:PATH' or 'tfds:NAME'")
