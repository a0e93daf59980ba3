"""grain pipelines: one global training order, per-process slices, host ops, batch, prefetch.

Training visits the examples in a fresh seeded permutation every epoch. That
global stream is cut into global batches, and process p reads rows
[p*b, (p+1)*b) of each (b = global batch / process count). So the global batch
of every step, and each example's augmentation (drawn from a generator seeded
by (seed, position in the global stream)), are the same whether 1 process or
a pod of 64 feeds the devices: a run's losses do not depend on its process
count, and within an epoch the processes read disjoint examples that together
cover the dataset. The stream is a pure function of (seed, position), so the
iterator's ``get_state()`` is all a checkpoint needs for an exact resume.

Evaluation passes read the disjoint ordered shards ``source[p::P]``.

Unreadable images are dropped after decoding and counted in
``Preprocess.skipped`` (events) and ``Preprocess.skipped_files`` (distinct
files); the run goes on with the next readable example. Images whose shorter
side is below the crop (``image_size``) are upscaled to ``resize_size`` and
counted in ``Preprocess.upscaled_files`` (distinct files). The first
``Preprocess.LOG_FIRST`` files of each kind are logged with their path and why
(upscaling as a warning only when the config did not ask for it with an explicit
``resize_size``), so that a bad file can be found; later ones are only counted.
"""

from __future__ import annotations

import threading

import grain
import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from sslx.data import image_ops


class Preprocess:
  """Decode -> resize shorter side -> crop (random + pad when training) -> flip."""

  LOG_FIRST = 5  # Files named in a log line, per kind (skipped, upscaled); later ones are only counted.

  def __init__(self, *, image_size: int, resize_size: int | None = None, crop_padding: int = 0,
               flip: bool = False, train: bool = True):
    if resize_size is not None and resize_size < image_size:
      raise ValueError(f"resize_size {resize_size} is smaller than image_size {image_size}, so no crop "
                       f"fits: set resize_size >= image_size, or leave it unset")
    self.image_size = image_size
    self.resize_size = resize_size or image_size
    # Upscaling that a config asked for (resize_size above its images' size, e.g. CIFAR to 64 px
    # for jigsaw) is logged at INFO; only unasked-for upscaling is a warning.
    self._upscale_level = logging.INFO if resize_size is not None else logging.WARNING
    self.crop_padding = crop_padding
    self.flip = flip
    self.train = train
    self.skipped = 0
    self.skipped_files: set[int] = set()  # Source indices found unreadable (each counted once).
    self.upscaled_files: set[int] = set()  # Source indices smaller than the crop, upscaled.
    self._lock = threading.Lock()  # grain calls us from several reader threads.

  def _name(self, record) -> str:
    return str(record.get("path") or f"example {int(record.get('index', -1))}")

  def __call__(self, record, rng: np.random.Generator | None = None):
    image, reason = image_ops.decode_or_reason(record["image"])
    index = int(record.get("index", -1))
    if image is None:
      with self._lock:
        self.skipped += 1
        new = index not in self.skipped_files
        self.skipped_files.add(index)
        count = len(self.skipped_files)
      if new and count <= self.LOG_FIRST:
        logging.warning("Skipping unreadable image %s: %s.%s", self._name(record),
                        record.get("error") or reason,
                        " Further unreadable images are only counted." if count == self.LOG_FIRST else "")
      return None
    height, width = image.shape[:2]
    if min(height, width) < self.image_size:
      with self._lock:
        new = index not in self.upscaled_files
        self.upscaled_files.add(index)
        count = len(self.upscaled_files)
      if new and count <= self.LOG_FIRST:
        logging.log(self._upscale_level, "Image %s is %dx%d, smaller than the %d px crop: upscaled to %d px "
                    "on its shorter side.%s", self._name(record), height, width, self.image_size,
                    self.resize_size, " Further ones are only counted." if count == self.LOG_FIRST else "")
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


class _GlobalStream:
  """Process ``process_index``'s records of the endless global training stream.

  Global stream position g visits ``positions[perm_e[g % N]]``, with perm_e a
  permutation of the N positions seeded by (seed, epoch e = g // N). Local
  record j of process p is global position ``(j // b) * b * P + p * b + j % b``:
  row p*b + j % b of global batch j // b. Records carry their source ``index``
  and a generator seeded by (seed, g) for their host augmentation.
  """

  def __init__(self, source, positions, *, seed: int, local_batch: int, process_index: int,
               process_count: int):
    self.source, self.positions, self.seed = source, np.asarray(positions, np.int64), seed
    self.local_batch, self.process_index, self.process_count = local_batch, process_index, process_count
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __len__(self):
    return 2**62  # Endless (grain needs a length): epochs follow each other.

  def permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._permutations:
        if len(self._permutations) > 2:  # Readers straddle at most two epochs.
          del self._permutations[min(self._permutations)]
        self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.positions))
      return self._permutations[epoch]

  def global_position(self, j: int) -> int:
    b = self.local_batch
    return (j // b) * b * self.process_count + self.process_index * b + j % b

  def __getitem__(self, j):
    g = self.global_position(j)
    epoch, offset = divmod(g, len(self.positions))
    index = int(self.positions[self.permutation(epoch)[offset]])
    return dict(self.source[index], index=index, stream_position=g)


def make_dataset(source, preprocess: Preprocess, *, batch_size: int, seed: int, train: bool,
                 num_examples: int | None = None, process_index: int = 0, process_count: int = 1,
                 num_threads: int = 2, prefetch: int = 256,
                 indices: np.ndarray | None = None) -> grain.IterDataset:
  """This process's batches of ``batch_size`` (its share of the global batch): the endless
  global training stream when training (module docstring), one ordered pass over the shard
  ``source[p::P]`` with a smaller last batch otherwise.

  Every example carries ``index``, its position in the source, which pretexts
  with per-example identities (exemplar classes, cluster assignments) use.
  ``num_examples`` keeps the first n examples of the source. ``indices``
  (training only) visits those source positions instead, repeats allowed: an
  epoch chosen by a pretext (DeepCluster's uniform sampling over clusters),
  reshuffled at each pass.
  """
  if num_examples is not None and not 0 < num_examples <= len(source):
    raise ValueError(f"num_examples {num_examples} is outside 1..{len(source)} (the source's size): "
                     f"lower --config.train_examples or use a larger dataset")
  if not train:
    ds = grain.MapDataset.source(_Indexed(source))
    if num_examples is not None:
      ds = ds[:num_examples]
    ds = ds[process_index::process_count].map(preprocess)
  else:
    if indices is not None:
      positions = np.asarray(indices, np.int64)
      bad = (positions < 0) | (positions >= len(source))
      if bad.any():
        raise ValueError(f"epoch indices hold {int(bad.sum())} positions outside 0..{len(source) - 1}: "
                         f"the pretext state does not match this dataset, use a new --workdir")
    else:
      positions = np.arange(num_examples or len(source))
    stream = _GlobalStream(source, positions, seed=seed, local_batch=batch_size,
                           process_index=process_index, process_count=process_count)
    # Augmentation keyed by the global position, not by grain's per-process element index,
    # so that it too is independent of the process count.
    ds = grain.MapDataset.source(stream).map(
        lambda record: preprocess(record, np.random.default_rng([seed, record.pop("stream_position")])))
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
