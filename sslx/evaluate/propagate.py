"""Label propagation on DAVIS-format sequences through a backbone's dense features.

    sslx-propagate --workdir DIR [--dataset folder:davis2016] [--config.evaluate.propagation.KEY=VALUE]

The evaluation of Vondrick et al. (ECCV 2018) in the form later work fixed (Jabri et al.,
NeurIPS 2020; Li et al., NeurIPS 2019): the first frame's object mask is given, and every later
frame's mask is propagated from the first frame and the ``context`` (20) frames before it:

- Frames are resized so that their shorter side is ``size`` px (the longer one rounded to a
  multiple of 8) and encoded by the frozen backbone; the features are the map of ``block``
  (default: the deepest block whose stride is at most 8), L2-normalised per location.
- Each location of the target frame looks at the locations of every context frame within
  ``radius`` cells (a square window), keeps the ``top_k`` (10) most similar over all of them,
  weights them by a softmax of cosine similarity / ``temperature`` and averages their label
  distributions (the first frame's: its mask, area-averaged to the feature grid; the others':
  what was propagated to them).
- The label map is upsampled bilinearly to the frame's size; the object is where its label
  wins. Scored per sequence with the DAVIS measures: J, the region IoU, and F, the boundary
  F-measure (boundaries matched within 0.8% of the image diagonal), each averaged over the
  frames but the first and the last (as the DAVIS-2016 evaluation does); J&F is their mean.

Beside the run's backbone: the same backbone at random init, raw pixels (CIE Lab, divided by
``pixel_scale``, area-averaged to the same grid, through the same propagation with similarity
-||x - y||^2 / 2, which equals the cosine less 1 for unit vectors), and the identity baseline
(the first mask copied to every frame). Pictures of the propagated masks over the frames go to
DIR/eval/propagate/<sequence>.jpg. Never train on the sequences evaluated here.

Writes DIR/eval/propagate.json and .md.
"""

from __future__ import annotations

import functools
import os

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import checkpoints, models, run
from sslx.data import davis, sources
from sslx.evaluate import common
from sslx.montage import montage
from sslx.pretexts.image import colorization

METHODS = ("pretrained", "random_init", "pixels", "identity")


def default_settings() -> ml_collections.ConfigDict:
  """``config.evaluate.propagation``: a stored config without it gets these."""
  return ml_collections.ConfigDict({
      "dataset": "folder:davis2016",  # A folder of <sequence>/{frames,masks}, in the data directory.
      "sequences": "",  # Comma-separated names; "" = all.
      "max_frames": 0,  # The first n frames of each sequence only (a quick look); 0 = all.
      "size": 160,  # Shorter side of the frames the backbone sees, px.
      "block": "",  # Feature map; "" = the deepest block with stride <= 8.
      "context": 20,  # Previous frames propagated from, besides the first.
      "top_k": 10,
      "temperature": 0.07,
      "radius": 8,  # Feature cells, a square window around each location.
      "pixel_scale": 20.0,  # Raw-pixel baseline: Lab / this (20 Lab units: a distance of 1).
      "pictures": 6,  # Frames shown per sequence (0: no pictures).
  })


# ------------------------------------------------------------------ the measures


def region_similarity(predicted, truth) -> float:
  """J: intersection over union of two boolean masks; 1 when both are empty (DAVIS)."""
  union = np.logical_or(predicted, truth).sum()
  return 1.0 if union == 0 else float(np.logical_and(predicted, truth).sum() / union)


def boundary(mask):
  """The object's boundary pixels: object pixels with a background 4-neighbour (outside the
  frame counts as background)."""
  padded = np.pad(mask, 1, constant_values=False)
  inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
  return mask & ~inner


def boundary_f_measure(predicted, truth, bound_th: float = 0.008) -> float:
  """F: the F-measure of boundary precision and recall, a boundary pixel matching when the other
  boundary lies within ``ceil(bound_th * diagonal)`` px (a disc; DAVIS's 0.008); 1 when both
  masks are empty, 0 when one is."""
  pred_b, true_b = boundary(predicted), boundary(truth)
  if not pred_b.any() and not true_b.any():
    return 1.0
  if not pred_b.any() or not true_b.any():
    return 0.0
  radius = int(np.ceil(bound_th * np.hypot(*predicted.shape)))
  disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
  near_true = cv2.dilate(true_b.astype(np.uint8), disc) > 0
  near_pred = cv2.dilate(pred_b.astype(np.uint8), disc) > 0
  precision = (pred_b & near_true).sum() / pred_b.sum()
  recall = (true_b & near_pred).sum() / true_b.sum()
  return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def score_sequence(predicted, truth) -> dict:
  """Per-sequence J, F and J&F over frames 1 ... T-2 (the first is given, the last excluded)."""
  frames = range(1, len(truth) - 1)
  j = float(np.mean([region_similarity(predicted[t], truth[t]) for t in frames]))
  f = float(np.mean([boundary_f_measure(predicted[t], truth[t]) for t in frames]))
  return {"J": j, "F": f, "J&F": (j + f) / 2}


# ------------------------------------------------------------------ propagation


TILE = 8  # Target cells are scored in TILE x TILE tiles against a shared context window.


def tiling(height: int, width: int, radius: int, tile: int = TILE):
  """How ``propagate_frame`` scores only the cells within ``radius``: the ``height x width`` grid
  cut into ``tile x tile`` target tiles, each with a ``(tile + 2 radius)``-sided context window.

  Returns (target_index ``(T, P)``, target_inside ``(T, P)``, window_index ``(T, Q)``, pair_valid
  ``(T, P, Q)``): the flat grid index of every tile cell and window cell (0 outside the grid),
  and whether window cell q is a neighbour of tile cell p (inside the grid, within ``radius`` in
  both axes, a square window)."""
  tiles_y, tiles_x = -(-height // tile), -(-width // tile)
  side = tile + 2 * radius
  ty, tx = [a.ravel() for a in np.meshgrid(np.arange(tiles_y), np.arange(tiles_x), indexing="ij")]
  py, px = [a.ravel() for a in np.meshgrid(np.arange(tile), np.arange(tile), indexing="ij")]
  qy, qx = [a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side), indexing="ij")]
  cell_y, cell_x = ty[:, None] * tile + py[None], tx[:, None] * tile + px[None]
  target_inside = (cell_y < height) & (cell_x < width)
  win_y, win_x = ty[:, None] * tile - radius + qy[None], tx[:, None] * tile - radius + qx[None]
  window_inside = (win_y >= 0) & (win_y < height) & (win_x >= 0) & (win_x < width)
  dy = (qy[None, :] - radius) - py[:, None]  # (P, Q): window cell's row minus the tile cell's.
  dx = (qx[None, :] - radius) - px[:, None]
  near = (np.abs(dy) <= radius) & (np.abs(dx) <= radius)
  pair_valid = window_inside[:, None, :] & near[None] & target_inside[:, :, None]
  return (np.where(target_inside, cell_y * width + cell_x, 0).astype(np.int32), target_inside,
          np.where(window_inside, win_y * width + win_x, 0).astype(np.int32), pair_valid)


@functools.partial(jax.jit, static_argnames=("top_k", "num_cells"), donate_argnums=(1, 2))
def propagate_step(target, windows, window_labels, context_valid, slot, target_index, destination,
                   window_index, pair_valid, *, top_k: int, temperature: float, num_cells: int):
  """One frame's labels from its context, and the context with this frame in ``slot``.

  ``target`` ``(N, D)`` features; ``windows`` ``(T, C, Q, D + 1)`` and ``window_labels`` ``(T, C,
  Q, K)``: each context frame's keys (``keys``) and labels in every tile's window (updated in
  place); ``context_valid`` ``(C,)`` (slots not yet filled are False); ``target_index``,
  ``window_index`` and ``pair_valid`` from ``tiling``, ``destination`` the grid cell of each
  tile cell (``num_cells`` when outside). Similarity -||x - y||^2 / 2 (the cosine less 1 for
  unit features) to every neighbour in every context frame; the ``top_k`` best over all of
  them, softmax-weighted at ``temperature``. Returns ``(N, K)`` labels and the two windows."""
  target = target.astype(jnp.float32)
  queries = jnp.concatenate([target, jnp.ones_like(target[:, :1])], axis=-1)[target_index]  # (T, P, D + 1)
  tiles, num_context, window, dim = windows.shape
  # x . y - |y|^2 / 2 differs from -||x - y||^2 / 2 by |x|^2 / 2, the same for all of x's
  # candidates: the top-k and the softmax over them are unchanged.
  similarity = jnp.einsum("tpd,tkd->tpk", queries, windows.reshape(tiles, num_context * window, dim),
                          precision=jax.lax.Precision.HIGHEST)
  bias = jnp.where(pair_valid[:, :, None, :] & context_valid[None, None, :, None], 0.0, -jnp.inf)
  best, which = jax.lax.top_k(similarity + bias.reshape(similarity.shape), top_k)  # (T, P, k)
  num_labels = window_labels.shape[-1]
  picked = jnp.take_along_axis(window_labels.reshape(tiles, 1, num_context * window, num_labels),
                               which[..., None], axis=2)  # (T, P, k, K)
  tiled = jnp.einsum("tpk,tpkc->tpc", jax.nn.softmax(best / temperature, axis=-1), picked)
  labels = jnp.zeros((num_cells, num_labels), jnp.float32).at[destination].set(
      tiled.reshape(-1, num_labels), mode="drop")
  windows = windows.at[:, slot].set(keys(target)[window_index])
  window_labels = window_labels.at[:, slot].set(labels[window_index])
  return labels, windows, window_labels


def keys(features):
  """``(N, D)`` -> ``(N, D + 1)``: the features and -|y|^2 / 2, so that a query [x, 1] scores x . y - |y|^2 / 2."""
  return jnp.concatenate([features, -0.5 * jnp.sum(features ** 2, axis=-1, keepdims=True)], axis=-1)


def propagate(features, first_labels, *, context: int, top_k: int, temperature: float, radius: int):
  """``(T, h, w, D)`` features and the first frame's ``(h, w, K)`` label distribution -> ``(T, h, w,
  K)``: frame 0 keeps its labels; frame t is propagated from frame 0 and frames max(1, t - context)
  ... t - 1 (their propagated labels)."""
  num_frames, h, w, dim = features.shape
  flat = jnp.asarray(features.reshape(num_frames, h * w, dim), jnp.float32)
  target_index, target_inside, window_index, pair_valid = tiling(h, w, radius)
  k = min(top_k, (context + 1) * int(pair_valid.sum(-1).max()))
  first = jnp.asarray(first_labels.reshape(h * w, -1), jnp.float32)
  # Slot 0 holds the first frame; slots 1 ... context a ring of the last frames (one spare slot,
  # never valid, when context is 0, so that every step has the same shapes).
  slots = 1 + max(context, 1)
  tiles, window = window_index.shape
  windows = jnp.zeros((tiles, slots, window, dim + 1), jnp.float32).at[:, 0].set(keys(flat[0])[window_index])
  window_labels = jnp.zeros((tiles, slots, window, first.shape[-1]), jnp.float32).at[:, 0].set(first[window_index])
  valid = np.zeros(slots, bool)
  valid[0] = True
  destination = jnp.asarray(np.where(target_inside, target_index, h * w).reshape(-1))
  constants = dict(target_index=jnp.asarray(target_index), destination=destination,
                   window_index=jnp.asarray(window_index), pair_valid=jnp.asarray(pair_valid))
  out = [np.asarray(first)]
  for t in range(1, num_frames):
    slot = 1 + (t - 1) % context if context else 1
    labels, windows, window_labels = propagate_step(
        flat[t], windows, window_labels, jnp.asarray(valid), jnp.int32(slot), **constants, top_k=k,
        temperature=float(temperature), num_cells=h * w)
    out.append(np.asarray(labels))
    valid[slot] = bool(context)
  return np.stack(out).reshape(num_frames, h, w, -1)


# ------------------------------------------------------------------ features


def input_size(height: int, width: int, size: int) -> tuple[int, int]:
  """(height, width) with the shorter side ``size`` and both sides multiples of 8."""
  scale = size / min(height, width)
  return max(8, int(round(height * scale / 8)) * 8), max(8, int(round(width * scale / 8)) * 8)


def resize_frames(frames, shape):
  """uint8 ``(T, H, W, 3)`` -> ``(T, h, w, 3)`` (area averaging when shrinking)."""
  h, w = shape
  return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if h < f.shape[0] else cv2.INTER_LINEAR)
                   for f in frames])


def area_average(maps, shape):
  """float ``(T, H, W, C)`` -> ``(T, h, w, C)``, area-averaged."""
  h, w = shape
  out = [cv2.resize(np.asarray(m, np.float32), (w, h), interpolation=cv2.INTER_AREA) for m in maps]
  return np.stack([o.reshape(h, w, -1) for o in out])


def choose_block(features: dict, input_height: int, block: str) -> str:
  """The named block, or the deepest with a stride of at most 8."""
  names = models.block_names(features)
  if block:
    if block not in names:
      raise ValueError(f"no block {block!r} in this backbone: choose among {', '.join(names)}")
    return block
  fine = [n for n in names if features[n].ndim == 4 and input_height / features[n].shape[1] <= 8]
  if not fine:
    raise ValueError("no block of this backbone has a 2D map of stride 8 or finer: set "
                     "--config.evaluate.propagation.block")
  return fine[-1]


def backbone_features_fn(backbone, config):
  """A jitted uint8 frames ``(T, h, w, 3)`` -> {block: (T, h', w', C)} maps as trained."""
  to_input = run.backbone_input_fn(config)

  @jax.jit
  def features(variables, frames):
    maps = backbone.apply(variables, to_input(frames), train=False)
    return {name: maps[name] for name in models.block_names(maps)}

  return features


def normalized(x):
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def pixel_features(frames, grid, scale: float):
  """Lab / ``scale`` of uint8 frames, area-averaged to ``grid``: ``(T, h', w', 3)``."""
  lab = np.asarray(colorization.rgb_to_lab(jnp.asarray(frames, jnp.float32) / 255.0))
  return area_average(lab / scale, grid)


def mask_labels(mask, grid):
  """A boolean mask -> ``(h', w', 2)`` (background, object) fractions of each cell."""
  fraction = area_average(mask[None, ..., None].astype(np.float32), grid)[0, ..., 0]
  return np.stack([1.0 - fraction, fraction], axis=-1)


def masks_from_labels(labels, shape):
  """``(T, h', w', 2)`` label distributions -> boolean ``(T, H, W)`` masks: bilinear upsampling,
  then the object where its share exceeds the background's."""
  h, w = shape
  return np.stack([cv2.resize(np.asarray(l[..., 1] - l[..., 0], np.float32), (w, h),
                              interpolation=cv2.INTER_LINEAR) > 0 for l in labels])


def overlay(frames, masks, truth):
  """Frames in [0, 1] with the propagated mask tinted red and the true mask's boundary in green."""
  out = frames.astype(np.float32) / 255.0
  red = np.array([1.0, 0.1, 0.1], np.float32)
  out = np.where(masks[..., None], 0.5 * out + 0.5 * red, out)
  edges = np.stack([cv2.dilate(boundary(m).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0 for m in truth])
  return np.where(edges[..., None], np.array([0.1, 1.0, 0.1], np.float32), out)


# ------------------------------------------------------------------ the script (shared with sslx-segment)


def open_sequences(dataset: str, data_dir, names: str, program: str, max_frames: int = 0):
  """The DAVIS-format sequences of ``folder:NAME`` (``names``: comma-separated, "" for all; each cut
  to its first ``max_frames`` frames when that is 3 or more) and {name: reason} for those skipped;
  one-line errors for another kind of dataset or none readable."""
  if not dataset.startswith("folder:"):
    raise ValueError(f"{program} reads a folder of DAVIS-format sequences, got --dataset {dataset}: pass "
                     f"folder:NAME (e.g. folder:davis2016)")
  root = sources.folder_path(dataset[len("folder:"):], data_dir)
  sequences, skipped = davis.load_sequences(root, [n for n in str(names).split(",") if n])
  if not sequences:
    raise ValueError(f"no sequence in {root} could be read: {skipped}")
  if max_frames:
    if max_frames < 3:
      raise ValueError(f"max_frames {max_frames}: give 0 (all frames) or 3 or more (the first and the last "
                       f"frame are not scored)")
    sequences = [davis.Sequence(q.name, q.frames[:max_frames], q.masks[:max_frames]) for q in sequences]
  return sequences, skipped


def save_overlays(path: str, seq, rows, count: int) -> None:
  """``count`` frames of ``seq`` spread between its second and last but one, one row per mask
  sequence in ``rows`` (``overlay``), as a JPEG."""
  picks = np.linspace(1, len(seq.masks) - 2, count).round().astype(int)
  small = input_size(*seq.masks.shape[1:], 120)
  tiles = [[resize_frames(overlay(seq.frames[[t]], masks[[t]], seq.masks[[t]]), small)[0] for t in picks]
           for masks in rows]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  cv2.imwrite(path, np.ascontiguousarray(montage(tiles)[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])


def mean_scores(per_sequence: dict, methods) -> dict:
  """{method: {"J", "F", "J&F"}}: each measure's mean over the sequences."""
  return {m: {k: float(np.mean([row[m][k] for row in per_sequence.values()])) for k in ("J", "F", "J&F")}
          for m in methods}




def settings_of(config) -> ml_collections.ConfigDict:
  settings = default_settings()
  stored = config.evaluate.get("propagation")
  if stored is not None:
    settings.update(stored.to_dict() if hasattr(stored, "to_dict") else dict(stored))
  return settings


def markdown_table(results: dict) -> str:
  methods = [m for m in METHODS if m in results["mean"]]
  lines = ["| sequence | " + " | ".join(f"{m} J / F / J&F" for m in methods) + " |",
           "|---|" + "---|" * len(methods)]
  rows = list(results["sequences"].items()) + [("**mean**", results["mean"])]
  for name, row in rows:
    cells = [f"{100 * row[m]['J']:.1f} / {100 * row[m]['F']:.1f} / {100 * row[m]['J&F']:.1f}" for m in methods]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = ml_collections.ConfigDict(loaded.config.to_dict())
  config.evaluate.propagation = settings_of(config)
  config = common.apply_overrides(config, overrides or {}, "sslx-propagate")
  cfg = config.evaluate.propagation
  dataset = dataset or cfg.dataset
  sequences, skipped = open_sequences(dataset, data_dir or config.get("data_dir"), cfg.sequences, "sslx-propagate",
                                      cfg.max_frames)

  backbone_fn = backbone_features_fn(loaded.backbone, config)
  variables = {"pretrained": loaded.variables,
               "random_init": run.random_init_variables(loaded.backbone, config, config.evaluate.seed)}
  settings = {"context": cfg.context, "top_k": cfg.top_k, "temperature": cfg.temperature, "radius": cfg.radius}
  picture_dir = os.path.join(workdir, "eval", "propagate")
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "settings": cfg.to_dict(), "skipped": skipped, "sequences": {}}
  for seq in sequences:
    shape = seq.masks.shape[1:]
    frames = resize_frames(seq.frames, input_size(*shape, cfg.size))
    row, shown = {}, {}
    for method in ("pretrained", "random_init"):
      maps = backbone_fn(variables[method], jnp.asarray(frames))
      block = choose_block(maps, frames.shape[1], cfg.block)
      features = normalized(maps[block])
      labels = propagate(features, mask_labels(seq.masks[0], features.shape[1:3]), **settings)
      shown[method] = masks_from_labels(labels, shape)
      row[method] = score_sequence(shown[method], seq.masks)
    grid = features.shape[1:3]
    labels = propagate(pixel_features(frames, grid, cfg.pixel_scale), mask_labels(seq.masks[0], grid), **settings)
    shown["pixels"] = masks_from_labels(labels, shape)
    row["pixels"] = score_sequence(shown["pixels"], seq.masks)
    row["identity"] = score_sequence(np.broadcast_to(seq.masks[0], seq.masks.shape), seq.masks)
    results["sequences"][seq.name] = row
    results["block"] = block
    if cfg.pictures:
      save_overlays(os.path.join(picture_dir, f"{seq.name}.jpg"), seq, [shown["pretrained"], shown["pixels"]],
                    cfg.pictures)
  results["mean"] = mean_scores(results["sequences"], METHODS)
  return common.write_results(
      workdir, "propagate", results, table=markdown_table(results),
      title=f"Label propagation, {dataset}, checkpoint step {loaded.step}, block {results['block']}: "
            f"{len(results['sequences'])} sequences (J / F / J&F, %)")


USAGE = """Usage: sslx-propagate --workdir=DIR [--dataset=folder:davis2016] [--config.evaluate.propagation.KEY=VALUE ...]

DAVIS label propagation through the run's dense features: the first frame's mask is propagated
to every later frame (context: the first and the last 20 frames; top-k 10; a spatial radius),
J, F and J&F per sequence for the run's backbone, its random init, raw Lab pixels and the
identity baseline. Writes DIR/eval/propagate.json and pictures under DIR/eval/propagate/.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, overrides=overrides)
  print(f"\nLabel propagation on {results['dataset']} (checkpoint step {results['checkpoint_step']}, "
        f"block {results['block']})\n")
  print(markdown_table(results))
  for name, reason in results["skipped"].items():
    print(f"skipped {name}: {reason}")
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  common.define_workdir_flags("A folder of DAVIS-format sequences; default: evaluate.propagation.dataset.")
  common.run_script("sslx-propagate", _main, usage=USAGE, flag_names=())


if __name__ == "__main__":
  cli_main()
