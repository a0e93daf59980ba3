"""Video decoding, frame-rate resampling, window sampling and the clip pipeline."""

import logging

import numpy as np
import pytest

from sslx.data import pipeline, sources, video
from tests.conftest import DATA_DIR, requires_data

EGOGESTAR = DATA_DIR / "egogestar"


def write_clip(path, *, fps, num_frames, size=(48, 64), moving=False, codec="libx264"):
  """A clip whose frame i is flat, red 8 * (i % 32) and green 8 * (i // 32) (recoverable after lossy coding);
  ``moving`` draws a bright square that moves 3 px per frame instead."""
  import av
  from fractions import Fraction
  h, w = size
  with av.open(str(path), "w") as out:
    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
    stream.options = {"crf": "1"} if codec == "libx264" else {}
    for i in range(num_frames):
      if moving:
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[10:26, 3 * i % (w - 16):3 * i % (w - 16) + 16] = 255
      else:
        rgb = np.zeros((h, w, 3), np.uint8)
        rgb[..., 0], rgb[..., 1] = 8 * (i % 32), 8 * (i // 32)
      for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
        out.mux(packet)
    for packet in stream.encode():
      out.mux(packet)
  return str(path)


def frame_numbers(frames):
  """The frame index written by write_clip, read back from each frame's mean colour."""
  mean = frames.reshape(len(frames), -1, 3).mean(axis=1)
  return (np.round(mean[:, 0] / 8) + 32 * np.round(mean[:, 1] / 8)).astype(int)


@pytest.mark.parametrize("native, target", [(30, 10), (30, 12), (25, 10), (10, 10), (10, 15)])
def test_resampling_picks_the_frame_on_display_at_each_requested_time(tmp_path, native, target):
  path = write_clip(tmp_path / "c.mp4", fps=native, num_frames=30)
  frames, times = video.decode(path, fps=target, resize_size=None)
  duration = 30 / native
  np.testing.assert_allclose(times, np.arange(int(np.ceil(duration * target - 1e-6))) / target)
  expected = np.floor(times * native + 1e-6).astype(int)  # Frame i is shown during [i, i+1) / native.
  np.testing.assert_array_equal(frame_numbers(frames), expected)


def test_resample_indices_on_irregular_timestamps():
  indices, targets = video.resample_indices(np.array([0.0, 0.04, 0.12, 0.13, 0.30]), fps=10, end=0.35)
  np.testing.assert_allclose(targets, [0.0, 0.1, 0.2, 0.3])
  np.testing.assert_array_equal(indices, [0, 1, 3, 4])


def test_seeking_to_a_window_decodes_the_same_frames_as_a_full_decode(tmp_path):
  path = write_clip(tmp_path / "c.mp4", fps=30, num_frames=60)
  full, _ = video.decode(path, fps=10, resize_size=None)
  window, times = video.decode(path, fps=10, resize_size=None, start=0.8, end=1.5)
  np.testing.assert_allclose(times, [0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], atol=1e-9)
  np.testing.assert_array_equal(frame_numbers(window), frame_numbers(full[8:15]))


def test_probe_reads_duration_and_rate_without_decoding(tmp_path):
  duration, rate = video.probe(write_clip(tmp_path / "c.mp4", fps=25, num_frames=50))
  assert rate == pytest.approx(25) and duration == pytest.approx(2.0, abs=0.05)
  (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
  assert video.probe(str(tmp_path / "bad.mp4")) is None


def clip_folder(tmp_path, *, lengths=(40, 40, 40), fps=30):
  for i, n in enumerate(lengths):
    (tmp_path / f"class{i % 2}").mkdir(exist_ok=True)
    write_clip(tmp_path / f"class{i % 2}" / f"clip{i}.mp4", fps=fps, num_frames=n)
  return tmp_path


def make_preprocess(**kwargs):
  options = dict(fps=10, num_frames=4, frame_stride=1, image_size=32, resize_size=32, flip=True,
                 train=True, sampling="random", cache_mb=64)
  return video.VideoPreprocess(**dict(options, **kwargs))


def test_same_key_same_frames_and_one_crop_for_the_whole_clip(tmp_path):
  path = write_clip(tmp_path / "c.mp4", fps=30, num_frames=90, moving=True, size=(48, 64))
  record = {"video": path, "label": 0, "index": 0}
  for cache_mb in (64, 0):  # Through the cache, and by seeking without it.
    preprocess = make_preprocess(cache_mb=cache_mb)
    first = preprocess(record, np.random.default_rng(7))["video"]
    again = preprocess(record, np.random.default_rng(7))["video"]
    np.testing.assert_array_equal(first, again)
    assert first.shape == (4, 32, 32, 3) and first.dtype == np.uint8
  outs = [make_preprocess()(record, np.random.default_rng(s))["video"] for s in range(8)]
  assert len({o.tobytes() for o in outs}) > 1  # Other keys, other windows / crops.


def test_consecutive_delivered_frames_are_stride_frames_apart(tmp_path):
  path = write_clip(tmp_path / "c.mp4", fps=30, num_frames=90, size=(32, 32))
  for stride in (1, 2, 3):
    out = make_preprocess(frame_stride=stride, flip=False)({"video": path, "label": 0},
                                                          np.random.default_rng(0))["video"]
    numbers = frame_numbers(out)
    np.testing.assert_array_equal(np.diff(numbers), 3 * stride)  # 30 -> 10 fps: 3 native frames each.


def test_motion_sampling_chooses_the_high_motion_windows():
  scores = np.array([0, 0, 0, 0, 5, 5, 5, 0, 0, 0], np.float32)  # 11 frames, motion in 4..7.
  starts = video.window_starts(11, 4, scores, quantile=0.9)
  assert set(starts.tolist()) <= {3, 4} and len(starts)
  np.testing.assert_array_equal(video.window_starts(11, 4, None, 0.5), np.arange(8))
  assert len(video.window_starts(3, 4, None, 0.5)) == 0


def test_flow_and_difference_scores_see_motion(tmp_path):
  moving = video.decode(write_clip(tmp_path / "m.mp4", fps=10, num_frames=6, moving=True), fps=10,
                        resize_size=None)[0]
  still = np.repeat(moving[:1], 6, axis=0)
  for method in ("flow", "diff"):
    assert video.motion_scores(moving, method).min() > 10 * video.motion_scores(still, method).max() + 1e-3


def test_corrupt_and_short_clips_are_skipped_counted_and_named(tmp_path, caplog):
  folder = clip_folder(tmp_path, lengths=(60, 6, 60, 60))  # clip1: 0.2 s, too short for 4 frames at 10 fps.
  (folder / "class1" / "broken.mp4").write_bytes(b"\x00" * 1000)
  source = video.VideoFolderSource(folder, "train", test_every=100)
  assert len(source) == 5
  preprocess = make_preprocess()
  with caplog.at_level(logging.WARNING):
    batches = pipeline.make_dataset(source, preprocess, batch_size=3, seed=0, train=False)
    kept = sum(len(b["label"]) for b in batches)
  assert kept == 3 and preprocess.skipped_short == 1 and preprocess.skipped_unreadable == 1
  named = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping clip"))
  assert named == [f"Skipping clip {folder / 'class1' / 'broken.mp4'}: PyAV cannot decode it.",
                   f"Skipping clip {folder / 'class1' / 'clip1.mp4'}: 2 frames at 10 fps, shorter than the "
                   f"4-frame window."]
  counts = video.check_lengths(source, fps=10, span=4)
  assert counts == {"short": 1, "unreadable": 1, "usable": 3}
  with pytest.raises(ValueError, match="no clip is long enough.*lower video.num_frames"):
    video.check_lengths(source, fps=10, span=100)


def test_only_the_first_skipped_clips_are_named_then_counted(tmp_path, caplog):
  (tmp_path / "a").mkdir()
  for i in range(4):
    (tmp_path / "a" / f"bad{i}.mp4").write_bytes(b"junk")
  preprocess = make_preprocess(cache_mb=0)  # Random windows without a cache: probing fails first.
  preprocess.LOG_FIRST = 2
  with caplog.at_level(logging.WARNING):
    for _ in range(2):  # A clip seen again is counted again, but never named twice.
      for i in range(4):
        assert preprocess({"video": str(tmp_path / "a" / f"bad{i}.mp4"), "label": 0}, None) is None
  assert preprocess.skipped_unreadable == 8
  named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping clip")]
  assert named == [f"Skipping clip {tmp_path / 'a' / 'bad0.mp4'}: PyAV cannot read its metadata.",
                   f"Skipping clip {tmp_path / 'a' / 'bad1.mp4'}: PyAV cannot read its metadata. "
                   f"Further skipped clips are only counted."]


def test_evaluation_gives_evenly_spread_clips_and_centre_crops(tmp_path):
  path = write_clip(tmp_path / "c.mp4", fps=10, num_frames=40, size=(32, 48))
  out = make_preprocess(train=False, num_clips=5, flip=False)({"video": path, "label": 1}, None)["video"]
  assert out.shape == (5, 4, 32, 32, 3)
  np.testing.assert_array_equal(frame_numbers(out[:, 0]), [0, 9, 18, 27, 36])


def test_whole_clip_spreads_the_frames_over_the_whole_video_and_keeps_short_ones(tmp_path):
  long = write_clip(tmp_path / "long.mp4", fps=10, num_frames=40, size=(32, 48))
  short = write_clip(tmp_path / "short.mp4", fps=10, num_frames=3, size=(32, 48))
  preprocess = make_preprocess(train=False, flip=False, num_frames=8, frame_stride=3, whole_clip=True)
  out = preprocess({"video": long, "label": 1}, None)["video"]
  assert out.shape == (8, 32, 32, 3)
  # The middle frame of each of 8 stretches of 5 frames; frame_stride plays no part.
  np.testing.assert_array_equal(frame_numbers(out), [2, 7, 12, 17, 22, 27, 32, 37])
  # 3 frames for 8 slots: repeated in order, where a window of 22 frames would skip the clip.
  np.testing.assert_array_equal(frame_numbers(preprocess({"video": short, "label": 1}, None)["video"]),
                                [0, 0, 0, 1, 1, 2, 2, 2])  # floor((i + 0.5) * 3 / 8).
  assert preprocess.skipped == 0
  np.testing.assert_array_equal(video.spread_indices(10, 5), [1, 3, 5, 7, 9])
  # Training's "spread" sampling: a random frame in each stretch, a fresh draw per call.
  spread = make_preprocess(num_frames=8, frame_stride=3, sampling="spread", flip=False)
  draws = [frame_numbers(spread({"video": long, "label": 1}, np.random.default_rng(seed))["video"])
           for seed in range(60)]
  for numbers in draws:
    assert np.all(numbers // 5 == np.arange(8))  # Frame 5i..5i+4 for slot i: one per stretch.
  assert len({tuple(d) for d in draws}) > 50
  assert set(np.concatenate(draws)) == set(range(40))  # Every frame of a stretch can be drawn.
  assert spread.span == 1 and spread({"video": short, "label": 1}, np.random.default_rng(0)) is not None
  with pytest.raises(ValueError, match="sampling='spread'.*with audio"):
    make_preprocess(sampling="spread", audio_rate=16000)
  for bad in (dict(train=True), dict(train=False, num_clips=2), dict(train=False, audio_rate=16000)):
    with pytest.raises(ValueError, match="--config.evaluate.whole_clip=False"):
      make_preprocess(**dict(dict(num_frames=8, whole_clip=True), **bad))


@requires_data("egogestar")
def test_folder_without_splits_is_split_by_clip_deterministically():
  train = video.VideoFolderSource(EGOGESTAR, "train")
  test = video.VideoFolderSource(EGOGESTAR, "test")
  assert len(train) == 99 and len(test) == 33 and train.num_classes == test.num_classes == 11
  assert not set(train.paths) & set(test.paths)
  assert np.bincount(test.labels).tolist() == [3] * 11
  assert video.VideoFolderSource(EGOGESTAR, "test").paths == test.paths


@requires_data("egogestar")
def test_dataset_specs_name_the_real_clips_in_the_data_directory():
  by_name = sources.get_source("folder:egogestar", "train")  # Resolved against $SSLX_DATA_DIR.
  assert isinstance(by_name, video.VideoFolderSource)
  assert by_name.paths == sources.get_source(f"folder:{EGOGESTAR}", "train").paths
  with pytest.raises(FileNotFoundError, match="has no split 'val'"):
    video.VideoFolderSource(EGOGESTAR, "val")


def test_dataset_specs_pick_the_video_source_and_bad_folders_fail_clearly(tmp_path):
  (tmp_path / "clips").mkdir()
  clip_folder(tmp_path / "clips")
  assert isinstance(sources.get_source(f"folder:{tmp_path / 'clips'}", "train"), video.VideoFolderSource)
  sample = sources.get_source("sample_video", "train")
  assert len(sample) == 22 and sample.num_classes == 11
  (tmp_path / "empty" / "a").mkdir(parents=True)
  with pytest.raises(ValueError, match="no videos"):
    video.VideoFolderSource(tmp_path / "empty", "train")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    video.VideoFolderSource(tmp_path / "nope", "train")
  with pytest.raises(FileNotFoundError, match="has no split 'val'"):
    video.VideoFolderSource(tmp_path / "clips", "val")


@requires_data("egogestar")
def test_a_real_clip_decodes_at_the_requested_rate():
  path = str(EGOGESTAR / "carret" / "testvideo_carret_1.mp4")  # 81 frames at 29.97 fps: 2.70 s, 28 frames at 10 fps.
  frames, times = video.decode(path, fps=10, resize_size=72)
  assert frames.shape == (28, 72, 96, 3) and np.allclose(np.diff(times), 0.1)


def test_in_memory_frames_as_tfds_gives_them_are_resampled_like_files():
  frames = np.zeros((30, 48, 64, 3), np.uint8)
  frames[..., 0] = (8 * (np.arange(30) % 32))[:, None, None]  # Frame i has red 8 * i.
  record = {"video": frames, "fps": 30.0, "label": 2, "index": 5, "path": "tfds#5"}
  out = make_preprocess(train=False, num_frames=10, flip=False)(record, None)
  assert out["video"].shape == (10, 32, 32, 3) and out["label"] == 2
  np.testing.assert_array_equal(frame_numbers(out["video"]), np.arange(0, 30, 3))


def test_unknown_tfds_video_frame_rate_fails_in_one_line():
  with pytest.raises(ValueError, match="no known frame rate: set --config.video.source_fps"):
    video.TfdsVideoSource("some_video_dataset", "train")


def test_a_source_of_only_unusable_clips_fails_instead_of_waiting_forever(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "bad.mp4").write_bytes(b"junk")
  source = video.VideoFolderSource(tmp_path, "train", test_every=100)
  preprocess = make_preprocess()
  preprocess.GIVE_UP_AFTER = 5
  batches = pipeline.make_dataset(source, preprocess, batch_size=2, seed=0, train=True, num_threads=1)
  with pytest.raises(Exception, match="clips were all skipped"):
    next(iter(batches))


def test_motion_maps_mark_what_moves_against_the_camera():
  y, x = np.mgrid[0:64, 0:96]  # A smooth texture that flow can follow.
  wide = np.clip(120 + 50 * np.sin(x / 5.0) + 40 * np.cos(y / 4.0 + x / 9.0), 0, 255).astype(np.uint8)
  wide = np.repeat(wide[..., None], 3, axis=-1)
  frames = []
  for t in range(5):  # The camera pans (the scene slides 2 px left a frame); a square moves 3 px right.
    frame = wide[8:56, 2 * t:2 * t + 64].copy()
    frame[16:32, 16 + 3 * t:32 + 3 * t] = 255
    frames.append(frame)
  maps = video.motion_maps(np.stack(frames))
  assert maps.shape == (5, 48, 64) and maps.dtype == np.uint8
  square = np.zeros((48, 64), bool)
  square[16:32, 16:44] = True  # Where the square is over frames 0-3.
  for t in range(4):  # Flow smooths the square's edges into the background: medians, not means.
    assert np.median(maps[t][~square]) < 0.1 * np.median(maps[t][square])
  np.testing.assert_array_equal(maps[4], maps[3])  # The last frame takes its predecessor's map.
  still = np.repeat(np.stack(frames)[:1], 5, axis=0)
  # Nothing moves: Farneback's border noise (under 0.25 px) stays under half the floor, not blown up.
  assert video.motion_maps(still).max() < 128


def test_motion_maps_are_delivered_cropped_and_flipped_with_their_frames(tmp_path):
  path = write_clip(tmp_path / "c.mp4", fps=10, num_frames=20, moving=True, size=(48, 64))
  record = {"video": path, "label": 0, "index": 0}
  plain = make_preprocess(train=False, flip=False, motion_masks=True)(record, None)
  frames = video.decode(path, fps=10, resize_size=32)[0]
  start = video.uniform_starts(len(frames), 4, 1)[0]
  left = (frames.shape[2] - 32) // 2
  expected = video.motion_maps(frames)[start:start + 4, :, left:left + 32]
  np.testing.assert_array_equal(plain["motion"], expected)
  np.testing.assert_array_equal(plain["video"], frames[start:start + 4, :, left:left + 32])
  # In training, the maps get the frames' own window, crop and flip: find those from the frames,
  # then the maps must be exactly the clip's maps under the same window, crop and flip.
  maps = video.motion_maps(frames)
  flipped_seen = set()
  for seed in range(6):
    out = make_preprocess(flip=True, motion_masks=True)(record, np.random.default_rng(seed))
    matches = [(s, top, left, flip) for s in range(len(frames) - 3) for top in range(frames.shape[1] - 31)
               for left in range(frames.shape[2] - 31) for flip in (False, True)
               if np.array_equal(out["video"], transform(frames, s, top, left, flip))]
    assert matches
    assert any(np.array_equal(out["motion"], transform(maps[..., None], *m)[..., 0]) for m in matches)
    flipped_seen |= {m[3] for m in matches}
  assert flipped_seen == {False, True}


def transform(clip, start, top, left, flip):
  window = clip[start:start + 4, top:top + 32, left:left + 32]
  return window[:, :, ::-1] if flip else window
