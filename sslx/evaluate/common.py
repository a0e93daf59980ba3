"""Shared by the evaluation scripts: restore a backbone, extract pooled block features.

Video runs (a config with a ``video`` section) get one feature vector per
video: ``evaluate.num_clips`` clips spread evenly over it (centre crops), each
encoded (a 3D backbone sees the clip, a per-frame 2D backbone each frame), the
features average-pooled over time and space as for images, then averaged over
the frames and clips: the multi-clip protocol of VCOP (Xu et al. 2019) and most
video SSL papers.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from jax.sharding import NamedSharding, PartitionSpec

from sslx import models, pretexts
from sslx import train as trainer
from sslx.data import image_ops, pipeline


@dataclasses.dataclass
class Run:
  """A trained run as saved in its workdir."""
  config: ml_collections.ConfigDict
  meta: dict
  step: int
  backbone: Any
  variables: dict  # {"params": ..., "batch_stats": ...} of the backbone alone.
  state: Any = None  # The whole TrainState (head and pretext state included).


def load_run(workdir: str, mesh=None) -> Run:
  """Restores the latest checkpoint's backbone onto ``mesh`` (replicated)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise FileNotFoundError(f"no checkpoints in {workdir}: train first with "
                            f"`sslx-train --config ... --workdir {workdir}`")
  manager = trainer.checkpoint_manager(workdir)
  step = manager.latest_step()
  if step is None:
    raise FileNotFoundError(f"no finished checkpoint in {workdir}/checkpoints: train first with "
                            f"`sslx-train --config ... --workdir {workdir}`")
  meta = trainer.load_metadata(manager, step)
  config = ml_collections.ConfigDict(meta["config"])
  pretext, model = trainer.build_model(config)
  tx, _ = trainer.make_optimizer(config.optimizer, config.total_steps)
  mesh = mesh if mesh is not None else trainer.make_mesh(jax.local_devices())
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = jax.eval_shape(trainer.train_state_init_fn(config, model, pretext, tx), jax.random.PRNGKey(0))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), abstract)
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats.get("backbone", {})}
  return Run(config, meta, step, models.get_backbone(config.model), variables, state)


def for_evaluation(config, *, temporal_segments: int | None = None):
  """The run's config as evaluation uses it: clips of ``evaluate.num_frames`` frames when set,
  and ``temporal_segments`` (video clip features) when given."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.get("video") is not None and config.evaluate.get("num_frames"):
    config.video.num_frames = config.evaluate.num_frames
  if temporal_segments is not None:
    if temporal_segments < 1:
      raise ValueError(f"temporal_segments must be >= 1 (1: mean over time), got {temporal_segments}")
    config.evaluate.temporal_segments = temporal_segments
  return config


def backbone_input_fn(config):
  """uint8 RGB images -> what the backbone saw in training.

  The dataset-standardised RGB, unless the pretext defines ``backbone_input(images,
  cfg)`` returning something else for images in [0, 1]: the L channel for
  colorization, Sobel maps for DeepCluster.
  """
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  pretext_cfg = config.get("pretext")
  custom = getattr(pretexts.get(pretext_cfg.name), "backbone_input", None) if pretext_cfg else None

  def to_input(images):
    if custom is not None:
      x = custom(images.astype(jnp.float32) / 255.0, pretext_cfg)
      if x is not None:
        return x
    return image_ops.normalize(images, mean, std)

  return to_input


def clip_input_fn(config):
  """None, or uint8-range clips ``(N, T, H, W, 3)`` -> the frames a 2D backbone saw in training,
  ``(N, T', H, W, 3)`` in the uint8 range, from the pretext's ``clip_input(clips, cfg)`` for
  clips in [0, 1] (O3N: dynamic images of consecutive frames, not single frames)."""
  pretext_cfg = config.get("pretext")
  custom = getattr(pretexts.get(pretext_cfg.name), "clip_input", None) if pretext_cfg else None
  if custom is None:
    return None
  return lambda clips: 255.0 * custom(clips.astype(jnp.float32) / 255.0, pretext_cfg)


def takes_video(backbone) -> bool:
  """3D backbones (C3D, R3D) take (N, T, H, W, 3) clips; 2D ones single images."""
  return getattr(backbone, "takes_video", False)


def random_init_variables(backbone, config, seed: int) -> dict:
  """The same backbone at random initialisation (BatchNorm at its initial statistics)."""
  frames = (config.video.num_frames,) if takes_video(backbone) else ()
  images = backbone_input_fn(config)(jnp.zeros((1,) + frames + (config.image_size, config.image_size, 3),
                                               jnp.uint8))
  variables = backbone.init(jax.random.PRNGKey(seed), images, train=False)
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def pool_grid(height: int, channels: int, max_features: int) -> int:
  """Grid side g for pooling a ``height``-sided map to at most ``max_features`` dims.

  The largest divisor of ``height`` with g*g*channels <= max_features, so the
  cells are equal; when that divisor is under half the largest allowed side
  (e.g. a prime-sided 11x11 map would fall to 1x1), the largest allowed side
  with near-equal adaptive cells instead.
  """
  largest = max(1, int((max_features / channels) ** 0.5))
  largest = min(largest, height)
  divisor = max(g for g in range(1, largest + 1) if height % g == 0)
  return divisor if 2 * divisor >= largest else largest


def _pool_matrix(size: int, grid: int) -> np.ndarray:
  """(grid, size) averaging weights: cell i covers [floor(i*size/grid), ceil((i+1)*size/grid))."""
  weights = np.zeros((grid, size), np.float32)
  for i in range(grid):
    start, stop = (i * size) // grid, -(-((i + 1) * size) // grid)
    weights[i, start:stop] = 1.0 / (stop - start)
  return weights


def pool_block(x, max_features: int):
  """(B, H, W, C) -> (B, g*g*C): average pool to a g x g grid (see pool_grid)."""
  batch, height, width, channels = x.shape
  g = pool_grid(height, channels, max_features)
  gw = min(g, width)
  rows, cols = jnp.asarray(_pool_matrix(height, g)), jnp.asarray(_pool_matrix(width, gw))
  # An exact average: default-precision einsums keep ~11 bits on GPUs (TF32) and TPUs.
  x = jnp.einsum("gh,bhwc,kw->bgkc", rows, x.astype(jnp.float32), cols,
                 precision=jax.lax.Precision.HIGHEST)
  return x.reshape(batch, -1)


def grid_patches(images, grid: int):
  """``(B, H, W, C)`` -> ``(B * grid**2, p, p, C)``: non-overlapping patches of side
  ``p = H // grid`` from the centred ``grid * p`` square, raster order."""
  batch, height, _, channels = images.shape
  side = height // grid
  start = (height - grid * side) // 2
  x = images[:, start:start + grid * side, start:start + grid * side]
  x = x.reshape(batch, grid, side, grid, side, channels).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(batch * grid * grid, side, side, channels)


def feature_fn(backbone, config, max_features: int):
  """A jitted images(uint8) -> {block: pooled features} for one backbone.

  With ``evaluate.patch_grid = g > 0`` the image is cut into a g x g grid of
  patches, each encoded and pooled on its own, and the patch features are
  averaged: the protocol of Kolesnikov et al. (CVPR 2019) for patch-based
  pretexts, whose encoders only ever saw patches. Otherwise the whole image
  goes through the encoder.
  """
  to_input = backbone_input_fn(config)
  grid = config.evaluate.get("patch_grid") or 0
  if trainer.media_key(config) == "video":
    return video_feature_fn(backbone, to_input, max_features,
                            segments=config.evaluate.get("temporal_segments", 1),
                            clip_fn=clip_input_fn(config))

  @jax.jit
  def features(variables, images):
    batch = images.shape[0]
    if grid:
      images = grid_patches(images, grid)
    maps = backbone.apply(variables, to_input(images), train=False)
    out = {}
    for name in models.block_names(maps):
      pooled = pool_block(maps[name], max_features)
      out[name] = pooled.reshape(batch, -1, pooled.shape[-1]).mean(axis=1) if grid else pooled
    return out

  return features


def temporal_segments(x, segments: int):
  """(N, T, ...) -> (N, s, ...): means over s equal consecutive stretches of time (s = min(segments, T))."""
  weights = jnp.asarray(_pool_matrix(x.shape[1], min(segments, x.shape[1])))
  return jnp.einsum("st,nt...->ns...", weights, x, precision=jax.lax.Precision.HIGHEST)


def video_feature_fn(backbone, to_input, max_features: int, *, segments: int = 1, clip_fn=None):
  """A jitted clips(uint8, (B, [K,] T, H, W, 3)) -> {block: (B, D)}.

  Each clip's features are averaged over time (a 2D backbone's frames, a 3D
  backbone's T' steps), or with ``segments`` s > 1 over s consecutive stretches
  of it, concatenated in order (TSN-style; each stretch gets max_features / s
  dims), which keeps the coarse order of events that mean pooling discards;
  then averaged over the K clips. ``clip_fn`` (``clip_input_fn``) first turns a 2D
  backbone's clips into the frames it was trained on.
  """
  three_d = takes_video(backbone)
  per_segment = max(1, max_features // segments)

  @jax.jit
  def features(variables, clips):
    batch = clips.shape[0]
    x = clips.reshape((-1,) + clips.shape[-4:])  # (B * K, T, H, W, 3)
    if clip_fn is not None and not three_d:
      x = clip_fn(x)
    frame_shape = x.shape[1:]
    x = x if three_d else x.reshape((-1,) + frame_shape[1:])
    maps = backbone.apply(variables, to_input(x), train=False)
    out = {}
    for name in models.block_names(maps):
      block = maps[name].astype(jnp.float32)
      if three_d:  # (N, T', H', W', C) -> (N, s, D)
        timed = temporal_segments(block, segments)
        n, s = timed.shape[:2]
        pooled = pool_block(timed.reshape((n * s,) + timed.shape[2:]), per_segment).reshape(n, s, -1)
      else:  # (N * T, H', W', C) -> (N, T, D) -> (N, s, D)
        pooled = pool_block(block, per_segment)
        pooled = temporal_segments(pooled.reshape(-1, frame_shape[0], pooled.shape[-1]), segments)
      clip_features = pooled.reshape(pooled.shape[0], -1)  # Segments concatenated in order.
      out[name] = clip_features.reshape(batch, -1, clip_features.shape[-1]).mean(axis=1)
    return out

  return features


def extract(source, config, feature_fns: dict, variables: dict, *, batch_size: int, mesh):
  """One pass over ``source``: {model_name: {block: (N, D) features}}, labels (N,), skipped count.

  Runs in one process over its local devices; a final partial batch is padded
  so every batch compiles to the same shape.
  """
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  preprocess = trainer.make_preprocess(config, source, train=False,
                                       num_clips=config.evaluate.get("num_clips", 1))
  key = trainer.media_key(config)
  dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False)
  out = {name: {} for name in feature_fns}
  labels = []
  for batch in dataset:
    n = len(batch["label"])
    padded = pipeline.pad_batch({k: batch[k] for k in (key, "label", "index")}, batch_size)
    images = pipeline.to_global({key: padded[key]}, mesh)[key]
    for name, fn in feature_fns.items():
      for block, value in jax.device_get(fn(variables[name], images)).items():
        out[name].setdefault(block, []).append(np.asarray(value[:n]))
    labels.append(batch["label"])
  features = {name: {b: np.concatenate(v) for b, v in blocks.items()} for name, blocks in out.items()}
  return features, np.concatenate(labels), preprocess.skipped


# --- The scripts' shared plumbing. ------------------------------------------------------------


def write_results(workdir: str, stem: str, results: dict, *, title: str, table: str) -> dict:
  """``<workdir>/eval/<stem>.json`` (the results, with ``written_to``) and ``<stem>.md``."""
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  results["written_to"] = os.path.join(out_dir, f"{stem}.json")
  with open(results["written_to"], "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(out_dir, f"{stem}.md"), "w") as f:
    f.write(f"{title}\n\n{table}\n")
  return results


def define_workdir_flags(dataset_help: str = "Evaluation data; default: the config's.") -> None:
  """The flags every evaluation script takes: the run to read and the data to read it on."""
  flags.DEFINE_string("workdir", None, "A training workdir (holds checkpoints/).")
  flags.DEFINE_string("dataset", None, dataset_help)
  flags.DEFINE_string("data_dir", None, "TFDS data_dir for tfds: datasets.")
  flags.mark_flags_as_required(["workdir"])


def run_script(name: str, body) -> None:
  """Runs ``body(flags.FLAGS)`` as an absl app: library logging quiet unless ``--verbosity``
  is given, and bad input (a ValueError or a missing file) ends it with one line."""
  def main(argv):
    del argv
    args = flags.FLAGS
    if not args["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    try:
      body(args)
    except (ValueError, FileNotFoundError) as e:
      raise SystemExit(f"{name}: error: {e}") from None
  app.run(main)
