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

With ``--reversed``, every test video is also played backwards (its frames in reverse
order, the flow computed anew on them) and matched to its nearest training video (cosine
on the ``--segments`` features, the retrieval's top-1): how often a reversed gesture looks
like another gesture of the training set, and how close it lies to its nearest training
video against the forward videos; then the arrow of time task itself on these features
(forwards or backwards, a linear classifier), on whole videos and on the high-motion windows
that training draws: where in a clip the direction can be read.

  python benchmarks/video_flow_reference.py [--dataset folder:egogestar]  # In common.DATA_DIR.
  python benchmarks/video_flow_reference.py --segments 4 --reversed
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


def pair_flows(path: str, *, fps: float, reverse: bool = False) -> np.ndarray | None:
  """(pairs, 3): per consecutive frame pair, the mean flow (dx, dy) and mean magnitude; with
  ``reverse``, of the video played backwards."""
  import cv2
  decoded = video.decode(path, fps=fps, resize_size=64)
  if decoded is None or len(decoded[0]) < 2:
    return None
  grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in decoded[0]]
  grey = grey[::-1] if reverse else grey
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


def flows_of(source, *, fps: float, reverse: bool = False):
  flows, labels, skipped = [], [], 0
  for i in range(len(source)):
    record = source[i]
    f = pair_flows(str(record["path"]), fps=fps, reverse=reverse)
    if f is None:
      skipped += 1
      continue
    flows.append(f)
    labels.append(int(record["label"]))
  return flows, np.asarray(labels), skipped


def nearest(query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each query's nearest gallery row by cosine similarity: (index, similarity)."""
  q = query / (np.linalg.norm(query, axis=1, keepdims=True) + 1e-12)
  g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
  similarity = q @ g.T
  return similarity.argmax(axis=1), similarity.max(axis=1)


def reversed_table(train_x, train_y, test_x, reversed_x, test_y, class_names, segments: int) -> None:
  """Per class, the classes of the nearest training videos of its test videos, forward and
  played backwards, and a summary."""
  forward_nn, forward_sim = nearest(test_x, train_x)
  reversed_nn, reversed_sim = nearest(reversed_x, train_x)
  forward_class, reversed_class = train_y[forward_nn], train_y[reversed_nn]
  print(f"\nPlayed backwards ({segments} segments): the class of each test video's nearest training video\n")
  print("| class | forward | backwards |")
  print("|---|---|---|")
  for c, name in enumerate(class_names):
    rows = np.flatnonzero(test_y == c)
    print(f"| {name} | {', '.join(class_names[k] for k in forward_class[rows])} | "
          f"{', '.join(class_names[k] for k in reversed_class[rows])} |")
  n = len(test_y)
  print(f"\nForward: {np.mean(forward_class == test_y):.1%} of {n} test videos nearest a training video of "
        f"their class; backwards: {np.mean(reversed_class == test_y):.1%} of their own class, "
        f"{np.mean(reversed_class != test_y):.1%} of another. Cosine similarity to the nearest training "
        f"video, median: forward {np.median(forward_sim):.3f}, backwards {np.median(reversed_sim):.3f}.")


def forwards_or_backwards(train_x, reversed_train_x, test_x, reversed_test_x) -> list[dict]:
  """The arrow of time task on fixed features: a linear classifier (label 1: played backwards)
  trained on the training examples both ways, tested on the test examples both ways; fits of
  the sslx-linear protocol and of the longer one."""
  x = np.concatenate([train_x, reversed_train_x])
  y = np.concatenate([np.zeros(len(train_x)), np.ones(len(reversed_train_x))]).astype(np.int32)
  tx = np.concatenate([test_x, reversed_test_x])
  ty = np.concatenate([np.zeros(len(test_x)), np.ones(len(reversed_test_x))]).astype(np.int32)
  return [linear.train_linear(x, y, tx, ty, num_classes=2, epochs=epochs, batch_size=32, learning_rate=lr,
                              weight_decay=5e-4, seed=0) for epochs, lr in ((30, 1e-3), (300, 1e-2))]


def high_motion_windows(flows, pairs: int) -> np.ndarray:
  """Every window of ``pairs`` consecutive frame pairs whose mean magnitude is at or above the
  median of its video's windows (training's motion sampling, video.motion_quantile 0.5), as
  its per-pair (dx, dy, magnitude) flattened; videos with fewer pairs give none."""
  out = []
  for f in flows:
    if len(f) < pairs:
      continue
    means = np.array([f[i:i + pairs, 2].mean() for i in range(len(f) - pairs + 1)])
    out.extend(f[i:i + pairs].reshape(-1) for i in np.flatnonzero(means >= np.median(means) - 1e-9))
  return np.stack(out)


def arrow_of_time_table(flows: dict, segments_list) -> None:
  """Forwards or backwards from coarse flow: of whole videos (per stretch: all three numbers,
  the direction alone, the magnitude alone) and of the high-motion windows training draws."""
  # Each video's (stretches, 3) means, once per stretch count: every row below slices them.
  stretched = {segments: {k: np.stack([segment_means(f, segments).reshape(segments, 3) for f in v])
                          for k, v in flows.items()} for segments in segments_list}
  print()
  for segments in segments_list:  # Where in a video the motion is, on average: forwards.
    profile = stretched[segments]["train"][:, :, 2].mean(axis=0)
    print(f"Mean flow magnitude of the training videos over {segments} stretches, forwards (px): "
          f"{', '.join(f'{m:.2f}' for m in profile)}")
  print("\nForwards or backwards (chance 50%): a linear classifier on the training videos both ways, "
        "tested on the test videos both ways\n")
  print("| what it sees | numbers | test accuracy, sslx-linear protocol / 300 epochs (%) | training (%) | examples (train / test) |")
  print("|---|---|---|---|---|")
  columns = {"dx, dy, magnitude": [0, 1, 2], "dx, dy": [0, 1], "magnitude": [2]}
  rows = []
  for segments in segments_list:
    for name, cols in columns.items():
      feats = {k: v[:, :, cols].reshape(len(v), -1) for k, v in stretched[segments].items()}
      rows.append((f"whole video, {segments} stretches: {name}", feats))
  for frames in (8, 16):
    rows.append((f"high-motion windows of {frames} frames: dx, dy, magnitude per pair",
                 {k: high_motion_windows(v, frames - 1) for k, v in flows.items()}))
  for what, f in rows:
    fits = forwards_or_backwards(f["train"], f["train_reversed"], f["test"], f["test_reversed"])
    print(f"| {what} | {f['train'].shape[1]} | {100 * fits[0]['test_accuracy']:.1f} / "
          f"{100 * fits[1]['test_accuracy']:.1f} | {100 * fits[0]['train_accuracy']:.0f} / "
          f"{100 * fits[1]['train_accuracy']:.0f} | {2 * len(f['train'])} / {2 * len(f['test'])} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dataset", default="folder:egogestar",
                      help=f"A dataset spec; folder:NAME is read from {common.DATA_DIR}.")
  parser.add_argument("--fps", type=float, default=10.0)
  parser.add_argument("--segments", type=int, nargs="+", default=[1, 4, 8])
  parser.add_argument("--reversed", action="store_true",
                      help="Also match the test videos played backwards to their nearest training videos.")
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
  if args.reversed:
    reversed_flows, reversed_y, _ = flows_of(test_source, fps=args.fps, reverse=True)
    reversed_train, reversed_train_y, _ = flows_of(train_source, fps=args.fps, reverse=True)
    # The same videos, readable both ways.
    assert np.array_equal(reversed_y, test_y) and np.array_equal(reversed_train_y, train_y)
    names = list(getattr(test_source, "classes", None) or [str(c) for c in range(num_classes)])
    for segments in args.segments:
      features = [np.stack([segment_means(f, segments) for f in flows])
                  for flows in (train_flows, test_flows, reversed_flows)]
      reversed_table(features[0], train_y, features[1], features[2], test_y, names, segments)
    arrow_of_time_table({"train": train_flows, "train_reversed": reversed_train, "test": test_flows,
                         "test_reversed": reversed_flows}, args.segments)


if __name__ == "__main__":
  main()
