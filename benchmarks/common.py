"""What the benchmarks share: a real batch from the embedded sample and the trainer's own step.

Benchmarks import it as ``common`` (each puts its own folder on ``sys.path``).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sslx import train
from sslx.data import image_ops, pipeline, sources


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


def train_step(config, mesh=None):
  """The trainer's jitted step (donated state), its initial state and sharding, and the mesh."""
  mesh = mesh if mesh is not None else train.make_mesh()
  pretext, model = train.build_model(config)
  tx, schedule = train.make_optimizer(config.optimizer, config.total_steps)
  state, state_sharding = train.create_train_state(config, model, pretext, tx, mesh)
  step = jax.jit(train.make_train_step(config, model, pretext, tx, schedule),
                 in_shardings=(state_sharding, pipeline.data_sharding(mesh)),
                 out_shardings=(state_sharding, NamedSharding(mesh, PartitionSpec())), donate_argnums=(0,))
  return step, state, state_sharding, mesh
