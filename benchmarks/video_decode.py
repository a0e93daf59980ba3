"""Host video throughput on real clips: decoding, motion scoring and the cache, side by side.

    python benchmarks/video_decode.py [--data DIR] [--clips 40]  # Default: egogestar in common.DATA_DIR.

Measures, in one run over the same clips (clips/s, one thread):
- full decode: every frame decoded, resampled to --fps, resized (what fills the cache);
- window by seeking: one random --num_frames window, decoded after a seek (no cache);
- motion scores of a decoded clip: Farneback flow and frame differencing;
- a cached clip: the VideoPreprocess call once the cache holds the clip;
and prints each as a ratio to the full decode. Compare with what training consumes:
the ``images_per_sec`` (clips/s) that sslx-train logs for a video config.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx.data import video


def rate(fn, items) -> float:
  start = time.perf_counter()
  for item in items:
    fn(item)
  return len(items) / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=str(common.DATA_DIR / "egogestar"))
  parser.add_argument("--clips", type=int, default=40)
  parser.add_argument("--fps", type=float, default=10.0)
  parser.add_argument("--resize_size", type=int, default=72)
  parser.add_argument("--num_frames", type=int, default=8)
  args = parser.parse_args()
  source = video.VideoFolderSource(args.data, "train")
  paths = source.paths[::max(1, len(source.paths) // args.clips)][:args.clips]
  rng = np.random.default_rng(0)

  full = rate(lambda p: video.decode(p, fps=args.fps, resize_size=args.resize_size), paths)
  decoded = [video.decode(p, fps=args.fps, resize_size=args.resize_size)[0] for p in paths]

  def window(path):
    duration, _ = video.probe(path)
    length = video.frame_count(duration, args.fps)
    start = int(rng.integers(0, max(length - args.num_frames, 0) + 1))
    video.decode(path, fps=args.fps, resize_size=args.resize_size, start=start / args.fps,
                 end=(start + args.num_frames) / args.fps)

  seek = rate(window, paths)
  flow = rate(lambda f: video.motion_scores(f, "flow"), decoded)
  diff = rate(lambda f: video.motion_scores(f, "diff"), decoded)
  preprocess = video.VideoPreprocess(fps=args.fps, num_frames=args.num_frames, image_size=64,
                                     resize_size=args.resize_size, flip=True, train=True,
                                     sampling="motion", motion="flow", cache_mb=4096)
  records = [{"video": p, "label": 0, "index": i} for i, p in enumerate(paths)]
  first_pass = rate(lambda r: preprocess(r, rng), records)  # Fills the cache (decode + flow).
  cached = rate(lambda r: preprocess(r, rng), records)
  frames = np.mean([len(f) for f in decoded])
  print(f"{len(paths)} clips from {args.data}, mean {frames:.1f} frames at {args.fps:g} fps, "
        f"shorter side {args.resize_size}, window {args.num_frames} frames; clips/s (x full decode):")
  for name, value in [("full decode + resample + resize", full), ("one window by seeking", seek),
                      ("motion scores, Farneback flow", flow), ("motion scores, frame difference", diff),
                      ("VideoPreprocess, first pass (decode + flow)", first_pass),
                      ("VideoPreprocess, cached clip", cached)]:
    print(f"  {name:45s} {value:9.1f}  ({value / full:6.2f}x)")
  print(f"cache: {preprocess.cache.bytes / 2**20:.1f} MiB for {len(paths)} clips")


if __name__ == "__main__":
  main()
