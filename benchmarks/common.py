"""What the benchmarks share: the data directory, a real batch from the embedded sample and
the trainer's own step.

Benchmarks import it as ``common`` (each puts its own folder on ``sys.path``). Importing it
sets the data directory of ``folder:NAME`` datasets (sslx/data/sources.py) to the data beside
the repository, ../shared/data, unless ``SSLX_DATA_DIR`` names another.
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sslx import configs, run
from sslx.data import image_ops, pipeline, sources
from sslx.models import conv

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.setdefault("SSLX_DATA_DIR", str(REPO.parent / "shared" / "data")))


def real_batch(batch_size: int, size: int = 32, *, index_classes: int | None = None) -> dict:
  """``batch_size`` decoded images of the embedded sample (uint8 NHWC), resized to ``size`` if
  needed, with ``index`` 0..batch_size-1 (modulo ``index_classes``: pretexts with per-example
  classes, e.g. exemplar, get a label range that fits their heads)."""
  source = sources.get_source("sample", "train")
  images = np.stack([image_ops.decode(source[i % len(source)]["image"]) for i in range(batch_size)])
  if size != images.shape[1]:
    images = np.asarray(jax.image.resize(images.astype(np.float32), (batch_size, size, size, 3), "bilinear"))
    images = np.clip(images, 0, 255).astype(np.uint8)
  index = np.arange(batch_size, dtype=np.int32)
  return {"image": images, "index": index % index_classes if index_classes else index}


_KERNEL_LINES: set[str] = set()


def prepare_kernels(config, devices) -> str:
  """``conv.prepare_kernels`` for ``config.model`` as sslx-train does at start-up (oneDNN built or
  loaded before anything traces); its line goes to stderr, once per distinct line."""
  line = conv.prepare_kernels(config.model, devices)
  if line not in _KERNEL_LINES:
    _KERNEL_LINES.add(line)
    print(line, file=sys.stderr, flush=True)
  return line


def train_step(config, mesh=None):
  """The trainer's jitted step (donated state), its initial state and sharding, and the mesh."""
  mesh = mesh if mesh is not None else run.make_mesh()
  prepare_kernels(config, mesh.devices.flat)
  pretext, model = run.build_model(config)
  tx, schedule = run.make_optimizer(config.optimizer, config.total_steps)
  state, state_sharding = run.create_train_state(config, model, pretext, tx, mesh)
  step = jax.jit(run.make_train_step(config, model, pretext, tx, schedule),
                 in_shardings=(state_sharding, pipeline.data_sharding(mesh)),
                 out_shardings=(state_sharding, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))
  return step, state, state_sharding, mesh


def add_config_arguments(parser, default_configs, default_batch_sizes: str | None = None):
  """``--configs`` (files in experiments/ or paths) and ``--batch_size`` (one, or one per config)."""
  parser.add_argument("--configs", default=",".join(default_configs),
                      help="Comma-separated files in experiments/ (or paths).")
  parser.add_argument("--batch_size", default=default_batch_sizes,
                      help="One batch size for all configs, or one per config (comma-separated); "
                           "default: " + (default_batch_sizes or "each config's own") + ".")


def configs_and_batch_sizes(configs_arg: str, batch_size_arg) -> list[tuple[str, int | None]]:
  """(config name, batch size or None = the config's own) pairs from the two arguments."""
  names = [n for n in configs_arg.split(",") if n]
  batch_sizes = [int(b) for b in str(batch_size_arg).split(",")] if batch_size_arg else [None]
  if len(batch_sizes) == 1:
    batch_sizes *= len(names)
  if len(batch_sizes) != len(names):
    raise SystemExit(f"--batch_size has {len(batch_sizes)} values for {len(names)} configs: give one or one each")
  return list(zip(names, batch_sizes))


def load_config(name: str, arg: str | None, batch_size: int | None):
  """(config, table label) for a file in experiments/ (or a path), at ``batch_size`` (None: the
  config's own), checked to split over this host's devices."""
  path = pathlib.Path(name) if pathlib.Path(name).is_file() else REPO / "experiments" / name
  config = configs.load(path, arg)
  config.batch_size = batch_size or config.batch_size
  if config.batch_size % jax.device_count():
    raise SystemExit(f"batch size {config.batch_size} is not divisible by the {jax.device_count()} devices")
  return config, path.name + (":quick" if arg else "")
