"""Video clips on the host: sources, decoding at a fixed frame rate, motion-aware
window sampling, consistent spatial crops, and a decoded-frame cache.

The host knows nothing of pretexts: per clip it delivers ``num_frames`` frames,
``frame_stride`` apart, at ``fps`` frames per second, as ``(T, S, S, 3)`` uint8.
Shuffles and pseudo-labels are made on the device by the pretext.

- **Decoding** with PyAV (FFmpeg's libraries; mp4, avi, webm, mpg...). Frames are
  resampled to ``fps`` by presentation time: the frame shown at ``t_k = k / fps``
  is the last decoded frame whose timestamp is <= ``t_k``. So a clip's frame rate
  cannot leak its class (in egogestar the "unclassified" clips run at 22-25 fps,
  the gestures near 30 or at 10-17). Without the cache, only the sampled window
  is decoded, after a seek to the keyframe before it.
- **Motion-aware sampling**, as Shuffle and Learn and OPN did: each transition
  between resampled frames gets a motion score, the mean Farneback optical-flow
  magnitude (Misra et al. 2016 sample from high-motion windows, Lee et al. 2017
  from high-flow regions) or the mean absolute frame difference (cheaper); a
  training window is drawn uniformly among the windows whose mean score is at
  or above the ``motion_quantile`` of the clip's windows.
- **Cache**: decoded, resized frames (and their motion scores) per clip, up to
  ``cache_mb`` per process, least recently used out first. With short clips
  decoded many times per run it turns decoding from the bottleneck into a
  memory copy (``benchmarks/video_decode.py`` measures it).
- Clips that cannot be decoded, or are shorter than the window, are skipped and
  counted (``VideoPreprocess.skipped_unreadable`` / ``skipped_short``); the first
  ``LOG_FIRST`` of them are logged with their path and why, so that a bad file
  can be found, the rest only counted.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path

import numpy as np
from absl import logging

from sslx.data import base

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mpg", ".mpeg", ".mkv", ".mov", ".m4v")
SAMPLE_VIDEO_DIR = Path(__file__).resolve().parent / "sample_video"


def _videos_in(folder: Path) -> list[Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def is_video_folder(root: str | os.PathLike) -> bool:
  """True when ``root`` holds video files up to two levels down (<split>/<class>/<clip>)."""
  root = Path(root)
  if not root.is_dir():
    return False
  for depth in ("*", "*/*", "*/*/*"):
    for p in root.glob(depth):
      if p.suffix.lower() in VIDEO_EXTENSIONS:
        return True
  return False


class VideoFolderSource:
  """Clips under ``root/<split>/<class>/<clip>``, or ``root/<class>/<clip>`` split by clip.

  Class ids are the sorted class folder names; clips directly in the split (or
  root) folder are unlabeled (label -1). Without split folders the split is
  sslx/data/base.py's, deterministic and stratified: in each class, clips in
  sorted file-name order, every ``test_every``-th clip (the 4th, 8th, ...) is
  "test", the others "train" (egogestar: 12 clips per class -> 9 train + 3 test).
  """

  def __init__(self, root: str | os.PathLike, split: str, *, test_every: int = 4):
    root = Path(root)
    if not root.is_dir():
      raise FileNotFoundError(f"video folder {root} does not exist: expected {root}/<class>/<clip>.mp4 "
                              f"or {root}/<split>/<class>/<clip>.mp4")
    folder, by_clip = base.split_folder(root, split, "clip")
    self.classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _videos_in(p))
    paths, labels = [], []
    for label, name in enumerate(self.classes):
      clips = _videos_in(folder / name)
      if by_clip:
        clips = base.take_split(clips, split, test_every)
      paths += [str(c) for c in clips]
      labels += [label] * len(clips)
    unlabeled = _videos_in(folder)
    if by_clip:
      unlabeled = base.take_split(unlabeled, split, test_every)
    paths += [str(c) for c in unlabeled]
    labels += [-1] * len(unlabeled)
    if not paths:
      raise ValueError(f"no videos ({', '.join(VIDEO_EXTENSIONS)}) for split '{split}' under {folder}: "
                       f"put clips in {folder}/<class>/")
    self.paths, self.labels = paths, labels
    self.num_classes = len(self.classes)

  def __len__(self):
    return len(self.paths)

  def __getitem__(self, index):
    return {"video": self.paths[index], "label": self.labels[index], "path": self.paths[index]}

  def __repr__(self):
    return f"VideoFolderSource({len(self)} clips, {self.num_classes} classes)"


# Native frame rates of TFDS video datasets whose records carry no timestamps.
TFDS_FPS = {"ucf101": 25.0}


class TfdsVideoSource(base.TfdsSource):
  """A TFDS video dataset prepared as ArrayRecord, read through ``tfds.data_source``:
  records hold decoded frames (or per-frame encoded images) and a label. Their
  frame rate is ``fps``, or the dataset's known rate (UCF101: 25 fps)."""

  def __init__(self, name: str, split: str, data_dir: str | None = None, fps: float | None = None):
    self.fps = fps or TFDS_FPS.get(name.split("/")[0])
    if not self.fps:
      raise ValueError(f"TFDS video dataset {name!r} has no known frame rate: set --config.video.source_fps")
    super().__init__(name, split, data_dir)

  def __getitem__(self, index):
    record = self._source[index]
    return {"video": record["video"], "fps": self.fps, "label": int(record.get("label", -1)),
            "path": f"tfds#{index}"}


def frames_from_record(video_field, native_fps: float, *, fps: float, resize_size: int | None):
  """In-memory frames (an array (N, H, W, 3), or a sequence of encoded images) at
  ``native_fps`` -> (frames resampled to ``fps`` and resized, times), or None."""
  from sslx.data import image_ops
  try:
    if isinstance(video_field, np.ndarray) and video_field.ndim == 4:
      frames = list(video_field)
    else:
      frames = [image_ops.decode(f) for f in video_field]
      if any(f is None for f in frames):
        return None
  except Exception:
    return None
  if not frames:
    return None
  indices, targets = resample_indices(np.arange(len(frames)) / native_fps, fps)
  return np.stack([resize_shorter_side(np.asarray(frames[i]), resize_size) for i in indices]), targets


# ---------------------------------------------------------------------------- decoding


def probe(path: str) -> tuple[float, float] | None:
  """(duration in seconds, native frames per second) from the container's metadata, or None."""
  import av
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      rate = float(stream.average_rate or stream.guessed_rate or 0) or None
      if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
      elif container.duration is not None:
        duration = container.duration / 1e6
      elif stream.frames and rate:
        duration = stream.frames / rate
      else:
        return None
      return duration, (rate or 0.0)
  except Exception:  # PyAV raises many error types; all mean "unreadable here".
    return None


def resize_shorter_side(frame: np.ndarray, size: int | None) -> np.ndarray:
  """Area (antialiased) resize so the shorter side is ``size``; None keeps the frame."""
  import cv2
  if size is None:
    return frame
  h, w = frame.shape[:2]
  scale = size / min(h, w)
  if scale == 1:
    return frame
  new = (max(size, round(w * scale)), max(size, round(h * scale)))  # cv2 takes (width, height).
  return cv2.resize(frame, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def frame_count(duration: float, fps: float) -> int:
  """How many times ``k / fps`` fall before ``duration``: a clip's length after resampling."""
  return max(int(np.ceil(duration * fps - 1e-6)), 0)


def resample_indices(timestamps: np.ndarray, fps: float, start: float = 0.0, end: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Which decoded frame is on display at each ``t_k = start + k / fps`` (``t_k < end``).

  ``timestamps``: increasing presentation times of the decoded frames, seconds.
  Returns (indices into them, the target times). A target before the first
  frame takes the first frame.
  """
  timestamps = np.asarray(timestamps, np.float64)
  if end is None:
    step = np.median(np.diff(timestamps)) if len(timestamps) > 1 else 1.0 / fps
    end = timestamps[-1] + step  # The last frame stays on screen for one frame period.
  count = frame_count(end - start, fps)
  targets = start + np.arange(count) / fps
  # Small tolerance: a frame whose timestamp is a rounding error after t_k is the one meant.
  indices = np.searchsorted(timestamps, targets + 1e-6, side="right") - 1
  return np.clip(indices, 0, len(timestamps) - 1), targets


def decode(path: str, *, fps: float, resize_size: int | None, start: float | None = None,
           end: float | None = None) -> tuple[np.ndarray, np.ndarray] | None:
  """Frames of a clip resampled to ``fps``: ((N, h, w, 3) uint8, (N,) target times in seconds
  from the clip's first frame), or None when the file cannot be decoded.

  With ``start``/``end`` (seconds from the first frame) only that window is
  returned, and decoding seeks to the keyframe before ``start`` instead of
  decoding from the beginning.
  """
  import av
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      stream.thread_type = "AUTO"
      time_base = float(stream.time_base)
      first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
      if start is not None and start > 0:
        container.seek(int((first + start) / time_base), stream=stream, backward=True, any_frame=False)
      frames, times = [], []
      rate = float(stream.average_rate or 25)
      for frame in container.decode(stream):
        t = (frame.pts * time_base - first) if frame.pts is not None else len(frames) / rate
        if end is not None and t >= end:
          break
        if start is not None and times and t <= start and times[-1] <= start:
          frames[-1:], times[-1:] = [], []  # Keep only the last frame at or before start.
        frames.append(resize_shorter_side(frame.to_ndarray(format="rgb24"), resize_size))
        times.append(t)
  except Exception:  # Corrupt or unsupported file: the caller counts it.
    return None
  if not frames:
    return None
  order = np.argsort(times, kind="stable")  # Presentation order (B-frames decode out of order).
  times = np.asarray(times)[order]
  indices, targets = resample_indices(times, fps, start or 0.0, end)
  if not len(indices):
    return None
  stacked = np.stack([frames[i] for i in order])
  return stacked[indices], targets


def motion_scores(frames: np.ndarray, method: str = "flow", size: int = 64) -> np.ndarray:
  """(N, h, w, 3) uint8 -> (N - 1,) motion between consecutive frames, on greyscale frames
  shrunk to ``size`` px on the shorter side: mean Farneback flow magnitude (pixels at
  that size) or mean absolute difference (grey levels)."""
  import cv2
  grey = [cv2.cvtColor(resize_shorter_side(f, min(size, min(f.shape[:2]))), cv2.COLOR_RGB2GRAY)
          for f in frames]
  scores = np.zeros(max(len(frames) - 1, 0), np.float32)
  for i in range(len(scores)):
    if method == "flow":
      flow = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
      scores[i] = float(np.linalg.norm(flow, axis=-1).mean())
    elif method == "diff":
      scores[i] = float(np.abs(grey[i + 1].astype(np.float32) - grey[i]).mean())
    else:
      raise ValueError(f"unknown video.motion {method!r}: use 'flow' (Farneback) or 'diff'")
  return scores


def window_starts(num_frames: int, span: int, scores: np.ndarray | None, quantile: float) -> np.ndarray:
  """Start positions of the windows of ``span`` frames allowed for motion-aware sampling:
  those whose mean motion is at or above the ``quantile`` of all windows' means."""
  count = num_frames - span + 1
  if count <= 0:
    return np.zeros((0,), np.int64)
  if scores is None or span < 2 or quantile <= 0:
    return np.arange(count)
  cumulative = np.concatenate([[0.0], np.cumsum(scores, dtype=np.float64)])
  means = (cumulative[span - 1:span - 1 + count] - cumulative[:count]) / (span - 1)
  return np.flatnonzero(means >= np.quantile(means, quantile) - 1e-9)


def uniform_starts(num_frames: int, span: int, count: int) -> np.ndarray:
  """``count`` window starts spread evenly over the clip (the test-time multi-clip protocol)."""
  last = max(num_frames - span, 0)
  if count == 1:
    return np.asarray([last // 2])
  return np.round(np.linspace(0, last, count)).astype(np.int64)


class FrameCache:
  """Decoded clips (frames and motion scores) by path, at most ``max_bytes``, LRU."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self.bytes = 0
    self.hits = self.misses = 0
    self._items: collections.OrderedDict = collections.OrderedDict()
    self._lock = threading.Lock()

  def get(self, key):
    with self._lock:
      if key in self._items:
        self._items.move_to_end(key)
        self.hits += 1
        return self._items[key]
      self.misses += 1
      return None

  def put(self, key, value):
    size = sum(v.nbytes for v in value if isinstance(v, np.ndarray))
    if size > self.max_bytes:
      return
    with self._lock:
      if key in self._items:
        return
      self._items[key] = value
      self.bytes += size
      while self.bytes > self.max_bytes:
        _, old = self._items.popitem(last=False)
        self.bytes -= sum(v.nbytes for v in old if isinstance(v, np.ndarray))


class VideoPreprocess:
  """One clip record -> ``{"video": (T, S, S, 3) uint8, "label", "index"}`` or None (skipped).

  Training: a window of ``num_frames`` frames ``frame_stride`` apart, drawn
  among the high-motion windows (``sampling="motion"``) or all windows
  (``"random"``); one random crop and one flip for all its frames.
  Evaluation (``train=False``): ``num_clips`` windows spread evenly over the
  clip, centre crops; ``num_clips > 1`` gives ``(num_clips, T, S, S, 3)``.
  """

  def __init__(self, *, fps: float, num_frames: int, frame_stride: int = 1, image_size: int,
               resize_size: int | None = None, flip: bool = False, train: bool = True,
               sampling: str = "motion", motion: str = "flow", motion_quantile: float = 0.5,
               num_clips: int = 1, cache_mb: float = 1024):
    if sampling not in ("motion", "random"):
      raise ValueError(f"unknown video.sampling {sampling!r}: use 'motion' or 'random'")
    if motion not in ("flow", "diff"):
      raise ValueError(f"unknown video.motion {motion!r}: use 'flow' (Farneback) or 'diff'")
    self.fps, self.num_frames, self.frame_stride = fps, num_frames, frame_stride
    self.span = (num_frames - 1) * frame_stride + 1
    self.image_size = image_size
    self.resize_size = resize_size or image_size
    self.flip, self.train = flip, train
    self.sampling, self.motion, self.motion_quantile = sampling, motion, motion_quantile
    self.num_clips = num_clips
    self.cache = FrameCache(int(cache_mb * 2**20)) if cache_mb else None
    self.skipped_unreadable = 0
    self.skipped_short = 0
    self.delivered = 0
    self._logged: set[str] = set()  # Clips named in a warning so far (at most LOG_FIRST).
    self._lock = threading.Lock()

  @property
  def skipped(self) -> int:
    return self.skipped_unreadable + self.skipped_short

  # A source whose clips are all skipped would leave the training loop's filter
  # waiting forever; after this many skips with nothing delivered, fail instead.
  GIVE_UP_AFTER = 200
  LOG_FIRST = 5  # Skipped clips named in a warning; later ones are only counted.

  def _count(self, attribute: str, reason: str, path):
    name = path if isinstance(path, str) else str(path.get("path", "?"))
    with self._lock:
      setattr(self, attribute, getattr(self, attribute) + 1)
      if name not in self._logged and len(self._logged) < self.LOG_FIRST:
        self._logged.add(name)
        last = len(self._logged) == self.LOG_FIRST
        logging.warning("Skipping clip %s: %s.%s", name, reason,
                        " Further skipped clips are only counted." if last else "")
      if self.delivered == 0 and self.skipped >= self.GIVE_UP_AFTER:
        raise ValueError(f"the first {self.skipped} clips were all skipped ({self.skipped_short} shorter than "
                         f"the {self.span}-frame window, {self.skipped_unreadable} unreadable): check the "
                         f"dataset, or lower video.num_frames / video.frame_stride")

  def _whole_clip(self, path):
    """(frames, motion scores or None) of the whole clip, through the cache. ``path``: a
    file, or a record holding the frames themselves (TFDS)."""
    key = path if isinstance(path, str) else path["path"]
    cached = self.cache.get(key) if self.cache is not None else None
    if cached is not None:
      return cached
    if isinstance(path, str):
      decoded = decode(path, fps=self.fps, resize_size=self.resize_size)
    else:  # Frames in the record (TFDS): ``path`` is the record itself.
      decoded = frames_from_record(path["video"], path["fps"], fps=self.fps, resize_size=self.resize_size)
    if decoded is None:
      return None
    frames = decoded[0]
    needs_motion = self.train and self.sampling == "motion"
    scores = motion_scores(frames, self.motion) if needs_motion else None
    value = (frames, scores)
    if self.cache is not None:
      self.cache.put(key, value)
    return value

  def _short(self, length: int) -> tuple[str, str]:
    return "skipped_short", f"{length} frames at {self.fps:g} fps, shorter than the {self.span}-frame window"

  def _window_without_cache(self, path: str, rng):
    """Random sampling without a cache: seek to the window, decode only it. A skipped
    clip gives (counter, reason) instead of frames."""
    info = probe(path)
    if info is None:
      return "skipped_unreadable", "PyAV cannot read its metadata"
    length = frame_count(info[0], self.fps)
    if length < self.span:
      return self._short(length)
    start = int(rng.integers(0, length - self.span + 1))
    decoded = decode(path, fps=self.fps, resize_size=self.resize_size, start=start / self.fps,
                     end=(start + self.span) / self.fps)
    if decoded is None:
      return "skipped_unreadable", "PyAV cannot decode it"
    frames = decoded[0]
    if len(frames) < self.span:  # Metadata longer than the stream: treat as short.
      return self._short(len(frames))
    return frames[:self.span:self.frame_stride]

  def _crop_flip(self, clip: np.ndarray, rng) -> np.ndarray:
    """One crop window (and flip) for every frame: the same pixels across time."""
    h, w = clip.shape[-3:-1]
    s = self.image_size
    if h < s or w < s:
      raise ValueError(f"frames of {h}x{w} are smaller than image_size {s}: set resize_size >= image_size")
    if self.train:
      top, left = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    else:
      top, left = (h - s) // 2, (w - s) // 2
    clip = clip[..., top:top + s, left:left + s, :]
    if self.train and self.flip and rng.random() < 0.5:
      clip = clip[..., ::-1, :]
    return np.ascontiguousarray(clip)

  def __call__(self, record, rng: np.random.Generator | None = None):
    path = record["video"] if isinstance(record["video"], str) else record
    rng = rng if rng is not None else np.random.default_rng(0)
    if self.train and self.cache is None and self.sampling == "random" and isinstance(path, str):
      clip = self._window_without_cache(path, rng)
      if isinstance(clip, tuple):
        self._count(*clip, path)
        return None
    else:
      whole = self._whole_clip(path)
      if whole is None:
        self._count("skipped_unreadable", "PyAV cannot decode it" if isinstance(path, str)
                    else "its frames cannot be decoded", path)
        return None
      frames, scores = whole
      if len(frames) < self.span:
        self._count(*self._short(len(frames)), path)
        return None
      if self.train:
        allowed = window_starts(len(frames), self.span, scores if self.sampling == "motion" else None,
                                self.motion_quantile)
        starts = [int(rng.choice(allowed))]
      else:
        starts = uniform_starts(len(frames), self.span, self.num_clips)
      clips = [frames[s:s + self.span:self.frame_stride] for s in starts]
      clip = clips[0] if self.train or self.num_clips == 1 else np.stack(clips)
    out = {"video": self._crop_flip(clip, rng), "label": np.int32(record["label"]),
           "index": np.int32(record.get("index", -1))}
    self.delivered += 1  # Only ever read as "zero or not": no lock needed.
    return out


def preprocess_from_config(config, *, train: bool, num_clips: int = 1) -> VideoPreprocess:
  """The VideoPreprocess an experiment config asks for (its ``video`` section)."""
  v = config.video
  return VideoPreprocess(fps=v.fps, num_frames=v.num_frames, frame_stride=v.frame_stride,
                         image_size=config.image_size, resize_size=config.get("resize_size"),
                         flip=config.flip and train, train=train, sampling=v.sampling, motion=v.motion,
                         motion_quantile=v.motion_quantile, num_clips=num_clips, cache_mb=v.cache_mb)


def check_lengths(source, *, fps: float, span: int) -> dict:
  """Reads every clip's metadata: {"short": n, "unreadable": n, "usable": n}. Raises when no clip
  is long enough for a window of ``span`` frames at ``fps``."""
  counts = {"short": 0, "unreadable": 0, "usable": 0}
  longest = 0
  for path in getattr(source, "paths", []):
    info = probe(path)
    if info is None:
      counts["unreadable"] += 1
      continue
    length = frame_count(info[0], fps)
    longest = max(longest, length)
    counts["short" if length < span else "usable"] += 1
  if getattr(source, "paths", None) and counts["usable"] == 0:
    raise ValueError(f"no clip is long enough: a window needs {span} frames at {fps:g} fps "
                     f"({span / fps:.2f} s), the longest clip has {longest}: lower video.num_frames, "
                     f"video.frame_stride or video.fps")
  return counts
