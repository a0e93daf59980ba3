"""A non-learned reference for the video tables: can a linear probe tell the classes
apart from hand-made motion features on the same split?

Each video (all of it, at ``--fps``) gets mean Farneback flow vectors: per frame
pair, the mean (dx, dy) and the mean magnitude on a grey 64 px frame, averaged
over ``--segments`` consecutive stretches and concatenated. The features are
probed with the same linear classifier and retrieval as ``sslx-linear`` /
``sslx-retrieval`` (sslx/evaluate/), on the same train / test split: the probe
with configs.base_video's protocol (30 epochs of batch 32, AdamW 1e-3) and a
longer one (300 epochs, 1e-2), since a dozen dims may need more steps. It shows the
headroom a learned representation has there: if this scores above chance, the
probe can see motion information when features carry it.

  python benchmarks/video_flow_reference.py [--dataset folder:egogestar]  # In common.DATA_DIR.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402  (sets the data directory, common.DATA_DIR)
from sslx.data import sources, video
from sslx.evaluate import linear, retrieval


def pair_flows(path: str, *, fps: float) -> np.ndarray | None:
  """(pairs, 3): per consecutive frame pair, the mean flow (dx, dy) and mean magnitude."""
  import cv2
  decoded = video.decode(path, fps=fps, resize_size=64)
  if decoded is None or len(decoded[0]) < 2:
    return None
  grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded[0]]
  rows = []
  for a, b in zip(grey[:-1], grey[1:]):
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    rows.append([flow[..., 0].mean(), flow[..., 1].mean(), np.linalg.norm(flow, axis=-1).mean()])
  return np.asarray(rows, np.float32)


def segment_means(per_pair: np.ndarray, segments: int) -> np.ndarray:
  """Means over ``segments`` consecutive stretches, concatenated (a stretch holds >= 1 pair)."""
  bounds = np.linspace(0, len(per_pair), segments + 1)
  return np.concatenate([per_pair[int(lo):max(int(hi), int(lo) + 1)].mean(axis=0)
                         for lo, hi in zip(bounds[:-1], bounds[1:])])


def flows_of(source, *, fps: float):
  flows, labels, skipped = [], [], 0
  for i in range(len(source)):
    record = source[i]
    f = pair_flows(str(record["path"]), fps=fps)
    if f is None:
      skipped += 1
      continue
    flows.append(f)
    labels.append(int(record["label"]))
  return flows, np.asarray(labels), skipped


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="folder:egogestar",
                      help=f"A dataset spec; folder:NAME is read from {common.DATA_DIR}.")
  parser.add_argument("--fps", type=float, default=10.0)
  parser.add_argument("--segments", type=int, nargs="+", default=[1, 4, 8])
  args = parser.parse_args()
  train_source = sources.get_source(args.dataset, "train")
  test_source = sources.get_source(args.dataset, "test")
  num_classes = train_source.num_classes
  print(f"{args.dataset}: {len(train_source)} train / {len(test_source)} test videos, {num_classes} classes, "
        f"chance {100 / num_classes:.1f}%\n")
  print("| segments | dims | linear top-1, sslx-linear protocol / 300 epochs (%) | train top-1 (%) | "
        "retrieval top-1 / top-5 (%) |")
  print("|---|---|---|---|---|")
  start = time.perf_counter()
  train_flows, train_y, skipped_train = flows_of(train_source, fps=args.fps)
  test_flows, test_y, skipped_test = flows_of(test_source, fps=args.fps)
  seconds = time.perf_counter() - start
  for segments in args.segments:
    train_x = np.stack([segment_means(f, segments) for f in train_flows])
    test_x = np.stack([segment_means(f, segments) for f in test_flows])
    fits = [linear.train_linear(train_x, train_y, test_x, test_y, num_classes=num_classes, epochs=epochs,
                                batch_size=32, learning_rate=lr, weight_decay=5e-4, seed=0)
            for epochs, lr in ((30, 1e-3), (300, 1e-2))]
    hits = retrieval.top_k_hits(test_x, test_y, train_x, train_y, (1, 5))
    print(f"| {segments} | {train_x.shape[1]} | {100 * fits[0]['test_accuracy']:.1f} / "
          f"{100 * fits[1]['test_accuracy']:.1f} | {100 * fits[0]['train_accuracy']:.0f} / "
          f"{100 * fits[1]['train_accuracy']:.0f} | {100 * hits[1]:.1f} / {100 * hits[5]:.1f} |", flush=True)
  print(f"\nDecoding and flow: {seconds:.0f} s for {len(train_flows) + len(test_flows)} videos; "
        f"{skipped_train + skipped_test} skipped (unreadable or one frame).")


if __name__ == "__main__":
  main()
