"""Pictures from a checkpoint: what a pretext's network makes of real test images.

Each pretext that has something to show defines
``pictures(predict, images, *, rng, cfg) -> {name: (H, W, 3) uint8}``, where
``predict(inputs)`` runs the trained model (``train=False``) on inputs as
``make_inputs`` returns them and gives the head's outputs, and ``images`` are
real test images, float RGB in [0, 1]. This module turns those arrays into PNG
files (``sslx.montage`` lays out the grids). Every
run also gets its backbone's first-layer filters.

    sslx-pictures --workdir DIR [--count 16] [--dataset folder:PATH]
"""

from __future__ import annotations

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from absl import flags

from sslx import checkpoints, run
from sslx.data import pipeline, sources
from sslx.evaluate import common
from sslx.montage import montage


def first_layer_filters(params) -> np.ndarray | None:
  """The backbone's first convolution kernels as a montage, each filter scaled to [0, 1]
  on its own; None when the first layer is not a spatial convolution."""
  flat = flax.traverse_util.flatten_dict(params)
  kernels = [v for k, v in sorted(flat.items(), key=lambda kv: "/".join(map(str, kv[0])))
             if k[0] == "backbone" and k[-1] == "kernel" and np.ndim(v) == 4]
  if not kernels:
    return None
  # The first layer is the one whose input is the image: the fewest input channels, then the
  # shallowest name (block1 before block2 in every backbone here).
  kernel = np.asarray(min(kernels, key=lambda k: k.shape[2]), np.float32)  # (kh, kw, in, out)
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
  grid = [[np.kron(t, np.ones((4, 4, 1))) for t in row] for row in grid]  # 4x larger pixels.
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


def write_pictures(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
                   count: int | None = None, seed: int = 0) -> dict[str, str]:
  """Writes ``workdir/pictures/<name>.png`` for the pretext's pictures and the first-layer
  filters; returns {name: path}. ``count`` test images (default: the pretext's
  ``picture_images``, else 16)."""
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
  if pretext.pictures is not None:
    images = jnp.asarray(test_images(config, dataset=dataset, data_dir=data_dir, count=count))
    # Stateful pretexts can show their state: DeepCluster its clusters of training images.
    state = jax.device_get(loaded.state.pretext_state) if pretext.stateful else None
    pictures.update(pretext.pictures(predict, images, rng=jax.random.PRNGKey(seed), cfg=config.pretext,
                                     state=state, train_images=lambda indices: train_images(config, indices)))
  filters = first_layer_filters(jax.device_get(loaded.state.params))
  if filters is not None:
    pictures["first_layer_filters"] = filters
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
  flags.DEFINE_integer("count", None, "Test images to show; default: the pretext's choice (16 for most).")
  flags.DEFINE_integer("seed", 0, "PRNG seed of the corruptions and views drawn.")


USAGE = """Usage: sslx-pictures --workdir=DIR [--dataset=SPEC] [--count=N]

Writes DIR/pictures/<name>.png: what the pretext shows of its task on test images
(reconstructions, colourings, views, clusters) and the first layer's filters.
"""


def _main(args, overrides):
  if overrides:
    raise ValueError("sslx-pictures takes no --config overrides")
  written = write_pictures(args.workdir, dataset=args.dataset, data_dir=args.data_dir, count=args.count,
                           seed=args.seed)
  for name, path in written.items():
    print(f"{name}: {path}")


def cli_main():
  _define_flags()
  common.run_script("sslx-pictures", _main, usage=USAGE, flag_names=("count", "seed"))


if __name__ == "__main__":
  cli_main()
