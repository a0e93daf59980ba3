"""The one trainer: any pretext, any backbone, any number of devices.

    python -m sslx.train --config experiments/rotation_convnet_cifar10.py[:quick] --workdir DIR \
        [--config.dataset=folder:/data/imgs --config.total_steps=500 ...]

Read top to bottom: config -> mesh -> data -> model and optimizer -> sharded
state -> restore if the workdir holds a checkpoint -> one jitted step -> loop
with logging and Orbax checkpoints. Data parallel: the state is replicated,
the batch is split over the mesh's ``data`` axis, and XLA inserts the gradient
and BatchNorm all-reduces, so 1 CPU, 8 fake CPU devices, a GPU or a TPU pod run
the same code (no pmap). Several processes (a pod) start with ``--distributed``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import flax
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from absl import app, flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

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


def build_model(config) -> tuple[Any, Any]:
  """The pretext module and its model: backbone + head, or the pretext's own ``model``."""
  pretext = pretexts.get(config.pretext.name)
  backbone = models.get_backbone(config.model)
  if hasattr(pretext, "model"):
    return pretext, pretext.model(backbone, config.pretext)
  return pretext, models.PretextModel(backbone=backbone, head=pretext.head(config.pretext))


def media_key(config) -> str:
  """What a batch holds: "video" (B, T, H, W, 3) clips when the config has a ``video``
  section, else "image" (B, H, W, 3)."""
  return "video" if config.get("video") is not None else "image"


def example_batch(config, batch_size: int = 2) -> dict:
  """Abstract batch as ``make_inputs`` receives it: RGB in [0, 1] and source indices."""
  frames = (config.video.num_frames,) if media_key(config) == "video" else ()
  shape = (batch_size,) + frames + (config.image_size, config.image_size, 3)
  return {media_key(config): jax.ShapeDtypeStruct(shape, jnp.float32),
          "index": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}


def make_preprocess(config, source, *, train: bool, num_clips: int = 1):
  """The host preprocessing for this config's media, checked against the source's kind
  (``num_clips``: clips per video at evaluation, spread evenly over it)."""
  is_video_source = isinstance(source, (video.VideoFolderSource, video.TfdsVideoSource))
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
                             flip=config.flip and train, train=train)


def is_stateful(pretext) -> bool:
  return hasattr(pretext, "init_state")


def pretext_state_kwargs(pretext, pretext_state) -> dict:
  """``make_inputs`` takes ``state=`` only in stateful pretexts."""
  return {"state": pretext_state} if is_stateful(pretext) else {}


def train_state_init_fn(config, model, pretext, tx):
  """rng -> TrainState; jax.eval_shape of it gives the checkpoint's structure."""
  inputs, _ = jax.eval_shape(
      lambda b: pretext.make_inputs(jax.random.PRNGKey(0), b, config.pretext, **pretext_state_kwargs(
          pretext, pretext.init_state(config.pretext) if is_stateful(pretext) else None)),
      example_batch(config))

  def init(rng):
    param_rng, state_rng = jax.random.split(rng)
    dummy = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), inputs)
    variables = model.init(param_rng, dummy, train=False)
    params = variables["params"]
    pretext_state = pretext.init_state(config.pretext) if hasattr(pretext, "init_state") else {}
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
  state = jax.jit(init, out_shardings=state_sharding)(jax.random.PRNGKey(config.seed))
  return state, state_sharding


def standardize_inputs(inputs, mean, std):
  """Standardises every array named ``image`` or ``video`` in a pretext's inputs (nested for
  multi-task); channels last, so one mean and std per channel serve both."""
  def visit(path, x):
    last = path[-1]
    return image_ops.standardize(x, mean, std) if getattr(last, "key", None) in ("image", "video") else x
  return jax.tree_util.tree_map_with_path(visit, inputs)


def make_train_step(config, model, pretext, tx, schedule):
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    # Pretexts see RGB in [0, 1] (colour ops need it); the network sees their
    # outputs standardised with the dataset's statistics, as evaluation does.
    key = media_key(config)
    media = batch[key].astype(jnp.float32) / 255.0
    inputs, targets = pretext.make_inputs(rng, dict(batch, **{key: media}), config.pretext,
                                          **pretext_state_kwargs(pretext, state.pretext_state))
    inputs = standardize_inputs(inputs, mean, std)

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


def updates_state(pretext) -> bool:
  return is_stateful(pretext) and hasattr(pretext, "update_state")


def refresh_due(pretext, config, step: int, num_examples: int) -> bool:
  """Refresh before step 1 and then every ``update_interval`` steps (0: never again), but not
  for a last partial epoch: a head re-initialised then would end the run untrained."""
  if not updates_state(pretext):
    return False
  interval = pretext.update_interval(config, num_examples)
  return step == 1 or (interval > 0 and (step - 1) % interval == 0
                       and step + interval - 1 <= config.total_steps)


def epoch_of(pretext, config, step: int, num_examples: int) -> int:
  interval = pretext.update_interval(config, num_examples) if updates_state(pretext) else 0
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
    return pretext.collect(predict, {key: media, "index": batch["index"]}, config.pretext)

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
  new_pretext_state = pretext.update_state(jax.device_get(state.pretext_state), collected,
                                           rng=rng, cfg=config.pretext)
  params, opt_state = jax.device_get(state.params), jax.device_get(state.opt_state)
  paths = getattr(pretext, "reinit_params", ())
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
  if hasattr(pretext, "epoch_indices"):
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), epoch)
    indices = pretext.epoch_indices(jax.device_get(pretext_state), rng, config.pretext)
  dataset = pipeline.make_dataset(source, preprocess, batch_size=config.batch_size // jax.process_count(),
                                  seed=config.seed + epoch, train=True,
                                  num_examples=config.get("train_examples"),
                                  process_index=jax.process_index(), process_count=jax.process_count(),
                                  num_threads=config.data_threads,
                                  indices=None if indices is None else np.asarray(indices))
  return iter(dataset)


def run_metadata(config, mesh) -> dict:
  """What evaluation (and a person) needs to know about the run, saved beside checkpoints."""
  return {"config": json.loads(config.to_json()), "global_batch_size": config.batch_size,
          "device_count": mesh.devices.size, "process_count": jax.process_count(),
          "sslx_version": sslx.__version__, "jax_version": jax.__version__}


# What a checkpoint's state and data position mean: resuming with any of these changed would
# load parameters into another model, or continue another data stream, silently.
RESUME_KEYS = ("model", "pretext", "optimizer.name", "dataset", "train_examples", "image_size",
               "batch_size", "seed", "video.fps", "video.num_frames", "video.frame_stride",
               "video.sampling", "video.test_every")


def check_resumable(saved_meta: dict, config, workdir: str):
  """One-line error before compilation when the workdir was trained with an incompatible config."""
  now = json.loads(config.to_json())
  saved = dict(saved_meta.get("config") or {})

  def lookup(tree, dotted):
    for part in dotted.split("."):
      tree = tree.get(part) if isinstance(tree, dict) else None
    return tree

  # Which kernels run the convolutions changes no parameter: a run may resume with another
  # choice (conv_weight_grad: the option's name before "onednn" was added).
  for tree in (saved, now):
    if isinstance(tree.get("model"), dict):
      tree["model"] = {k: v for k, v in tree["model"].items() if k not in ("conv_kernels", "conv_weight_grad")}
  for key in RESUME_KEYS:
    if lookup(saved, key) != lookup(now, key):
      raise ValueError(f"workdir {workdir} holds a checkpoint of {key} {lookup(saved, key)}, but the config asks "
                       f"for {lookup(now, key)}: use a new --workdir, or the saved {key} settings "
                       f"(in {workdir}/config.json)")


def checkpoint_manager(workdir: str, config=None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=config.checkpoint_every if config else 1,
      max_to_keep=config.keep_checkpoints if config else None,
      enable_async_checkpointing=True, create=config is not None)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def load_metadata(manager: ocp.CheckpointManager, step: int) -> dict:
  restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
  return dict(restored["meta"])


class Preempted(Exception):
  """Raised by ``train`` after a preemption notice, once the checkpoint of ``step`` is complete."""

  def __init__(self, step: int, workdir: str):
    super().__init__(f"preempted: the checkpoint of step {step} in {workdir} is complete; "
                     f"run the same command again to resume")
    self.step = step


class PreemptionNotice:
  """Notices a preemption (SIGTERM) and says at which step boundary the loop saves and stops.

  One process: a SIGTERM handler, installed for the run and then restored,
  records the notice. Several processes: JAX's preemption service (started by
  ``jax.distributed.initialize``) catches the signal on any process and picks
  the first step every process reaches (``reached_preemption_sync_point``), so
  all save the same step. From the notice on, a clock runs: a process still
  alive ``grace_seconds`` later exits hard with a message, so a scheduler's
  deadline is never overrun silently; an unfinished checkpoint is then never
  picked as the latest, and the previous complete one is.
  """

  def __init__(self, grace_seconds: float):
    self.grace_seconds = grace_seconds
    self.noticed_at: float | None = None
    self.distributed = jax.process_count() > 1
    self._previous_handler = None
    if not self.distributed and threading.current_thread() is threading.main_thread():
      self._previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: self._notice())

  def _notice(self):
    if self.noticed_at is None:
      self.noticed_at = time.monotonic()
      timer = threading.Timer(self.grace_seconds, self._expire)
      timer.daemon = True
      timer.start()

  def _expire(self):
    os.write(2, f"sslx-train: error: the checkpoint after the preemption notice did not finish within "
                f"config.preemption_grace_seconds={self.grace_seconds:g}: exiting; the last complete "
                f"checkpoint stays the latest\n".encode())
    os._exit(143)

  def reached(self, step: int) -> bool:
    if self.distributed:
      from jax.experimental import multihost_utils
      if multihost_utils.reached_preemption_sync_point(step):
        self._notice()
    return self.noticed_at is not None

  def close(self):
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)


class StepWatchdog:
  """Exits the process with a one-line error when no training step finishes for ``timeout``
  seconds (0: off), e.g. when another process of a multi-process run died and a
  collective waits for it forever. Armed once the first step (and its compilation)
  is done; paused around long passes that are not steps (a pretext-state refresh).
  """

  def __init__(self, timeout: float, workdir: str):
    self.timeout, self.workdir = timeout, workdir
    self.last_progress: float | None = None
    self.step = 0
    self._stopped = threading.Event()
    if timeout > 0:
      threading.Thread(target=self._watch, daemon=True, name="sslx-step-watchdog").start()

  def progress(self, step: int):
    self.step, self.last_progress = step, time.monotonic()

  def pause(self):
    self.last_progress = None

  def _watch(self):
    while not self._stopped.wait(min(self.timeout / 4, 5.0)):
      if self.last_progress is not None and time.monotonic() - self.last_progress > self.timeout:
        os.write(2, f"sslx-train: error: no training step finished for {self.timeout:g} s after step "
                    f"{self.step} (process {jax.process_index()} of {jax.process_count()}): another process "
                    f"probably died or hangs; restart all processes with the same command to resume "
                    f"from the latest checkpoint in {self.workdir} (config.step_timeout_seconds sets "
                    f"this limit)\n".encode())
        os._exit(1)

  def close(self):
    self._stopped.set()


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


def process_sum(values: dict) -> dict:
  """{name: count} summed over all processes (every process must call it)."""
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  names = sorted(values)
  gathered = multihost_utils.process_allgather(np.asarray([values[n] for n in names], np.int64))
  return dict(zip(names, (int(v) for v in np.asarray(gathered).reshape(jax.process_count(), -1).sum(0))))


def skipped_counts(preprocess) -> dict:
  """Examples the host dropped so far: distinct unreadable images, or clips by reason."""
  if isinstance(preprocess, video.VideoPreprocess):
    return {"skipped_clips_short": preprocess.skipped_short,
            "skipped_clips_unreadable": preprocess.skipped_unreadable}
  return {"skipped_images": len(preprocess.skipped_files)}


def train(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None):
  """Trains until config.total_steps; returns (final state, last logged metrics).

  Raises ``Preempted`` after a SIGTERM once its checkpoint is written, and
  ``FloatingPointError`` on a non-finite step when ``config.on_nonfinite`` is
  "stop" (the last good checkpoint stays the latest).
  """
  mesh = mesh if mesh is not None else make_mesh()
  check_config(config, mesh)

  # Resume: the saved config is compared first, so that a mismatch fails in a line, not in XLA.
  manager = checkpoint_manager(workdir, config)
  latest = manager.latest_step()
  saved_meta = load_metadata(manager, latest) if latest is not None else {}
  if latest is not None:
    check_resumable(saved_meta, config, workdir)

  # Data: this process's share of the global stream, its own preprocessing, batches of the local size.
  source = sources.from_config(config, config.train_split)
  preprocess = make_preprocess(config, source, train=True)
  num_examples = config.get("train_examples") or len(source)
  if media_key(config) == "video":
    # Metadata only: a clear error now if no clip holds a window, rather than an endless filter.
    clip_counts = video.check_lengths(source, fps=config.video.fps, span=preprocess.span)
    if (clip_counts["short"] or clip_counts["unreadable"]) and jax.process_index() == 0:
      logging.warning("%d of %d clips are shorter than the %d-frame window and %d unreadable: "
                      "they are skipped.", clip_counts["short"], len(source), preprocess.span,
                      clip_counts["unreadable"])

  pretext, model = build_model(config)
  if hasattr(pretext, "validate"):
    pretext.validate(config)  # Pretext-specific config checks, before any compilation.
  tx, schedule = make_optimizer(config.optimizer, config.total_steps)

  state, state_sharding = create_train_state(config, model, pretext, tx, mesh)
  if latest is not None:
    try:
      state = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(state)))["state"]
    except (ValueError, KeyError) as e:
      raise ValueError(f"checkpoint at step {latest} in {workdir} does not fit this model "
                       f"({str(e).splitlines()[0][:200]}): use a new --workdir") from None
  start_step = int(state.step)
  # The iterator may depend on the restored pretext state (DeepCluster's epoch of
  # cluster-uniform samples), so it is built, then restored, after the state.
  data_iter = make_train_iterator(config, source, preprocess, pretext, state.pretext_state,
                                  epoch=epoch_of(pretext, config, start_step + 1, num_examples))
  if latest is not None:
    manager.restore(latest, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iter)))
    if jax.process_index() == 0:
      print(f"Resumed from the checkpoint at step {latest} in {workdir}", flush=True)

  meta = run_metadata(config, mesh)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(meta, f, indent=2)

  replicated = NamedSharding(mesh, PartitionSpec())
  train_step = jax.jit(make_train_step(config, model, pretext, tx, schedule),
                       in_shardings=(state_sharding, pipeline.data_sharding(mesh)),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))

  writer = None
  if jax.process_index() == 0:
    import tensorboardX  # Event files for TensorBoard; no TensorFlow needed.
    writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  init_fn = train_state_init_fn(config, model, pretext, tx)
  fresh_params = jax.jit(lambda rng: init_fn(rng).params)
  collect_fn = make_collect_fn(config, model, pretext) if updates_state(pretext) else None
  progress = tqdm.tqdm(total=config.total_steps, initial=start_step, desc="train", unit="step",
                       disable=jax.process_index() != 0 or not config.get("progress_bar", True))
  on_nonfinite = config.get("on_nonfinite", "stop")
  # Steps whose update was dropped (on_nonfinite="skip"), carried in the checkpoints' metadata.
  nonfinite_steps = int(saved_meta.get("nonfinite_steps", 0))
  last_good_step = latest

  checked_step = start_step

  def check_finite(step_metrics, step):
    nonlocal nonfinite_steps, checked_step
    if step <= checked_step:  # Each step once: the save check may have seen it already.
      return
    checked_step = step
    if float(step_metrics["nonfinite"]) == 0.0:
      return
    if on_nonfinite == "skip":
      nonfinite_steps += 1
      logging.warning("Non-finite loss or gradient at step %d: update skipped (%d so far).", step,
                      nonfinite_steps)
      return
    raise FloatingPointError(
        f"non-finite loss or gradient at step {step} (loss {float(step_metrics['loss'])}, gradient norm "
        f"{float(step_metrics['grad_norm'])}): stopped; the latest checkpoint is step {last_good_step}; "
        f"lower --config.optimizer.learning_rate, or set --config.on_nonfinite=skip to drop such steps")

  last_metrics: dict[str, float] = {}
  metrics = None
  # Logged metrics are means over the steps since the last log, not one batch's values: a
  # batch of 32 clips gives an accuracy to +-0.1, too noisy to tell a pretext leaving chance.
  metric_sums, metric_steps = None, 0
  add_metrics = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))  # One dispatch per step, not one per metric.
  tick, tick_step = time.perf_counter(), start_step
  preemption = PreemptionNotice(config.get("preemption_grace_seconds", 30))
  watchdog = StepWatchdog(config.get("step_timeout_seconds", 0), workdir)
  preempted_at = None
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      if refresh_due(pretext, config, step, num_examples):
        watchdog.pause()
        state = refresh_pretext_state(config, pretext, state, source, state_sharding=state_sharding,
                                      step=step, collect_fn=collect_fn, fresh_params_fn=fresh_params)
        if hasattr(pretext, "epoch_indices"):
          data_iter = make_train_iterator(config, source, preprocess, pretext, state.pretext_state,
                                          epoch=epoch_of(pretext, config, step, num_examples))
        summary = {k: float(v) for k, v in jax.device_get(state.pretext_state).items()
                   if getattr(v, "ndim", 1) == 0}
        if writer is not None:
          for name, value in summary.items():
            writer.add_scalar(f"pretext_state/{name}", value, step)
        if summary and jax.process_index() == 0:
          logging.warning("Pretext state refreshed before step %d: %s", step, summary)
        tick = time.perf_counter()  # Throughput counts training, not the refresh pass.
      local = next(data_iter)
      previous_metrics = metrics
      key = media_key(config)
      state, metrics = train_step(state, pipeline.to_global({key: local[key], "index": local["index"]}, mesh))
      metric_sums = metrics if metric_sums is None else add_metrics(metric_sums, metrics)
      metric_steps += 1
      # One step in flight: the host prepares the next batch while the device
      # computes, without queueing unboundedly many steps (and batches) ahead.
      if previous_metrics is not None:
        check_finite(previous_metrics, step - 1)  # One scalar to the host, not every metric.
        watchdog.progress(step - 1)
      progress.update(1)
      if step % config.log_every == 0 or step == config.total_steps:
        last_metrics = {k: float(v) / metric_steps for k, v in jax.device_get(metric_sums).items()}
        last_metrics.pop("nonfinite")
        last_metrics["learning_rate"] = float(metrics["learning_rate"])  # The current one.
        metric_sums, metric_steps = None, 0
        now = time.perf_counter()
        # Source examples (images or clips) per second; the pretext may turn each into several inputs.
        last_metrics["images_per_sec"] = (step - tick_step) * config.batch_size / (now - tick)
        last_metrics.update(process_sum(skipped_counts(preprocess)))
        last_metrics["nonfinite_steps"] = nonfinite_steps
        tick, tick_step = now, step
        shown = {"loss": f"{last_metrics['loss']:.3f}"}
        if "accuracy" in last_metrics:  # Regression pretexts have none.
          shown["acc"] = f"{last_metrics['accuracy']:.3f}"
        progress.set_postfix(**shown, img_s=f"{last_metrics['images_per_sec']:.0f}")
        if writer is not None:
          for name, value in last_metrics.items():
            writer.add_scalar(f"train/{name}", value, step)
          writer.flush()
      stop = preemption.reached(step)
      force = step == config.total_steps or stop
      if force or manager.should_save(step):
        check_finite(metrics, step)  # Never checkpoint past a non-finite step.
        if manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(dict(meta, nonfinite_steps=nonfinite_steps))), force=force):
          last_good_step = step
      if stop:
        preempted_at = step
        break
  finally:
    # Also on a crash: finish the checkpoint being written, so the last good one
    # is complete; an unfinished one stays a tmp dir that restore never picks.
    manager.wait_until_finished()
    watchdog.close()
    preemption.close()
    progress.close()
    if writer is not None:
      writer.close()
  if preempted_at is not None:
    raise Preempted(preempted_at, workdir)
  skipped = process_sum(skipped_counts(preprocess))
  if any(skipped.values()) and jax.process_index() == 0:
    logging.warning("Skipped (unreadable or too short, over all processes): %s", skipped)
  return state, last_metrics


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, *, heartbeat_timeout_seconds: int = 100,
                           initialization_timeout: int = 300):
  """Joins JAX's multi-controller runtime; call before any computation.

  With no arguments JAX finds the cluster itself (TPU pods, SLURM, Open MPI,
  Kubernetes); elsewhere give all three (``distributed_settings``). A process
  that stops answering for ``heartbeat_timeout_seconds`` makes the coordination
  service fail every other process with an error, rather than leave them
  waiting forever in a collective.
  """
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=initialization_timeout,
                             heartbeat_timeout_seconds=heartbeat_timeout_seconds)


def distributed_settings(coordinator_address, num_processes, process_id, environ) -> tuple:
  """(coordinator address, process count, process id) from the flags, else from the environment
  variables JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (set by a launcher);
  all None lets JAX detect the cluster."""
  try:
    return (coordinator_address or environ.get("JAX_COORDINATOR_ADDRESS"),
            num_processes if num_processes is not None else
            (int(environ["JAX_NUM_PROCESSES"]) if environ.get("JAX_NUM_PROCESSES") else None),
            process_id if process_id is not None else
            (int(environ["JAX_PROCESS_ID"]) if environ.get("JAX_PROCESS_ID") else None))
  except ValueError:
    raise ValueError(f"JAX_NUM_PROCESSES={environ.get('JAX_NUM_PROCESSES')!r} / JAX_PROCESS_ID="
                     f"{environ.get('JAX_PROCESS_ID')!r} are not integers: fix the launcher's environment") from None


def _define_flags():
  """Command-line flags, defined only when run as a program (never on import)."""
  config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
  flags.DEFINE_string("workdir", None, "Where checkpoints, logs and config.json go.")
  flags.DEFINE_bool("distributed", False,
                    "Call jax.distributed.initialize() first (several processes, e.g. a TPU pod).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (distributed).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (distributed).")
  flags.DEFINE_integer("process_id", None, "This process's index (distributed).")
  flags.DEFINE_integer("heartbeat_timeout", 100,
                       "Seconds without a heartbeat after which a process counts as dead and the "
                       "others fail (distributed).")
  flags.mark_flags_as_required(["config", "workdir"])


def request_deterministic_gpu_ops():
  """Asks XLA for deterministic GPU reductions, scatters and convolution algorithms.

  Without it a GPU run resumed from a checkpoint drifts from an uninterrupted one
  (1e-4 in BatchNorm parameters after 5 steps of the resume test on an H100);
  CPUs and TPUs are deterministic already. XLA reads the flag when the first
  backend starts, so this must run before any computation: the CLI calls it first.
  """
  flag = "--xla_gpu_deterministic_ops=true"
  current = os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_deterministic_ops" not in current:
    os.environ["XLA_FLAGS"] = f"{current} {flag}".strip()


def main(argv):
  del argv
  args = flags.FLAGS
  if args.config.get("deterministic", True):
    request_deterministic_gpu_ops()
  if not args["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  try:
    if args.distributed:
      initialize_distributed(*distributed_settings(args.coordinator_address, args.num_processes,
                                                   args.process_id, os.environ),
                             heartbeat_timeout_seconds=args.heartbeat_timeout)
    _, metrics = train(args.config, args.workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:  # Bad input: one line, no traceback.
    raise SystemExit(f"sslx-train: error: {e}") from None
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    # A collective whose peer is gone (gloo: "Connection closed by peer"): say what it means.
    raise SystemExit(f"sslx-train: error: a collective failed on process {jax.process_index()} of "
                     f"{jax.process_count()} ({str(e).splitlines()[0][:160]}): another process probably died; "
                     f"restart all processes with the same command to resume from the latest checkpoint") from None
  except Preempted as e:
    print(f"sslx-train: {e}", file=sys.stderr, flush=True)
    sys.exit(143)  # 128 + SIGTERM, as if the signal had ended the process.
  if jax.process_index() == 0:
    print(json.dumps({"final_metrics": metrics}))


def run():
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
