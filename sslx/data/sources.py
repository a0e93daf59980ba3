"""Random-access image sources chosen by one string, the config's ``dataset``.

- ``sample``: 2,000 train + 1,000 test CIFAR-10 images shipped in the package
  (sslx/data/sample/<class>.zip, uncompressed archives of the JPEG files), so the
  first run works offline anywhere.
- ``sample_video``: 33 short egogestar gesture clips shipped in the package
  (sslx/data/sample_video, re-encoded small), for quick video runs.
- ``sample_av``: 16 GRID speaker-1 clips with their speech (sslx/data/sample_av,
  180x144 H.264 + AAC mono 16 kHz, sound aligned with the frames), classed by
  the spoken command word (bin/lay/place/set), split by ``test_every`` (12 train
  + 4 test at the default 4), for quick audio-visual runs.
- ``folder:NAME``: a folder of the data directory (below), or any folder when
  NAME is absolute or starts with ``~``. Images (PNG or JPEG) as
  ``<split>/<class>/<image>``, or as ``<class>/<image>`` without split folders:
  then in each class, in sorted file-name order, every ``test_every``-th image
  is "test", the others "train" (sslx/data/base.py; the rule video folders
  follow too). Images lying directly in the split (or top) folder are read as
  unlabeled (label -1). A folder of video clips (``<class>/<clip>.mp4`` or
  ``<split>/<class>/<clip>``) is read by ``sslx.data.video.VideoFolderSource``.
- Labels from a CSV, for a ``folder:`` dataset of clips: ``label_file`` (a CSV with a
  ``file`` column, each clip's path relative to the CSV's folder) and ``label_column``
  (the column to read, e.g. GRID's ``command`` or ``color``) replace the class folders'
  labels; the clips and their split stay the folder's (VideoFolderSource). An absolute
  ``label_file`` (or one starting with ``~``) is read as is; a relative one is looked up
  in the dataset folder, then in each folder above it up to and including the data
  directory, and the first found is read (a dataset folder outside the data directory:
  only the folder itself). ``folder:grid_av/s1`` with ``labels.csv`` reads
  ``<data dir>/grid_av/labels.csv``. An empty or None ``label_file`` keeps the folder's
  labels; the shipped samples and ``tfds:`` datasets keep their own labels always.
- ``mix:SPEC,SPEC,...``: several of the above (of one kind) read as one source, each with its
  own split, classes kept apart (``MixedSource``): pretraining on a mix of folders.
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
import zipfile
from pathlib import Path

import numpy as np

from sslx.data import base, video
from sslx.data.base import TfdsSource  # noqa: F401  (sources.TfdsSource, as before)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_ARCHIVES = tuple(SAMPLE_DIR / f"{name}.zip" for name in (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
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


class ZipImageSource:
  """Images stored in zip archives as ``<split>/<class>/<image>`` (one archive or several, e.g.
  one per class): the same classes, order and records as a ``FolderSource`` of the unpacked
  folder (sorted class names, sorted file names), with paths named ``<archive>/<member>``. The
  split's bytes are read once, at construction (the shipped sample's are 2.8 MB), so records
  need no open archive and the source pickles."""

  def __init__(self, archives: str | os.PathLike | list, split: str):
    archives = [Path(a) for a in (archives if isinstance(archives, (list, tuple)) else [archives])]
    for archive in archives:
      if not archive.is_file():
        raise FileNotFoundError(f"image archive {archive} does not exist: reinstall sslx, or rebuild it with "
                                f"python -m sslx.data.make_image_sample")
    found = {}  # (class, file name) -> (path, bytes)
    for archive in archives:
      with zipfile.ZipFile(archive) as z:
        for n in z.namelist():
          if n.startswith(f"{split}/") and n.count("/") == 2 and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS:
            found[tuple(n.split("/")[1:])] = (f"{archive}/{n}", z.read(n))
    if not found:
      names = ", ".join(str(a) for a in archives)
      raise ValueError(f"no images for split '{split}' in {names}: expected {split}/<class>/<image> members")
    self.classes = sorted({name for name, _ in found})
    ordered = sorted(found)  # By class, then file name.
    self.paths = [found[key][0] for key in ordered]
    self._bytes = [found[key][1] for key in ordered]
    label_of = {name: i for i, name in enumerate(self.classes)}
    self.labels = [label_of[name] for name, _ in ordered]
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    return {"label": self.labels[index], "path": self.paths[index], "image": self._bytes[index]}

  def __repr__(self):
    return f"ZipImageSource({len(self)} images, {self.num_classes} classes)"


def _images_in(folder: Path) -> list[str]:
  return [str(p) for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]


def label_file_path(label_file: str, folder: Path, data_dir: str | os.PathLike | None = None) -> Path:
  """Where a ``label_file`` of the dataset ``folder`` is (module docstring): as is when absolute,
  else the first of ``folder/label_file``, ``folder/../label_file``, ... up to the data
  directory (only ``folder`` itself for a folder outside it); one line when none exists."""
  path = Path(label_file).expanduser()
  if path.is_absolute():
    if not path.is_file():
      raise FileNotFoundError(f"label file {path} does not exist: point label_file at the dataset's CSV")
    return path
  top = data_root(data_dir)
  folder = Path(os.path.abspath(folder))
  searched = [folder]
  if folder.is_relative_to(top):
    searched += [p for p in folder.parents if p.is_relative_to(top)]
  for where in searched:
    if (where / path).is_file():
      return where / path
  upward = f" or any folder above it up to the data directory {top}" if len(searched) > 1 else ""
  raise FileNotFoundError(f"label file {label_file} not found in {folder}{upward}: put it there, give its path "
                          f"in label_file, or set label_file to '' to label clips by their class folders")


def get_source(spec: str, split: str, data_dir: str | None = None, *, test_every: int = 4,
               video_fps: float | None = None, is_video: bool = False, label_file: str | None = None,
               label_column: str | None = None):
  """Parses a dataset spec ('sample', 'sample_video', 'sample_av', 'folder:NAME', 'tfds:NAME') into a source.

  ``data_dir``: the config's data directory (None: ``$SSLX_DATA_DIR`` or
  ./data, see the module docstring). A folder holding video files
  (sslx/data/video.py's extensions) gives a ``VideoFolderSource``, one of
  images a ``FolderSource``; ``test_every`` splits either when it has no split
  folders. ``tfds:NAME`` is read as video (``TfdsVideoSource``, frames at
  ``video_fps`` or the dataset's known rate) when ``is_video``. ``label_file`` and
  ``label_column`` label a ``folder:`` dataset of clips from a CSV (module docstring);
  other datasets ignore them, but a folder of images refuses them.
  """
  label_file = label_file or None  # "" (an empty command-line value) as None: no CSV.
  if spec.startswith("mix:"):
    parts = [get_source(part, split, data_dir, test_every=test_every, video_fps=video_fps, is_video=is_video)
             for part in spec[len("mix:"):].split(",") if part]
    return MixedSource(parts, names=[p for p in spec[len("mix:"):].split(",") if p])
  if spec == "sample":
    return ZipImageSource(list(SAMPLE_ARCHIVES), split)
  if spec == "sample_video":
    return video.VideoFolderSource(video.SAMPLE_VIDEO_DIR, split, test_every=test_every)
  if spec == "sample_av":
    return video.VideoFolderSource(video.SAMPLE_AV_DIR, split, test_every=test_every)
  if spec.startswith("folder:"):
    name = spec[len("folder:"):]
    root = folder_path(name, data_dir)
    if not root.is_dir():
      raise _missing_folder(name, root, data_dir)
    if video.is_video_folder(root):
      path = label_file_path(label_file, root, data_dir) if label_file else None
      return video.VideoFolderSource(root, split, test_every=test_every, label_file=path,
                                     label_column=label_column)
    if label_file:
      raise ValueError(f"label_file {label_file} labels clips, but dataset {spec} holds images: set label_file "
                       f"to '' (images are labeled by their class folders)")
    return FolderSource(root, split, test_every=test_every)
  if spec.startswith("tfds:"):
    if is_video:
      return video.TfdsVideoSource(spec[len("tfds:"):], split, tfds_data_dir(data_dir), fps=video_fps)
    return TfdsSource(spec[len("tfds:"):], split, tfds_data_dir(data_dir))
  raise ValueError(f"unknown dataset spec {spec!r}: use 'sample', 'sample_video', 'sample_av', 'folder:NAME', "
                   f"'tfds:NAME' or 'mix:SPEC,SPEC,...'")


def holds_video(source) -> bool:
  """Whether a source's records are clips (a video folder, a TFDS video set, a mix of them)."""
  if isinstance(source, SubsetSource):
    return holds_video(source.source)
  if isinstance(source, MixedSource):
    return all(holds_video(part) for part in source.parts)
  return isinstance(source, (video.VideoFolderSource, video.TfdsVideoSource))


class MixedSource:
  """Several sources of one kind read as one, in order (``mix:SPEC,SPEC``): for pretraining on
  a mix of folders (talking faces and other sounding scenes). Each part keeps its own split
  rule; class ids are offset part by part (class names prefixed with the part's spec), so no
  two parts share a class; unlabeled records stay -1. CSV labels are not read for a mix."""

  def __init__(self, parts: list, *, names: list[str]):
    if len(parts) < 2:
      raise ValueError(f"mix: needs at least two datasets, got {names}: give 'mix:SPEC,SPEC'")
    kinds = {holds_video(p) for p in parts}
    if len(kinds) > 1:
      raise ValueError(f"mix: {names} mixes clips and images: mix datasets of one kind")
    self.parts = parts
    self.paths, self.labels, self.classes = [], [], []
    self._where = []  # (part, index in the part) per record.
    for name, part in zip(names, parts):
      offset = len(self.classes)
      self.classes += [f"{name}/{c}" for c in getattr(part, "classes", [])]
      part_labels = getattr(part, "labels", [-1] * len(part))
      self.labels += [y + offset if y >= 0 else -1 for y in part_labels]
      self.paths += list(getattr(part, "paths", []))
      self._where += [(part, i) for i in range(len(part))]
    self.num_classes = len(self.classes)
    self.root = "+".join(names)

  def __len__(self):
    return len(self._where)

  def __getitem__(self, index):
    part, i = self._where[index]
    return dict(part[i], label=self.labels[index])

  def __repr__(self):
    return f"MixedSource({len(self)} records from {self.root})"


class SubsetSource:
  """The records at ``indices`` of another source, in that order, with their labels (and paths,
  class names): a few thousand examples spread over a split, for the kNN monitor."""

  def __init__(self, source, indices):
    self.source = source
    self.indices = [int(i) for i in indices]
    labels = getattr(source, "labels", None)
    self.labels = [labels[i] for i in self.indices] if labels is not None else [-1] * len(self.indices)
    if getattr(source, "paths", None):
      self.paths = [source.paths[i] for i in self.indices]
    self.classes = list(getattr(source, "classes", []))
    self.num_classes = source.num_classes

  @classmethod
  def spread(cls, source, count: int):
    """``count`` records spread evenly over ``source`` (all of it when it holds fewer): every
    class of a class-sorted folder in proportion, with no randomness."""
    count = min(int(count), len(source))
    return cls(source, np.unique(np.linspace(0, len(source) - 1, count).astype(int)))

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, index):
    return self.source[self.indices[index]]

  def __repr__(self):
    return f"SubsetSource({len(self)} of {self.source!r})"


def label_settings(config, *, evaluation: bool = False) -> tuple[str | None, str | None]:
  """(label_file, label_column) of a config: its top-level ``label_file`` / ``label_column``,
  or for ``evaluation`` its ``evaluate.label_file`` / ``evaluate.label_column`` where those
  are set (not None), each on its own: ``evaluate.label_column=color`` alone reads the
  training label file's colour column. None where the config has neither."""
  label_file, label_column = config.get("label_file"), config.get("label_column")
  ev = config.get("evaluate")
  if evaluation and ev is not None:
    if ev.get("label_file") is not None:
      label_file = ev.label_file
    if ev.get("label_column") is not None:
      label_column = ev.label_column
  return label_file or None, label_column or None


def from_config(config, split: str, *, dataset: str | None = None, data_dir: str | None = None,
                evaluation: bool = False, labels: bool = True):
  """The source for ``split`` of an experiment config's dataset (or of ``dataset`` /
  ``data_dir`` when given), with the config's split rule for folders without split
  folders (``video.test_every`` for video configs, ``test_every`` for image ones) and its
  label file (``label_settings``: the evaluation's with ``evaluation``; none with
  ``labels=False``, for readers that need no labels)."""
  video_config = config.get("video")
  if video_config is not None:
    test_every = video_config.get("test_every", 4)
  else:
    test_every = config.get("test_every", 4)
  label_file, label_column = label_settings(config, evaluation=evaluation) if labels else (None, None)
  return get_source(dataset or config.dataset, split, data_dir or config.get("data_dir"),
                    test_every=test_every, is_video=video_config is not None,
                    video_fps=video_config.get("source_fps") if video_config is not None else None,
                    label_file=label_file, label_column=label_column)
