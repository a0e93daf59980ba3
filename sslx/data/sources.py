"""Random-access image sources chosen by one string, the config's ``dataset``.

- ``sample``: 2,000 train + 1,000 test CIFAR-10 images shipped in the package
  (sslx/data/sample), so the first run works offline anywhere.
- ``sample_video``: 33 short egogestar gesture clips shipped in the package
  (sslx/data/sample_video, re-encoded small), for quick video runs.
- ``folder:NAME``: a folder of the data directory (below), or any folder when
  NAME is absolute or starts with ``~``. Images (PNG or JPEG) as
  ``<split>/<class>/<image>``, or as ``<class>/<image>`` without split folders:
  then in each class, in sorted file-name order, every ``test_every``-th image
  is "test", the others "train" (sslx/data/base.py; the rule video folders
  follow too). Images lying directly in the split (or top) folder are read as
  unlabeled (label -1). A folder of video clips (``<class>/<clip>.mp4`` or
  ``<split>/<class>/<clip>``) is read by ``sslx.data.video.VideoFolderSource``.
- ``tfds:NAME``: a TFDS dataset prepared as ArrayRecord (``tfds build NAME
  --file_format=array_record``), read through ``tfds.data_source``, which needs
  no TensorFlow and gives grain random access.

The data directory (``data_root``) is the config's ``data_dir`` when set
(``--config.data_dir=DIR``), else the environment variable ``SSLX_DATA_DIR``,
else ``./data`` (relative to the working directory). The same setting is TFDS's
``data_dir`` for ``tfds:`` datasets, but only when set explicitly (config or
``SSLX_DATA_DIR``): otherwise TFDS keeps its own default (``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``), where ``tfds build`` puts datasets.

Each source has ``len``, ``[i] -> {"image": encoded bytes or HxWxC uint8,
"label": int}`` and ``num_classes``. Bytes are read here, decoding happens in
the pipeline, so that an unreadable file is skipped, named and counted there.
"""

from __future__ import annotations

import os
from pathlib import Path

from sslx.data import base, video
from sslx.data.base import TfdsSource  # noqa: F401  (sources.TfdsSource, as before)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DATA_DIR_VARIABLE = "SSLX_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
  """The data directory ``folder:NAME`` datasets are found in: ``data_dir`` (the config's)
  when set, else ``$SSLX_DATA_DIR``, else ``./data``; absolute (``~`` expanded)."""
  chosen = data_dir or os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR
  return Path(chosen).expanduser().absolute()


def tfds_data_dir(data_dir: str | None = None) -> str | None:
  """TFDS's data_dir: the data directory when set explicitly, else None (TFDS's default)."""
  chosen = data_dir or os.environ.get(DATA_DIR_VARIABLE)
  return str(Path(chosen).expanduser()) if chosen else None


def folder_path(name: str, data_dir: str | os.PathLike | None = None) -> Path:
  """Where ``folder:NAME`` lives: NAME itself when absolute or ``~``, else under ``data_root``."""
  path = Path(name).expanduser()
  return path if path.is_absolute() else data_root(data_dir) / path


def _missing_folder(name: str, path: Path, data_dir) -> FileNotFoundError:
  """The one-line error for a ``folder:`` dataset that is not there."""
  if Path(name).expanduser().is_absolute():
    return FileNotFoundError(f"dataset folder:{name} not found at {path}: point --config.dataset at an "
                             f"existing folder")
  if data_dir:
    origin = "set by data_dir"
  elif os.environ.get(DATA_DIR_VARIABLE):
    origin = f"from ${DATA_DIR_VARIABLE}"
  else:
    origin = f"the default ./{DEFAULT_DATA_DIR}: neither data_dir nor ${DATA_DIR_VARIABLE} is set"
  return FileNotFoundError(f"dataset folder:{name} not found at {path} (data dir {data_root(data_dir)}, "
                           f"{origin}): put the data there, set {DATA_DIR_VARIABLE}, or pass "
                           f"--config.data_dir=DIR")


class FolderSource:
  """Images under ``root/<split>/<class>/``, or ``root/<class>/`` split by image (module
  docstring); class ids are the sorted folder names."""

  def __init__(self, root: str | os.PathLike, split: str, *, test_every: int = 4):
    root = Path(root)
    if not root.is_dir():
      raise FileNotFoundError(f"image folder {root} does not exist: expected {root}/<class>/<image> "
                              f"or {root}/<split>/<class>/<image>")
    folder, by_image = base.split_folder(root, split, "image")
    self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(self.classes):
      images = _images_in(folder / name)
      if by_image:
        images = base.take_split(images, split, test_every)
      paths += images
      labels += [label] * len(images)
    unlabeled = _images_in(folder)  # Unlabeled images directly in the split (or top) folder.
    if by_image:
      unlabeled = base.take_split(unlabeled, split, test_every)
    paths += unlabeled
    labels += [-1] * len(unlabeled)
    if not paths:
      raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) for split '{split}' under {folder}: "
                       f"put them in {folder}/<class>/ or directly in {folder}")
    self.paths, self.labels = paths, labels
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    record = {"label": self.labels[index], "path": self.paths[index]}
    try:
      with open(self.paths[index], "rb") as f:
        record["image"] = f.read()
    except OSError as e:  # Counted as unreadable (and named) by the pipeline's decode step.
      record.update(image=None, error=f"{type(e).__name__}: {e.strerror or e}")
    return record

  def __repr__(self):
    return f"FolderSource({len(self)} images, {self.num_classes} classes)"


def _images_in(folder: Path) -> list[str]:
  return [str(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def get_source(spec: str, split: str, data_dir: str | None = None, *, test_every: int = 4,
               video_fps: float | None = None, is_video: bool = False):
  """Parses a dataset spec ('sample', 'sample_video', 'folder:NAME', 'tfds:NAME') into a source.

  ``data_dir``: the config's data directory (None: ``$SSLX_DATA_DIR`` or
  ./data, see the module docstring). A folder holding video files
  (sslx/data/video.py's extensions) gives a ``VideoFolderSource``, one of
  images a ``FolderSource``; ``test_every`` splits either when it has no split
  folders. ``tfds:NAME`` is read as video (``TfdsVideoSource``, frames at
  ``video_fps`` or the dataset's known rate) when ``is_video``.
  """
  if spec == "sample":
    return FolderSource(SAMPLE_DIR, split)
  if spec == "sample_video":
    return video.VideoFolderSource(video.SAMPLE_VIDEO_DIR, split, test_every=test_every)
  if spec.startswith("folder:"):
    name = spec[len("folder:"):]
    root = folder_path(name, data_dir)
    if not root.is_dir():
      raise _missing_folder(name, root, data_dir)
    if video.is_video_folder(root):
      return video.VideoFolderSource(root, split, test_every=test_every)
    return FolderSource(root, split, test_every=test_every)
  if spec.startswith("tfds:"):
    if is_video:
      return video.TfdsVideoSource(spec[len("tfds:"):], split, tfds_data_dir(data_dir), fps=video_fps)
    return TfdsSource(spec[len("tfds:"):], split, tfds_data_dir(data_dir))
  raise ValueError(f"unknown dataset spec {spec!r}: use 'sample', 'sample_video', 'folder:NAME' or 'tfds:NAME'")


def from_config(config, split: str, *, dataset: str | None = None, data_dir: str | None = None):
  """The source for ``split`` of an experiment config's dataset (or of ``dataset`` /
  ``data_dir`` when given), with the config's split rule for folders without split
  folders (``video.test_every`` for video configs, ``test_every`` for image ones)."""
  video_config = config.get("video")
  if video_config is not None:
    test_every = video_config.get("test_every", 4)
  else:
    test_every = config.get("test_every", 4)
  return get_source(dataset or config.dataset, split, data_dir or config.get("data_dir"),
                    test_every=test_every, is_video=video_config is not None,
                    video_fps=video_config.get("source_fps") if video_config is not None else None)
