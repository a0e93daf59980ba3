"""The run layer: everything a run is built of, from its config alone.

The trainer (sslx/train.py), the evaluation scripts (sslx/evaluate/) and
``sslx.load_backbone`` build their mesh, model, inputs, train state and step
here, so that what evaluation restores is exactly what training saved, and
what a backbone is fed is exactly what it saw in training. Data parallel: the
state is replicated, the batch is split over the mesh's ``data`` axis, and XLA
inserts the gradient and BatchNorm all-reduces, so 1 CPU, 8 fake CPU devices,
a GPU or a TPU pod run the same code (no pmap).
"""

from __future__ import annotations

import json
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import sslx
from sslx import models, pretexts
from sslx.data import image_ops, pipeline, sources, video


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  pretext_state: Any  # Explicit state of stateful pretexts (empty for rotation).


def make_mesh(devices=None) -> Mesh:
  """A 1-D data-parallel mesh over all devices of all processes."""
  devices = np.asarray(jax.devices() if devices is None else devices)
  try:
    # jax >= 0.12 make_mesh defaults to Explicit axes, under which optax's
    # integer-label cross-entropy fails in a sharded jit; Auto is what we want.
    return Mesh(devices, ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  except (TypeError, AttributeError):
    return Mesh(devices, ("data",))


def make_schedule(cfg, total_steps: int):
  """Learning rate per step: linear warmup, then cosine / step decay / constant."""
  warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, warmup, max(total_steps, warmup + 1))
  if cfg.schedule == "step":
    # RotNet style: multiply by decay_factor at the given fractions of training.
    boundaries = {int(f * total_steps): cfg.decay_factor for f in cfg.decay_at}
    decay = optax.piecewise_constant_schedule(cfg.learning_rate, boundaries)
  elif cfg.schedule == "constant":
    decay = optax.constant_schedule(cfg.learning_rate)
  else:
    raise ValueError(f"unknown optimizer.schedule {cfg.schedule!r}: use 'cosine', 'step' or 'constant'")
  if warmup == 0:
    return decay
  warm = optax.linear_schedule(0.0, cfg.learning_rate, warmup)
  return optax.join_schedules([warm, lambda s: decay(s + warmup)], [warmup])


def make_optimizer(cfg, total_steps: int):
  """optax SGD (momentum / Nesterov) or AdamW; weight decay on kernels only."""
  schedule = make_schedule(cfg, total_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
  if cfg.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
                     optax.sgd(schedule, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
  elif cfg.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=cfg.weight_decay, mask=decay_mask)
  else:
    raise ValueError(f"unknown optimizer.name {cfg.name!r}: use 'sgd' or 'adamw'")
  return tx, schedule


def build_model(config) -> tuple[pretexts.Pretext, Any]:
  """The pretext (through its contract) and its model: backbone + head, or its own wiring."""
  pretext = pretexts.get(config.pretext.name)
  return pretext, pretext.model(models.get_backbone(config.model), config.pretext)


def media_key(config) -> str:
  """What a batch holds: "video" (B, T, H, W, 3) clips when the config has a ``video``
  section, else "image" (B, H, W, 3)."""
  return "video" if config.get("video") is not None else "image"


def example_batch(config, batch_size: int = 2) -> dict:
  """Abstract batch as ``make_inputs`` receives it: RGB in [0, 1], source indices, labels, and
  with sound (``config.audio``) the waveforms."""
  frames = (config.video.num_frames,) if media_key(config) == "video" else ()
  shape = (batch_size,) + frames + (config.image_size, config.image_size, 3)
  batch = {media_key(config): jax.ShapeDtypeStruct(shape, jnp.float32),
           "index": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
           "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
  if config.get("audio") is not None:
    batch["audio"] = jax.ShapeDtypeStruct((batch_size, audio_length(config)), jnp.float32)
  if delivers_motion(config):
    batch["motion"] = jax.ShapeDtypeStruct(shape[:-1], jnp.uint8)
  return batch


def delivers_motion(config) -> bool:
  """Whether the host delivers per-pixel motion maps with the frames (``video.motion_masks``)."""
  return config.get("video") is not None and bool(config.video.get("motion_masks", False))


def batch_keys(config) -> tuple[str, ...]:
  """What the training step reads of a host batch: the media, source indices, labels, with
  sound (``config.audio``) the waveforms, with ``video.motion_masks`` the motion maps."""
  return ((media_key(config), "index", "label") + (("audio",) if config.get("audio") is not None else ())
          + (("motion",) if delivers_motion(config) else ()))


def audio_length(config) -> int:
  """Samples of audio per example in a batch of a config with sound: the frame window's span
  plus ``audio.margin_seconds`` on each side, at ``audio.sample_rate`` (sslx/data/video.py)."""
  v, a = config.video, config.audio
  span = (v.num_frames - 1) * v.frame_stride + 1
  return video.audio_window_length(span, v.fps, a.margin_seconds, a.sample_rate)


def make_preprocess(config, source, *, train: bool, num_clips: int = 1):
  """The host preprocessing for this config's media, checked against the source's kind
  (``num_clips``: clips per video at evaluation, spread evenly over it)."""
  is_video_source = sources.holds_video(source)
  if media_key(config) == "video":
    if not is_video_source:
      raise ValueError(f"the config has a video section but dataset {config.dataset!r} holds images: "
                       f"point --config.dataset at a folder of clips, or use an image config")
    return video.preprocess_from_config(config, train=train, num_clips=num_clips)
  if is_video_source:
    raise ValueError(f"dataset {config.dataset!r} holds video clips but the config has no video section: "
                     f"start the config from configs.base_video()")
  return pipeline.Preprocess(image_size=config.image_size, resize_size=config.get("resize_size"),
                             crop_padding=config.crop_padding if train else 0,
                             flip=config.flip and train, train=train,
                             cache_mb=data_setting(config, "cache_mb") if train else 0)


def data_setting(config, name: str):
  """``config.data.<name>`` (cache_mb, workers), 0 in configs written before it existed."""
  return (config.get("data") or {}).get(name, 0) or 0


def jit_once(fn, **jit_kwargs):
  """``jax.jit`` for code that runs once, such as initialisation: compiled for compile time, not
  speed. XLA's CPU backend spends about 20 s optimising the random-number code of a small
  network's init at its default level and 4-5 s at level 1, to the same values
  (benchmarks/init_compile.py); that was the larger part of starting a short run. Level 0 is not
  used: on jax 0.10 it gave NaN gradients in some fused training steps that op-by-op execution
  does not. Other backends keep their defaults."""
  options = {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None
  return jax.jit(fn, compiler_options=options, **jit_kwargs)


def train_state_init_fn(config, model, pretext, tx):
  """rng -> TrainState; jax.eval_shape of it gives the checkpoint's structure."""
  inputs, _ = jax.eval_shape(
      lambda b: pretext.make_inputs(jax.random.PRNGKey(0), b, config.pretext,
                                    state=pretext.init_state(config.pretext) if pretext.stateful else None),
      example_batch(config))

  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    dummy = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), inputs)
    variables = model.init(param_rng, dummy, train=False)
    params = variables["params"]
    pretext_state = pretext.init_state(config.pretext)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=state_rng, pretext_state=pretext_state)

  return init


def create_train_state(config, model, pretext, tx, mesh):
  """Initialises the state directly with its (replicated) sharding."""
  init = train_state_init_fn(config, model, pretext, tx)
  replicated = NamedSharding(mesh, PartitionSpec())
  abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
  state_sharding = jax.tree.map(lambda _: replicated, abstract)
  state = jit_once(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  return state, state_sharding


def standardize_inputs(inputs, mean, std):
  """Standardises every array named ``image`` or ``video`` in a pretext's inputs (nested for
  multi-task); channels last, so one mean and std per channel serve both."""
  def visit(path, x):
    last = path[-1]
    return image_ops.standardize(x, mean, std) if getattr(last, "key", None) in ("image", "video") else x
  return jax.tree_util.tree_map_with_path(visit, inputs)


def pretext_inputs(config, pretext, rng, batch, pretext_state, **extra):
  """A uint8 host batch -> (the network's inputs, the pretext's targets), as the training step
  makes them (and sslx-pretext scores them): the pretext sees RGB in [0, 1] (colour ops need
  it), the network its outputs standardised with the dataset's statistics, as evaluation does.
  ``extra`` fields join the batch (the training step's ``step``, for a curriculum)."""
  key = media_key(config)
  media = batch[key].astype(jnp.float32) / 255.0
  inputs, targets = pretext.make_inputs(rng, dict(batch, **{key: media}, **extra), config.pretext,
                                        state=pretext_state if pretext.stateful else None)
  return standardize_inputs(inputs, tuple(config.normalize.mean), tuple(config.normalize.std)), targets


def make_train_step(config, model, pretext, tx, schedule):

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    # ``step``: the training step, for pretexts with a curriculum (absent outside training).
    inputs, targets = pretext_inputs(config, pretext, rng, batch, state.pretext_state, step=state.step)

    def loss_fn(params):
      (outputs, _), updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                          inputs, train=True, mutable=["batch_stats"],
                                          rngs={"dropout": jax.random.fold_in(rng, 1)})
      loss, metrics = pretext.loss(outputs, targets, cfg=config.pretext)
      return loss, (metrics, updates["batch_stats"])

    (loss, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm, update_norm = optax.tree.norm(grads), optax.tree.norm(updates)
    # A non-finite loss, gradient or update (an inf learning rate gives a finite gradient
    # but an inf update) leaves the state as it was: the host then stops or skips and
    # counts (config.on_nonfinite), and no checkpoint ever holds a poisoned state.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
    metrics = dict(metrics, loss=loss, learning_rate=schedule(state.step), grad_norm=grad_norm,
                   nonfinite=1.0 - finite.astype(jnp.float32))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                              batch_stats=keep(batch_stats, state.batch_stats),
                              opt_state=keep(opt_state, state.opt_state))
    return new_state, metrics

  return train_step


# Stateful pretexts (DeepCluster's clusters, colorization's colour prior): their
# state is an explicit pytree in TrainState, refreshed between steps, at the
# loop level, by the pretext's pure ``update_state`` from one ordered pass over
# the training set; never inside the jitted step or a loss.


def refresh_due(pretext, config, step: int, num_examples: int) -> bool:
  """Refresh before step 1 and then every ``update_interval`` steps (0: never again), but not
  for a last partial epoch: a head re-initialised then would end the run untrained."""
  if not pretext.stateful:
    return False
  interval = pretext.state.update_interval(config, num_examples)
  return step == 1 or (interval > 0 and (step - 1) % interval == 0
                       and step + interval - 1 <= config.total_steps)


def epoch_of(pretext, config, step: int, num_examples: int) -> int:
  interval = pretext.state.update_interval(config, num_examples) if pretext.stateful else 0
  return (step - 1) // interval if interval > 0 else 0


def make_collect_fn(config, model, pretext):
  """Jitted (variables, uint8 batch) -> ``pretext.collect``'s arrays; built once per run,
  so every refresh reuses one compilation."""
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def collect(variables, batch):
    def predict(inputs):
      return model.apply(variables, standardize_inputs(inputs, mean, std), train=False)[0]
    key = media_key(config)
    media = batch[key].astype(jnp.float32) / 255.0
    return pretext.state.collect(predict, {key: media, "index": batch["index"]}, config.pretext)

  return collect


def collect_over_training_set(config, collect, state, source, *, batch_size: int) -> dict:
  """One ordered, unaugmented pass of this process's shard through ``collect`` (see
  make_collect_fn), gathered from every process: {name: (N, ...)} for the whole training set."""
  local_mesh = make_mesh(jax.local_devices())
  batch_size = -(-batch_size // local_mesh.devices.size) * local_mesh.devices.size
  replicated = NamedSharding(local_mesh, PartitionSpec())
  # A host copy moved onto this process's devices: the pass needs no collectives.
  variables = jax.device_put(jax.device_get({"params": state.params, "batch_stats": state.batch_stats}),
                             replicated)
  preprocess = make_preprocess(config, source, train=False)
  key = media_key(config)
  dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False,
                                  num_examples=config.get("train_examples"),
                                  process_index=jax.process_index(), process_count=jax.process_count())
  parts: dict[str, list] = {}
  for batch in dataset:
    n = len(batch["index"])
    padded = pipeline.pad_batch({key: batch[key], "index": batch["index"],
                                 "label": batch["label"]}, batch_size)
    local = pipeline.to_global({key: padded[key], "index": padded["index"]}, local_mesh)
    for name, value in jax.device_get(collect(variables, local)).items():
      parts.setdefault(name, []).append(np.asarray(value)[:n])
  collected = {name: np.concatenate(values) for name, values in parts.items()}
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    # Shards differ in size by at most one: pad to the largest, gather, drop the padding.
    count = len(next(iter(collected.values())))
    counts = multihost_utils.process_allgather(np.asarray([count]))
    most = int(counts.max())
    padded = {k: np.concatenate([v, np.zeros((most - count,) + v.shape[1:], v.dtype)])
              for k, v in collected.items()}
    gathered = multihost_utils.process_allgather(padded)
    collected = {k: np.concatenate([v[p, :int(counts[p, 0])] for p in range(len(counts))])
                 for k, v in gathered.items()}
  return collected


def reinitialize(tree, fresh, paths, *, zero: bool):
  """Replaces (or zeroes) every leaf of ``tree`` under one of the key ``paths``
  (e.g. ("head", "classifier")), matched anywhere in the leaf's path, so the
  same call covers parameters and the optimizer's per-parameter statistics."""
  def under(path):
    keys = tuple(getattr(k, "key", getattr(k, "name", None)) for k in path)
    return any(keys[i:i + len(p)] == tuple(p) for p in paths for i in range(len(keys)))

  if zero:
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.zeros_like(x) if under(path) and hasattr(x, "shape") and x.ndim else x, tree)
  return jax.tree_util.tree_map_with_path(lambda path, x, y: y if under(path) else x, tree, fresh)


def refresh_pretext_state(config, pretext, state, source, *, state_sharding, step: int,
                          collect_fn, fresh_params_fn):
  """The loop-level refresh: collect over the training set, ``update_state``, then
  re-initialise the parameters the pretext names (and their optimizer state)."""
  collected = collect_over_training_set(config, collect_fn, state, source,
                                        batch_size=config.evaluate.batch_size)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), step)
  new_pretext_state = pretext.state.update_state(jax.device_get(state.pretext_state), collected,
                                           rng=rng, cfg=config.pretext)
  params, opt_state = jax.device_get(state.params), jax.device_get(state.opt_state)
  paths = pretext.state.reinit_params
  if paths:
    fresh = jax.device_get(fresh_params_fn(rng))
    params = reinitialize(params, fresh, paths, zero=False)
    opt_state = reinitialize(opt_state, None, paths, zero=True)
  state = state.replace(params=params, opt_state=opt_state,
                        pretext_state=jax.tree.map(jnp.asarray, new_pretext_state))
  return jax.device_put(state, state_sharding)


def make_train_iterator(config, source, preprocess, pretext, pretext_state, *, epoch: int):
  """This process's training batches; a pretext with ``epoch_indices`` picks the epoch's examples."""
  indices = None
  if pretext.stateful and pretext.state.epoch_indices is not None:
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), epoch)
    indices = pretext.state.epoch_indices(jax.device_get(pretext_state), rng, config.pretext)
  dataset = pipeline.make_dataset(source, preprocess, batch_size=config.batch_size // jax.process_count(),
                                  seed=config.seed + epoch, train=True,
                                  num_examples=config.get("train_examples"),
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  num_threads=config.data_threads, workers=data_setting(config, "workers"),
                                  indices=None if indices is None else np.asarray(indices))
  return iter(dataset)


def run_metadata(config, mesh) -> dict:
  """What evaluation (and a person) needs to know about the run, saved beside checkpoints."""
  return {"config": json.loads(config.to_json()), "global_batch_size": config.batch_size,
          "device_count": mesh.devices.size, "process_count": jax.process_count(),
          "sslx_version": sslx.__version__, "jax_version": jax.__version__}


def check_config(config, mesh):
  """Config errors that need no data and no model: one line each, before anything is built."""
  num_devices = mesh.devices.size
  if config.batch_size % num_devices:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the {num_devices} devices: "
                     f"set --config.batch_size to a multiple of {num_devices}")
  if config.get("on_nonfinite", "stop") not in ("stop", "skip"):
    raise ValueError(f"unknown on_nonfinite {config.on_nonfinite!r}: use 'stop' (fail naming the step) "
                     f"or 'skip' (drop the update and count it)")
  if config.total_steps < 1:
    raise ValueError(f"total_steps is {config.total_steps}: set --config.total_steps to 1 or more")
  workers, cache_mb = data_setting(config, "workers"), data_setting(config, "cache_mb")
  if workers < 0 or cache_mb < 0:
    raise ValueError(f"data.workers={workers}, data.cache_mb={cache_mb}: both must be 0 or more")
  if workers and media_key(config) == "video":
    raise ValueError(f"data.workers={workers}: worker processes run image preprocessing only for now "
                     f"(clips have video.cache_mb and data_threads): set data.workers=0")


def skipped_counts(preprocess) -> dict:
  """Examples the host dropped so far: distinct unreadable images, or clips by reason."""
  if isinstance(preprocess, video.VideoPreprocess):
    counts = {"skipped_clips_short": preprocess.skipped_short,
              "skipped_clips_unreadable": preprocess.skipped_unreadable}
    if preprocess.audio_rate:
      counts.update(skipped_clips_no_audio=preprocess.skipped_no_audio,
                    skipped_clips_audio_short=preprocess.skipped_audio_short)
    return counts
  return {"skipped_images": len(preprocess.skipped_files),
          "upscaled_images": len(preprocess.upscaled_files)}


# --- What a backbone sees: one definition for training, evaluation and load_backbone. ---


def takes_video(backbone) -> bool:
  """3D backbones (C3D, R3D) take (N, T, H, W, 3) clips; 2D ones single images."""
  return getattr(backbone, "takes_video", False)


def backbone_input_fn(config):
  """uint8 RGB images -> what the backbone saw in training.

  The dataset-standardised RGB, unless the pretext defines ``backbone_input(images,
  cfg)`` returning something else for images in [0, 1]: the L channel for
  colorization, Sobel maps for DeepCluster.
  """
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  pretext_cfg = config.get("pretext")
  custom = pretexts.get(pretext_cfg.name).backbone_input if pretext_cfg else None

  def to_input(images):
    if custom is not None:
      x = custom(images.astype(jnp.float32) / 255.0, pretext_cfg)
      if x is not None:
        return x
    return image_ops.normalize(images, mean, std)

  return to_input


def clip_input_fn(config):
  """None, or uint8-range clips ``(N, T, H, W, 3)`` -> what the backbone saw in training,
  ``(N, T', H, W, 3)`` in the uint8 range, from the pretext's ``clip_input(clips, cfg)`` for
  clips in [0, 1] (O3N: dynamic images of consecutive frames, not single frames; the arrow of
  time: frame differences)."""
  pretext_cfg = config.get("pretext")
  custom = pretexts.get(pretext_cfg.name).clip_input if pretext_cfg else None
  if custom is None:
    return None
  return lambda clips: 255.0 * custom(clips.astype(jnp.float32) / 255.0, pretext_cfg)


def prepare_fn(config, backbone):
  """Raw uint8 media -> the backbone's input, as in training: images ``(N, H, W, 3)`` ->
  ``(N, H, W, C)``; clips ``(N, T, H, W, 3)`` -> after the pretext's ``clip_input``, the clips
  ``(N, T', H, W, C)`` for a 3D backbone, or their frames ``(N * T', H, W, C)`` for a per-frame 2D
  backbone."""
  to_input, clip_fn = backbone_input_fn(config), clip_input_fn(config)
  is_video, three_d = media_key(config) == "video", takes_video(backbone)

  def prepare(media):
    media = jnp.asarray(media)
    if not is_video:
      return to_input(media)
    if clip_fn is not None:
      media = clip_fn(media)
    return to_input(media if three_d else media.reshape((-1,) + media.shape[-3:]))

  return prepare


def random_init_variables(backbone, config, seed: int) -> dict:
  """The same backbone at random initialisation (BatchNorm at its initial statistics)."""
  frames = (config.video.num_frames,) if takes_video(backbone) else ()
  images = backbone_input_fn(config)(jnp.zeros((1,) + frames + (config.image_size, config.image_size, 3),
                                               jnp.uint8))
  variables = jit_once(lambda rng: backbone.init(rng, images, train=False))(jax.random.PRNGKey(seed))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
