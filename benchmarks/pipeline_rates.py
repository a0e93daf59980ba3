"""The host pipeline's delivered images/s against the JPEG decode limit of the same files.

    python benchmarks/pipeline_rates.py [--sizes 32,224] [--workers 0,1,2] [--rounds 3]
        [--images 5000,1000] [--window 8]
    python benchmarks/pipeline_rates.py --quick   # The embedded sample, 32 and 64 px, 1 round.

Files: at 32 px, the real CIFAR-10 JPEGs (``--images`` of ``folder:cifar10``'s train split, evenly
spaced so every class is in, in the data directory, common.DATA_DIR; the embedded sample where that is absent) with the
CIFAR configs' preprocessing (crop 32 after padding 4, flip). At 224 px, ImageNet-sized JPEGs
made from the same CIFAR images: each upscaled (bicubic) to 500 x 375, ImageNet's typical size,
and saved at JPEG quality 90 in a temporary folder, with ImageNet's preprocessing (shorter side
to 256, random crop 224, flip). Upscaled 32 px images hold less detail than photographs, so
their files are smaller (bytes per image are printed) and decode somewhat faster than real
ImageNet JPEGs of the same size.

Measured, per size, in each round one after the other:
- the decode limit: ``image_ops.decode`` of the files' bytes (already in memory) in one
  thread for 1.5 s, images/s per core; the limit of C cores is C times that (C = os.cpu_count());
- for each ``--workers`` count (0: grain's reader threads in this process) without and with the
  decoded-image cache (``data.cache_mb``): the images/s that ``pipeline.make_dataset`` delivers
  with no consumer, the trainer's own pipeline (``data_threads`` 2 reader threads per process,
  batches of 256 at 32 px, 64 at 224 px). Each variant's iterator is built once (workers started,
  and with the cache 3 epochs drawn first, so that every worker's cache holds what it will be
  asked for most of the time); in each round, every variant in turn first drains what its
  buffers can hold (``pipeline.buffered_batches``: grain's prefetch in this process or in each
  worker, the workers' output buffers), then times ``--window`` batches, or 3 times what the
  buffers hold when that is more (they refill during the drain; a long window makes that head
  start small). Reported: medians over ``--rounds``.

"delivered / limit": the delivered rate over the C-core decode limit, what the issue's goal
(0.8 without the cache) compares. Every batch is checked: shape (B, S, S, 3) uint8 and source
indices in range.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np
from absl import logging
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx.data import image_ops, pipeline, sources

THREADS = 2  # configs.base's data_threads.
LARGE = (500, 375)  # Width, height of the made ImageNet-sized files.
SETTINGS = {  # size -> (batch, Preprocess settings).
    32: (256, {"image_size": 32, "crop_padding": 4, "flip": True}),
    64: (64, {"image_size": 64, "resize_size": 72, "flip": True}),  # --quick's large size.
    224: (64, {"image_size": 224, "resize_size": 256, "flip": True}),
}


def cifar_source(count: int):
  """``count`` CIFAR-10 train JPEGs spread over the classes (data directory, else the embedded sample)."""
  try:
    source = sources.get_source("folder:cifar10", "train", str(common.DATA_DIR))
  except FileNotFoundError:
    source = sources.get_source("sample", "train")
  return Subset(source, min(count, len(source)))


class Subset:
  """``count`` records of a source, evenly spaced over it (so over its class folders too)."""

  def __init__(self, source, count: int):
    self.source, self.positions = source, np.linspace(0, len(source) - 1, count).astype(int)

  def __len__(self):
    return len(self.positions)

  def __getitem__(self, i):
    return self.source[int(self.positions[i])]


def make_large_files(source, folder: pathlib.Path):
  """Each image of ``source`` upscaled to LARGE, JPEG quality 90, as folder/train/<class>/."""
  for i in range(len(source)):
    record = source[i]
    image = Image.fromarray(image_ops.decode(record["image"])).resize(LARGE, Image.BICUBIC)
    out = folder / "train" / f"class{int(record['label'])}"
    out.mkdir(parents=True, exist_ok=True)
    image.save(out / f"{i:05d}.jpg", quality=90)
  return sources.get_source(f"folder:{folder}", "train")


class DecodeRate:
  """One thread decoding the files' bytes (already in memory): images/s per core, timed in each
  round beside the pipelines, so that the machine's drift hits the limit and them alike."""

  def __init__(self, source):
    self.data = [source[i]["image"] for i in range(len(source))]
    self.file_bytes = float(np.mean([len(b) for b in self.data]))
    self.rates = []

  def measure(self, min_seconds: float = 1.5):
    decoded, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
      for blob in self.data[decoded % len(self.data):][:64]:
        image_ops.decode(blob)
      decoded += min(64, len(self.data) - decoded % len(self.data))
    self.rates.append(decoded / (time.perf_counter() - start))


class Variant:
  """One pipeline (workers, cache) kept alive over the rounds; ``measure`` drains then times."""

  def __init__(self, source, size: int, workers: int, cache: bool, warm_epochs: int = 3):
    self.batch, settings = SETTINGS[size]
    self.source, self.size, self.workers, self.cache = source, size, workers, cache
    # A budget the whole subset fits in, per worker too (each worker holds its own copy).
    pre = pipeline.Preprocess(train=True, cache_mb=(4096 if cache else 0), **settings)
    self.iterator = iter(pipeline.make_dataset(source, pre, batch_size=self.batch, seed=0, train=True,
                                               num_threads=THREADS, workers=workers))
    warm = math.ceil(warm_epochs * len(source) / self.batch) if cache else 2
    for _ in range(warm):
      self.next()
    self.rates = []

  def next(self):
    batch = self.iterator.__next__()
    image, index = batch["image"], batch["index"]
    assert image.shape == (self.batch, self.size, self.size, 3) and image.dtype == np.uint8, image.shape
    assert 0 <= index.min() and index.max() < len(self.source), (index.min(), index.max())
    return batch

  def measure(self, window: int, factor: int = 3):
    """Drains the buffers, then times max(window, factor x what they hold) batches: the buffers
    refill while they are drained, and a long window makes that head start small."""
    capacity = pipeline.buffered_batches(self.batch, num_threads=THREADS, workers=self.workers)
    for _ in range(capacity + 1):
      self.next()
    window = max(window, factor * capacity)
    start = time.perf_counter()
    for _ in range(window):
      self.next()
    self.rates.append(window * self.batch / (time.perf_counter() - start))

  def close(self):
    self.iterator.close()


def run_size(size: int, count: int, workers_list, rounds: int, window: int, folder: pathlib.Path,
             quick: bool = False) -> list[dict]:
  source = cifar_source(count)
  if size > 32:
    source = make_large_files(source, folder / f"large{size}")
  decode = DecodeRate(source)
  cores = os.cpu_count() or 1
  print(f"{size} px: {len(source)} files of {decode.file_bytes / 1e3:.1f} kB", file=sys.stderr, flush=True)
  variants = [Variant(source, size, w, cache) for w in workers_list for cache in (False, True)]
  try:
    for r in range(rounds):
      decode.measure(0.5 if quick else 1.5)
      for v in variants:
        v.measure(window, factor=1 if quick else 3)
      print(f"  round {r + 1}: decode {decode.rates[-1]:.0f}/core, " + ", ".join(
          f"w{v.workers}{'+cache' if v.cache else ''} {v.rates[-1]:.0f}" for v in variants), file=sys.stderr, flush=True)
  finally:
    for v in variants:
      v.close()
  per_core = statistics.median(decode.rates)
  return [{"size": size, "files": len(source), "file_kb": decode.file_bytes / 1e3, "decode_per_core": per_core,
           "cores": cores, "workers": v.workers, "cache": v.cache, "batch": v.batch,
           "delivered": statistics.median(v.rates), "spread": (min(v.rates), max(v.rates))} for v in variants]


def format_table(rows: list[dict]) -> str:
  header = ("| size | files (kB each) | decode, 1 core | workers | cache | delivered img/s [min, max] "
            "| delivered / limit of all cores |")
  lines = [header, "|" + "---|" * (header.count(" | ") + 1)]
  for r in rows:
    limit = r["decode_per_core"] * r["cores"]
    cells = [f"{r['size']} px", f"{r['files']} ({r['file_kb']:.1f})", f"{r['decode_per_core']:.0f}",
             str(r["workers"]), "yes" if r["cache"] else "no",
             f"{r['delivered']:.0f} [{r['spread'][0]:.0f}, {r['spread'][1]:.0f}]",
             f"{r['delivered'] / limit:.2f} (of {limit:.0f}, {r['cores']} cores)"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="32,224", help="Crop sizes: 32 (CIFAR files), 224 (made ImageNet-sized).")
  parser.add_argument("--images", default="5000,1000", help="Files per size (one value for all, or one per size).")
  parser.add_argument("--workers", default="0,1,2", help="Worker-process counts (0: threads in this process).")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--window", type=int, default=8, help="Timed batches per variant and round.")
  parser.add_argument("--quick", action="store_true", help="Sample images at 32 and 64 px, 0 and 1 worker, 1 round.")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  """Runs the benchmark, prints the table and returns its rows."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  if args.quick:
    sizes, counts, workers, rounds, window = [32, 64], [512, 128], [0, 1], 1, 2
  else:
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(n) for n in args.images.split(",")]
    counts = counts * len(sizes) if len(counts) == 1 else counts
    workers, rounds, window = [int(w) for w in args.workers.split(",")], args.rounds, args.window
  if len(counts) != len(sizes) or any(s not in SETTINGS for s in sizes) or min(rounds, window) < 1:
    raise SystemExit(f"--sizes from {sorted(SETTINGS)}, one --images value or one per size, --rounds and "
                     f"--window at least 1")
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    for size, count in zip(sizes, counts):
      rows += run_size(size, count, workers, rounds, window, pathlib.Path(folder), args.quick)
  print(f"host pipeline, {os.cpu_count()} cores, {THREADS} reader threads per process; medians of {rounds} "
        f"rounds of {window} batches after draining the buffers")
  print(format_table(rows))
  sys.stdout.flush()
  return rows


if __name__ == "__main__":
  main()
