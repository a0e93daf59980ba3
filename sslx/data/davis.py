"""DAVIS-format video object segmentation sequences: ``<root>/<seq>/frames/*.jpg`` and
``<root>/<seq>/masks/*.png``, one mask per frame with the same stem (DAVIS 2016: a binary
object mask, 0 background and 255 object; any non-zero value is taken as object).

For label propagation (sslx/evaluate/propagate.py). A sequence whose frame or mask cannot be
read, or whose frames and masks do not pair up, is skipped and named, never half-evaluated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class Sequence:
  name: str
  frames: np.ndarray  # (T, H, W, 3) uint8.
  masks: np.ndarray  # (T, H, W) bool.


def sequence_names(root: str | Path) -> list[str]:
  """The sequence folders under ``root`` (those with ``frames/`` and ``masks/``), sorted."""
  root = Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"DAVIS folder {root} not found: point --dataset at a folder of "
                            f"<sequence>/frames and <sequence>/masks")
  names = sorted(p.name for p in root.iterdir() if (p / "frames").is_dir() and (p / "masks").is_dir())
  if not names:
    raise FileNotFoundError(f"no sequence in {root}: a DAVIS folder holds <sequence>/frames/*.jpg and "
                            f"<sequence>/masks/*.png")
  return names


def load_sequence(root: str | Path, name: str) -> Sequence:
  """One sequence's frames and masks, in file-name order; ValueError (one line) when they do
  not pair up or a file cannot be decoded."""
  folder = Path(root) / name
  frames = sorted(p for p in (folder / "frames").iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
  masks = {p.stem: p for p in (folder / "masks").iterdir() if p.suffix.lower() == ".png"}
  unpaired = [p.name for p in frames if p.stem not in masks]
  if len(frames) < 3 or unpaired:
    raise ValueError(f"{name}: {len(frames)} frames, {len(unpaired)} without a mask "
                     f"({', '.join(unpaired[:3])}); a sequence needs 3 or more frames, each with a mask")
  images, labels = [], []
  for path in frames:
    try:
      with Image.open(path) as img:
        images.append(np.asarray(img.convert("RGB")))
      with Image.open(masks[path.stem]) as img:
        labels.append(np.asarray(img.convert("L")) > 0)
    except (OSError, UnidentifiedImageError) as e:
      raise ValueError(f"{name}: cannot read {path.name} or its mask ({e})") from None
  if len({a.shape[:2] for a in images + labels}) != 1:
    raise ValueError(f"{name}: frames and masks differ in size: every frame and mask must be one size")
  return Sequence(name, np.stack(images), np.stack(labels))


def load_sequences(root: str | Path, names=None) -> tuple[list[Sequence], dict[str, str]]:
  """The sequences (all, or those named) and {name: reason} for each one skipped."""
  available = sequence_names(root)
  names = available if not names else list(names)
  unknown = [n for n in names if n not in available]
  if unknown:
    raise ValueError(f"no sequence {unknown[0]!r} in {root}: choose among {', '.join(available)}")
  loaded, skipped = [], {}
  for name in names:
    try:
      loaded.append(load_sequence(root, name))
    except ValueError as e:
      skipped[name] = str(e)
  return loaded, skipped
