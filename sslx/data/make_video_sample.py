"""Builds sslx/data/sample_video from the egogestar clips (run once, output committed).

    python -m sslx.data.make_video_sample [--source DIR]  # Default: egogestar in the data directory.

Per class, the split rule of ``VideoFolderSource`` (sorted clips, every 4th is
test) picks the clips; the first 2 train and the first test clip of each class
are re-encoded (H.264, shorter side 120 px, constant quality) at their native
frame rate and timestamps, so the sample keeps the frame-rate spread that
resampling must neutralise. 22 train + 11 test clips, about 1 MB.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sslx.data import sources, video


def reencode(src: str, dst: Path, shorter_side: int):
  import av
  with av.open(src) as inp:
    stream = inp.streams.video[0]
    rate = stream.average_rate
    frames = [(f.pts, video.resize_shorter_side(f.to_ndarray(format="rgb24"), shorter_side))
              for f in inp.decode(stream)]
    time_base = stream.time_base
  h, w = frames[0][1].shape[:2]
  dst.parent.mkdir(parents=True, exist_ok=True)
  with av.open(str(dst), "w") as out:
    s = out.add_stream("libx264", rate=rate)
    s.width, s.height = w - w % 2, h - h % 2
    s.pix_fmt = "yuv420p"
    s.time_base = time_base
    s.options = {"crf": "28", "preset": "slow"}
    for pts, rgb in frames:
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:s.height, :s.width]), format="rgb24")
      frame.pts, frame.time_base = pts, time_base
      for packet in s.encode(frame):
        out.mux(packet)
    for packet in s.encode():
      out.mux(packet)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=str(sources.folder_path("egogestar")),
                      help="The egogestar clips, <class>/<clip>.mp4 (default: in $SSLX_DATA_DIR or ./data).")
  parser.add_argument("--out", default=str(video.SAMPLE_VIDEO_DIR))
  parser.add_argument("--train_per_class", type=int, default=2)
  parser.add_argument("--test_per_class", type=int, default=1)
  parser.add_argument("--shorter_side", type=int, default=120)
  args = parser.parse_args()
  for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
    source = video.VideoFolderSource(args.source, split)
    taken: dict[int, int] = {}
    for path, label in zip(source.paths, source.labels):
      if taken.get(label, 0) >= per_class:
        continue
      taken[label] = taken.get(label, 0) + 1
      dst = Path(args.out) / split / source.classes[label] / (Path(path).stem + ".mp4")
      reencode(path, dst, args.shorter_side)
      print(dst)


if __name__ == "__main__":
  main()
