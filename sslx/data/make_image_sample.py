"""Builds sslx/data/sample/<class>.zip from the cifar10 folder (run once, output committed).

    python -m sslx.data.make_image_sample [--source DIR]  # Default: cifar10 in the data directory.

The first 200 train and the first 100 test images of each class (sorted file names), byte for
byte, stored uncompressed (JPEG does not compress further) as ``<split>/<class>/<file>``, one
archive per class (about 300 KiB each): ten files rather than 3,000, so the repository holds
2.8 MB of images, not 3,000 disk blocks, and no file of it is large.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from sslx.data import sources

PER_CLASS = {"train": 200, "test": 100}


def build(source_root: Path, archives) -> int:
  """Writes each of ``archives`` (named <class>.zip) with that class's images of both splits."""
  count = 0
  for archive in archives:
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
      for split, per_class in PER_CLASS.items():
        folder = source_root / split / archive.stem
        for path in sorted(p for p in folder.iterdir() if p.is_file())[:per_class]:
          # A fixed timestamp, so rebuilding gives the same bytes.
          info = zipfile.ZipInfo(f"{split}/{folder.name}/{path.name}", date_time=(2026, 1, 1, 0, 0, 0))
          out.writestr(info, path.read_bytes())
          count += 1
  return count


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--source", default=None, help="the cifar10 folder (default: cifar10 in the data directory)")
  args = parser.parse_args(argv)
  root = Path(args.source) if args.source else sources.data_root() / "cifar10"
  n = build(root, sources.SAMPLE_ARCHIVES)
  size = sum(a.stat().st_size for a in sources.SAMPLE_ARCHIVES)
  print(f"{n} images -> {len(sources.SAMPLE_ARCHIVES)} archives in {sources.SAMPLE_DIR} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
