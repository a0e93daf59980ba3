import itertools
import logging

import numpy as np
import pytest
from absl import logging as absl_logging
from PIL import Image

from sslx.data import image_ops, pipeline, sources


class IndexSource:
  """Records whose 'image' encodes their own index, to check sharding exactly."""

  def __init__(self, n):
    self.n = n

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    return {"image": np.full((4, 4, 3), i, np.uint8), "label": i}


def _labels(ds, steps):
  it = iter(ds)
  return np.concatenate([next(it)["label"] for _ in range(steps)])


def test_process_shards_are_disjoint_and_cover_one_epoch():
  n, processes, batch = 97, 4, 8
  pre = pipeline.Preprocess(image_size=4, train=False)
  seen = []
  for p in range(processes):
    ds = pipeline.make_dataset(IndexSource(n), pre, batch_size=batch, seed=0, train=False,
                               process_index=p, process_count=processes)
    seen.append(np.concatenate([b["label"] for b in ds]))
  for a, b in itertools.combinations(seen, 2):
    assert not set(a) & set(b)
  assert sorted(np.concatenate(seen)) == list(range(n))


def _global_batches(source, pre, *, processes, global_batch, steps, seed=1, **kwargs):
  """The global batches that ``processes`` processes feed, rows of each process side by side."""
  parts = []
  for p in range(processes):
    it = iter(pipeline.make_dataset(source, pre, batch_size=global_batch // processes, seed=seed,
                                    train=True, process_index=p, process_count=processes, **kwargs))
    parts.append([next(it) for _ in range(steps)])
  return [{k: np.concatenate([parts[p][s][k] for p in range(processes)]) for k in ("image", "index")}
          for s in range(steps)]


def test_training_stream_is_the_same_for_any_process_count_and_disjoint_per_epoch():
  n, global_batch = 37, 8
  pre = pipeline.Preprocess(image_size=4, train=True)
  one = _global_batches(IndexSource(n), pre, processes=1, global_batch=global_batch, steps=14)
  for processes in (2, 4):
    many = _global_batches(IndexSource(n), pre, processes=processes, global_batch=global_batch, steps=14)
    for a, b in zip(one, many):
      np.testing.assert_array_equal(a["index"], b["index"])
  stream = np.concatenate([b["index"] for b in one])
  for epoch in range(len(stream) // n):  # Every epoch visits each example once, in a new order.
    assert sorted(stream[epoch * n:(epoch + 1) * n]) == list(range(n))
  assert not np.array_equal(stream[:n], stream[n:2 * n])


def test_augmentation_is_the_same_for_any_process_count(sample_images):
  source = sources.get_source("sample", "train")
  pre = pipeline.Preprocess(image_size=32, crop_padding=4, flip=True, train=True)
  one = _global_batches(source, pre, processes=1, global_batch=8, steps=2, num_examples=64)
  two = _global_batches(source, pre, processes=2, global_batch=8, steps=2, num_examples=64)
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a["image"], b["image"])
  # Crops and flips really are random: the same example differs between epochs.
  again = _global_batches(source, pre, processes=1, global_batch=64, steps=2, num_examples=64)
  first, second = again
  order = np.argsort(second["index"])[np.argsort(np.argsort(first["index"]))]
  assert not np.array_equal(first["image"], second["image"][order])


def test_index_is_the_source_position_in_every_epoch_and_subset():
  pre = pipeline.Preprocess(image_size=4, train=True)
  for num_examples in (None, 13):
    ds = pipeline.make_dataset(IndexSource(40), pre, batch_size=8, seed=0, train=True,
                               num_examples=num_examples, process_index=1, process_count=2)
    it = iter(ds)
    batches = [next(it) for _ in range(12)]  # Several epochs.
    index = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(index, np.concatenate([b["label"] for b in batches]))
    assert index.max() < (num_examples or 40)
  with pytest.raises(ValueError, match=r"num_examples 41 is outside 1..40.*train_examples"):
    pipeline.make_dataset(IndexSource(40), pre, batch_size=8, seed=0, train=True, num_examples=41)


def test_seeded_and_resumable_from_state(sample_images):
  source = sources.get_source("sample", "train")
  pre = pipeline.Preprocess(image_size=32, crop_padding=4, flip=True, train=True)
  ds = pipeline.make_dataset(source, pre, batch_size=16, seed=7, train=True)
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(2)]
  resumed = iter(pipeline.make_dataset(source, pre, batch_size=16, seed=7, train=True))
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])
  other = next(iter(pipeline.make_dataset(source, pre, batch_size=16, seed=8, train=True)))
  assert not np.array_equal(other["label"], _labels(ds, 1))


def test_unreadable_images_are_skipped_counted_and_named(tmp_path, caplog):
  good = tmp_path / "train" / "a"
  good.mkdir(parents=True)
  for i in range(6):
    Image.fromarray(np.full((10, 12, 3), 10 * i, np.uint8)).save(good / f"{i}.png")
  (good / "broken.png").write_bytes(b"\x89PNG not really")
  (good / "empty.jpg").write_bytes(b"")
  source = sources.get_source(f"folder:{tmp_path}", "train")
  pre = pipeline.Preprocess(image_size=8, train=False)
  with caplog.at_level(logging.WARNING):
    batches = list(pipeline.make_dataset(source, pre, batch_size=4, seed=0, train=False))
  assert sum(len(b["label"]) for b in batches) == 6
  assert pre.skipped == 2 and len(pre.skipped_files) == 2 and not pre.upscaled_files
  assert batches[0]["image"].shape[1:] == (8, 8, 3)
  named = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping"))
  assert named == [f"Skipping unreadable image {good / 'broken.png'}: Pillow does not recognise it as an image.",
                   f"Skipping unreadable image {good / 'empty.jpg'}: the file is empty."]


def test_only_the_first_unreadable_images_are_named_then_counted(caplog):
  pre = pipeline.Preprocess(image_size=4, train=False)
  pre.LOG_FIRST = 2
  with caplog.at_level(logging.WARNING):
    for _ in range(2):  # Seen again (a second epoch): counted as an event, not named again.
      for i in range(4):
        assert pre({"image": b"junk", "label": 0, "index": i}) is None
  assert pre.skipped == 8 and pre.skipped_files == {0, 1, 2, 3}
  named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping")]
  assert named == ["Skipping unreadable image example 0: Pillow does not recognise it as an image.",
                   "Skipping unreadable image example 1: Pillow does not recognise it as an image. "
                   "Further unreadable images are only counted."]


def test_a_file_that_cannot_be_read_is_named_with_the_reason(tmp_path, caplog):
  (tmp_path / "a").mkdir()
  for i in range(4):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / f"{i}.png")
  source = sources.get_source(f"folder:{tmp_path}", "train")
  (tmp_path / "a" / "0.png").unlink()  # Gone after listing (a flaky network disk).
  record = dict(source[0], index=0)
  assert record["image"] is None and record["error"].startswith("FileNotFoundError")
  with caplog.at_level(logging.WARNING):
    assert pipeline.Preprocess(image_size=8, train=False)(record) is None
  assert f"Skipping unreadable image {tmp_path / 'a' / '0.png'}: FileNotFoundError" in caplog.text


def test_images_smaller_than_the_crop_are_upscaled_counted_and_named(tmp_path, caplog):
  """Real 32 px CIFAR-10 images for a 40 px crop: upscaled (not dropped), named, counted once each."""
  source = sources.get_source("sample", "train")
  pre = pipeline.Preprocess(image_size=40, crop_padding=2, flip=True, train=True)
  with caplog.at_level(logging.WARNING):
    batches = pipeline.make_dataset(source, pre, batch_size=8, seed=0, train=True, num_examples=8)
    it = iter(batches)
    first = next(it)
    next(it)  # A second epoch of the same 8 images: nothing new to name or count.
  assert first["image"].shape == (8, 40, 40, 3) and first["image"].std() > 10
  assert pre.upscaled_files == set(range(8)) and not pre.skipped_files
  named = [r for r in caplog.records if "smaller than the 40 px crop" in r.getMessage()]
  assert len(named) == pipeline.Preprocess.LOG_FIRST and all(r.levelno == logging.WARNING for r in named)
  assert named[0].getMessage().startswith(f"Image {sources.SAMPLE_DIR}/airplane.zip/train/") and "is 32x32" in named[0].getMessage()
  assert named[-1].getMessage().endswith("Further ones are only counted.")
  # Upscaling the config asks for (an explicit resize_size, e.g. jigsaw's CIFAR at 64 px) is
  # counted the same way but logged at INFO, not as a warning.
  asked = pipeline.Preprocess(image_size=40, resize_size=40, train=False)
  caplog.clear()
  # absl drops INFO records below its own verbosity, which an earlier CLI test may have set to WARNING.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.INFO)
  try:
    with caplog.at_level(logging.INFO):
      out = asked(dict(source[0], index=0))
  finally:
    absl_logging.set_verbosity(verbosity)
  assert out["image"].shape == (40, 40, 3) and asked.upscaled_files == {0}
  assert [r.levelno for r in caplog.records if "smaller than" in r.getMessage()] == [logging.INFO]
  exact = pipeline.Preprocess(image_size=32, train=False)
  assert exact(dict(source[0], index=0))["image"].shape == (32, 32, 3)
  assert not exact.upscaled_files  # 32 px images for a 32 px crop: nothing to report.


def test_a_resize_smaller_than_the_crop_fails_in_one_line():
  with pytest.raises(ValueError, match="resize_size 24 is smaller than image_size 32.*set resize_size >= "):
    pipeline.Preprocess(image_size=32, resize_size=24)


def test_host_ops():
  rng = np.random.default_rng(0)
  image = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
  assert image_ops.resize_shorter_side(image, 20).shape == (20, 30, 3)
  assert image_ops.center_crop(image, 30).shape == (30, 30, 3)
  crop = image_ops.random_crop(image[:32, :32], 32, rng, padding=4)
  assert crop.shape == (32, 32, 3)
  flips = {image_ops.random_flip(image, rng)[0, 0, 0] for _ in range(20)}
  assert flips == {image[0, 0, 0], image[0, -1, 0]}
  normalized = np.asarray(image_ops.normalize(np.full((2, 2, 3), 255, np.uint8), (0.5,) * 3, (0.5,) * 3))
  np.testing.assert_allclose(normalized, 1.0)


@pytest.mark.parametrize("shape,size,padding", [((32, 32, 3), 32, 4), ((20, 26, 3), 24, 2), ((5, 7), 12, 4),
                                                ((40, 30, 3), 24, 0)])
def test_random_crop_equals_cropping_the_zero_padded_image(shape, size, padding):
  """The same pixels and the same draws as padding with np.pad, then cropping; every offset."""
  image = np.random.default_rng(1).integers(1, 256, shape, dtype=np.uint8)
  padded = np.pad(image, ((padding, padding), (padding, padding)) + ((0, 0),) * (image.ndim - 2))
  offsets = set()
  for seed in range(1000):
    got = image_ops.random_crop(image, size, np.random.default_rng(seed), padding=padding)
    check = np.random.default_rng(seed)
    top = check.integers(0, padded.shape[0] - size + 1)
    left = check.integers(0, padded.shape[1] - size + 1)
    np.testing.assert_array_equal(got, padded[top:top + size, left:left + size])
    offsets.add((top, left))
  assert len(offsets) == (padded.shape[0] - size + 1) * (padded.shape[1] - size + 1)


def test_pad_batch_marks_padding():
  batch = {"image": np.ones((3, 2, 2, 3), np.uint8), "label": np.arange(3)}
  padded = pipeline.pad_batch(batch, 8)
  assert padded["image"].shape == (8, 2, 2, 3)
  np.testing.assert_array_equal(padded["mask"], [1, 1, 1, 0, 0, 0, 0, 0])


def test_eval_pipeline_rejects_nothing_and_keeps_order():
  pre = pipeline.Preprocess(image_size=4, train=False)
  ds = pipeline.make_dataset(IndexSource(10), pre, batch_size=4, seed=0, train=False)
  labels = np.concatenate([b["label"] for b in ds])
  np.testing.assert_array_equal(labels, np.arange(10))


@pytest.mark.parametrize("size", [32, 7])
def test_preprocess_output_size(size):
  pre = pipeline.Preprocess(image_size=size, crop_padding=2, flip=True, train=True)
  out = pre({"image": np.zeros((40, 50, 3), np.uint8), "label": 3}, np.random.default_rng(0))
  assert out["image"].shape == (size, size, 3) and out["label"] == 3


def _folder_with_broken_files(tmp_path, per_class=10):
  """Real CIFAR-10 JPEGs of the sample in two classes of a train folder, plus two unreadable
  files and one image smaller than the crop."""
  sample = sources.get_source("sample", "train")
  for name in ("airplane", "bird"):
    folder = tmp_path / "train" / name
    folder.mkdir(parents=True)
    for i in [i for i, label in enumerate(sample.labels) if sample.classes[label] == name][:per_class]:
      record = sample[i]
      (folder / record["path"].rsplit("/", 1)[1]).write_bytes(record["image"])
  (tmp_path / "train" / "bird" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
  (tmp_path / "train" / "airplane" / "empty.png").write_bytes(b"")
  Image.fromarray(np.full((20, 24, 3), 99, np.uint8)).save(tmp_path / "train" / "bird" / "small.png")
  return sources.get_source(f"folder:{tmp_path}", "train")


def _train_batches(source, pre, steps, **kwargs):
  it = iter(pipeline.make_dataset(source, pre, batch_size=8, seed=3, train=True, **kwargs))
  batches = [next(it) for _ in range(steps)]
  return batches, it


@pytest.mark.parametrize("cache_mb", [100, 0.02])  # All of it; a budget spent after a few images.
def test_the_decoded_image_cache_gives_the_same_batches_and_counts(tmp_path, cache_mb):
  """Three epochs with the cache: the same images, labels and counters as without it; the
  cache holds the resized images within its budget and an unreadable file stays skipped."""
  source = _folder_with_broken_files(tmp_path)
  make = lambda mb: pipeline.Preprocess(image_size=24, crop_padding=2, flip=True, train=True, cache_mb=mb)  # noqa: E731
  plain, cached = make(0), make(cache_mb)
  want, _ = _train_batches(source, plain, steps=9)  # 69 readable examples a 23-file epoch x 3.
  got, _ = _train_batches(source, cached, steps=9)
  for a, b in zip(want, got):
    for key in ("image", "label", "index"):
      np.testing.assert_array_equal(a[key], b[key])
  # The distinct files; the visit counts depend on how far grain's threads have read ahead.
  assert (cached.skipped_files, cached.upscaled_files) == (plain.skipped_files, plain.upscaled_files)
  assert min(plain.skipped, cached.skipped) >= 6 and len(plain.skipped_files) == 2 and len(plain.upscaled_files) == 1
  assert plain.cached_bytes == 0 and 0 < cached.cached_bytes <= cached.cache_bytes
  if cache_mb == 100:
    assert len(cached._cache) == len(source)  # Every file, the two unreadable ones as their reason.
  else:
    assert cached._cache_full and len(cached._cache) < len(source)


def test_a_cached_example_is_not_read_from_the_source_again(tmp_path):
  """Over three epochs each file is read once (one reader thread, so no read races its own
  caching): later visits take the record from the cache."""
  folder = _folder_with_broken_files(tmp_path)
  reads = []

  class Counting:
    def __len__(self):
      return len(folder)

    def __getitem__(self, i):
      reads.append(i)
      return folder[i]

  pre = pipeline.Preprocess(image_size=24, train=True, cache_mb=100)
  _train_batches(Counting(), pre, steps=9, num_threads=1, prefetch=8)
  assert sorted(reads) == list(range(len(folder)))


def test_a_negative_cache_budget_fails_in_one_line():
  with pytest.raises(ValueError, match=r"^data.cache_mb is -1: set it to 0 \(no cache\) or a budget in MiB$"):
    pipeline.Preprocess(image_size=8, cache_mb=-1)


def test_worker_processes_give_the_same_batches_counts_and_resume(tmp_path):
  """grain worker processes (2) against threads only: the same batches in the same order, the
  same skipped and upscaled counts in this process, and the iterator's state resumes exactly."""
  source = _folder_with_broken_files(tmp_path)
  make = lambda: pipeline.Preprocess(image_size=24, crop_padding=2, flip=True, train=True, cache_mb=10)  # noqa: E731
  threads, processes = make(), make()
  want, _ = _train_batches(source, threads, steps=7)
  got, it = _train_batches(source, processes, steps=4, workers=2)
  state = it.get_state()
  got += [next(it) for _ in range(3)]
  it.close()
  for a, b in zip(want, got):
    for key in ("image", "label", "index"):
      np.testing.assert_array_equal(a[key], b[key])
  assert processes.skipped_files == threads.skipped_files and processes.upscaled_files == threads.upscaled_files
  assert len(processes.skipped_files) == 2 and len(processes.upscaled_files) == 1
  resumed = iter(pipeline.make_dataset(source, make(), batch_size=8, seed=3, train=True, workers=2))
  resumed.set_state(state)
  for want_batch in want[4:]:
    np.testing.assert_array_equal(next(resumed)["image"], want_batch["image"])
  resumed.close()


def test_workers_for_clips_or_below_zero_fail_in_one_line():
  from sslx.data import video
  with pytest.raises(ValueError, match=r"^data.workers is -1: set it to 0"):
    pipeline.make_dataset(IndexSource(4), pipeline.Preprocess(image_size=4), batch_size=2, seed=0,
                          train=True, workers=-1)
  with pytest.raises(ValueError, match=r"^workers=2: worker processes make training batches"):
    pipeline.make_dataset(IndexSource(4), pipeline.Preprocess(image_size=4), batch_size=2, seed=0,
                          train=False, workers=2)
  clips = video.VideoPreprocess.__new__(video.VideoPreprocess)
  with pytest.raises(ValueError, match=r"^data.workers=2: worker processes run image preprocessing only for now, "
                                       r"this dataset's is VideoPreprocess: set data.workers=0$"):
    pipeline.make_dataset(IndexSource(4), clips, batch_size=2, seed=0, train=True, workers=2)


def test_a_position_saved_per_example_by_an_older_sslx_resumes_on_batch_boundaries():
  """Checkpoints written before batches were grain's elements hold {"next_index": examples
  drawn}: on a batch boundary that is the same batch; elsewhere the restore fails in one line."""
  pre = pipeline.Preprocess(image_size=4, train=True)
  ds = pipeline.make_dataset(IndexSource(37), pre, batch_size=8, seed=2, train=True)
  it = iter(ds)
  want = [next(it)["index"] for _ in range(4)]
  old = iter(ds)
  old.set_state({"next_index": 16})  # Two batches of 8 drawn.
  np.testing.assert_array_equal(next(old)["index"], want[2])
  assert iter(ds).get_state() == {"batches": {"next_index": 0}}
  with pytest.raises(ValueError, match=r"^the checkpoint's data position \{'next_index': 13\} is not one this "
                                       r"sslx can resume .*train in a new --workdir$"):
    iter(ds).set_state({"next_index": 13})


def test_an_unreadable_training_example_is_replaced_by_the_next_of_the_epoch(tmp_path):
  """The row keeps its place: the next example of the epoch's order fills it, so the other rows
  of the batch, and every later batch, are those of the stream without that file."""
  source = _folder_with_broken_files(tmp_path)
  pre = pipeline.Preprocess(image_size=24, train=True)
  batches, it = _train_batches(source, pre, steps=3)
  it.close()
  broken = pre.skipped_files
  order = np.random.default_rng([3, 0]).permutation(len(source))  # Epoch 0's order, seed 3.
  rows = np.concatenate([b["index"] for b in batches])[:len(source)]
  for offset, index in enumerate(order):
    if index in broken:  # Its row took the next usable example of the order.
      following = [i for i in order[offset + 1:] if i not in broken]
      assert rows[offset] == following[0]
    else:
      assert rows[offset] == index
