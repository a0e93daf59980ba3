"""Where does the sound come from? Sound localisation on held-out talking faces, for a run
trained with AVOL-Net (Arandjelovic & Zisserman, "Objects that Sound", ECCV 2018;
sslx/pretexts/audiovisual/localization.py).

    sslx-localization --workdir DIR --boxes benchmarks/grid_mouth_boxes.csv
        [--dataset folder:grid_av_vid2speech --splits train,test] [--name NAME]

Every clip of the evaluated splits gives ``evaluate.num_clips`` windows spread evenly over it
(the host's evaluation sampling, sslx/data/video.py), each the frame the network sees in
training (the middle frame, centre crop) and ``pretext.audio_seconds`` of audio centred on it.
For each window, the network's map of the frame with its own audio (the calibrated similarity
of every location with the sound, ``Head.logit_map``) is compared with the speaker's mouth:

- **Peak in mouth box**: how often the map's maximum falls on a cell whose centre lies inside
  the clip's mouth box (a tie between several maximal cells counts the share of them inside).
- **Sigmoid mass in mouth box**: the share of the map's summed sigmoid inside the box.
- **Chance**: the share of the map's cells inside the box, averaged over windows: what a
  uniformly random peak (or a flat map) scores.

Both measures are given for the checkpoint and for the same model at random initialisation
(seed ``evaluate.seed``, drawn with JAX's rbg generator). The paper shows its localisation maps
qualitatively; GRID's one speaker per clip gives a box to count against. Writes
DIR/eval/localization[-NAME].json and .md, and DIR/pictures/localization[-NAME].png: for up to
``PICTURE_CLIPS`` clips (columns), the middle window's frame with its mouth box (green), then the
pretrained map and the random-init map over it (rows), each map's sigmoid scaled to its own
minimum and maximum (blue low, red high). ``sslx-pictures`` cannot show these: it feeds a
pretext still images, without sound.

**Mouth boxes** (``--boxes``, a CSV with columns ``file,top,left,height,width``: the clip's file
name and one box as fractions of the ORIGINAL full frame, before ``video.region`` and resizing)
are data about specific clips, so they live outside the package; the evaluation maps each box
through the host's region crop, resize and centre crop into the map's grid (``box_on_map``).
benchmarks/grid_mouth_boxes.csv was made with ``estimate_mouth_box`` on every clip (its
``write_mouth_boxes``) and checked by looking at each box drawn on its clip's middle frame: all
boxes sit on the lips, none needed a correction. One box per clip covers the lips over the
whole clip, as the speaker's head barely moves.
"""

from __future__ import annotations

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from absl import flags

from sslx import checkpoints, run
from sslx.data import sources, video
from sslx.evaluate import common
from sslx.montage import montage
from sslx.pretexts.audiovisual import correspondence

BOX_COLUMNS = ("file", "top", "left", "height", "width")
PICTURE_CLIPS = 8  # Clips (columns) in the heatmap picture.
PICTURE_SCALE = 3  # Each tile's frame is upscaled this much.

# ---------------------------------------------------------------------------- mouth boxes

# Where estimate_mouth_box looks for the mouth, (top, left, height, width) of the full frame:
# the lower middle of a GRID frame, where the head and mouth are centred.
MOUTH_SEARCH = (0.45, 0.25, 0.5, 0.5)


def estimate_mouth_box(frames: np.ndarray, *, search=MOUTH_SEARCH, level: float = 0.3,
                       margin: float = 0.25) -> tuple[float, float, float, float]:
  """A talking face's mouth, ``(top, left, height, width)`` as fractions of the frame, from a
  clip's frames ``(T, H, W, 3)`` uint8 at full resolution.

  Lips are where the face both moves and is red: the per-pixel mean absolute difference
  between consecutive grey frames (speech moves the lips, blinks the eyes, the head its
  outline) times the redness of the mean frame (Lab a* above its median: lips, ears), each
  blurred (sigma 1 % of the width) and scaled to its maximum. The mouth is the connected
  region around the product's peak inside ``search`` where it exceeds ``level`` times the
  peak (raised in steps of 0.05 while the region is taller than wide, so that a nose or chin
  joined to it is cut off), widened by ``margin`` of its size on each side."""
  import cv2
  frames = np.asarray(frames)
  height, width = frames.shape[1:3]
  grey = frames.astype(np.float32).mean(axis=-1)
  motion = np.abs(np.diff(grey, axis=0)).mean(axis=0)
  redness = np.mean([cv2.cvtColor(f, cv2.COLOR_RGB2LAB)[..., 1] for f in frames[::8]], axis=0)
  redness = np.maximum(redness - np.median(redness), 0.0)
  sigma = 0.01 * width
  score = (cv2.GaussianBlur(motion / max(motion.max(), 1e-6), (0, 0), sigma)
           * cv2.GaussianBlur(redness / max(redness.max(), 1e-6), (0, 0), sigma) ** 2)
  top, left, box_h, box_w = search
  inside = np.zeros_like(score)
  rows = slice(int(top * height), int((top + box_h) * height))
  cols = slice(int(left * width), int((left + box_w) * width))
  inside[rows, cols] = score[rows, cols]
  peak = np.unravel_index(np.argmax(inside), inside.shape)
  while True:
    _, labels = cv2.connectedComponents((inside >= level * inside[peak]).astype(np.uint8))
    ys, xs = np.nonzero(labels == labels[peak])
    if ys.max() - ys.min() <= xs.max() - xs.min() or level >= 0.95:
      break
    level += 0.05
  y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
  dy, dx = margin * (y1 - y0), margin * (x1 - x0)
  y0, y1, x0, x1 = max(y0 - dy, 0), min(y1 + dy, height), max(x0 - dx, 0), min(x1 + dx, width)
  return (y0 / height, x0 / width, (y1 - y0) / height, (x1 - x0) / width)


def write_mouth_boxes(paths, out_path: str, *, comment: str = "") -> dict[str, tuple]:
  """``estimate_mouth_box`` of every clip in ``paths`` (decoded at 25 fps, full resolution),
  written as a boxes CSV (``BOX_COLUMNS``, 4 decimals; ``comment`` lines first, each after a
  '#'); returns {file name: box}. Clips are named by file name, which must be unique."""
  boxes = {}
  for path in paths:
    name = os.path.basename(str(path))
    if name in boxes:
      raise ValueError(f"two clips are named {name}: boxes are keyed by file name, give clips with distinct names")
    decoded = video.decode(str(path), fps=25.0, resize_size=None)
    if decoded is None:
      raise ValueError(f"cannot decode {path}: give clips PyAV can read")
    boxes[name] = estimate_mouth_box(decoded[0])
  with open(out_path, "w", newline="") as f:
    for line in comment.splitlines():
      f.write(f"# {line}\n")
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(BOX_COLUMNS)
    for name, box in sorted(boxes.items()):
      writer.writerow([name] + [f"{v:.4f}" for v in box])
  return boxes


def read_boxes(path: str) -> dict[str, tuple[float, float, float, float]]:
  """A boxes CSV -> {clip file name: (top, left, height, width)}, fractions of the full frame."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no boxes file {path}: pass --boxes with a CSV of columns {','.join(BOX_COLUMNS)}")
  boxes = {}
  with open(path, newline="") as f:
    reader = csv.DictReader(row for row in f if not row.startswith("#"))
    missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
      raise ValueError(f"boxes file {path} lacks columns {missing}: give a header {','.join(BOX_COLUMNS)}")
    for row in reader:
      box = tuple(float(row[c]) for c in BOX_COLUMNS[1:])
      top, left, height, width = box
      if min(box) < 0 or height <= 0 or width <= 0 or top + height > 1 + 1e-6 or left + width > 1 + 1e-6:
        raise ValueError(f"boxes file {path}: the box of {row['file']} {box} is not inside the frame: give "
                         f"top, left, height, width as fractions with top + height <= 1 and left + width <= 1")
      boxes[row["file"]] = box
  return boxes


def frame_size(path: str) -> tuple[int, int]:
  """A clip's decoded frame size (height, width), from its first frame."""
  import av
  with av.open(path) as container:
    frame = next(container.decode(container.streams.video[0]))
    return frame.height, frame.width


def box_on_map(box, *, frame_hw: tuple[int, int], region, resize_size: int | None, image_size: int,
               grid: tuple[int, int]) -> tuple[float, float, float, float]:
  """A box (top, left, height, width; fractions of the original frame) in the map's cell units,
  ``(top, left, bottom, right)``, through the host's steps (sslx/data/video.py): the
  ``region`` crop (``crop_region``), the resize of the shorter side to ``resize_size``
  (``resize_shorter_side``), the centre ``image_size`` crop, then ``grid`` (rows, columns)
  cells over that crop. Cell (i, j) spans [i, i + 1) x [j, j + 1); values outside [0, grid)
  are parts of the box the network does not see."""
  height, width = frame_hw
  if region is None:
    y0 = x0 = 0
  else:
    y0, x0 = int(round(region[0] * height)), int(round(region[1] * width))
  # The sizes the host's own functions give (their rounding), from an empty frame of the clip's size.
  cropped = video.crop_region(np.zeros((height, width, 1), np.uint8), region).shape[:2]
  resized = video.resize_shorter_side(np.zeros(cropped + (1,), np.uint8), resize_size or image_size).shape[:2]
  scale_y, scale_x = resized[0] / cropped[0], resized[1] / cropped[1]
  crop_top, crop_left = (resized[0] - image_size) // 2, (resized[1] - image_size) // 2
  top, left, box_h, box_w = box
  cell_y, cell_x = grid[0] / image_size, grid[1] / image_size

  def along(start, size, offset, scale, crop, cell, full):
    first = ((start * full - offset) * scale - crop) * cell
    last = (((start + size) * full - offset) * scale - crop) * cell
    return first, last

  y_first, y_last = along(top, box_h, y0, scale_y, crop_top, cell_y, height)
  x_first, x_last = along(left, box_w, x0, scale_x, crop_left, cell_x, width)
  return (y_first, x_first, y_last, x_last)


def cells_in_box(rect, grid: tuple[int, int]) -> np.ndarray:
  """``(rows, columns)`` bool: the cells whose centre lies inside ``rect`` = (top, left,
  bottom, right) in cell units."""
  top, left, bottom, right = rect
  centres_y, centres_x = np.arange(grid[0]) + 0.5, np.arange(grid[1]) + 0.5
  return (((centres_y >= top) & (centres_y < bottom))[:, None]
          & ((centres_x >= left) & (centres_x < right))[None, :])


def score_maps(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
  """Logit maps ``(N, h, w)`` against box masks ``(N, h, w)``: the share of windows whose
  peak lies in the box (ties: the share of the maximal cells inside) and the mean share of
  the sigmoid's sum inside the box."""
  maps = np.asarray(maps, np.float64)
  masks = np.asarray(masks, bool)
  flat, inside = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
  top = flat >= flat.max(axis=1, keepdims=True)
  peak = (top & inside).sum(axis=1) / top.sum(axis=1)
  probability = 0.5 * (1.0 + np.tanh(flat / 2))  # The sigmoid, without overflow.
  mass = (probability * inside).sum(axis=1) / np.maximum(probability.sum(axis=1), 1e-12)
  return {"peak_in_box": float(peak.mean()), "mass_in_box": float(mass.mean())}


# ---------------------------------------------------------------------------- the network's maps


def _logit_map(model, inputs):
  """The AVOL head's map for standardised inputs, through the whole audio-visual model."""
  visual = model.backbone(inputs["image"], train=False)
  heard = model.audio(inputs["audio"], train=False)
  return model.head.logit_map(visual, heard)


def map_fn(config, model):
  """Jitted (variables, uint8 windows (N, T, H, W, 3), audio (N, A)) -> logit maps (N, h, w):
  each window's middle frame with its own centred audio, as the training step sees them."""
  cfg = config.pretext
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def maps(variables, windows, audio):
    frames = windows[:, windows.shape[1] // 2].astype(jnp.float32) / 255.0
    heard = correspondence.centre_audio(audio, cfg.audio_seconds, cfg.audio_model.sample_rate)
    inputs = run.standardize_inputs({"image": frames, "audio": heard}, mean, std)
    return model.apply(variables, inputs, method=_logit_map)

  return maps


def all_maps(maps, variables, windows, audio, *, batch_size: int) -> np.ndarray:
  """Every window's map, in batches of ``batch_size`` (the last one padded: one compilation)."""
  parts = []
  for start in range(0, len(windows), batch_size):
    stop = min(start + batch_size, len(windows))
    rows = np.minimum(np.arange(start, start + batch_size), len(windows) - 1)
    parts.append(np.asarray(maps(variables, jnp.asarray(windows[rows]), jnp.asarray(audio[rows])))[:stop - start])
  return np.concatenate(parts)


# ---------------------------------------------------------------------------- pictures


def _upscale(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  import cv2
  return cv2.resize(np.asarray(image, np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def heat_colours(values: np.ndarray) -> np.ndarray:
  """Values in [0, 1] ``(H, W)`` -> RGB in [0, 1]: blue (low) through green to red (high)."""
  v = np.clip(values, 0.0, 1.0)[..., None]
  return np.concatenate([np.clip(2 * v - 1, 0, 1), 1 - np.abs(2 * v - 1), np.clip(1 - 2 * v, 0, 1)], axis=-1)


def overlay(frame: np.ndarray, logit_map: np.ndarray | None, rect, grid: tuple[int, int], *,
            scale: int = PICTURE_SCALE) -> np.ndarray:
  """A uint8 frame ``(S, S, 3)`` upscaled ``scale`` times, with the map's sigmoid (scaled to its
  own range, upsampled bilinearly) blended over it when given, and the mouth box ``rect``
  (cells of a ``grid`` map) drawn in green: float RGB in [0, 1]."""
  size = (frame.shape[0] * scale, frame.shape[1] * scale)
  image = np.clip(_upscale(frame.astype(np.float32) / 255.0, size), 0.0, 1.0)
  if logit_map is not None:
    probability = 0.5 * (1.0 + np.tanh(np.asarray(logit_map, np.float64) / 2))
    low, high = probability.min(), probability.max()
    spread = (probability - low) / (high - low) if high > low else np.zeros_like(probability)
    image = 0.45 * image + 0.55 * heat_colours(_upscale(spread, size))
  pixels_y, pixels_x = size[0] / grid[0], size[1] / grid[1]
  y0, y1 = (int(round(np.clip(v * pixels_y, 0, size[0] - 1))) for v in (rect[0], rect[2]))
  x0, x1 = (int(round(np.clip(v * pixels_x, 0, size[1] - 1))) for v in (rect[1], rect[3]))
  green = np.array([0.1, 1.0, 0.1])
  image[y0:y1 + 1, [x0, x1]] = green
  image[[y0, y1], x0:x1 + 1] = green
  return image


def picture(frames, maps_pretrained, maps_random, rects) -> np.ndarray:
  """Columns: clips; rows: the frame with its mouth box, the pretrained map over it, the
  random-init map over it (a uint8 montage)."""
  rows = [[], [], []]
  for frame, trained, random_map, rect in zip(frames, maps_pretrained, maps_random, rects):
    grid = trained.shape
    rows[0].append(overlay(frame, None, rect, grid))
    rows[1].append(overlay(frame, trained, rect, grid))
    rows[2].append(overlay(frame, random_map, rect, grid))
  return montage(rows, border=2)


# ---------------------------------------------------------------------------- the evaluation


def markdown_table(results: dict) -> str:
  chance = 100 * results["chance"]
  lines = ["| measure | pretrained | random init | chance |", "|---|---|---|---|"]
  for key, name in (("peak_in_box", "peak in mouth box (%)"), ("mass_in_box", "sigmoid mass in mouth box (%)")):
    lines.append(f"| {name} | {100 * results['pretrained'][key]:.1f} | {100 * results['random_init'][key]:.1f} | "
                 f"{chance:.1f} |")
  return "\n".join(lines)


def _windows_with_files(config, split, *, dataset, data_dir, boxes: dict, boxes_path: str):
  """One split's evaluation windows and each window's clip file, after checking that every clip
  of the split has a mouth box (before anything is decoded). No labels are read: none are needed."""
  source = sources.from_config(config, split, dataset=dataset, data_dir=data_dir, labels=False)
  paths = getattr(source, "paths", None)
  if paths is None:
    raise ValueError(f"dataset {dataset} has no clip files to match mouth boxes to: evaluate a folder of clips")
  lacking = [os.path.basename(p) for p in paths if os.path.basename(p) not in boxes]
  if lacking:
    raise ValueError(f"{boxes_path} has no mouth box for {len(lacking)} of the {len(paths)} clips of {dataset} "
                     f"{split} (e.g. {lacking[0]}): add rows {','.join(BOX_COLUMNS)} for them")
  windows, audio, clip, slot, skipped = common.av_windows(source, config, batch_size=config.evaluate.batch_size)
  return windows, audio, [paths[c] for c in clip], slot, skipped


def evaluate(workdir: str, *, boxes: str, dataset: str | None = None, data_dir: str | None = None,
             splits: tuple[str, ...] | None = None, name: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = common.apply_overrides(loaded.config, overrides or {}, "sslx-localization")
  if config.pretext.name != "audiovisual.localization":
    raise ValueError(f"{workdir} was trained with {config.pretext.name}, which has no localisation map: "
                     f"evaluate a run of audiovisual.localization")
  known = read_boxes(boxes)
  cfg = config.evaluate
  dataset = dataset or cfg.get("dataset") or config.dataset
  splits = tuple(splits or (cfg.test_split,))
  parts = [_windows_with_files(config, split, dataset=dataset, data_dir=data_dir, boxes=known, boxes_path=boxes)
           for split in splits]
  windows, audio = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
  files, slot = [f for p in parts for f in p[2]], np.concatenate([p[3] for p in parts])
  _, model = run.build_model(config)
  samples = int(round(config.pretext.audio_seconds * config.pretext.audio_model.sample_rate))
  inputs = {"image": jnp.zeros((2, config.image_size, config.image_size, 3)), "audio": jnp.zeros((2, samples))}
  # The rbg generator: the same initialisers, compiled in seconds on a CPU (threefry's init of
  # the small ConvNet compiles for ~15 s).
  random_init = run.jit_once(lambda rng: model.init(rng, inputs, train=False))(jax.random.key(cfg.seed, impl="rbg"))
  maps = map_fn(config, model)
  computed = {}
  trained = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  for label, variables in (("pretrained", trained), ("random_init", random_init)):
    # On the host, both sets: one compilation of the map serves them.
    variables = jax.device_get({"params": variables["params"], "batch_stats": variables.get("batch_stats", {})})
    computed[label] = all_maps(maps, variables, windows, audio, batch_size=cfg.batch_size)
  grid = computed["pretrained"].shape[1:]
  region = config.video.get("region")
  rect_of = {f: box_on_map(known[os.path.basename(f)], frame_hw=frame_size(f), region=region,
                           resize_size=config.get("resize_size"), image_size=config.image_size, grid=grid)
             for f in dict.fromkeys(files)}
  rects = [rect_of[f] for f in files]
  masks = np.stack([cells_in_box(r, grid) for r in rects])
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "splits": list(splits), "boxes": os.path.abspath(boxes), "clips": len(rect_of),
             "windows": len(files), "num_clips": cfg.get("num_clips", 1), "skipped": int(sum(p[4] for p in parts)),
             "map_size": list(grid), "chance": float(masks.mean())}
  for label, logit_maps in computed.items():
    results[label] = score_maps(logit_maps, masks)
  # The picture: the middle window of up to PICTURE_CLIPS clips spread over the evaluated ones.
  order = list(rect_of)
  shown = [order[i] for i in np.unique(np.linspace(0, len(order) - 1, min(PICTURE_CLIPS, len(order))).astype(int))]
  middle = cfg.get("num_clips", 1) // 2
  picks = [next(i for i, (f, s) in enumerate(zip(files, slot)) if f == clip and s == min(middle, slot.max()))
           for clip in shown]
  frames = windows[picks, windows.shape[1] // 2]
  image = picture(frames, computed["pretrained"][picks], computed["random_init"][picks], [rects[i] for i in picks])
  stem = "localization" + (f"-{name}" if name else "")
  out_dir = os.path.join(workdir, "pictures")
  os.makedirs(out_dir, exist_ok=True)
  results["picture"] = os.path.join(out_dir, f"{stem}.png")
  PIL.Image.fromarray(image).save(results["picture"])
  results["picture_clips"] = [os.path.basename(f) for f in shown]
  return common.write_results(
      workdir, stem, results, table=markdown_table(results),
      title=f"Sound localisation, {dataset} {'+'.join(splits)}, checkpoint step {loaded.step}: {results['clips']} "
            f"clips, {results['windows']} windows, {grid[0]}x{grid[1]} maps; mouth boxes from {boxes}")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_string("boxes", None, "CSV of mouth boxes, columns file,top,left,height,width (fractions of the "
                      "original frame), one row per evaluated clip; e.g. benchmarks/grid_mouth_boxes.csv.")
  common.define_split_flags("localization")


USAGE = """Usage: sslx-localization --workdir=DIR --boxes=CSV [--dataset=SPEC] [--splits=a,b] [--name=NAME]

Sound localisation of an AVOL-Net run: how often the map's peak falls in the speaker's mouth box,
pretrained against random init and chance. Writes DIR/eval/localization[-NAME].json and the
heatmaps DIR/pictures/localization[-NAME].png.
"""


def _main(args, overrides):
  if not args.boxes:
    raise ValueError("--boxes is required: a CSV of mouth boxes, e.g. benchmarks/grid_mouth_boxes.csv")
  results = evaluate(args.workdir, boxes=args.boxes, dataset=args.dataset, data_dir=args.data_dir,
                     splits=tuple(args.splits) if args.splits else None, name=args.name, overrides=overrides)
  print(f"\nSound localisation on {results['dataset']} {'+'.join(results['splits'])} (checkpoint step "
        f"{results['checkpoint_step']}; {results['clips']} clips, {results['windows']} windows, "
        f"{results['map_size'][0]}x{results['map_size'][1]} maps)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}; heatmaps: {results['picture']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-localization", _main, usage=USAGE, flag_names=("boxes", "splits", "name"))


if __name__ == "__main__":
  cli_main()
