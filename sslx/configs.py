"""Defaults shared by the experiment configs in experiments/.

Each experiment file starts from ``base()`` and states what it changes;
``quick(config)`` shrinks any config to a two-step CPU run on the embedded
sample (used by ``path.py:quick`` and by the tests).
"""

from __future__ import annotations

import importlib.util
import os

import ml_collections

from sslx.data import image_ops


def load(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of an experiment file (``arg="quick"``: its two-step CPU mode), for
  scripts and tests; ``sslx-train`` reads the same files through ml_collections' config flags."""
  spec = importlib.util.spec_from_file_location("experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data: 'sample', 'folder:NAME' or 'tfds:NAME' (see sslx/data/sources.py).
  c.dataset = "sample"
  # Where folder:NAME datasets are (and TFDS's data_dir); None: $SSLX_DATA_DIR, else ./data.
  c.data_dir = ml_collections.config_dict.placeholder(str)
  c.test_every = 4  # Image folders without split folders: every 4th image per class is test.
  c.train_split = "train"
  c.train_examples = ml_collections.config_dict.placeholder(int)  # First n examples only (None: all).
  c.image_size = 32
  c.resize_size = ml_collections.config_dict.placeholder(int)  # Shorter side before cropping.
  c.crop_padding = 4  # CIFAR-style pad-and-crop; 0 for a plain random crop.
  c.flip = True
  c.data_threads = 2  # grain reader threads (per worker process when data.workers > 0).
  # The host pipeline (sslx/data/pipeline.py). cache_mb: decoded, resized training images kept
  # in memory per process (first epoch decodes, later ones copy; the same batches either way),
  # 0 decodes every time; CIFAR-10's 50,000 take 147 MiB. workers: grain worker processes for
  # image datasets whose decoding outruns data_threads (0: threads in this process); the same
  # batches in the same order either way.
  c.data = ml_collections.ConfigDict({"cache_mb": 1024, "workers": 0})
  c.normalize = ml_collections.ConfigDict(
      {"mean": image_ops.CIFAR10_MEAN, "std": image_ops.CIFAR10_STD})

  # conv_kernels (2D backbones): which kernels run the convolutions, see sslx/models/conv.py:
  # "auto" = oneDNN's on one CPU device (per-tap weight-gradient matmuls on several), XLA's elsewhere.
  c.model = ml_collections.ConfigDict({"name": "convnet", "widths": (32, 64, 128),
                                       "kernel_sizes": (3, 3, 3), "dtype": "float32",
                                       "conv_kernels": "auto"})

  # Start from another run's backbone (sslx-finetune sets it): that workdir and its step (None:
  # the latest). Only on a fresh start; a resumed run restores its own checkpoint.
  c.init_from = ml_collections.config_dict.placeholder(str)
  c.init_step = ml_collections.config_dict.placeholder(int)

  c.batch_size = 128  # Global, in source images (before the pretext multiplies them).
  c.total_steps = 1000
  c.optimizer = ml_collections.ConfigDict({
      "name": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True,
      "weight_decay": 5e-4, "schedule": "cosine", "warmup_steps": 100,
      "decay_at": (0.3, 0.6, 0.8), "decay_factor": 0.2})

  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 2
  c.progress_bar = True
  # A non-finite loss, gradient or update: 'stop' fails naming the step (the last good
  # checkpoint stays the latest); 'skip' leaves the state unchanged, counts it and goes on.
  c.on_nonfinite = "stop"
  # After a SIGTERM (preemption notice) the run checkpoints at the next step boundary and
  # exits; a process still alive this long after the notice exits hard (see train.PreemptionNotice).
  c.preemption_grace_seconds = 30.0
  # A process whose training step has not finished for this long (after the first, compiled
  # one) exits with an error instead of waiting forever on a dead peer; 0 turns it off.
  c.step_timeout_seconds = 1800.0
  # sslx-train asks XLA for deterministic GPU kernels, so that a resumed run ends with exactly
  # the parameters of an uninterrupted one on GPUs as on CPUs and TPUs; False trades that for speed.
  c.deterministic = True

  # Linear probe (sslx/evaluate/linear.py). Protocol after Zhang et al. (ECCV 2016)
  # and Goyal et al. (ICCV 2019): frozen backbone, each block's map average-pooled
  # to a spatial grid of at most `max_features` dims, one linear softmax
  # classifier per block on standardised features, no augmentation.
  c.evaluate = ml_collections.ConfigDict({
      "dataset": ml_collections.config_dict.placeholder(str),  # None: the training dataset.
      # patch_grid g > 0: average the features of a g x g grid of patches (patch pretexts).
      "patch_grid": 0,
      "train_split": "train", "test_split": "test", "max_features": 4096, "batch_size": 256,
      "epochs": 30, "learning_rate": 1e-3, "weight_decay": 5e-4, "seed": 0,
      # kNN monitor while pretraining (sslx/evaluate/knn.py, KnnMonitor): every `every` steps
      # and at the last (0: off), kNN top-1 per block of a fixed subset of the evaluation's
      # splits, logged to TensorBoard as knn/<block>; it leaves the run's result unchanged.
      "every": 500, "monitor_train_examples": 5000, "monitor_test_examples": 1000,
      "monitor_k": 20, "monitor_temperature": 0.07})
  return c


def base_video() -> ml_collections.ConfigDict:
  """``base()`` plus the host's clip sampling (sslx/data/video.py), for egogestar on a CPU.

  Clips are resampled to 10 fps, the lowest native rate in egogestar (so no
  frame is ever repeated) and one at which its 1-9 s gestures span 11-94 frames.
  """
  c = base()
  c.dataset = "folder:egogestar"  # In the data directory (sslx/data/sources.py).
  del c["test_every"]  # Clip folders split by video.test_every.
  # Labels of a folder: dataset of clips from a CSV instead of its class folders (sslx/data/sources.py):
  # the file (a relative path is looked up in the dataset folder, then in each folder above it up to
  # the data directory) and the column to read. None: the class folders' labels.
  c.label_file = ml_collections.config_dict.placeholder(str)
  c.label_column = ml_collections.config_dict.placeholder(str)
  c.video = ml_collections.ConfigDict({
      "fps": 10.0,
      "num_frames": 8,  # Frames delivered per clip (the pretext says how many it needs).
      "frame_stride": 1,  # In resampled frames.
      # 'motion': among high-motion windows; 'random': any window; 'spread': one random frame in each
      # of num_frames equal stretches of the whole clip (TSN), frame_stride unused.
      "sampling": "motion",
      "motion": "flow",  # 'flow': mean Farneback magnitude; 'diff': mean frame difference.
      "motion_quantile": 0.5,  # Windows at or above this quantile of the clip's motion.
      # Per-pixel motion maps delivered with the frames as batch["motion"] (B, T, S, S) uint8, for
      # motion segmentation: `motion` flow less the frame's median flow, or frame differences,
      # normalised per clip (sslx/data/video.py, motion_maps).
      "motion_masks": False,
      "cache_mb": 2048,  # Decoded-frame cache per process (0: decode every time, seeking).
      "test_every": 4,  # Folders without split folders: every 4th clip per class is test.
      # tfds: video datasets whose records carry no timestamps: their frame rate (None: known
      # rates, UCF101 25 fps).
      "source_fps": ml_collections.config_dict.placeholder(float),
      # (top, left, height, width) as fractions of the frame: only that box of every frame is kept,
      # before resizing (None: the whole frame).
      "region": ml_collections.config_dict.placeholder(tuple),
  })
  # AdamW, not base()'s SGD 0.1: runs of a few hundred steps on a CPU. With SGD the order tasks
  # stayed at chance for their whole budget (OPN, 480 steps: loss ln 12 throughout); AdamW at
  # 1e-3 leaves chance within ~100 steps (README, "Video I").
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-4
  c.optimizer.warmup_steps = 20
  c.image_size = 64
  c.resize_size = 72  # Shorter side before the (per-clip) random crop; 640x480 -> 96x72.
  c.crop_padding = 0
  c.normalize = ml_collections.ConfigDict(
      {"mean": image_ops.IMAGENET_MEAN, "std": image_ops.IMAGENET_STD})
  c.batch_size = 32
  c.evaluate.batch_size = 32
  # No kNN monitor by default: embedding multi-clip videos costs minutes on a CPU, not seconds
  # (turn it on with --config.evaluate.every=N).
  c.evaluate.every = 0
  c.evaluate.num_clips = 10  # Test-time clips per video, averaged (multi-clip protocol).
  # Clip features: 1 = mean over time (the usual protocol); s > 1 = means over s consecutive
  # stretches, concatenated in order. Gestures are told apart by the order of their motion
  # (swipe left vs right), which a mean over time discards.
  c.evaluate.temporal_segments = 4
  # Frames per evaluated clip; None: video.num_frames. A tuple pretext's window can be longer
  # than the clips its backbone saw (VCOP: 3 clips of 16 frames, 8 apart, in a 64-frame window).
  c.evaluate.num_frames = ml_collections.config_dict.placeholder(int)
  # True: one clip per video, its evaluate.num_frames (else video.num_frames) frames spread over the
  # whole video, one per equal stretch (TSN's test-time sampling), in place of num_clips windows of
  # consecutive frames: the probe sees the whole gesture, as the flow reference in docs/results.md
  # does. Frames repeat in a video shorter than that, so none is skipped.
  c.evaluate.whole_clip = False
  c.evaluate.retrieval_k = (1, 5, 10, 20, 50)
  # The evaluation's labels (probes, retrieval, fine-tuning's test): None keeps label_file /
  # label_column, each on its own (evaluate.label_column=color reads the same file's colours);
  # evaluate.label_file='' reads the class folders instead.
  c.evaluate.label_file = ml_collections.config_dict.placeholder(str)
  c.evaluate.label_column = ml_collections.config_dict.placeholder(str)
  return c


def base_av() -> ml_collections.ConfigDict:
  """``base_video()`` plus sound (sslx/data/video.py delivers each frame window's audio), for
  GRID talking faces on a CPU: 25 fps (GRID's native rate, so no frame is repeated or
  dropped and a frame is 40 ms of audio), one frame per example, 16 kHz mono audio with 0.48 s
  of margin on each side of the frame (1 s in all, L3-Net's window).
  """
  c = base_video()
  c.dataset = "folder:grid_av/s1"  # Speaker 1; split by clip (video.test_every).
  # GRID's labels: grid_av/labels.csv (found above s1/), its spoken command word (bin/lay/place/set).
  # The shipped sample_av keeps its class folders (the same command words).
  c.label_file = "labels.csv"
  c.label_column = "command"
  c.video.fps = 25.0
  c.video.num_frames = 1
  c.video.sampling = "random"  # Motion sampling ranks frame windows; one frame has no motion.
  c.audio = ml_collections.ConfigDict({
      "sample_rate": 16000,  # Mono, resampled on the host.
      "margin_seconds": 0.48,  # Audio beyond the frame window on each side.
  })
  # sslx-sync: offsets searched either way, in frames (SyncNet's +-15); needs as much margin.
  c.evaluate.max_offset_frames = 15
  c.evaluate.temporal_segments = 1  # One-frame windows: nothing to split in time.
  return c


def quick_av(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two steps of a tiny model on the embedded talking-face sample (sslx/data/sample_av)."""
  c = quick_video(c)
  c.dataset = "sample_av"
  c.video.cache_mb = 128
  if c.get("pretext") is not None and c.pretext.get("audio_model") is not None:
    c.pretext.audio_model.width = 0.0625
  return c


def quick_video(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two steps of a tiny model on the embedded clip sample (sslx/data/sample_video)."""
  c = quick(c)
  c.dataset = "sample_video"
  c.image_size = 32
  c.resize_size = 36
  c.batch_size = 4
  c.evaluate.batch_size = 8
  c.evaluate.num_clips = 2
  c.video.cache_mb = 256
  return c


def quick(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Two steps of a tiny model on the embedded sample: a smoke run, not an experiment."""
  c.dataset = "sample"
  c.data_dir = None
  c.train_examples = None
  if c.image_size > 64:  # ImageNet-sized configs shrink to the sample's 32 px.
    c.image_size = 32
    c.resize_size = None
  if c.model.name == "convnet":
    c.model.widths = (8, 16, 16)
  else:
    c.model.width = 0.125 if c.model.name != "c3d" else 0.0625
  c.batch_size = 16
  c.total_steps = 2
  c.optimizer.warmup_steps = 1
  c.log_every = 1
  c.checkpoint_every = 1
  c.evaluate.dataset = None
  c.evaluate.epochs = 2
  c.evaluate.batch_size = 64
  c.evaluate.every = 0  # No kNN monitor in a smoke run.
  return c
