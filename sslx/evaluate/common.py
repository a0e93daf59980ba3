"""Shared by the evaluation scripts: restore a backbone, extract pooled block features.

Video runs (a config with a ``video`` section) get one feature vector per
video: ``evaluate.num_clips`` clips spread evenly over it (centre crops), each
encoded (a 3D backbone sees the clip, a per-frame 2D backbone each frame), the
features average-pooled over time and space as for images, then averaged over
the frames and clips: the multi-clip protocol of VCOP (Xu et al. 2019) and most
video SSL papers.

Runs with sound (an audio-visual pretext: ``config.audio`` and ``pretext.audio_model``) have
two streams to probe: ``visual``, the backbone on the frames as it saw them in training, and
``audio``, the audio tower (parameters under ``audio``) on the sound it heard in training:
the central ``pretext.audio_seconds`` of each window's delivered audio (the whole of it for a
pretext without that field). Its blocks are pooled like the visual ones, and its features are
averaged over the ``evaluate.num_clips`` windows of a clip in the same way.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags, logging

from sslx import checkpoints, cli, models, run
from sslx.data import pipeline, sources
from sslx.pretexts.audiovisual import correspondence

STREAMS = ("visual", "audio")  # What of a run the probes read: its backbone, or its audio tower.


# Evaluation fields added to base_video() after runs were saved: a stored config without one reads
# as this default, and takes its --config.evaluate.* override.
VIDEO_EVALUATE_ADDED = {"whole_clip": False}


def probes_whole_clips(config) -> bool:
  """Whether a video run is evaluated on one clip spread over each whole video."""
  return config.get("video") is not None and bool(config.evaluate.get("whole_clip", False))


def for_evaluation(config, *, temporal_segments: int | None = None):
  """The run's config as evaluation uses it: clips of ``evaluate.num_frames`` frames when set,
  one clip per video with ``evaluate.whole_clip``, and ``temporal_segments`` (video clip
  features) when given."""
  config = ml_collections.ConfigDict(config.to_dict())
  if config.get("video") is not None and config.evaluate.get("num_frames"):
    config.video.num_frames = config.evaluate.num_frames
  if probes_whole_clips(config):
    config.evaluate.num_clips = 1
  if temporal_segments is not None:
    if temporal_segments < 1:
      raise ValueError(f"temporal_segments must be >= 1 (1: mean over time), got {temporal_segments}")
    config.evaluate.temporal_segments = temporal_segments
  return config


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
  to_input = run.backbone_input_fn(config)
  grid = config.evaluate.get("patch_grid") or 0
  if run.media_key(config) == "video":
    return video_feature_fn(backbone, to_input, max_features,
                            segments=config.evaluate.get("temporal_segments", 1),
                            clip_fn=run.clip_input_fn(config))

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
  then averaged over the K clips. ``clip_fn`` (``clip_input_fn``) first turns the clips into
  what the backbone was trained on (a 2D backbone's frames, a 3D backbone's clips).
  """
  three_d = run.takes_video(backbone)
  per_segment = max(1, max_features // segments)

  @jax.jit
  def features(variables, clips):
    batch = clips.shape[0]
    x = clips.reshape((-1,) + clips.shape[-4:])  # (B * K, T, H, W, 3)
    if clip_fn is not None:
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


def check_stream(config, stream: str) -> None:
  """One line for a stream the run does not have: an unknown name, or ``audio`` for a run
  trained without sound."""
  if stream not in STREAMS:
    raise ValueError(f"unknown stream {stream!r}: use 'visual' (the backbone) or 'audio' (an audio-visual "
                     f"run's audio tower)")
  pretext = config.get("pretext")
  if stream == "audio" and (config.get("audio") is None or pretext is None
                            or pretext.get("audio_model") is None):
    name = pretext.name if pretext is not None else "no pretext"
    raise ValueError(f"the audio stream needs a run trained with sound and an audio tower (config.audio, "
                     f"pretext.audio_model), but this run was trained with {name}: probe the visual stream")


def audio_input_fn(config):
  """Delivered waveforms ``(N, A)`` -> what the audio tower heard in training: the central
  ``pretext.audio_seconds`` (``correspondence.centre_audio``), or all of it for a pretext
  without that field."""
  cfg = config.pretext
  seconds = cfg.get("audio_seconds")
  if seconds is None:
    return lambda audio: audio
  return lambda audio: correspondence.centre_audio(audio, seconds, cfg.audio_model.sample_rate)


def audio_tower(config):
  """The audio tower of an audio-visual run's config (``pretext.audio_model``)."""
  return models.get_backbone(config.pretext.audio_model)


def audio_variables(state) -> dict:
  """The audio tower's variables in a restored train state (its parameters under ``audio``)."""
  return {"params": state.params["audio"], "batch_stats": state.batch_stats.get("audio", {})}


def random_audio_variables(tower, config, seed: int) -> dict:
  """The same audio tower at random initialisation (BatchNorm at its initial statistics)."""
  heard = audio_input_fn(config)(jnp.zeros((1, run.audio_length(config)), jnp.float32))
  variables = run.jit_once(lambda rng: tower.init(rng, heard, train=False))(jax.random.PRNGKey(seed))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def audio_feature_fn(tower, config, max_features: int):
  """A jitted waveforms(float32, (B, [K,] A)) -> {block: (B, D)} for an audio tower.

  Each window's audio goes through ``audio_input_fn`` and the tower; every block's map is
  average-pooled as a visual block is (``pool_block``; a 1-D tower's ``(N, time, C)`` maps
  as ``(N, time, 1, C)``), and the features of a clip's K windows are averaged.
  """
  to_input = audio_input_fn(config)

  @jax.jit
  def features(variables, audio):
    batch = audio.shape[0]
    maps = tower.apply(variables, to_input(audio.reshape(-1, audio.shape[-1])), train=False)
    out = {}
    for name in models.block_names(maps):
      block = maps[name]
      pooled = pool_block(block[:, :, None] if block.ndim == 3 else block, max_features)
      out[name] = pooled.reshape(batch, -1, pooled.shape[-1]).mean(axis=1)
    return out

  return features


def extract(source, config, feature_fns: dict, variables: dict, *, batch_size: int, mesh,
            key: str | None = None):
  """One pass over ``source``: {model_name: {block: (N, D) features}}, labels (N,), skipped count.

  ``key``: the batch field the feature functions read (default: the media, "image" or
  "video"; "audio" for an audio tower). Runs in one process over its local devices; a
  final partial batch is padded so every batch compiles to the same shape.
  """
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  preprocess = run.make_preprocess(config, source, train=False,
                                       num_clips=config.evaluate.get("num_clips", 1))
  key = key or run.media_key(config)
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


def labeled_sources(config, splits, *, dataset: str, data_dir: str | None, purpose: str) -> dict:
  """{split: source} for each split, with the evaluation's labels (``evaluate.label_file`` /
  ``label_column`` over the run's, sslx/data/sources.py), opened and checked for labels before
  any feature is extracted (a missing split or an unlabeled one fails in one line, in seconds)."""
  out = {}
  for split in splits:
    source = sources.from_config(config, split, dataset=dataset, data_dir=data_dir, evaluation=True)
    labels = getattr(source, "labels", None)
    unlabeled = int(sum(1 for y in labels if y < 0)) if labels is not None else 0
    if unlabeled or source.num_classes < 2:
      raise ValueError(f"{purpose} needs labels of at least 2 classes, but {dataset} split {split!r} has "
                       f"{source.num_classes} classes and {unlabeled} unlabeled examples: pass --dataset "
                       f"with a labeled one")
    out[split] = source
  return out


def load_for_evaluation(workdir: str, script: str, *, overrides: dict[str, str] | None = None,
                        temporal_segments: int | None = None):
  """The run's checkpoint (checkpoints.load_run) with its config made the evaluation's: the
  ``--config.*`` overrides applied (``script`` names the command in their errors), then
  ``for_evaluation``."""
  loaded = checkpoints.load_run(workdir)
  if loaded.config.get("video") is not None:
    for name, default in VIDEO_EVALUATE_ADDED.items():
      if name not in loaded.config.evaluate:
        loaded.config.evaluate[name] = default
  loaded.config = for_evaluation(apply_overrides(loaded.config, overrides or {}, script),
                                 temporal_segments=temporal_segments)
  return loaded


def train_and_test_features(loaded, *, dataset: str | None, data_dir: str | None, purpose: str,
                            stream: str = "visual"):
  """``extract_pretrained_and_random`` of the evaluation's train and test splits of ``dataset``
  (default: ``evaluate.dataset``, else the run's): (dataset, (train features, labels), (test
  features, labels), number of classes, skipped examples)."""
  cfg = loaded.config.evaluate
  dataset = dataset or cfg.get("dataset") or loaded.config.dataset
  splits, num_classes, skipped = extract_pretrained_and_random(
      loaded, (cfg.train_split, cfg.test_split), dataset=dataset, data_dir=data_dir, purpose=purpose,
      stream=stream)
  return dataset, splits[cfg.train_split], splits[cfg.test_split], num_classes, skipped


def extract_pretrained_and_random(loaded, splits, *, dataset: str, data_dir: str | None, purpose: str,
                                  stream: str = "visual"):
  """Features of every split for the run's backbone (``stream="audio"``: its audio tower) and
  the same network at random init (seed ``evaluate.seed``): ({split: ({"pretrained"|
  "random_init": {block: (N, D)}}, labels)}, number of classes, skipped examples). The
  stream and the splits are checked before any extraction."""
  config, cfg = loaded.config, loaded.config.evaluate
  check_stream(config, stream)
  split_sources = labeled_sources(config, splits, dataset=dataset, data_dir=data_dir, purpose=purpose)
  mesh = run.make_mesh(jax.local_devices())
  if stream == "audio":
    tower = audio_tower(config)
    fn, key = audio_feature_fn(tower, config, cfg.max_features), "audio"
    variables = {"pretrained": audio_variables(loaded.state),
                 "random_init": random_audio_variables(tower, config, cfg.seed)}
  else:
    fn, key = feature_fn(loaded.backbone, config, cfg.max_features), None
    variables = {"pretrained": loaded.variables,
                 "random_init": run.random_init_variables(loaded.backbone, config, cfg.seed)}
  fns = dict.fromkeys(variables, fn)  # One function (one compilation) for both sets of weights.
  out, skipped = {}, 0
  for split, source in split_sources.items():
    features, labels, n_skipped = extract(source, config, fns, variables, batch_size=cfg.batch_size,
                                          mesh=mesh, key=key)
    if (labels < 0).any():
      raise ValueError(f"{purpose} needs labels, but {dataset} split {split!r} has {int((labels < 0).sum())} "
                       f"unlabeled examples: pass --dataset with a labeled one")
    out[split] = (features, labels)
    skipped += n_skipped
  return out, max(source.num_classes for source in split_sources.values()), skipped


def av_windows(source, config, *, batch_size: int):
  """Every clip's evaluation windows with their sound, for the audio-visual scripts: (video
  (N, T, H, W, 3) uint8, audio (N, A), clip id (N,), window slot (N,), skipped clips), with
  ``evaluate.num_clips`` windows per clip spread evenly over it."""
  num_clips = config.evaluate.get("num_clips", 1)
  preprocess = run.make_preprocess(config, source, train=False, num_clips=num_clips)
  dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False)
  videos, audios, clips = [], [], []
  for batch in dataset:
    video, audio = batch["video"], batch["audio"]
    if num_clips == 1:
      video, audio = video[:, None], audio[:, None]
    videos.append(video.reshape((-1,) + video.shape[2:]))
    audios.append(audio.reshape((-1, audio.shape[-1])))
    clips.append(np.repeat(batch["index"], num_clips))
  if not videos:
    raise ValueError("no clip could be evaluated (all skipped): check the dataset has sound")
  clip = np.concatenate(clips)
  slot = np.tile(np.arange(num_clips), len(clip) // num_clips)
  return np.concatenate(videos), np.concatenate(audios), clip, slot, preprocess.skipped


# --- The scripts' shared plumbing. ------------------------------------------------------------


def results_stem(stem: str, config) -> str:
  """``stem``, or ``stem-whole`` for video probed on whole clips (``evaluate.whole_clip``), so that
  one checkpoint's results under both protocols sit side by side."""
  return f"{stem}-whole" if probes_whole_clips(config) else stem


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


WORKDIR_FLAGS = ("workdir", "dataset", "data_dir")


def define_workdir_flags(dataset_help: str = "Evaluation data; default: the config's.") -> None:
  """The flags every evaluation script takes: the run to read and the data to read it on."""
  flags.DEFINE_string("workdir", None, "A training workdir (holds checkpoints/).")
  flags.DEFINE_string("dataset", None, dataset_help)
  flags.DEFINE_string("data_dir", None, "Data directory: folder:NAME datasets resolve against it, and "
                      "TFDS reads tfds: datasets from it; default: the run's config.")


def define_split_flags(stem: str) -> None:
  """The audio-visual scripts' ``--splits`` (several splits evaluated together) and ``--name``."""
  flags.DEFINE_list("splits", None, "Splits to evaluate together (default: evaluate.test_split); "
                    "e.g. train,test for a speaker never trained on.")
  flags.DEFINE_string("name", None, f"Suffix of the result files: eval/{stem}-NAME.json.")


def apply_overrides(config, overrides: dict[str, str], program: str):
  """The stored config with ``--config.KEY=VALUE`` overrides (evaluation settings such as
  ``evaluate.test_split=val``), each checked against the stored fields and typed like them."""
  config = ml_collections.ConfigDict(config.to_dict())
  for key, text in overrides.items():
    error = cli.config_key_error(program, [f"--config.{key}="], config)
    if error:
      raise ValueError(error.split(": error: ", 1)[1])
    *parents, name = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    old = node[name]
    try:
      value = cli.parse_value(text, old)
      node[name] = value
    except (TypeError, ValueError) as e:
      raise ValueError(f"--config.{key}={text}: {e}: give a value of the field's type "
                       f"({type(old).__name__})") from None
  return config


def run_script(name: str, body, *, usage: str, flag_names: tuple[str, ...]) -> None:
  """Runs ``body(flags.FLAGS, overrides)`` as an absl app: ``--help`` lists the script's own flags,
  ``--config.KEY=VALUE`` arguments become overrides of the run's stored config, library logging
  is quiet unless ``--verbosity`` is given, and bad input ends it with one line."""
  argv = sys.argv[1:]
  if cli.wants_help(argv):
    print(cli.help_text(usage, WORKDIR_FLAGS + flag_names))
    sys.exit(0)
  overrides = cli.config_overrides(argv)
  sys.argv = [sys.argv[0]] + [a for a in argv if not a.startswith("--config.")]

  def main(argv):
    del argv
    args = flags.FLAGS
    if not args["verbosity"].present:
      logging.set_verbosity(logging.WARNING)
    if args.workdir is None:
      raise SystemExit(f"{name}: error: --workdir is required: the training workdir to evaluate")
    try:
      body(args, overrides)
    except (ValueError, FileNotFoundError) as e:
      cli.exit_quietly(f"{name}: error: {e}")
  app.run(main)


# --- A run's own records: its TensorBoard scalars and its evaluations' results. ------------------


def read_scalars(workdir: str) -> dict:
  """Every scalar the run logged to ``workdir/tensorboard``: {tag: {"step": (N,), "value": (N,)}},
  sorted by step; a step logged again after a resume keeps its latest value. Also
  ``"_training_seconds"``: wall time from each event file's first event to its last, summed over
  the files (a resumed run writes one per start, so the time it was down does not count)."""
  from tensorboard.backend.event_processing import event_file_loader  # Only the readers need it.
  log_dir = os.path.join(workdir, "tensorboard")
  files = sorted(os.path.join(log_dir, f) for f in os.listdir(log_dir)
                 if "tfevents" in f) if os.path.isdir(log_dir) else []
  if not files:
    raise FileNotFoundError(f"no TensorBoard logs in {log_dir}: is {workdir} a training workdir?")
  points: dict[str, dict[int, float]] = {}
  seconds = 0.0
  for path in files:
    times = []
    for event in event_file_loader.LegacyEventFileLoader(path).Load():
      times.append(event.wall_time)
      for value in event.summary.value:
        if value.WhichOneof("value") == "simple_value":
          points.setdefault(value.tag, {})[int(event.step)] = float(value.simple_value)
    if times:
      seconds += max(times) - min(times)
  out = {tag: {"step": np.array(sorted(by_step)), "value": np.array([by_step[s] for s in sorted(by_step)])}
         for tag, by_step in points.items()}
  out["_training_seconds"] = seconds
  return out


def read_results(workdir: str) -> dict[str, dict]:
  """{stem: results} of every ``workdir/eval/<stem>.json`` an evaluation script wrote."""
  out_dir = os.path.join(workdir, "eval")
  if not os.path.isdir(out_dir):
    return {}
  results = {}
  for name in sorted(os.listdir(out_dir)):
    if name.endswith(".json"):
      with open(os.path.join(out_dir, name)) as f:
        results[name[:-len(".json")]] = json.load(f)
  return results
