"""The one trainer: any pretext (or supervised fine-tuning), any backbone, any number of devices.

    sslx-train --config experiments/rotation_convnet_cifar10.py[:quick] --workdir DIR \
        [--config.dataset=folder:imgs --config.total_steps=500 ...]

Read top to bottom: config -> mesh -> data -> model and optimizer -> sharded
state -> restore if the workdir holds a checkpoint (else, with ``init_from``, the
backbone of another run's checkpoint) -> one jitted step -> loop with logging, the
kNN monitor (sslx/evaluate/knn.py) and Orbax checkpoints. What a run is built of lives in the run layer (sslx/run.py,
sslx/checkpoints.py); preemption, the watchdog and multi-process start-up in
sslx/process.py. Several processes (a pod) start with ``--distributed``.
"""

from __future__ import annotations

import json
import os
import sys
import time

import grain
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
import tqdm
from absl import app, flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags

from sslx import checkpoints, cli, process, run
from sslx.data import audio, pipeline, sources, video
from sslx.evaluate import knn
from sslx.models import conv


def init_from_checkpoint(state, config):
  """The backbone (parameters and BatchNorm statistics) of ``config.init_from``'s checkpoint
  (``config.init_step``, default its latest) in place of the fresh one; the head and the
  optimizer state stay fresh."""
  loaded = checkpoints.load_run(config.init_from, config.get("init_step"))
  saved = jax.tree.structure(loaded.variables["params"])
  if saved != jax.tree.structure(state.params["backbone"]):
    raise ValueError(f"the backbone in {config.init_from} is not this config's model.backbone "
                     f"({loaded.config.model.to_dict()} vs {config.model.to_dict()}): fine-tune with the "
                     f"model settings it was trained with")
  # Through the host: the restored arrays live on this process's devices, the state on the mesh.
  backbone = jax.device_get(loaded.variables)
  params = dict(state.params, backbone=backbone["params"])
  batch_stats = dict(state.batch_stats, backbone=backbone["batch_stats"])
  return state.replace(params=params, batch_stats=batch_stats), loaded.step


def header(config, workdir, *, latest, mesh, num_examples, pretext, param_count, kernels) -> str:
  """What the run is, printed before anything compiles."""
  start = f"resuming from step {latest}" if latest is not None else "fresh"
  if latest is None and config.get("init_from"):
    start += f", backbone from {config.init_from}"
  backbone = config.model.name + (f" x{config.model.width}" if config.model.get("width") else "")
  lines = [f"sslx-train: {workdir} ({start})",
           f"  devices     {mesh.devices.size} {jax.default_backend()} device(s), {jax.process_count()} process(es)",
           f"  data        {config.dataset} split {config.train_split!r}: {num_examples} {run.media_key(config)}s"
           + (f" (decoded-image cache {run.data_setting(config, 'cache_mb'):g} MiB, "
              f"{run.data_setting(config, 'workers')} worker processes)" if run.media_key(config) == "image" else ""),
           f"  pretext     {pretext.name}{' (stateful)' if pretext.stateful else ''}",
           f"  model       {backbone} backbone and the pretext's head: {param_count:,} parameters",
           f"  schedule    {config.total_steps} steps of {config.batch_size} ({config.optimizer.name}, "
           f"lr {config.optimizer.learning_rate:g})",
           f"  {kernels}"]
  allocator = process.allocator_line(jax.default_backend())
  if allocator:
    lines.append(f"  {allocator}")
  return "\n".join(lines)


def train(config: ml_collections.ConfigDict, workdir: str, *, mesh: Mesh | None = None):
  """Trains until config.total_steps; returns (final state, last logged metrics).

  Raises ``process.Preempted`` after a SIGTERM once its checkpoint is written, and
  ``FloatingPointError`` on a non-finite step when ``config.on_nonfinite`` is
  "stop" (the last good checkpoint stays the latest).
  """
  mesh = mesh if mesh is not None else run.make_mesh()
  run.check_config(config, mesh)
  # Which kernels the convolutions will run (a one-line error for a choice that cannot run);
  # the layers decide at trace time from the process's devices, so the line does too.
  kernels = conv.check_kernels(config.model, jax.devices())

  # Data: this process's share of the global stream, its own preprocessing, batches of the local size.
  # Opened first: a missing dataset fails in one line and leaves no empty workdir behind.
  source = sources.from_config(config, config.train_split)

  # Resume: the saved config is compared first, so that a mismatch fails in a line, not in XLA.
  manager = checkpoints.manager(workdir, config)
  latest = manager.latest_step()
  saved_meta = checkpoints.load_metadata(manager, latest) if latest is not None else {}
  if latest is not None:
    checkpoints.check_resumable(saved_meta, config, workdir)
  preprocess = run.make_preprocess(config, source, train=True)
  num_examples = config.get("train_examples") or len(source)
  if run.media_key(config) == "video":
    # Metadata only: a clear error now if no clip holds a window, rather than an endless filter.
    clip_counts = video.check_lengths(source, fps=config.video.fps, span=preprocess.span)
    if (clip_counts["short"] or clip_counts["unreadable"]) and jax.process_index() == 0:
      logging.warning("%d of %d clips are shorter than the %d-frame window and %d unreadable: "
                      "they are skipped.", clip_counts["short"], len(source), preprocess.span,
                      clip_counts["unreadable"])
    if config.get("audio") is not None:  # Sound asked for: one line now if no clip has any.
      sound_counts = audio.check_audio(source, name=config.dataset)
      if sound_counts["no_audio"] and jax.process_index() == 0:
        logging.warning("%d of %d clips have no audio track: they are skipped.", sound_counts["no_audio"],
                        len(source))

  pretext, model = run.build_model(config)
  pretext.validate(config)  # Pretext-specific config checks, before any compilation.
  # The kNN monitor's labelled subsets, opened and checked now (process 0 logs it; the others train on).
  monitor_every = config.evaluate.get("every", 0) or 0
  monitor = None
  if monitor_every > 0 and jax.process_index() == 0:
    try:
      monitor = knn.KnnMonitor(config)
    except (ValueError, FileNotFoundError) as e:
      raise ValueError(f"{e}; or turn the kNN monitor off with --config.evaluate.every=0") from None
  tx, schedule = run.make_optimizer(config.optimizer, config.total_steps)
  init_fn = run.train_state_init_fn(config, model, pretext, tx)
  abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  if jax.process_index() == 0:
    param_count = sum(x.size for x in jax.tree.leaves(abstract.params))
    print(header(config, workdir, latest=latest, mesh=mesh, num_examples=num_examples, pretext=pretext,
                 param_count=param_count, kernels=kernels), flush=True)
  if latest is not None and latest >= config.total_steps:
    # Finished: say so, with the metrics it ended on, instead of an empty run.
    metrics = saved_meta.get("final_metrics", {})
    if jax.process_index() == 0:
      print(f"sslx-train: {workdir} is finished (step {latest} of {config.total_steps}); "
            f"raise --config.total_steps to train on", flush=True)
    return None, metrics

  state, state_sharding = run.create_train_state(config, model, pretext, tx, mesh)
  if latest is not None:
    state = checkpoints.restore_state(manager, latest, state, workdir=workdir)
  elif config.get("init_from"):
    state, init_step = init_from_checkpoint(state, config)
    state = jax.device_put(state.replace(opt_state=tx.init(state.params)), state_sharding)
    if jax.process_index() == 0:
      print(f"Backbone initialised from the checkpoint at step {init_step} in {config.init_from}", flush=True)
  start_step = int(state.step)
  # The iterator may depend on the restored pretext state (DeepCluster's epoch of
  # cluster-uniform samples), so it is built, then restored, after the state.
  data_iter = run.make_train_iterator(config, source, preprocess, pretext, state.pretext_state,
                                      epoch=run.epoch_of(pretext, config, start_step + 1, num_examples))
  if latest is not None:
    manager.restore(latest, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(data_iter)))
    if jax.process_index() == 0:
      print(f"Resumed from the checkpoint at step {latest} in {workdir}", flush=True)

  meta = run.run_metadata(config, mesh)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(meta, f, indent=2)

  replicated = NamedSharding(mesh, PartitionSpec())
  train_step = jax.jit(run.make_train_step(config, model, pretext, tx, schedule),
                       in_shardings=(state_sharding, pipeline.data_sharding(mesh)),
                       out_shardings=(state_sharding, replicated), donate_argnums=(0,))

  writer = None
  if jax.process_index() == 0:
    import tensorboardX  # Event files for TensorBoard; no TensorFlow needed.
    writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))

  fresh_params = run.jit_once(lambda rng: init_fn(rng).params)
  collect_fn = run.make_collect_fn(config, model, pretext) if pretext.stateful else None
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

  last_metrics: dict[str, float] = dict(saved_meta.get("final_metrics", {}))
  metrics = None
  # Logged metrics are means over the steps since the last log, not one batch's values: a
  # batch of 32 clips gives an accuracy to +-0.1, too noisy to tell a pretext leaving chance.
  metric_sums, metric_steps = None, 0
  add_metrics = jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b))  # One dispatch per step, not one per metric.
  tick, tick_step = time.perf_counter(), start_step
  preemption = process.PreemptionNotice(config.get("preemption_grace_seconds", 30))
  watchdog = process.StepWatchdog(config.get("step_timeout_seconds", 0), workdir)
  preempted_at = None
  batch_keys = run.batch_keys(config)
  try:
    for step in range(start_step + 1, config.total_steps + 1):
      if run.refresh_due(pretext, config, step, num_examples):
        watchdog.pause()
        state = run.refresh_pretext_state(config, pretext, state, source, state_sharding=state_sharding,
                                          step=step, collect_fn=collect_fn, fresh_params_fn=fresh_params)
        if pretext.state.epoch_indices is not None:
          data_iter.close()  # Stops its worker processes, if any.
          data_iter = run.make_train_iterator(config, source, preprocess, pretext, state.pretext_state,
                                              epoch=run.epoch_of(pretext, config, step, num_examples))
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
      state, metrics = train_step(state, pipeline.to_global({k: local[k] for k in batch_keys}, mesh))
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
        last_metrics.update(process.process_sum(run.skipped_counts(preprocess)))
        last_metrics["nonfinite_steps"] = nonfinite_steps
        tick, tick_step = now, step
        shown = {"loss": f"{last_metrics['loss']:.3f}"}
        if "accuracy" in last_metrics:  # Regression pretexts have none.
          shown["acc"] = f"{last_metrics['accuracy']:.3f}"
        skipped = sum(v for k, v in last_metrics.items() if k.startswith("skipped_"))
        if skipped:
          shown["skipped"] = str(int(skipped))
        progress.set_postfix(**shown, img_s=f"{last_metrics['images_per_sec']:.0f}")
        if writer is not None:
          for name, value in last_metrics.items():
            writer.add_scalar(f"train/{name}", value, step)
          writer.flush()
      if monitor is not None and (step % monitor_every == 0 or step == config.total_steps):
        watchdog.pause()
        started = time.perf_counter()
        for block, accuracy in monitor(state).items():
          writer.add_scalar(f"knn/{block}", accuracy, step)
        writer.flush()
        tick += time.perf_counter() - started  # Throughput counts training, not the monitor.
      stop = preemption.reached(step)
      force = step == config.total_steps or stop
      if force or manager.should_save(step):
        check_finite(metrics, step)  # Never checkpoint past a non-finite step.
        if manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(dict(meta, nonfinite_steps=nonfinite_steps, final_metrics=last_metrics))),
            force=force):
          last_good_step = step
      if stop:
        preempted_at = step
        break
  finally:
    # Also on a crash: finish the checkpoint being written, so the last good one
    # is complete; an unfinished one stays a tmp dir that restore never picks.
    manager.wait_until_finished()
    data_iter.close()
    watchdog.close()
    preemption.close()
    progress.close()
    if writer is not None:
      writer.close()
  if preempted_at is not None:
    raise process.Preempted(preempted_at, workdir)
  skipped = process.process_sum(run.skipped_counts(preprocess))
  if any(skipped.values()) and jax.process_index() == 0:
    logging.warning("Skipped (unreadable or too short, over all processes): %s", skipped)
  return state, last_metrics


# --- The command line. ---------------------------------------------------------------------

USAGE = """Usage: sslx-train --config=PATH[:quick] --workdir=DIR [--config.KEY=VALUE ...]

Trains the config's pretext (or supervised fine-tuning) and writes checkpoints, TensorBoard
logs and config.json to DIR; rerunning the same command resumes from the latest checkpoint.
List a config's fields and values with: sslx-train --config=PATH --print_config
"""
FLAG_NAMES = ("workdir", "config", "print_config", "distributed", "coordinator_address", "num_processes",
              "process_id", "heartbeat_timeout")


def _define_flags():
  """Command-line flags, defined only when run as a program (never on import)."""
  flags.DEFINE_string("workdir", None, "Where checkpoints, logs and config.json go.")
  config_flags.DEFINE_config_file("config", None, "Experiment config file (path[:arg]).")
  flags.DEFINE_bool("print_config", False, "Print the resolved config (every field) and exit.")
  flags.DEFINE_bool("distributed", False,
                    "Call jax.distributed.initialize() first (several processes, e.g. a TPU pod).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (distributed).")
  flags.DEFINE_integer("num_processes", None, "Number of processes (distributed).")
  flags.DEFINE_integer("process_id", None, "This process's index (distributed).")
  flags.DEFINE_integer("heartbeat_timeout", 100,
                       "Seconds without a heartbeat after which a process counts as dead and the "
                       "others fail (distributed).")


def main(argv):
  del argv
  args = flags.FLAGS
  if args.config is None:
    raise SystemExit("sslx-train: error: --config is required: --config=experiments/NAME.py[:quick]")
  if args.print_config:
    print(args.config)
    return
  if args.workdir is None:
    raise SystemExit("sslx-train: error: --workdir is required: where checkpoints and logs go")
  if args.config.get("deterministic", True):
    process.request_deterministic_gpu_ops()
  if not args["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
  try:
    if args.distributed:
      process.initialize_distributed(*process.distributed_settings(
          args.coordinator_address, args.num_processes, args.process_id, os.environ),
          heartbeat_timeout_seconds=args.heartbeat_timeout)
    # Built (or loaded from its cache) now, once, with one line, rather than inside tracing.
    line = conv.prepare_kernels(args.config.model, jax.devices())
    if jax.process_index() == 0:
      print(f"sslx-train: {line}", flush=True)
    _, metrics = train(args.config, args.workdir)
  except (ValueError, FileNotFoundError, FloatingPointError) as e:  # Bad input: one line, no traceback.
    cli.exit_quietly(f"sslx-train: error: {e}")
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    # A collective whose peer is gone (gloo: "Connection closed by peer"): say what it means.
    cli.exit_quietly(f"sslx-train: error: a collective failed on process {jax.process_index()} of "
                     f"{jax.process_count()} ({str(e).splitlines()[0][:160]}): another process probably "
                     f"died; restart all processes with the same command to resume from the latest checkpoint")
  except process.Preempted as e:
    cli.exit_quietly(f"sslx-train: {e}", 143)  # 128 + SIGTERM, as if the signal had ended the process.
  if jax.process_index() == 0:
    print(json.dumps({"final_metrics": metrics}), flush=True)


def cli_main():
  """The ``sslx-train`` entry point."""
  _define_flags()
  argv = sys.argv[1:]
  if cli.wants_help(argv):
    print(cli.help_text(USAGE, FLAG_NAMES))
    sys.exit(0)
  path = cli.config_path_arg(argv)
  if path:
    from sslx import configs
    file, _, arg = path.partition(":")
    try:
      config = configs.load(file, arg or None)
    except Exception:  # noqa: BLE001  (the config flag reports a broken config file itself)
      config = None
    error = config and cli.config_key_error("sslx-train", argv, config)
    if error:
      raise SystemExit(error)
  app.run(main)


if __name__ == "__main__":
  cli_main()
