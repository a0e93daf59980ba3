"""Audio tracks of video clips on the host: decoding to mono at a fixed sample rate, placed
in time against the clip's frames.

Below ``video.py`` (which imports this module, never the reverse): of sslx it may
import only ``sslx.data.base``.

- **Decoding** with PyAV (FFmpeg's libraries, no ffmpeg binary): the first audio
  stream, mixed to mono (the mean of the channels), float32 in [-1, 1],
  resampled to ``sample_rate`` with ``scipy.signal.resample_poly``, a
  zero-phase polyphase filter: output sample ``m`` is at the time of input
  sample ``m * down / up``, so resampling moves nothing in time.
- **Timing** comes from the container: each decoded frame is placed at its
  presentation timestamp (``frame.pts * time_base``), and the result's
  ``start`` is the time of sample 0 in seconds from the video stream's
  ``start_time``, the origin ``video.decode`` measures frame times from. So an
  audio stream that starts later or earlier than the video (a muxing offset,
  an encoder's priming delay) stays aligned with the frames. Frames whose
  timestamps agree with back-to-back playback within the timestamps' own
  precision are joined without a gap; a real gap (a lost or undecodable
  packet) is filled with silence, so the samples after it keep their time.
- **Failures** do not raise: ``decode_audio`` returns a reason string instead
  of samples when a clip has no audio stream (``NO_AUDIO``), cannot be opened
  (``UNREADABLE``) or its audio cannot be decoded, so the caller can skip the
  clip, count it and say why. A packet that fails to decode mid-stream (some
  MP2 streams hold one) is dropped and the rest of the track kept.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np

NO_AUDIO = "it has no audio stream"
UNREADABLE = "PyAV cannot open it"


def _first_video_time(container) -> float:
  """Seconds of the video stream's ``start_time`` (0 when unknown or there is no video):
  the origin of ``video.decode``'s frame times."""
  if not container.streams.video:
    return 0.0
  stream = container.streams.video[0]
  if stream.start_time is None or stream.time_base is None:
    return 0.0
  return float(stream.start_time * stream.time_base)


def _to_mono(frame) -> np.ndarray:
  """One decoded audio frame -> float32 (samples,) mono in [-1, 1], whatever its sample format."""
  array = frame.to_ndarray()
  channels = frame.layout.nb_channels
  if not frame.format.is_planar:  # Packed: (1, samples * channels), channels interleaved.
    array = array.reshape(-1, channels).T
  if array.dtype == np.uint8:
    array = (array.astype(np.float32) - 128.0) / 128.0
  elif np.issubdtype(array.dtype, np.integer):
    array = array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize - 1))
  return array.astype(np.float32).mean(axis=0)


def _decoded_frames(container, stream):
  """(time in seconds or None, sample rate, mono samples) per decoded frame of ``stream``.
  Packets that fail to decode are dropped; a demuxing error ends the track early."""
  time_base = stream.time_base
  packets = container.demux(stream)
  while True:
    try:
      packet = next(packets)
    except StopIteration:
      return
    except Exception:  # A broken container past this point: keep what was decoded.
      return
    try:
      frames = packet.decode()
    except Exception:  # One undecodable packet (seen in MP2 streams): the gap becomes silence.
      continue
    for frame in frames:
      tb = frame.time_base or time_base
      t = float(frame.pts * tb) if frame.pts is not None and tb is not None else None
      yield t, frame.sample_rate, _to_mono(frame)


def _place(frames, rate: int, tolerance: int) -> tuple[np.ndarray, float]:
  """Lays frames (time, samples) out by their timestamps at ``rate``: (samples, time of sample 0).

  A frame within ``tolerance`` samples of where the previous one ended is joined to
  it (the difference is timestamp rounding); otherwise it goes where its timestamp
  says, over a gap of silence or over the end of the previous frame."""
  first = next((t for t, _ in frames if t is not None), 0.0)
  placed, end = [], 0
  for t, samples in frames:
    position = end if t is None else round((t - first) * rate)
    if abs(position - end) <= tolerance:
      position = end
    position = max(position, 0)
    placed.append((position, samples))
    end = position + len(samples)
  out = np.zeros(max(p + len(s) for p, s in placed), np.float32)
  for position, samples in placed:
    out[position:position + len(samples)] = samples
  return out, first


def resample(samples: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
  """``samples`` at ``rate`` -> at ``sample_rate``, zero-phase (no shift in time): output
  sample ``m`` is at the time of input sample ``m * rate / sample_rate``."""
  if rate == sample_rate:
    return samples.astype(np.float32)
  from scipy import signal
  g = math.gcd(int(rate), int(sample_rate))
  return signal.resample_poly(samples, sample_rate // g, rate // g).astype(np.float32)


def decode_audio(path: str | os.PathLike, *, sample_rate: int) -> tuple[np.ndarray, float] | str:
  """The first audio stream of a clip: (float32 (N,) mono samples in [-1, 1] at ``sample_rate``,
  ``start``), where ``start`` is the time of sample 0 in seconds from the first video frame
  (the video stream's ``start_time``; sample ``i`` is at ``start + i / sample_rate``).

  On failure, a reason string instead (never an exception): ``NO_AUDIO`` when the file
  has no audio stream, ``UNREADABLE`` when PyAV cannot open the file at all, another
  sentence when its audio cannot be decoded.
  """
  import av
  try:
    with av.open(str(path)) as container:
      if not container.streams.audio:
        return NO_AUDIO
      stream = container.streams.audio[0]
      origin = _first_video_time(container)
      decoded = list(_decoded_frames(container, stream))
      time_base = stream.time_base
  except Exception:  # PyAV raises many error types; all mean "cannot read it here".
    return UNREADABLE
  decoded = [d for d in decoded if len(d[2])]
  if not decoded:
    return "its audio stream cannot be decoded"
  rates = {r for _, r, _ in decoded}
  if len(rates) != 1:
    return f"its audio changes sample rate mid-stream ({sorted(rates)} Hz)"
  rate = rates.pop()
  # Timestamps are only as precise as their time base: within one tick (at least 2
  # samples) of back-to-back playback, frames are joined without a gap.
  tick = float(time_base or Fraction(1, rate))
  tolerance = max(2, math.ceil(tick * rate))
  samples, first = _place([(t, s) for t, _, s in decoded], rate, tolerance)
  samples = np.clip(resample(samples, rate, sample_rate), -1.0, 1.0)
  return samples, first - origin


def has_audio(path: str | os.PathLike) -> bool:
  """Whether the container lists an audio stream (metadata only, nothing decoded)."""
  import av
  try:
    with av.open(str(path)) as container:
      return bool(container.streams.audio)
  except Exception:  # Unreadable: no usable audio either.
    return False


def check_audio(source, *, name: str | None = None) -> dict:
  """Probes every clip of ``source`` (its ``paths``): {"audio": n, "no_audio": n}. Raises
  when no clip has an audio stream (records without files, such as TFDS's, have none)."""
  paths = list(getattr(source, "paths", []))
  counts = {"audio": 0, "no_audio": 0}
  for path in paths:
    counts["audio" if has_audio(path) else "no_audio"] += 1
  if counts["audio"] == 0:
    dataset = name or str(getattr(source, "root", None) or source)
    raise ValueError(f"no clip in {dataset} has an audio track ({len(paths)} clip files probed): use a "
                     f"dataset with sound or drop the config's audio section")
  return counts
