"""Image grids for pictures: plain numpy at the bottom layer, so pretexts and evaluate/ both use it."""

from __future__ import annotations

import numpy as np


def montage(rows, border: int = 1) -> np.ndarray:
  """``(R, C, H, W, 3)`` (or a list of R equal-length lists) of floats in [0, 1] -> one
  ``uint8`` image of R x C tiles separated by ``border`` white pixels.

  Greyscale tiles ``(..., H, W)`` or ``(..., H, W, 1)`` are repeated on three channels.
  """
  grid = np.asarray(rows, dtype=np.float32)
  if grid.ndim == 4:
    grid = grid[..., None]
  if grid.ndim != 5:
    raise ValueError(f"montage needs (rows, cols, H, W[, C]) images, got shape {grid.shape}")
  if grid.shape[-1] == 1:
    grid = np.repeat(grid, 3, axis=-1)
  r, c, h, w, _ = grid.shape
  out = np.ones((r * (h + border) + border, c * (w + border) + border, 3), np.float32)
  for i in range(r):
    for j in range(c):
      top, left = border + i * (h + border), border + j * (w + border)
      out[top:top + h, left:left + w] = grid[i, j]
  return (np.clip(out, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
