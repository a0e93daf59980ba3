"""Builds sslx/data/sample/cifar10.zip from the cifar10 folder (run once, output committed).

    python -m sslx.data.make_image_sample [--source DIR]  # Default: cifar10 in the data directory.

The first 200 train and the first 100 test images of each class (sorted file names), byte for
byte, stored uncompressed (JPEG does not compress further) as ``<split>/<class>/<file>``. One
archive rather than 3,000 files: the repository holds 2.8 MB of images, not 3,000 disk blocks.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from sslx.data import sources

PER_CLASS = {"train": 200, "test": 100}


def build(source_root: Path, archive: Path) -> int:
  count = 0
  with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as out:
    for split, per_class in PER_CLASS.items():
      for folder in sorted(p for p in (source_root / split).iterdir() if p.is_dir()):
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
  n = build(root, sources.SAMPLE_ARCHIVE)
  print(f"{n} images -> {sources.SAMPLE_ARCHIVE} ({sources.SAMPLE_ARCHIVE.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
  main()
