"""grain pipelines: one global training order, per-process slices, host ops, batch, prefetch.

Training visits the examples in a fresh seeded permutation every epoch. That
global stream is cut into global batches, and process p reads rows
[p*b, (p+1)*b) of each (b = global batch / process count). So the global batch
of every step, and each example's augmentation (drawn from a generator seeded
by (seed, position in the global stream)), are the same whether 1 process or
a pod of 64 feeds the devices: a run's losses do not depend on its process
count, and within an epoch the processes read disjoint examples that together
cover the dataset. The stream is a pure function of (seed, position), so the
iterator's ``get_state()`` (the next batch's number) is all a checkpoint needs for
an exact resume. grain's elements are whole batches, made by ``data_threads``
reader threads, or by ``data.workers`` processes, in the same order either way.

Evaluation passes read the disjoint ordered shards ``source[p::P]``.

Unreadable images are dropped after decoding and counted in
``Preprocess.skipped`` (events) and ``Preprocess.skipped_files`` (distinct
files). In training the row takes the next example of the epoch's order instead
(``_TrainBatches``); an evaluation pass goes on without it. Images whose shorter
side is below the crop (``image_size``) are upscaled to ``resize_size`` and
counted in ``Preprocess.upscaled_files`` (distinct files). The first
``Preprocess.LOG_FIRST`` files of each kind are logged with their path and why
(upscaling as a warning only when the config did not ask for it with an explicit
``resize_size``), so that a bad file can be found; later ones are only counted.
"""

from __future__ import annotations

import copy
import math
import threading

import grain
import jax
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec

from sslx.data import image_ops


CACHED = "cached_image"  # A record's key for the resized image (or why unreadable) from the cache.


class Preprocess:
  """Decode -> resize shorter side -> crop (random + pad when training) -> flip.

  ``cache_mb`` > 0 keeps the decoded, resized uint8 images (the deterministic part of the work)
  in memory by source index, up to that many MiB: the first visit decodes, later visits copy
  and only crop and flip. The output is the same with and without the cache (tested); an
  unreadable file is remembered too and counted as skipped at every visit, as without it.
  When the budget is spent, later examples are decoded every time (one INFO line says so).
  """

  LOG_FIRST = 5  # Files named in a log line, per kind (skipped, upscaled); later ones are only counted.

  def __init__(self, *, image_size: int, resize_size: int | None = None, crop_padding: int = 0,
               flip: bool = False, train: bool = True, cache_mb: float = 0):
    if resize_size is not None and resize_size < image_size:
      raise ValueError(f"resize_size {resize_size} is smaller than image_size {image_size}, so no crop "
                       f"fits: set resize_size >= image_size, or leave it unset")
    if cache_mb < 0:
      raise ValueError(f"data.cache_mb is {cache_mb}: set it to 0 (no cache) or a budget in MiB")
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
    self.cache_bytes = int(cache_mb * 2**20)
    self._empty_cache()
    self._lock = threading.Lock()  # grain calls us from several reader threads.

  def _empty_cache(self):
    self.cached_bytes = 0
    self._cache: dict[int, np.ndarray | str] = {}  # Source index -> resized image, or why unreadable.
    self._cache_full = False

  def worker_copy(self, workers: int) -> "Preprocess":
    """The copy each of ``workers`` processes runs: its own empty cache of 1/workers of the
    budget (each worker sees every example over the epochs), counters left to this one."""
    twin = copy.copy(self)
    twin._empty_cache()
    twin.cache_bytes = self.cache_bytes // workers
    twin._lock = threading.Lock()
    return twin

  def __getstate__(self):  # grain's worker processes get a copy: without the lock (rebuilt).
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _name(self, record) -> str:
    return str(record.get("path") or f"example {int(record.get('index', -1))}")

  def cached_record(self, index: int) -> dict | None:
    """The record of a cached source index, without reading the source (None: not cached).
    The training stream asks this first, so a cached example costs no file read either."""
    hit = self._cache.get(index) if self.cache_bytes else None
    if hit is None:
      return None
    value, label, path = hit
    return {"label": label, "path": path, "index": index, CACHED: value}

  def _resized(self, record) -> tuple[np.ndarray | None, list]:
    """(resized image or None when unreadable, events), from the cache when it holds it."""
    index = int(record.get("index", -1))
    if CACHED in record:
      value = record[CACHED]
      if isinstance(value, str):
        return None, [("skipped", index, self._name(record), value)]
      return value.copy(), []  # A copy: the batch must never alias the cache.
    image, reason = image_ops.decode_or_reason(record["image"])
    if image is None:
      reason = record.get("error") or reason
      self._remember(record, index, reason, 64)
      return None, [("skipped", index, self._name(record), reason)]
    events = []
    height, width = image.shape[:2]
    if min(height, width) < self.image_size:
      events.append(("upscaled", index, self._name(record), (height, width)))
    image = image_ops.resize_shorter_side(image, self.resize_size)
    self._remember(record, index, image, image.nbytes)
    return image, events

  def _remember(self, record, index: int, value, nbytes: int):
    if not self.cache_bytes or index < 0 or self._cache_full:
      return
    with self._lock:
      if index in self._cache:
        return
      if self.cached_bytes + nbytes > self.cache_bytes:
        self._cache_full = True
        logging.info("The decoded-image cache is full (%d images, %.0f MiB of data.cache_mb=%g): later "
                     "images are decoded at every visit.", len(self._cache), self.cached_bytes / 2**20,
                     self.cache_bytes / 2**20)
        return
      stored = value.copy() if isinstance(value, np.ndarray) else value
      self._cache[index] = (stored, record["label"], record.get("path"))
      self.cached_bytes += nbytes

  def process(self, record, rng: np.random.Generator | None = None):
    """(output record or None, events): the work without touching the counters, which
    ``count`` applies; grain's worker processes run this and the main process counts."""
    image, events = self._resized(record)
    if image is None:
      return None, events
    if self.train:
      image = image_ops.random_crop(image, self.image_size, rng, padding=self.crop_padding)
      if self.flip:
        image = image_ops.random_flip(image, rng)
    else:
      image = image_ops.center_crop(image, self.image_size)
    return {"image": np.ascontiguousarray(image), "label": np.int32(record["label"]),
            "index": np.int32(record.get("index", -1))}, events

  def count(self, events):
    """Counts (and names the first few of) skipped and upscaled files."""
    for kind, index, name, detail in events:
      if kind == "skipped":
        with self._lock:
          self.skipped += 1
          new = index not in self.skipped_files
          self.skipped_files.add(index)
          count = len(self.skipped_files)
        if new and count <= self.LOG_FIRST:
          logging.warning("Skipping unreadable image %s: %s.%s", name, detail,
                          " Further unreadable images are only counted." if count == self.LOG_FIRST else "")
      else:
        with self._lock:
          new = index not in self.upscaled_files
          self.upscaled_files.add(index)
          count = len(self.upscaled_files)
        if new and count <= self.LOG_FIRST:
          logging.log(self._upscale_level, "Image %s is %dx%d, smaller than the %d px crop: upscaled to %d px "
                      "on its shorter side.%s", name, *detail, self.image_size, self.resize_size,
                      " Further ones are only counted." if count == self.LOG_FIRST else "")

  def __call__(self, record, rng: np.random.Generator | None = None):
    out, events = self.process(record, rng)
    self.count(events)
    return out


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


class _TrainBatches:
  """Process ``process_index``'s batches of the endless global training stream: grain's element
  k is local batch k, made here example by example (grain's own bookkeeping costs more per
  element than a cached 32 px example does, so it is paid once a batch).

  Global stream position g visits ``positions[perm_e[g % N]]``, with perm_e a
  permutation of the N positions seeded by (seed, epoch e = g // N). Row r of local
  batch k of process p is global position ``k * b * P + p * b + r`` (b = local batch):
  row p*b + r of global batch k. Its host augmentation draws from a generator seeded
  by (seed, g). An example that cannot be used (``work`` returns None: an unreadable
  image, a clip too short) is replaced by the next one of the epoch's order (offset
  g % N + t for the t-th try, augmented with a generator seeded by (seed, g, t)), so
  each row depends on its position alone and batches can be made in any order, by
  any thread or worker process.
  """

  MAX_TRIES = 64  # Consecutive unusable examples before the run stops: the data are broken.

  def __init__(self, source, positions, work, *, seed: int, local_batch: int, process_index: int,
               process_count: int, cached_record=None):
    self.source, self.positions, self.seed = source, np.asarray(positions, np.int64), seed
    self.work = work  # (record, rng) -> (output or None, events to count).
    self.cached_record = cached_record  # index -> record or None: the source is read only on a miss.
    self.local_batch, self.process_index, self.process_count = local_batch, process_index, process_count
    self._permutations: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  def __getstate__(self):  # Pickled into grain's worker processes: without the lock.
    state = dict(self.__dict__, _permutations={})
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self):
    return 2**62  # Endless (grain needs a length): epochs follow each other.

  def permutation(self, epoch: int) -> np.ndarray:
    with self._lock:
      if epoch not in self._permutations:
        if len(self._permutations) > 3:  # Reader threads straddle at most two epochs.
          del self._permutations[min(self._permutations)]
        self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self.positions))
      return self._permutations[epoch]

  def global_position(self, j: int) -> int:
    """Global stream position of this process's j-th example (row j % b of local batch j // b)."""
    b = self.local_batch
    return (j // b) * b * self.process_count + self.process_index * b + j % b

  def example(self, g: int):
    """(output, events) of global position g, or of the example that replaces it."""
    epoch, offset = divmod(g, len(self.positions))
    order = self.permutation(epoch)
    events = []
    for t in range(self.MAX_TRIES):
      index = int(self.positions[order[(offset + t) % len(order)]])
      record = self.cached_record(index) if self.cached_record else None
      record = dict(record or self.source[index], index=index)
      out, new_events = self.work(record, np.random.default_rng([self.seed, g] if t == 0 else [self.seed, g, t]))
      events += new_events
      if out is not None:
        return out, events
    raise ValueError(f"{self.MAX_TRIES} examples in a row of the training stream (from position {g}) could "
                     f"not be used (unreadable or too short): check the dataset, the log names the first files")

  def __getitem__(self, k):
    outs, events = [], []
    for j in range(k * self.local_batch, (k + 1) * self.local_batch):
      out, new_events = self.example(self.global_position(j))
      outs.append(out)
      events += new_events
    return jax.tree.map(lambda *rows: np.stack(rows), *outs), events


class _BatchPositions(grain.IterDataset):
  """Saves the training iterator's position as ``{"batches": ...}``, so that a position written
  by sslx before batches were grain's elements (``{"next_index": examples drawn}``) is
  recognised: restored when it falls on a batch boundary, refused in one line otherwise."""

  def __init__(self, parent: grain.IterDataset, local_batch: int):
    super().__init__(parent)
    self.local_batch = local_batch

  def __iter__(self):
    return _BatchPositionsIterator(self._parent.__iter__(), self.local_batch)


class _BatchPositionsIterator(grain.DatasetIterator):

  def __init__(self, parent, local_batch: int):
    super().__init__(parent)
    self.local_batch = local_batch

  def __next__(self):
    return next(self._parent)

  def get_state(self):
    return {"batches": self._parent.get_state()}

  def set_state(self, state):
    if "batches" in state:
      self._parent.set_state(state["batches"])
      return
    examples = state.get("next_index")
    if examples is None or examples % self.local_batch:
      raise ValueError(f"the checkpoint's data position {state} is not one this sslx can resume (written by an "
                       f"older version, {examples} examples drawn, not whole batches of {self.local_batch}): "
                       f"resume with the sslx that wrote it, or train in a new --workdir")
    self._parent.set_state({"next_index": examples // self.local_batch})


def make_dataset(source, preprocess: Preprocess, *, batch_size: int, seed: int, train: bool,
                 num_examples: int | None = None, process_index: int = 0, process_count: int = 1,
                 num_threads: int = 2, prefetch: int = 256, workers: int = 0,
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

  ``workers`` > 0 runs the reading and preprocessing in that many grain worker processes
  (each with ``num_threads`` reader threads), for sources whose decoding outruns the threads
  of one Python process (training only). Worker w makes batches w, w + workers, ... of the
  same stream and grain hands them out in turn, so the order, the augmentation and the batches are those of
  ``workers=0`` (tested), and the iterator's state still restores exactly. Skipped and
  upscaled files are counted in this process, from what the workers report with each element.
  """
  if workers < 0:
    raise ValueError(f"data.workers is {workers}: set it to 0 (read in threads) or a number of processes")
  if workers and not train:
    raise ValueError(f"workers={workers}: worker processes make training batches; an evaluation pass reads "
                     f"in threads (workers=0)")
  if workers and not hasattr(preprocess, "process"):
    raise ValueError(f"data.workers={workers}: worker processes run image preprocessing only for now, "
                     f"this dataset's is {type(preprocess).__name__}: set data.workers=0")
  if num_examples is not None and not 0 < num_examples <= len(source):
    raise ValueError(f"num_examples {num_examples} is outside 1..{len(source)} (the source's size): "
                     f"lower --config.train_examples or use a larger dataset")
  # The work returns (output, events to count): in worker processes, the preprocessing's copy
  # does it (with its own cache) and this process counts what it reports. Clips' preprocessing
  # counts as it goes (threads only).
  counted = hasattr(preprocess, "process")
  worker = preprocess.worker_copy(workers) if workers else preprocess
  work = worker.process if counted else _uncounted(preprocess)
  if not train:
    ds = grain.MapDataset.source(_Indexed(source))
    if num_examples is not None:
      ds = ds[:num_examples]
    ds = ds[process_index::process_count].map(work)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    it = it.map(_Counted(preprocess) if counted else _first).filter(lambda record: record is not None)
    return it.batch(batch_size, drop_remainder=False)
  if indices is not None:
    positions = np.asarray(indices, np.int64)
    bad = (positions < 0) | (positions >= len(source))
    if bad.any():
      raise ValueError(f"epoch indices hold {int(bad.sum())} positions outside 0..{len(source) - 1}: "
                       f"the pretext state does not match this dataset, use a new --workdir")
  else:
    positions = np.arange(num_examples or len(source))
  batches = _TrainBatches(source, positions, work, seed=seed,
                          local_batch=batch_size, process_index=process_index, process_count=process_count,
                          cached_record=getattr(worker, "cached_record", None))
  ahead = _batches_ahead(batch_size, num_threads, prefetch)
  it = grain.MapDataset.source(batches).to_iter_dataset(
      grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=ahead))
  if workers:
    it = _in_workers(it, workers, ahead)
  return _BatchPositions(it.map(_Counted(preprocess) if counted else _first), batch_size)


def _batches_ahead(batch_size: int, num_threads: int, prefetch: int) -> int:
  """Training batches grain prefetches per process: at least ``prefetch`` examples, and two per
  reader thread, so that every thread stays busy."""
  return max(2 * num_threads, math.ceil(prefetch / batch_size))


def buffered_batches(batch_size: int, *, num_threads: int = 2, prefetch: int = 256, workers: int = 0) -> int:
  """The most training batches ``make_dataset`` can hold made and not yet taken: its prefetch,
  or with worker processes each worker's prefetch and its share of the output buffer. A
  benchmark drains this many before it times what the pipeline produces."""
  ahead = _batches_ahead(batch_size, num_threads, prefetch)
  return ahead if not workers else workers * ahead + workers * max(1, ahead // workers)


def _uncounted(preprocess):
  return lambda record, rng=None: (preprocess(record, rng), [])


def _first(element):
  return element[0]


def _in_workers(it, workers: int, buffered: int):
  _grain_flags_ready()
  return it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                     per_worker_buffer_size=max(1, buffered // workers)))


class _Counted:
  """In the main process: counts the events a worker's element carries, returns the element."""

  def __init__(self, preprocess):
    self.preprocess = preprocess

  def __call__(self, element):
    out, events = element
    self.preprocess.count(events)
    return out


def _grain_flags_ready():
  """grain's worker processes read grain's absl flags, which raise until flags are parsed. sslx's
  command lines parse theirs first; elsewhere (a notebook, a test) the defaults are taken."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


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
