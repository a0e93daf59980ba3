"""grain pipelines: per-process shard, seeded shuffle, host ops, batch, prefetch.

Each process reads the disjoint shard ``source[process_index::process_count]``
(sizes differ by at most one), reshuffled every epoch from one seed. Host ops
draw their randomness from grain's per-element generator (seed x element
index), so the stream is a pure function of (seed, position): the iterator's
``get_state()`` is all a checkpoint needs for an exact resume.

Unreadable images are dropped after decoding and counted in
``Preprocess.skipped``; the run goes on.
"""

from __future__ import annotations

import threading

import grain
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from sslx.data import image_ops


class Preprocess:
  """Decode -> resize shorter side -> crop (random + pad when training) -> flip."""

  def __init__(self, *, image_size: int, resize_size: int | None = None, crop_padding: int = 0,
               flip: bool = False, train: bool = True):
    self.image_size = image_size
    self.resize_size = resize_size or image_size
    self.crop_padding = crop_padding
    self.flip = flip
    self.train = train
    self.skipped = 0
    self._lock = threading.Lock()  # grain calls us from several reader threads.

  def __call__(self, record, rng: np.random.Generator | None = None):
    image = image_ops.decode(record["image"])
    if image is None:
      with self._lock:
        self.skipped += 1
      return None
    image = image_ops.resize_shorter_side(image, self.resize_size)
    if self.train:
      image = image_ops.random_crop(image, self.image_size, rng, padding=self.crop_padding)
      if self.flip:
        image = image_ops.random_flip(image, rng)
    else:
      image = image_ops.center_crop(image, self.image_size)
    return {"image": np.ascontiguousarray(image), "label": np.int32(record["label"]),
            "index": np.int32(record.get("index", -1))}


class _Indexed:
  """A random-access source whose records carry their position in it."""

  def __init__(self, source):
    self.source = source

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    # grain's map_with_index sees positions in the derived (sliced, repeated)
    # dataset, not in the source; the source itself knows the true one.
    return dict(self.source[index], index=index)


class _Subset:
  """The records ``source[indices[i]]`` (repeats allowed), carrying their true source index."""

  def __init__(self, source, indices):
    self.source = source
    self.indices = np.asarray(indices, np.int64)

  def __len__(self):
    return len(self.indices)

  def __getitem__(self, i):
    index = int(self.indices[i])
    return dict(self.source[index], index=index)


def make_dataset(source, preprocess: Preprocess, *, batch_size: int, seed: int, train: bool,
                 num_examples: int | None = None, process_index: int = 0, process_count: int = 1,
                 num_threads: int = 2, prefetch: int = 256,
                 indices: np.ndarray | None = None) -> grain.IterDataset:
  """This process's batches of ``batch_size``: endless and shuffled when training,
  one ordered pass with a smaller last batch otherwise.

  Every example carries ``index``, its position in the source, which pretexts
  with per-example identities (exemplar classes, cluster assignments) use.
  ``num_examples`` keeps the first n examples of the source (before sharding).
  ``indices`` (training only) visits those source positions instead, repeats
  allowed: an epoch chosen by a pretext (DeepCluster's uniform sampling over
  clusters), reshuffled at each pass.
  """
  if num_examples is not None and not 0 < num_examples <= len(source):
    raise ValueError(f"num_examples {num_examples} is outside 1..{len(source)} (the source's size): "
                     f"lower --config.train_examples or use a larger dataset")
  if indices is not None:
    bad = (np.asarray(indices) < 0) | (np.asarray(indices) >= len(source))
    if bad.any():
      raise ValueError(f"epoch indices hold {int(bad.sum())} positions outside 0..{len(source) - 1}: "
                       f"the pretext state does not match this dataset, use a new --workdir")
    ds = grain.MapDataset.source(_Subset(source, indices))
  else:
    ds = grain.MapDataset.source(_Indexed(source))
  if num_examples is not None and indices is None:
    ds = ds[:num_examples]
  ds = ds[process_index::process_count]
  if train:
    ds = ds.shuffle(seed=seed).repeat()  # shuffle before repeat: a new order every epoch.
    ds = ds.random_map(preprocess, seed=seed)
  else:
    ds = ds.map(preprocess)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
  it = it.filter(lambda record: record is not None)
  return it.batch(batch_size, drop_remainder=train)


def data_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh's data axis."""
  return NamedSharding(mesh, PartitionSpec("data"))


def to_global(local_batch, mesh):
  """Assembles each process's host batch into global jax.Arrays sharded on 'data'."""
  sharding = data_sharding(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                      local_batch)


def pad_batch(batch, size: int):
  """Pads a final partial batch to ``size`` rows; adds ``mask`` (1 real, 0 padding)."""
  n = len(batch["label"])
  padded = {k: np.concatenate([v, np.zeros((size - n,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
  padded["mask"] = (np.arange(size) < n).astype(np.float32)
  return padded
