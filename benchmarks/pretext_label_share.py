"""On-device pretext labels: the share of train-step time spent making a pretext's inputs and labels.

    python benchmarks/pretext_label_share.py [--configs a.py,b.py] [--batch_size 64,32,...] [--repeats 5]
    python benchmarks/pretext_label_share.py --quick   # Each default config's :quick mode, batch 4, 2 repeats.

The trainer makes pseudo-labels inside its jitted step, from a PRNG key folded with the step
(sslx.run.make_train_step): uint8 media -> float in [0, 1] -> ``pretext.make_inputs`` ->
standardisation -> model, loss, gradient, optimizer. Does that cost a measurable part of a step?
Per config (default: rotation, jigsaw and the shuffled-frame tasks OPN and Shuffle and Learn; VCOP's
3D ConvNet costs seconds a step on a CPU, so it is opt-in: ``--configs vcop_r3d_egogestar.py``)
this builds the model, optimizer, state and jitted step exactly as sslx.train does
(benchmarks/common.py), feeds one fixed batch of real data and times, alternating within each
round so that machine noise hits all alike:

- (a) step: the trainer's jitted step, until its state and metrics are ready;
- (b) labels: the step's own first part jitted alone on the same batch (fold the key with the
  step, uint8 -> [0, 1], make_inputs, standardise), until its inputs and targets are ready;
- (c) step, inputs given: the trainer's make_train_step around a pretext whose make_inputs
  returns (b)'s outputs, precomputed and fed in the batch, so scaling, make_inputs and
  standardisation are skipped and the same model, loss and optimizer run.

Share (b)/(a) is what the labels cost as a program of their own (their outputs materialised in
memory); ((a)-(c))/(a) is their cost inside the step, where XLA may fuse them with the first
layer (it can be below (b)/(a), or negative within noise). Before timing, (a) and (c) run from
copies of one state and must give the same loss and gradient norm (relative 1e-4), so (c) cannot
time a different program. Values are medians over ``--repeats`` after one warm-up round; (a)
spread is the range of the step's times over their median, the noise floor below which
((a)-(c))/(a) means nothing. Images are the embedded CIFAR-10 sample (resized to the config's
image size, as benchmarks/pretext_step_speed.py does); clips are the embedded egogestar sample
(sslx/data/sample_video) through the config's own host preprocessing (window length, resize,
crop), with random rather than high-motion windows: which window is shown changes no timing, and
optical flow would cost seconds here. Only stateless pretexts are supported.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx import pretexts, process, run
from sslx.data import pipeline, sources

DEFAULT_CONFIGS = ("rotation_convnet_sample.py", "jigsaw_convnet_cifar10.py", "opn_convnet_egogestar.py",
                   "shuffle_and_learn_convnet_egogestar.py")
QUICK_BATCH_SIZE = 4
TIMED = ("step", "labels", "given")


def real_clips(config, batch_size: int) -> dict:
  """``batch_size`` uint8 clips (B, T, H, W, 3) of the embedded clip sample, through the config's
  own host preprocessing; windows drawn at random (see the module doc)."""
  clip_config = config.copy_and_resolve_references()
  clip_config.video.sampling = "random"
  source = sources.get_source("sample_video", "train")
  preprocess = run.make_preprocess(clip_config, source, train=True)
  rng = np.random.default_rng(0)
  clips = []
  for i in range(4 * (batch_size + len(source))):
    if len(clips) == batch_size:
      break
    out = preprocess(source[i % len(source)], rng)
    if out is not None:
      clips.append(out["video"])
  if len(clips) < batch_size:
    raise SystemExit(f"only {len(clips)} sample clips hold {config.video.num_frames} frames at "
                     f"{config.video.fps} fps")
  return {"video": np.stack(clips), "index": np.arange(batch_size, dtype=np.int32)}


def real_batch(config, batch_size: int) -> dict:
  if run.media_key(config) == "video":
    return real_clips(config, batch_size)
  return common.real_batch(batch_size, config.image_size)


def label_fn(config, pretext):
  """Jitted (state, batch) -> (standardised inputs, targets): the first lines of the trainer's step."""
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  key = run.media_key(config)

  @jax.jit
  def make(state, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    media = batch[key].astype(jnp.float32) / 255.0
    inputs, targets = pretext.make_inputs(rng, dict(batch, **{key: media}), config.pretext,
                                          state=state.pretext_state if pretext.stateful else None)
    return run.standardize_inputs(inputs, mean, std), targets

  return make


# For (c): the trainer's own step around a pretext that hands back precomputed inputs. Each input
# leaf travels inside a 1-tuple, so the step's standardize_inputs (which matches leaves named
# "image" or "video") leaves the already standardised arrays alone; the model unwraps them. The
# loss check in measure() fails if it ever standardised them twice.


def _wrap(inputs):
  return jax.tree.map(lambda x: (x,), inputs)


def _unwrap(inputs):
  return jax.tree.map(lambda t: t[0], inputs, is_leaf=lambda t: isinstance(t, tuple))


class InputsGiven:
  """A pretext whose make_inputs returns ``batch["given_inputs"]`` and ``batch["given_targets"]``."""

  stateful = False

  def __init__(self, pretext):
    self.loss = pretext.loss

  @staticmethod
  def make_inputs(rng, batch, cfg, *, state=None):
    del rng, cfg, state
    return _wrap(batch["given_inputs"]), batch["given_targets"]


class UnwrapInputs:
  """The model, applied to InputsGiven's wrapped inputs (make_train_step only calls ``apply``)."""

  def __init__(self, model):
    self.model = model

  def apply(self, variables, inputs, **kwargs):
    return self.model.apply(variables, _unwrap(inputs), **kwargs)


def measure(config, *, repeats: int, warmup: int = 1) -> dict:
  """Median times (ms) of (a) the step, (b) its pseudo-labels alone, (c) the step with them given."""
  if pretexts.get(config.pretext.name).stateful:
    raise SystemExit(f"{config.pretext.name} is stateful: its labels depend on a refreshed state, "
                     f"which this benchmark does not build")
  step_a, state, state_sharding, mesh = common.train_step(config)
  pretext, model = run.build_model(config)
  pretext.validate(config)
  tx, schedule = run.make_optimizer(config.optimizer, config.total_steps)
  data = pipeline.data_sharding(mesh)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  step_c = jax.jit(run.make_train_step(config, UnwrapInputs(model), InputsGiven(pretext), tx, schedule),
                   in_shardings=(state_sharding, data), out_shardings=(state_sharding, replicated),
                   donate_argnums=(0,))
  labels = label_fn(config, pretext)
  copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_sharding)

  batch = pipeline.to_global(real_batch(config, config.batch_size), mesh)
  inputs, targets = labels(state, batch)  # The labels of the state's current step.
  given = jax.device_put(dict(batch, given_inputs=inputs, given_targets=targets), data)

  # (a) and (c) from one state: same labels, so the same loss (up to fusion's rounding).
  state_c = copy(state)
  state, metrics_a = step_a(state, batch)
  state_c, metrics_c = step_c(state_c, given)
  # The gradient norm too: at initialisation the loss is near log(classes) whatever the inputs.
  check = {k: (float(metrics_a[k]), float(metrics_c[k])) for k in ("loss", "grad_norm")}
  for k, (a, c) in check.items():
    if not (np.isfinite(a) and np.isclose(a, c, rtol=1e-4, atol=1e-6)):
      raise AssertionError(f"{config.pretext.name}: the step with inputs given has {k} {c}, the "
                           f"trainer's step {a}: (c) does not run the same program")

  times: dict[str, list[float]] = {name: [] for name in TIMED}
  label_state = copy(state)  # A copy (the step donates its state); its step advances for fresh keys.
  for i in range(warmup + repeats):
    start = time.perf_counter()
    state, metrics = step_a(state, batch)
    jax.block_until_ready((state, metrics))
    step_s = time.perf_counter() - start

    label_state = label_state.replace(step=label_state.step + 1)
    jax.block_until_ready(label_state.step)
    start = time.perf_counter()
    jax.block_until_ready(labels(label_state, batch))
    labels_s = time.perf_counter() - start

    start = time.perf_counter()
    state_c, metrics = step_c(state_c, given)
    jax.block_until_ready((state_c, metrics))
    given_s = time.perf_counter() - start
    if i >= warmup:
      for name, seconds in zip(TIMED, (step_s, labels_s, given_s)):
        times[name].append(1e3 * seconds)

  result = {f"{name}_ms": statistics.median(values) for name, values in times.items()}
  result["step_spread"] = (max(times["step"]) - min(times["step"])) / result["step_ms"]
  media = jax.tree.leaves(inputs)[0]
  logits = jax.eval_shape(lambda p, b, x: model.apply({"params": p, "batch_stats": b}, x, train=False)[0],
                          state.params, state.batch_stats, inputs)
  result.update(
      batch_size=config.batch_size, repeats=repeats, model_inputs=int(media.shape[0]),
      input_shape=tuple(media.shape), classes=int(logits.shape[-1]),
      labels=np.asarray(jax.device_get(targets["label"])), loss_step=check["loss"][0], loss_given=check["loss"][1],
      grad_norm_step=check["grad_norm"][0], grad_norm_given=check["grad_norm"][1],
      label_share=result["labels_ms"] / result["step_ms"],
      in_step_share=(result["step_ms"] - result["given_ms"]) / result["step_ms"])
  return result


def format_table(rows: list[dict]) -> str:
  header = ("| config | batch | model inputs | classes | (a) step ms | (a) spread | (b) labels ms | (b)/(a) "
            "| (c) step, inputs given ms | ((a)-(c))/(a) |")
  lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for r in rows:
    shape = "x".join(map(str, r["input_shape"][1:]))
    cells = [r["config"], str(r["batch_size"]), f"{r['model_inputs']} of {shape}", str(r["classes"]),
             f"{r['step_ms']:.1f}", f"{r['step_spread']:.3f}", f"{r['labels_ms']:.2f}", f"{r['label_share']:.3f}",
             f"{r['given_ms']:.1f}", f"{r['in_step_share']:.3f}"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  common.add_config_arguments(parser, DEFAULT_CONFIGS)
  parser.add_argument("--repeats", type=int, default=5, help="Timed rounds; medians are reported.")
  parser.add_argument("--quick", action="store_true",
                      help=f"The configs' :quick modes, batch {QUICK_BATCH_SIZE}, 2 repeats.")
  return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
  """Runs the benchmark, prints the markdown table and returns its rows."""
  args = parse_args(sys.argv[1:] if argv is None else argv)
  arg, repeats = ("quick", 2) if args.quick else (None, args.repeats)
  if args.quick and args.batch_size is None:
    args.batch_size = str(QUICK_BATCH_SIZE)
  names, batch_sizes = zip(*common.configs_and_batch_sizes(args.configs, args.batch_size))
  if repeats < 1:
    raise SystemExit("--repeats must be at least 1")

  rows = []
  for name, batch_size in zip(names, batch_sizes):
    config, label = common.load_config(name, arg, batch_size)
    print(f"measuring {label} (batch {config.batch_size}, {repeats} repeats)...", file=sys.stderr, flush=True)
    rows.append({"config": label, **measure(config, repeats=repeats)})
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}; "
        f"medians of {repeats} after 1 warm-up round")
  print(format_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  process.request_deterministic_gpu_ops()  # As sslx-train does, before any computation.
  main()
