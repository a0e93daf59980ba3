"""Pictures from a checkpoint: what a pretext's network makes of real test images.

Each pretext that has something to show defines
``pictures(predict, images, *, rng, cfg) -> {name: (H, W, 3) uint8}``, where
``predict(inputs)`` runs the trained model (``train=False``) on inputs as
``make_inputs`` returns them and gives the head's outputs, and ``images`` are
real test images, float RGB in [0, 1]. This module turns those arrays into PNG
files (``sslx.montage`` lays out the grids). Every run also gets the pictures a reader of
any representation looks at first (as in the survey's figures): its backbone's first-layer
filters (a 3D kernel's middle slice in time), nearest-neighbour montages per block (test
queries and their nearest training examples, pretrained beside random init; a clip shows its
middle frame), the strongest activation maps per block, and the learning curves read back
from the run's TensorBoard logs (loss, pretext accuracy, learning rate, the kNN monitor).

    sslx-pictures --workdir DIR [--count 16] [--dataset folder:PATH] [--kinds neighbours,curves]
"""

from __future__ import annotations

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from absl import flags

from sslx import checkpoints, models, run
from sslx.data import pipeline, sources
from sslx.evaluate import common
from sslx.montage import montage


def first_layer_filters(params) -> np.ndarray | None:
  """The backbone's first convolution kernels as a montage, each filter scaled to [0, 1]
  on its own; None when the first layer is not a spatial convolution."""
  flat = flax.traverse_util.flatten_dict(params)
  kernels = [v for k, v in sorted(flat.items(), key=lambda kv: "/".join(map(str, kv[0])))
             if k[0] == "backbone" and k[-1] == "kernel" and np.ndim(v) in (4, 5)]
  if not kernels:
    return None
  # The first layer is the one whose input is the image: the fewest input channels, then the
  # shallowest name (block1 before block2 in every backbone here).
  kernel = np.asarray(min(kernels, key=lambda k: k.shape[-2]), np.float32)
  if kernel.ndim == 5:  # A 3D kernel (kt, kh, kw, in, out): its middle slice in time.
    kernel = kernel[kernel.shape[0] // 2]
  # (kh, kw, in, out) from here.
  if kernel.shape[2] not in (1, 3):
    kernel = kernel[:, :, :1]  # Two-channel (Sobel) inputs: show the first channel.
  tiles = np.moveaxis(kernel, -1, 0)  # (out, kh, kw, in)
  low = tiles.min(axis=(1, 2, 3), keepdims=True)
  high = tiles.max(axis=(1, 2, 3), keepdims=True)
  tiles = (tiles - low) / np.maximum(high - low, 1e-8)
  columns = int(np.ceil(np.sqrt(len(tiles))))
  blank = np.ones_like(tiles[0])
  padded = list(tiles) + [blank] * (columns * columns - len(tiles))
  grid = [padded[r * columns:(r + 1) * columns] for r in range(columns)]
  scale = max(4, -(-24 // tiles.shape[1]))  # At least 24 px a filter: 3x3 ones 8x, 7x7 ones 4x.
  grid = [[np.kron(t, np.ones((scale, scale, 1))) for t in row] for row in grid]
  return montage(grid)


def test_images(config, *, dataset: str | None, data_dir: str | None, count: int) -> np.ndarray:
  """``count`` test images spread evenly over the split, centre-cropped, float [0, 1]."""
  source = sources.from_config(config, config.evaluate.test_split,
                               dataset=dataset or config.evaluate.get("dataset"), data_dir=data_dir)
  preprocess = pipeline.Preprocess(image_size=config.image_size, resize_size=config.get("resize_size"),
                                   train=False)
  images = []
  spread = np.unique(np.linspace(0, len(source) - 1, min(count, len(source))).astype(int))
  # Unreadable images are replaced by others, still spread over the (often class-sorted) split.
  rest = np.setdiff1d(np.random.default_rng(0).permutation(len(source)), spread, assume_unique=True)
  for i in np.concatenate([spread, rest])[:4 * count]:
    record = preprocess(source[int(i)])
    if record is not None:
      images.append(record["image"])
    if len(images) == count:
      break
  if not images:
    raise ValueError("no readable test images: pass --dataset with images")
  return np.stack(images).astype(np.float32) / 255.0


def train_images(config, indices) -> np.ndarray:
  """Training images at the given source positions, centre-cropped, float [0, 1]
  (an unreadable one shows as grey)."""
  source = sources.from_config(config, config.train_split)
  preprocess = pipeline.Preprocess(image_size=config.image_size, resize_size=config.get("resize_size"),
                                   train=False)
  out = []
  for i in indices:
    record = preprocess(source[int(i)])
    out.append(np.full((config.image_size, config.image_size, 3), 128, np.uint8) if record is None
               else record["image"])
  return np.stack(out).astype(np.float32) / 255.0


def _scaled(tiles, side: int) -> np.ndarray:
  """(N, h, w, 3) float tiles repeated to at least ``side`` pixels a side (nearest neighbour)."""
  factor = max(1, -(-side // tiles.shape[1]))
  return np.repeat(np.repeat(tiles, factor, axis=1), factor, axis=2)


def thumbnails(config, source, indices) -> np.ndarray:
  """(N, S, S, 3) float [0, 1]: the records at ``indices`` as evaluation sees them (centre crops;
  a clip's middle frame), grey where one cannot be read."""
  preprocess = run.make_preprocess(config, source, train=False)
  key = run.media_key(config)
  out = []
  for i in indices:
    record = preprocess(source[int(i)])
    if record is None:
      out.append(np.full((config.image_size, config.image_size, 3), 128, np.uint8))
    else:
      media = np.asarray(record[key])
      out.append(media[len(media) // 2] if key == "video" else media)
  return np.stack(out).astype(np.float32) / 255.0


def nearest_neighbours(loaded, *, dataset: str | None, data_dir: str | None, queries: int, neighbours: int,
                       gallery: int | None = None) -> dict[str, np.ndarray]:
  """{"neighbours_<block>": montage}: for ``queries`` test examples spread over the split, a row
  of the query, its ``neighbours`` most cosine-similar training examples under the pretrained
  backbone, a blank, and the same under the backbone at random init. Features are the
  evaluations' pooled block features (sslx/evaluate/common.py); the gallery is the whole
  training split (or ``gallery`` examples spread over it)."""
  config = common.for_evaluation(loaded.config)
  cfg = config.evaluate
  dataset = dataset or cfg.get("dataset") or config.dataset
  opened = {split: sources.from_config(config, split, dataset=dataset, data_dir=data_dir, evaluation=True)
            for split in (cfg.train_split, cfg.test_split)}
  train_source = opened[cfg.train_split]
  if gallery:
    train_source = sources.SubsetSource.spread(train_source, gallery)
  test_source = sources.SubsetSource.spread(opened[cfg.test_split], queries)
  if neighbours > len(train_source):
    raise ValueError(f"{neighbours} neighbours asked but the gallery holds {len(train_source)}: lower --neighbours")
  fn = common.feature_fn(loaded.backbone, config, cfg.max_features)
  variables = {"pretrained": loaded.variables,
               "random_init": run.random_init_variables(loaded.backbone, config, cfg.seed)}
  mesh = run.make_mesh(jax.local_devices())
  fns = dict.fromkeys(variables, fn)
  gallery_f, _, _ = common.extract(train_source, config, fns, variables, batch_size=cfg.batch_size, mesh=mesh)
  query_f, _, _ = common.extract(test_source, config, fns, variables, batch_size=cfg.batch_size, mesh=mesh)
  query_images = thumbnails(config, test_source, range(len(test_source)))
  side = max(64, config.image_size)
  out = {}
  for block in gallery_f["pretrained"]:
    nearest = {}
    for name in variables:
      g = gallery_f[name][block] / np.maximum(np.linalg.norm(gallery_f[name][block], axis=1, keepdims=True), 1e-12)
      q = query_f[name][block] / np.maximum(np.linalg.norm(query_f[name][block], axis=1, keepdims=True), 1e-12)
      nearest[name] = np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :neighbours]
    rows = []
    for i, query in enumerate(query_images):
      pre = thumbnails(config, train_source, nearest["pretrained"][i])
      rnd = thumbnails(config, train_source, nearest["random_init"][i])
      blank = np.ones((1,) + query.shape, np.float32)
      rows.append(_scaled(np.concatenate([query[None], pre, blank, rnd]), side))
    out[f"neighbours_{block}"] = montage(rows)
  return out


def activation_maps(loaded, images, *, channels: int) -> dict[str, np.ndarray]:
  """{"activations_<block>": montage}: for each image (float [0, 1], the evaluation's crops; a
  video run's frames are shown to a 3D backbone as still clips), a row of the image and its
  ``channels`` strongest maps of that block (largest mean activation on that image), each
  stretched to [0, 1] on its own and drawn with the viridis colour map at the image's size."""
  import matplotlib  # Its colour maps only.
  config = loaded.config
  to_input = run.backbone_input_fn(config)  # What the backbone saw: standardised RGB, L, Sobel.
  media = jnp.asarray(np.round(images * 255), jnp.uint8)
  if run.takes_video(loaded.backbone):  # A still clip of each image, as long as the run's clips.
    media = jnp.repeat(media[:, None], config.video.num_frames, axis=1)
  maps = jax.device_get(loaded.backbone.apply(loaded.variables, to_input(media), train=False))
  colour = matplotlib.colormaps["viridis"]
  side = max(64, images.shape[1])
  out = {}
  for block in models.block_names(maps):
    values = np.asarray(maps[block], np.float32)
    if values.ndim == 5:  # (N, T', h, w, C): the middle step in time.
      values = values[:, values.shape[1] // 2]
    rows = []
    for image, m in zip(images, values):
      strongest = np.argsort(-m.mean(axis=(0, 1)), kind="stable")[:channels]
      tiles = [image]
      for c in strongest:
        a = m[:, :, c]
        a = (a - a.min()) / max(float(a.max() - a.min()), 1e-8)
        heat = np.asarray(PIL.Image.fromarray(np.uint8(255 * a)).resize(image.shape[:2][::-1], PIL.Image.NEAREST))
        tiles.append(colour(heat / 255.0)[..., :3])
      rows.append(_scaled(np.stack(tiles).astype(np.float32), side))
    out[f"activations_{block}"] = montage(rows)
  return out


def learning_curves(workdir: str) -> np.ndarray | None:
  """The run's loss, pretext accuracy, learning rate and kNN monitor over steps, read back from
  its TensorBoard logs, one panel each (a panel only for what was logged); None without logs."""
  try:
    logged = common.read_scalars(workdir)
  except FileNotFoundError:
    return None
  panels = [("loss", ["train/loss"]), ("pretext accuracy", ["train/accuracy"]),
            ("learning rate", ["train/learning_rate"]),
            ("kNN top-1 (monitor)", sorted(t for t in logged if t.startswith("knn/")))]
  panels = [(title, [t for t in tags if t in logged]) for title, tags in panels]
  panels = [(title, tags) for title, tags in panels if tags]
  if not panels:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
  for ax, (title, tags) in zip(axes[0], panels):
    for tag in tags:
      ax.plot(logged[tag]["step"], logged[tag]["value"], "-o" if len(logged[tag]["step"]) < 30 else "-",
              markersize=3, label=tag.split("/", 1)[1])
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(tags) > 1:
      ax.legend(fontsize=8)
  fig.tight_layout()
  fig.canvas.draw()
  picture = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  plt.close(fig)
  return picture


KINDS = ("pretext", "filters", "neighbours", "activations", "curves")


def write_pictures(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
                   count: int | None = None, seed: int = 0, queries: int = 6, neighbours: int = 8,
                   channels: int = 6, gallery: int | None = None, kinds=KINDS) -> dict[str, str]:
  """Writes ``workdir/pictures/<name>.png`` and returns {name: path}, for each of ``kinds``:

  - ``pretext``: the pretext's own pictures of ``count`` test images (default: its
    ``picture_images``, else 16);
  - ``filters``: the backbone's first-layer filters;
  - ``neighbours``: per block, ``queries`` test examples and their ``neighbours`` nearest
    training examples, pretrained beside random init (``nearest_neighbours``);
  - ``activations``: per block, the ``channels`` strongest maps of ``queries`` test images;
  - ``curves``: the learning curves from the run's TensorBoard logs.
  """
  unknown = set(kinds) - set(KINDS)
  if unknown:
    raise ValueError(f"unknown picture kinds {sorted(unknown)}: choose among {', '.join(KINDS)}")
  loaded = checkpoints.load_run(workdir)
  pretext, model = run.build_model(loaded.config)
  count = count or pretext.picture_images
  config = loaded.config
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  variables = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}

  @jax.jit
  def predict(inputs):
    return model.apply(variables, run.standardize_inputs(inputs, mean, std), train=False)[0]

  pictures = {}
  if "pretext" in kinds and pretext.pictures is not None:
    images = jnp.asarray(test_images(config, dataset=dataset, data_dir=data_dir, count=count))
    # Stateful pretexts can show their state: DeepCluster its clusters of training images.
    state = jax.device_get(loaded.state.pretext_state) if pretext.stateful else None
    pictures.update(pretext.pictures(predict, images, rng=jax.random.PRNGKey(seed), cfg=config.pretext,
                                     state=state, train_images=lambda indices: train_images(config, indices)))
  if "filters" in kinds:
    filters = first_layer_filters(jax.device_get(loaded.state.params))
    if filters is not None:
      pictures["first_layer_filters"] = filters
  if "neighbours" in kinds:
    pictures.update(nearest_neighbours(loaded, dataset=dataset, data_dir=data_dir, queries=queries,
                                       neighbours=neighbours, gallery=gallery))
  if "activations" in kinds:
    evaluated = common.for_evaluation(config)
    test = sources.SubsetSource.spread(
        sources.from_config(evaluated, evaluated.evaluate.test_split,
                            dataset=dataset or evaluated.evaluate.get("dataset") or evaluated.dataset,
                            data_dir=data_dir, evaluation=True), queries)
    pictures.update(activation_maps(loaded, thumbnails(evaluated, test, range(len(test))), channels=channels))
  if "curves" in kinds:
    curves = learning_curves(workdir)
    if curves is not None:
      pictures["learning_curves"] = curves
  out_dir = os.path.join(workdir, "pictures")
  os.makedirs(out_dir, exist_ok=True)
  written = {}
  for name, picture in pictures.items():
    path = os.path.join(out_dir, f"{name}.png")
    PIL.Image.fromarray(np.asarray(picture, np.uint8)).save(path)
    written[name] = path
  return written


def _define_flags():
  common.define_workdir_flags("Where the test images come from; default: the config's.")
  flags.DEFINE_integer("count", None, "Test images in the pretext's pictures; default: the pretext's choice "
                       "(16 for most).")
  flags.DEFINE_integer("seed", 0, "PRNG seed of the corruptions and views drawn.")
  flags.DEFINE_integer("queries", 6, "Test examples in the neighbour and activation pictures.")
  flags.DEFINE_integer("neighbours", 8, "Training neighbours shown per query.")
  flags.DEFINE_integer("channels", 6, "Strongest channels shown per block and image.")
  flags.DEFINE_integer("gallery", None, "Training examples searched for neighbours (spread over the split); "
                       "default: all.")
  flags.DEFINE_list("kinds", list(KINDS), "Which pictures: " + ", ".join(KINDS) + ".")


USAGE = """Usage: sslx-pictures --workdir=DIR [--dataset=SPEC] [--count=N] [--kinds=KIND,...]

Writes DIR/pictures/<name>.png: what the pretext shows of its task on test images
(reconstructions, colourings, views, clusters), the first layer's filters, nearest-neighbour
montages and activation maps per block, and the learning curves.
"""


def _main(args, overrides):
  if overrides:
    raise ValueError("sslx-pictures takes no --config overrides")
  written = write_pictures(args.workdir, dataset=args.dataset, data_dir=args.data_dir, count=args.count,
                           seed=args.seed, queries=args.queries, neighbours=args.neighbours,
                           channels=args.channels, gallery=args.gallery, kinds=args.kinds)
  for name, path in written.items():
    print(f"{name}: {path}")


def cli_main():
  _define_flags()
  common.run_script("sslx-pictures", _main, usage=USAGE,
                     flag_names=("count", "seed", "queries", "neighbours", "channels", "gallery", "kinds"))


if __name__ == "__main__":
  cli_main()
