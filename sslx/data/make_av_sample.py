"""Builds sslx/data/sample_av from GRID speaker-1 clips (run once, output committed).

    python -m sslx.data.make_av_sample [--source DIR]  # Default: grid_av in the data directory.

The classes are GRID's command words (bin, lay, place, set, from ``labels.csv``).
Per command, 4 of the speaker-1 clips in sorted file-name order, spread evenly
over them (so the colours vary), are re-encoded small: H.264 (constant quality)
at their native 25 fps and presentation timestamps, shorter side 144 px
(180x144), and their sound as AAC mono at 16 kHz. The sound is decoded, mixed
and resampled by ``sslx.data.audio.decode_audio`` (zero-phase, placed by
timestamps) and written at the same time relative to the first frame as in the
original, so a test can check that sound and frames stay aligned. 16 clips:
``VideoFolderSource``'s split (every 4th clip of a class is test) makes 12 train
+ 4 test.
"""

from __future__ import annotations

import argparse
import csv
from fractions import Fraction
from pathlib import Path

import numpy as np

from sslx.data import audio, sources, video

AUDIO_RATE = 16000
AAC_FRAME = 1024  # Samples per AAC frame.


def pick(labels_csv: Path, speaker: str, per_command: int) -> dict[str, list[str]]:
  """{command: the ``per_command`` clip files (relative to the grid_av folder) spread evenly
  over the speaker's clips of that command, in sorted order}."""
  by_command: dict[str, list[str]] = {}
  with open(labels_csv, newline="") as f:
    for row in csv.DictReader(f):
      if row["speaker"] == speaker:
        by_command.setdefault(row["command"], []).append(row["file"])
  chosen = {}
  for command, files in sorted(by_command.items()):
    files = sorted(files)
    indices = np.round(np.linspace(0, len(files) - 1, min(per_command, len(files)))).astype(int)
    chosen[command] = [files[i] for i in indices]
  return chosen


def reencode(src: str, dst: Path, *, shorter_side: int, audio_rate: int):
  """``src`` -> ``dst``: frames resized at their own timestamps, sound as AAC mono at
  ``audio_rate`` starting at the same time relative to the first frame."""
  import av
  decoded = audio.decode_audio(src, sample_rate=audio_rate)
  if isinstance(decoded, str):
    raise ValueError(f"cannot take the sound of {src}: {decoded}; pick clips with a decodable audio track")
  sound, sound_start = decoded
  with av.open(src) as inp:
    stream = inp.streams.video[0]
    rate, time_base = stream.average_rate, stream.time_base
    first = stream.start_time or 0
    frames = [(f.pts, video.resize_shorter_side(f.to_ndarray(format="rgb24"), shorter_side))
              for f in inp.decode(stream)]
  h, w = frames[0][1].shape[:2]
  dst.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(dst), "w") as out:
    v = out.add_stream("libx264", rate=rate)
    v.width, v.height = w - w % 2, h - h % 2
    v.pix_fmt = "yuv420p"
    v.time_base = time_base
    v.options = {"crf": "28", "preset": "slow"}
    a = out.add_stream("aac", rate=audio_rate, layout="mono")
    a.bit_rate = 32000
    for pts, rgb in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:v.height, :v.width]), format="rgb24")
      frame.pts, frame.time_base = pts, time_base
      for packet in v.encode(frame):
        out.mux(packet)
    for packet in v.encode():
      out.mux(packet)
    # Sample 0 of the sound goes where it was: sound_start after the first frame.
    offset = round((float(first * time_base) + sound_start) * audio_rate)
    for i in range(0, len(sound), AAC_FRAME):
      chunk = np.ascontiguousarray(sound[None, i:i + AAC_FRAME], np.float32)
      frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
      frame.sample_rate, frame.pts, frame.time_base = audio_rate, offset + i, Fraction(1, audio_rate)
      for packet in a.encode(frame):
        out.mux(packet)
    for packet in a.encode():
      out.mux(packet)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=str(sources.folder_path("grid_av")),
                      help="The grid_av folder, with labels.csv and s1/ (default: in $SSLX_DATA_DIR or ./data).")
  parser.add_argument("--out", default=str(video.SAMPLE_AV_DIR))
  parser.add_argument("--speaker", default="s1")
  parser.add_argument("--per_command", type=int, default=4)
  parser.add_argument("--shorter_side", type=int, default=144)
  parser.add_argument("--audio_rate", type=int, default=AUDIO_RATE)
  args = parser.parse_args()
  source = Path(args.source)
  for command, files in pick(source / "labels.csv", args.speaker, args.per_command).items():
    for name in files:
      dst = Path(args.out) / command / (Path(name).stem + ".mp4")
      reencode(str(source / name), dst, shorter_side=args.shorter_side, audio_rate=args.audio_rate)
      print(dst)


if __name__ == "__main__":
  main()
