"""Random-access image sources chosen by one string, the config's ``dataset``.

- ``sample``: 2,000 train + 1,000 test CIFAR-10 images shipped in the package
  (sslx/data/sample, copied from ../shared/data/cifar10), so the first run
  works offline anywhere.
- ``folder:PATH``: ``PATH/<split>/<class>/<image>`` (PNG or JPEG). Images lying
  directly in ``PATH/<split>`` are read as unlabeled (label -1). A folder of
  video clips (``<class>/<clip>.mp4`` or ``<split>/<class>/<clip>``) is read by
  ``sslx.data.video.VideoFolderSource``.
- ``sample_video``: 33 short egogestar gesture clips shipped in the package
  (sslx/data/sample_video, re-encoded small), for quick video runs.
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


def get_source(spec: str, split: str, data_dir: str | None = None, *, test_every: int = 4,
               video_fps: float | None = None, is_video: bool = False):
  """Parses a dataset spec ('sample', 'sample_video', 'folder:PATH', 'tfds:NAME') into a source.

  A folder holding video files (sslx/data/video.py's extensions) gives a
  ``VideoFolderSource`` (``test_every``: its split by clip when the folder has
  no split folders), one of images a ``FolderSource``. ``tfds:NAME`` is read
  as video (``TfdsVideoSource``, frames at ``video_fps`` or the dataset's known
  rate) when ``is_video``.
  """
  from sslx.data import video  # Imported here: PyAV and OpenCV are only needed for video.
  if spec == "sample":
    return FolderSource(SAMPLE_DIR, split)
  if spec == "sample_video":
    return video.VideoFolderSource(video.SAMPLE_VIDEO_DIR, split, test_every=test_every)
  if spec.startswith("folder:"):
    root = os.path.expanduser(spec[len("folder:"):])
    if video.is_video_folder(root):
      return video.VideoFolderSource(root, split, test_every=test_every)
    return FolderSource(root, split)
  if spec.startswith("tfds:"):
    if is_video:
      return video.TfdsVideoSource(spec[len("tfds:"):], split, data_dir, fps=video_fps)
    return TfdsSource(spec[len("tfds:"):], split, data_dir)
  raise ValueError(f"unknown dataset spec {spec!r}: use 'sample', 'folder:PATH' or 'tfds:NAME'")


def from_config(config, split: str, *, dataset: str | None = None, data_dir: str | None = None):
  """The source for ``split`` of an experiment config's dataset (or of ``dataset`` /
  ``data_dir`` when given), with the config's video split rule."""
  video_config = config.get("video")
  test_every = video_config.get("test_every", 4) if video_config is not None else 4
  return get_source(dataset or config.dataset, split, data_dir or config.get("data_dir"),
                    test_every=test_every, is_video=video_config is not None,
                    video_fps=video_config.get("source_fps") if video_config is not None else None)
