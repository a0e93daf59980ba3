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
- **Spread sampling** (``sampling="spread"``), for a task about the whole clip: one
  random frame in each of ``num_frames`` equal stretches of it (TSN's sampling),
  where a window covers only a part; evaluation's ``whole_clip`` takes the
  middle frame of each stretch instead.
- **Cache**: decoded, resized frames (and their motion scores) per clip, up to
  ``cache_mb`` per process, least recently used out first. With short clips
  decoded many times per run it turns decoding from the bottleneck into a
  memory copy (``benchmarks/video_decode.py`` measures it).
- **Audio** (``audio_rate`` set): each record also holds the clip's sound
  (``sslx/data/audio.py``: mono float32 at ``audio_rate``, placed by the
  container's timestamps) over exactly the delivered window's presentation
  time, plus ``audio_margin`` seconds on each side: a window whose first frame
  is at ``t_s`` and spans ``span`` frames covers ``[t_s, t_s + span / fps)``,
  its audio ``[t_s - margin, t_s + span / fps + margin)``, the same number of
  samples ``A = round((span / fps + 2 * margin) * audio_rate)`` for every clip
  (sample ``j`` at ``t_s - margin + j / audio_rate``). Only windows whose audio
  lies inside the decoded track are drawn (training) or spread over
  (evaluation). Audio takes the whole-clip path (decode, cache) always.
- Clips that cannot be decoded, or are shorter than the window, are skipped and
  counted (``VideoPreprocess.skipped_unreadable`` / ``skipped_short``), and with
  audio, clips without a decodable audio track (TFDS records among them) or
  whose track covers no window (``skipped_no_audio`` / ``skipped_audio_short``);
  the first ``LOG_FIRST`` of them are logged with their path and why, so that a
  bad file can be found, the rest only counted.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
from absl import logging

from sslx.data import audio as audio_lib
from sslx.data import base

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mpg", ".mpeg", ".mkv", ".mov", ".m4v")
SAMPLE_VIDEO_DIR = Path(__file__).resolve().parent / "sample_video"
SAMPLE_AV_DIR = Path(__file__).resolve().parent / "sample_av"  # GRID clips with sound (make_av_sample.py).


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
  Clips lying directly in the folder are split the same way, as one group.

  ``label_file`` (a CSV path) and ``label_column`` take the labels from that file
  instead (``base.labels_from_csv``): the same clips and the same split, but each
  clip's label is its row's value in ``label_column``, matched by the row's ``file``
  path relative to the CSV's folder; class ids are the sorted distinct values among
  the clips under ``root`` the file lists (so every split numbers them alike), and
  clips it does not list are unlabeled (-1). GRID's flat ``s1/`` folder beside
  ``labels.csv``: 60 clips, 45 train + 15 test, 4 ``command`` classes.
  """

  def __init__(self, root: str | os.PathLike, split: str, *, test_every: int = 4,
               label_file: str | os.PathLike | None = None, label_column: str | None = None):
    root = Path(root)
    if not root.is_dir():
      raise FileNotFoundError(f"video folder {root} does not exist: expected {root}/<class>/<clip>.mp4 "
                              f"or {root}/<split>/<class>/<clip>.mp4")
    if label_file is not None and not label_column:
      raise ValueError(f"label file {label_file} needs a label_column: set label_column to the CSV column "
                       f"holding the labels (e.g. command)")
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
    self.label_file, self.label_column = label_file, label_column
    if label_file is not None:
      listed = base.labels_from_csv(label_file, label_column, root, VIDEO_EXTENSIONS)
      self.classes = sorted(set(listed.values()))
      ids = {name: i for i, name in enumerate(self.classes)}
      labels = [ids.get(listed.get(os.path.realpath(p)), -1) for p in paths]
    self.root = root
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


def frames_from_record(video_field, native_fps: float, *, fps: float, resize_size: int | None, region=None):
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
  return np.stack([resize_shorter_side(crop_region(np.asarray(frames[i]), region), resize_size)
                   for i in indices]), targets


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


def crop_region(frame: np.ndarray, region) -> np.ndarray:
  """The part of a frame inside ``region`` = (top, left, height, width) as fractions of its
  height and width (None: the whole frame)."""
  if region is None:
    return frame
  h, w = frame.shape[:2]
  top, left, height, width = region
  y0, x0 = int(round(top * h)), int(round(left * w))
  return frame[y0:y0 + max(int(round(height * h)), 1), x0:x0 + max(int(round(width * w)), 1)]


def check_region(region) -> None:
  """One line for a ``video.region`` that is not a box inside the frame."""
  if region is None:
    return
  if len(region) != 4 or min(region) < 0 or region[2] <= 0 or region[3] <= 0 or \
      region[0] + region[2] > 1 + 1e-9 or region[1] + region[3] > 1 + 1e-9:
    raise ValueError(f"video.region {tuple(region)} is not a box inside the frame: give (top, left, height, "
                     f"width) as fractions of the frame, with top + height <= 1 and left + width <= 1")


def decode(path: str, *, fps: float, resize_size: int | None, start: float | None = None,
           end: float | None = None, region=None) -> tuple[np.ndarray, np.ndarray] | None:
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
        frames.append(resize_shorter_side(crop_region(frame.to_ndarray(format="rgb24"), region), resize_size))
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


MOTION_MAP_QUANTILE = 0.95  # A clip's motion maps are divided by this quantile of their values,
# but never by less than this much motion (px of flow, grey levels of difference): a clip where
# nothing moves gives empty maps, not its noise blown up.
MOTION_MAP_FLOOR = {"flow": 0.5, "diff": 8.0}


def motion_maps(frames: np.ndarray, method: str = "flow") -> np.ndarray:
  """(N, h, w, 3) uint8 -> (N, h, w) uint8: how much each pixel moves, for pseudo ground-truth
  masks of what moves (motion segmentation).

  ``flow``: Farneback flow from each frame to the next, less the frame's median flow vector (the
  camera's motion, when the background fills most of the frame), as a magnitude; ``diff``: the
  absolute grey-level difference to the next frame. The last frame takes its predecessor's map.
  Each clip is normalised on its own: divided by the clip's 95th percentile (``MOTION_MAP_QUANTILE``)
  or by ``MOTION_MAP_FLOOR`` when that is larger (0.5 px of flow, 8 grey levels), clipped to
  [0, 1] and stored as 0-255."""
  import cv2
  grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
  maps = np.zeros(frames.shape[:3], np.float32)
  for i in range(len(frames) - 1):
    if method == "flow":
      flow = cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
      flow -= np.median(flow.reshape(-1, 2), axis=0)
      maps[i] = np.linalg.norm(flow, axis=-1)
    elif method == "diff":
      maps[i] = np.abs(grey[i + 1].astype(np.float32) - grey[i])
    else:
      raise ValueError(f"unknown video.motion {method!r}: use 'flow' (Farneback) or 'diff'")
  if len(frames) > 1:
    maps[-1] = maps[-2]
  scale = max(float(np.quantile(maps, MOTION_MAP_QUANTILE)) if maps.size else 0.0, MOTION_MAP_FLOOR[method])
  return np.round(np.clip(maps / scale, 0.0, 1.0) * 255.0).astype(np.uint8)


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


def spread_indices(length: int, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
  """``count`` frame indices spread over a clip of ``length`` frames, one in each of ``count``
  equal stretches: its middle frame, or with ``rng`` a uniformly random one (TSN's training
  sampling). Frames repeat when ``length < count``."""
  within = rng.random(count) if rng is not None else 0.5
  return np.minimum(np.floor((np.arange(count) + within) * length / count), length - 1).astype(np.int64)


def uniform_starts(num_frames: int, span: int, count: int) -> np.ndarray:
  """``count`` window starts spread evenly over the clip (the test-time multi-clip protocol)."""
  last = max(num_frames - span, 0)
  if count == 1:
    return np.asarray([last // 2])
  return np.round(np.linspace(0, last, count)).astype(np.int64)


SAMPLINGS = ("motion", "random", "spread")  # Training's choice of frames (VideoPreprocess).


class WholeClip(NamedTuple):
  """A decoded clip as the cache holds it: frames at ``fps`` (frame ``k`` at ``k / fps`` s),
  their motion scores (or None), and with audio its samples and the time of sample 0."""
  frames: np.ndarray
  scores: np.ndarray | None
  audio: np.ndarray | None = None
  audio_start: float = 0.0
  motion: np.ndarray | None = None  # (N, h, w) uint8 motion maps (``motion_maps``), when asked for.


class FrameCache:
  """Decoded clips (frames, motion scores, audio) by path, at most ``max_bytes``, LRU."""

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


def audio_window_length(span: int, fps: float, margin: float, sample_rate: int) -> int:
  """Samples delivered with a window of ``span`` frames: its time plus ``margin`` seconds on each
  side, at ``sample_rate`` (the same for every clip)."""
  return int(round((span / fps + 2 * margin) * sample_rate))


class VideoPreprocess:
  """One clip record -> ``{"video": (T, S, S, 3) uint8, "label", "index"}`` or None (skipped).

  Training: a window of ``num_frames`` frames ``frame_stride`` apart, drawn
  among the high-motion windows (``sampling="motion"``) or all windows
  (``"random"``), or (``"spread"``) ``num_frames`` frames spread over the whole
  clip, a random one in each of ``num_frames`` equal stretches (Wang et al.'s
  TSN sampling; ``frame_stride`` is not used, and a short clip repeats frames);
  one random crop and one flip for all its frames.
  Evaluation (``train=False``): ``num_clips`` windows spread evenly over the
  clip, centre crops; ``num_clips > 1`` gives ``(num_clips, T, S, S, 3)``. With
  ``whole_clip`` (evaluation, one clip, no audio), the ``num_frames`` frames are
  instead spread over the whole clip, one in the middle of each of ``num_frames``
  equal stretches (``spread_indices``, TSN's test-time sampling; ``frame_stride``
  is not used), so a clip shorter than ``num_frames`` repeats frames instead of
  being skipped.

  ``region`` (top, left, height, width, fractions of the frame) keeps only that box of every
  decoded frame, before resizing: a fixed region of interest, such as the lower half of a
  face centred in the frame (GRID), at the resolution a small network can use.

  With ``motion_masks``, records also hold ``"motion"``: ``(T, S, S)`` uint8 motion maps of the
  window's frames (``motion_maps``, computed once per clip and cached with its frames), cropped
  and flipped with them.

  With ``audio_rate`` (Hz), records also hold ``"audio"``: float32 ``(A,)`` mono
  samples over the window's presentation time plus ``audio_margin`` seconds on
  each side (module docstring), ``(num_clips, A)`` for several evaluation
  windows. Windows are then chosen (motion, random, or spread evenly) only
  among those whose audio lies inside the clip's decoded track, and the whole
  clip is always decoded (and cached with its audio): the seek-to-the-window
  path, used for random sampling without a cache, is not taken.
  """

  def __init__(self, *, fps: float, num_frames: int, frame_stride: int = 1, image_size: int,
               resize_size: int | None = None, flip: bool = False, train: bool = True,
               sampling: str = "motion", motion: str = "flow", motion_quantile: float = 0.5,
               num_clips: int = 1, cache_mb: float = 1024, audio_rate: int | None = None,
               audio_margin: float = 0.0, region: tuple[float, float, float, float] | None = None,
               motion_masks: bool = False, whole_clip: bool = False):
    check_region(region)
    self.region = tuple(region) if region is not None else None
    if audio_rate is not None and audio_rate <= 0:
      raise ValueError(f"audio sample rate is {audio_rate}: set audio.sample_rate to a positive rate in Hz")
    if audio_margin < 0:
      raise ValueError(f"audio margin is {audio_margin} s: set audio.margin_seconds to 0 or more")
    if sampling not in SAMPLINGS:
      raise ValueError(f"unknown video.sampling {sampling!r}: use 'motion', 'random' or 'spread'")
    if train and sampling == "spread" and audio_rate:
      raise ValueError("video.sampling='spread' spreads frames over a whole clip, which has no one window "
                       "of sound: use --config.video.sampling=motion or random with audio")
    if motion not in ("flow", "diff"):
      raise ValueError(f"unknown video.motion {motion!r}: use 'flow' (Farneback) or 'diff'")
    if whole_clip and (train or num_clips != 1 or audio_rate):
      raise ValueError("evaluate.whole_clip spreads one clip's frames over a whole video for evaluation, "
                       f"without sound (got train={train}, num_clips={num_clips}, audio_rate={audio_rate}): "
                       "set --config.evaluate.whole_clip=False")
    self.fps, self.num_frames, self.frame_stride = fps, num_frames, frame_stride
    # Consecutive frames a clip must hold: a window's, or one where frames are spread over it.
    self.spread = whole_clip or (train and sampling == "spread")
    self.span = 1 if self.spread else (num_frames - 1) * frame_stride + 1
    self.image_size = image_size
    self.resize_size = resize_size or image_size
    self.flip, self.train = flip, train
    self.sampling, self.motion, self.motion_quantile = sampling, motion, motion_quantile
    self.num_clips = num_clips
    self.whole_clip = whole_clip
    self.motion_masks = motion_masks
    self.cache = FrameCache(int(cache_mb * 2**20)) if cache_mb else None
    self.audio_rate, self.audio_margin = audio_rate, audio_margin
    # Samples per window, the same for every clip: the span's time plus both margins.
    self.audio_length = audio_window_length(self.span, fps, audio_margin, audio_rate) if audio_rate else 0
    self.skipped_unreadable = 0
    self.skipped_short = 0
    self.skipped_no_audio = 0  # No audio stream, or one that cannot be decoded (TFDS records: none).
    self.skipped_audio_short = 0  # Audio too short for any window plus its margins.
    self.delivered = 0
    self._logged: set[str] = set()  # Clips named in a warning so far (at most LOG_FIRST).
    self._lock = threading.Lock()

  @property
  def skipped(self) -> int:
    return self.skipped_unreadable + self.skipped_short + self.skipped_no_audio + self.skipped_audio_short

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
        sound = (f", {self.skipped_no_audio} without audio, {self.skipped_audio_short} with audio shorter than "
                 f"the window plus margins" if self.audio_rate else "")
        fix = ", or drop the config's audio section" if self.audio_rate else ""
        raise ValueError(f"the first {self.skipped} clips were all skipped ({self.skipped_short} shorter than "
                         f"the {self.span}-frame window, {self.skipped_unreadable} unreadable{sound}): check the "
                         f"dataset, or lower video.num_frames / video.frame_stride{fix}")

  def _whole_clip(self, path) -> WholeClip | tuple[str, str]:
    """The whole clip (frames, motion scores, audio), through the cache, or (counter, reason)
    when it is skipped. ``path``: a file, or a record holding the frames themselves (TFDS)."""
    key = path if isinstance(path, str) else path["path"]
    cached = self.cache.get(key) if self.cache is not None else None
    if cached is not None:
      return cached
    sound, sound_start = None, 0.0
    if self.audio_rate:  # First, as it is cheap to find missing: no frames decoded for nothing.
      if not isinstance(path, str):
        return "skipped_no_audio", "TFDS records carry no audio"
      decoded_audio = audio_lib.decode_audio(path, sample_rate=self.audio_rate)
      if decoded_audio == audio_lib.UNREADABLE:
        return "skipped_unreadable", "PyAV cannot decode it"
      if isinstance(decoded_audio, str):
        return "skipped_no_audio", decoded_audio
      sound, sound_start = decoded_audio
    if isinstance(path, str):
      decoded = decode(path, fps=self.fps, resize_size=self.resize_size, region=self.region)
    else:  # Frames in the record (TFDS): ``path`` is the record itself.
      decoded = frames_from_record(path["video"], path["fps"], fps=self.fps, resize_size=self.resize_size,
                                   region=self.region)
    if decoded is None:
      return "skipped_unreadable", ("PyAV cannot decode it" if isinstance(path, str)
                                    else "its frames cannot be decoded")
    frames = decoded[0]
    needs_motion = self.train and self.sampling == "motion"
    scores = motion_scores(frames, self.motion) if needs_motion else None
    maps = motion_maps(frames, self.motion) if self.motion_masks else None
    value = WholeClip(frames, scores, sound, sound_start, maps)
    if self.cache is not None:
      self.cache.put(key, value)
    return value

  def _short(self, length: int) -> tuple[str, str]:
    return "skipped_short", f"{length} frames at {self.fps:g} fps, shorter than the {self.span}-frame window"

  def _audio_offsets(self, clip: WholeClip) -> np.ndarray:
    """For each window start ``s`` (frames), the index in ``clip.audio`` of the window's first
    audio sample, at ``s / fps - audio_margin``; -1 where the window's audio is not all
    inside the decoded track."""
    starts = np.arange(max(len(clip.frames) - self.span + 1, 0))
    offsets = np.round((starts / self.fps - self.audio_margin - clip.audio_start) * self.audio_rate)
    offsets = offsets.astype(np.int64)
    inside = (offsets >= 0) & (offsets + self.audio_length <= len(clip.audio))
    return np.where(inside, offsets, -1)

  def _audio_short(self, clip: WholeClip) -> tuple[str, str]:
    duration = len(clip.audio) / self.audio_rate
    return "skipped_audio_short", (
        f"its audio ({duration:.3f} s from {clip.audio_start:+.3f} s) covers none of its "
        f"{len(clip.frames) - self.span + 1} windows of {self.span / self.fps:.3f} s plus "
        f"{self.audio_margin:g} s margins")

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
    decoded = decode(path, fps=self.fps, resize_size=self.resize_size, region=self.region, start=start / self.fps,
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
    sound = None
    if (self.train and self.cache is None and self.sampling == "random" and isinstance(path, str)
        and not self.audio_rate and not self.motion_masks):
      clip = self._window_without_cache(path, rng)
      if isinstance(clip, tuple):
        self._count(*clip, path)
        return None
    else:
      whole = self._whole_clip(path)
      if not isinstance(whole, WholeClip):
        self._count(*whole, path)
        return None
      frames, scores = whole.frames, whole.scores
      if self.spread:
        take = spread_indices(len(frames), self.num_frames, rng if self.train else None)
        clip = frames[take]
        if whole.motion is not None:
          clip = np.concatenate([clip, whole.motion[take, ..., None]], axis=-1)
        return self._deliver(clip, record, rng, sound)
      if len(frames) < self.span:
        self._count(*self._short(len(frames)), path)
        return None
      # Window starts lo..hi are allowed: all of them, or with audio those whose audio is
      # inside the track (a contiguous range, as the track is one interval).
      lo, hi = 0, len(frames) - self.span
      if self.audio_rate:
        offsets = self._audio_offsets(whole)
        inside = np.flatnonzero(offsets >= 0)
        if not len(inside):
          self._count(*self._audio_short(whole), path)
          return None
        lo, hi = int(inside[0]), int(inside[-1])
      length = hi - lo + self.span  # The frames the allowed windows cover.
      if self.train:
        motion = scores[lo:lo + length - 1] if self.sampling == "motion" else None
        allowed = window_starts(length, self.span, motion, self.motion_quantile) + lo
        starts = [int(rng.choice(allowed))]
      else:
        starts = uniform_starts(length, self.span, self.num_clips) + lo
      single = self.train or self.num_clips == 1
      clips = [frames[s:s + self.span:self.frame_stride] for s in starts]
      if whole.motion is not None:  # The maps ride along as a fourth channel: the same crop and flip.
        clips = [np.concatenate([c, whole.motion[s:s + self.span:self.frame_stride, ..., None]], axis=-1)
                 for c, s in zip(clips, starts)]
      clip = clips[0] if single else np.stack(clips)
      if self.audio_rate:
        sounds = [whole.audio[offsets[s]:offsets[s] + self.audio_length] for s in starts]
        sound = sounds[0] if single else np.stack(sounds)
    return self._deliver(clip, record, rng, sound)

  def _deliver(self, clip: np.ndarray, record, rng, sound) -> dict:
    """The chosen frames (with motion maps as a fourth channel) cropped, flipped and packed."""
    clip = self._crop_flip(clip, rng)
    out = {"video": clip[..., :3], "label": np.int32(record["label"]), "index": np.int32(record.get("index", -1))}
    if self.motion_masks:
      out["motion"] = np.ascontiguousarray(clip[..., 3])
      out["video"] = np.ascontiguousarray(out["video"])
    if sound is not None:
      out["audio"] = np.array(sound, np.float32)  # A copy: the cached track stays untouched.
    self.delivered += 1  # Only ever read as "zero or not": no lock needed.
    return out


def preprocess_from_config(config, *, train: bool, num_clips: int = 1) -> VideoPreprocess:
  """The VideoPreprocess an experiment config asks for: its ``video`` section, and its
  optional ``audio`` section (``sample_rate`` in Hz, ``margin_seconds``); without one,
  records carry no audio."""
  v = config.video
  a = config.get("audio")
  return VideoPreprocess(fps=v.fps, num_frames=v.num_frames, frame_stride=v.frame_stride,
                         image_size=config.image_size, resize_size=config.get("resize_size"),
                         flip=config.flip and train, train=train, sampling=v.sampling, motion=v.motion,
                         motion_quantile=v.motion_quantile, num_clips=num_clips, cache_mb=v.cache_mb,
                         audio_rate=a.sample_rate if a is not None else None,
                         audio_margin=a.get("margin_seconds", 0.0) if a is not None else 0.0,
                         region=v.get("region"), motion_masks=bool(v.get("motion_masks", False)),
                         whole_clip=not train and bool(config.get("evaluate", {}).get("whole_clip", False)))


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
