"""Audio on the host: decoding by timestamps, alignment with the delivered frames, skips,
the cache, evaluation shapes, and the shipped audio-visual sample."""

import logging
from fractions import Fraction

import numpy as np
import pytest

from sslx.data import audio, pipeline, sources, video
from tests.conftest import DATA_DIR, requires_data
from tests.data.test_video import frame_numbers

GRID = DATA_DIR / "grid_av"
GRID_CLIP = GRID / "s1" / "bbaf2n.mpg"  # 75 frames at 25 fps; MP2, 44.1 kHz stereo, 2.98 s.
RATE = 16000


def coded_frames(count, size=(48, 64)):
  """Flat frames whose index test_video.frame_numbers reads back (red 8 * (i % 32), green 8 * (i // 32))."""
  frames = np.zeros((count,) + size + (3,), np.uint8)
  frames[..., 0] = (8 * (np.arange(count) % 32))[:, None, None]
  frames[..., 1] = (8 * (np.arange(count) // 32))[:, None, None]
  return frames


def mux(path, frames, *, fps=25, sound=None, rate=RATE, codec="pcm_s16le", video_start=0, audio_start=0.0,
        x264=None):
  """Writes ``frames`` (N, h, w, 3) uint8 as H.264, the first at ``video_start`` frame periods,
  and ``sound`` ((channels, n) float in [-1, 1]) with ``codec``, sample 0 at ``audio_start``
  seconds of the container's clock. Returns the path as a string."""
  import av
  h, w = frames.shape[1:3]
  with av.open(str(path), "w") as out:
    v = out.add_stream("libx264", rate=fps)
    v.width, v.height, v.pix_fmt = w, h, "yuv420p"
    v.options = x264 or {"preset": "ultrafast", "crf": "1"}
    a = None
    if sound is not None:
      a = out.add_stream(codec, rate=rate, layout="mono" if len(sound) == 1 else "stereo")
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
      frame.pts, frame.time_base = video_start + i, Fraction(1, fps)
      for packet in v.encode(frame):
        out.mux(packet)
    for packet in v.encode():
      out.mux(packet)
    if a is not None:
      fmt = a.codec_context.format
      step = a.codec_context.frame_size or 1024
      first = round(audio_start * rate)
      for i in range(0, sound.shape[1], step):
        chunk = sound[:, i:i + step]
        if fmt.name.startswith("s16"):
          chunk = np.round(np.clip(chunk, -1, 1) * 32767).astype(np.int16)
        else:
          chunk = chunk.astype(np.float32)
        if not fmt.is_planar:  # Packed: one row of interleaved channels.
          chunk = chunk.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt.name, layout=a.layout.name)
        frame.sample_rate, frame.pts, frame.time_base = rate, first + i, Fraction(1, rate)
        for packet in a.encode(frame):
          out.mux(packet)
      for packet in a.encode():
        out.mux(packet)
  return str(path)


def make_preprocess(**kwargs):
  options = dict(fps=25, num_frames=4, frame_stride=1, image_size=32, resize_size=32, flip=False, train=True,
                 sampling="random", cache_mb=64, audio_rate=RATE, audio_margin=0.0)
  return video.VideoPreprocess(**dict(options, **kwargs))


def click(length, rate, at):
  """A 1 ms raised-cosine pulse of amplitude 0.95 centred on sample ``at``."""
  out = np.zeros(length, np.float32)
  half = rate // 2000
  out[at - half:at + half + 1] = 0.95 * np.hanning(2 * half + 1)
  return out


# ---------------------------------------------------------------------------- alignment


@requires_data("grid_av")
@pytest.mark.parametrize("container, codec, video_start, audio_start", [
    ("mp4", "aac", 0, 0.2),  # The sound starts 0.2 s after the first frame, behind AAC's priming delay.
    ("mkv", "mp2", 8, 0.0),  # The first frame 8 frames (0.32 s) after the sound; MP2 stereo.
])
def test_a_click_at_a_frame_arrives_in_that_frames_audio(tmp_path, container, codec, video_start, audio_start):
  fps, k, margin = 25, 25, 0.1
  frames = video.decode(str(GRID_CLIP), fps=fps, resize_size=72)[0][:50]  # 2 s of real frames.
  frames = frames.copy()
  frames[k] = 255  # A white frame marks frame k in the delivered window.
  samples, start = audio.decode_audio(GRID_CLIP, sample_rate=44100)
  assert start == 0.0
  # The clip's own speech, quieter, over the whole video, plus a click at frame k's presentation time.
  first_frame = video_start / fps
  length = round((first_frame + 2.0 - audio_start) * 44100)
  speech = 0.25 * np.resize(samples, length)
  at = round((first_frame + k / fps - audio_start) * 44100)
  sound = speech + click(length, 44100, at)
  channels = 2 if codec == "mp2" else 1
  path = mux(tmp_path / f"c.{container}", frames, fps=fps, sound=np.repeat(sound[None], channels, 0),
             rate=44100, codec=codec, video_start=video_start, audio_start=audio_start,
             x264={"preset": "veryfast", "crf": "18"})  # With B-frames: reordered timestamps.
  decoded = audio.decode_audio(path, sample_rate=RATE)
  assert decoded[1] == pytest.approx(audio_start - first_frame, abs=0.07)  # Within one codec frame.
  preprocess = make_preprocess(num_frames=16, image_size=64, resize_size=72, train=False, num_clips=4,
                               audio_margin=margin)
  out = preprocess({"video": path, "label": 0}, None)
  length = round((16 / fps + 2 * margin) * RATE)
  assert out["video"].shape == (4, 16, 64, 64, 3) and out["audio"].shape == (4, length)
  windows = 0
  for clip, sound_window in zip(out["video"], out["audio"]):
    white = np.flatnonzero(clip.reshape(16, -1).mean(axis=1) > 250)
    if not len(white):
      continue
    windows += 1
    predicted = (white[0] / fps + margin) * RATE  # Frame k's time from the window's audio start.
    error_ms = (np.argmax(np.abs(sound_window)) - predicted) / RATE * 1000
    print(f"{container}/{codec}: click {error_ms:+.3f} ms from frame {k}'s time")
    assert abs(error_ms) < 3, error_ms
  assert windows >= 1


def test_resampling_moves_nothing_in_time():
  x = click(44100, 44100, at=30000)
  y = audio.resample(x, 44100, RATE)
  assert len(y) == RATE and abs(np.argmax(y) - 30000 * RATE / 44100) <= 1


def test_audio_is_placed_by_its_timestamps_relative_to_the_first_frame(tmp_path):
  sound = click(RATE, RATE, at=4000)[None]  # A click 0.25 s into the sound.
  path = mux(tmp_path / "c.mkv", coded_frames(25), sound=sound, video_start=5, audio_start=0.5)
  samples, start = audio.decode_audio(path, sample_rate=RATE)
  assert start == pytest.approx(0.5 - 5 / 25, abs=1e-3)  # The container's clock, from the first frame.
  assert abs(start + np.argmax(samples) / RATE - (0.3 + 0.25)) < 1e-3


def test_training_windows_are_only_those_whose_audio_is_inside_the_track(tmp_path):
  # 2 s of frames at 10 fps; sound only over [0.8, 1.2) s: one 4-frame window (0.4 s) fits, frames 8..11.
  sound = 0.1 * np.ones((1, round(0.4 * RATE)), np.float32)
  path = mux(tmp_path / "c.mkv", coded_frames(20), fps=10, sound=sound, audio_start=0.8)
  for sampling in ("random", "motion"):
    preprocess = make_preprocess(fps=10, sampling=sampling, motion="diff", image_size=32, resize_size=48)
    for seed in range(4):
      out = preprocess({"video": path, "label": 0}, np.random.default_rng(seed))
      np.testing.assert_array_equal(frame_numbers(out["video"]), [8, 9, 10, 11])
      assert out["audio"].shape == (round(0.4 * RATE),) and out["audio"].dtype == np.float32
  with_margin = make_preprocess(fps=10, audio_margin=0.05, resize_size=48)
  assert with_margin({"video": path, "label": 0}, np.random.default_rng(0)) is None
  assert with_margin.skipped_audio_short == 1


# ---------------------------------------------------------------------------- decoding real clips


@requires_data("grid_av")
def test_a_grid_clip_decodes_to_three_seconds_of_mono_speech():
  samples, start = audio.decode_audio(GRID_CLIP, sample_rate=RATE)  # 44.1 kHz stereo MP2.
  assert samples.dtype == np.float32 and samples.ndim == 1 and start == 0.0
  assert len(samples) == pytest.approx(2.98 * RATE, abs=RATE * 0.01)
  assert np.abs(samples).max() <= 1.0 and np.sqrt(np.mean(samples ** 2)) > 0.02
  assert audio.has_audio(GRID_CLIP)


@requires_data("grid_av")
def test_an_undecodable_packet_mid_stream_leaves_silence_and_keeps_the_rest_in_time(tmp_path):
  import av
  with av.open(str(GRID_CLIP)) as container:
    heads = [bytes(p)[:8] for p in container.demux(container.streams.audio[0]) if p.size]
  data, at = bytearray(GRID_CLIP.read_bytes()), -1
  for head in heads[:51]:  # Where audio frame 50 (1.31 s) starts in the file.
    at = data.index(head, at + 1)
  data[at:at + 4] = bytes(4)  # No frame header: the MP2 decoder rejects the packet.
  (tmp_path / "damaged.mpg").write_bytes(bytes(data))
  intact, _ = audio.decode_audio(GRID_CLIP, sample_rate=RATE)
  damaged, start = audio.decode_audio(tmp_path / "damaged.mpg", sample_rate=RATE)
  assert start == 0.0 and len(damaged) == len(intact)
  # The demuxer's parser merges the headerless frame 50 with frame 51 (an error) and labels
  # frame 52 with 51's timestamp: frames 50-52 are lost or misplaced, from 53 on all is in time.
  frame = 1152 / 44100
  lost = np.flatnonzero(np.abs(damaged - intact) > 1e-3) / RATE
  assert 50 * frame - 0.002 < lost.min() and lost.max() < 53 * frame + 0.002, (lost.min(), lost.max())
  assert np.abs(damaged[round(50.1 * frame * RATE):round(50.9 * frame * RATE)]).max() < 0.01  # Silence.


# ---------------------------------------------------------------------------- skips, cache, shapes


def test_clips_without_audio_are_skipped_counted_and_named(tmp_path, caplog):
  source = sources.get_source("sample_video", "test")
  assert not audio.has_audio(source.paths[0])  # The egogestar sample has no sound.
  assert audio.decode_audio(source.paths[0], sample_rate=RATE) == audio.NO_AUDIO
  short = mux(tmp_path / "short.mkv", coded_frames(50), sound=0.1 * np.ones((1, RATE // 10)))  # 0.1 s of sound.
  preprocess = make_preprocess()
  with caplog.at_level(logging.WARNING):
    assert preprocess({"video": source.paths[0], "label": 0}, None) is None
    assert preprocess({"video": short, "label": 0}, None) is None
    tfds = {"video": np.zeros((30, 32, 32, 3), np.uint8), "fps": 25.0, "label": 0, "path": "tfds#3"}
    assert preprocess(tfds, None) is None
  assert (preprocess.skipped_no_audio, preprocess.skipped_audio_short, preprocess.skipped) == (2, 1, 3)
  named = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipping clip")]
  assert named[0] == f"Skipping clip {source.paths[0]}: it has no audio stream."
  assert named[1].startswith(f"Skipping clip {short}: its audio (0.100 s from +0.000 s) covers none of its 47 ")
  assert named[2] == "Skipping clip tfds#3: TFDS records carry no audio."


def test_a_source_without_sound_fails_in_one_line_before_and_while_training():
  source = sources.get_source("sample_video", "train")
  with pytest.raises(ValueError, match=r"^no clip in .*sample_video has an audio track \(22 clip files probed\): "
                                       r"use a dataset with sound or drop the config's audio section$"):
    audio.check_audio(source)
  with pytest.raises(ValueError, match="^no clip in sample_video has"):
    audio.check_audio(source, name="sample_video")
  preprocess = make_preprocess()
  preprocess.GIVE_UP_AFTER = 3
  batches = pipeline.make_dataset(source, preprocess, batch_size=2, seed=0, train=True, num_threads=1)
  with pytest.raises(Exception, match="clips were all skipped .*3 without audio.*drop the config's audio section"):
    next(iter(batches))


def test_the_cache_holds_the_audio(tmp_path):
  sound = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 2 * RATE))
  path = mux(tmp_path / "c.mkv", coded_frames(50), sound=sound)
  preprocess = make_preprocess()
  first = preprocess({"video": path, "label": 0}, np.random.default_rng(3))
  again = preprocess({"video": path, "label": 0}, np.random.default_rng(3))
  assert (preprocess.cache.misses, preprocess.cache.hits) == (1, 1)
  np.testing.assert_array_equal(first["audio"], again["audio"])
  cached = preprocess.cache.get(path)
  assert cached.audio is not None and len(cached.audio) == 2 * RATE and cached.audio_start == 0.0
  again["audio"][:] = 0  # Delivered audio is a copy: the cached track stays as decoded.
  assert np.abs(cached.audio).max() > 0.4


def test_evaluation_windows_give_one_audio_row_per_clip(tmp_path):
  sound = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 2 * RATE))
  path = mux(tmp_path / "c.mkv", coded_frames(50), sound=sound)
  for num_clips, margin in ((3, 0.1), (1, 0.0)):
    preprocess = make_preprocess(train=False, num_clips=num_clips, num_frames=5, frame_stride=2,
                                 audio_margin=margin)
    out = preprocess({"video": path, "label": 0}, None)
    length = round((9 / 25 + 2 * margin) * RATE)  # Span 9 frames: 0.36 s, plus the margins.
    assert preprocess.audio_length == length
    expected = (num_clips, length) if num_clips > 1 else (length,)
    assert out["audio"].shape == expected and out["video"].shape[:-4] == expected[:-1]


def test_without_audio_records_are_as_before(tmp_path):
  path = mux(tmp_path / "c.mkv", coded_frames(50), sound=0.1 * np.ones((1, RATE)))
  out = make_preprocess(audio_rate=None)({"video": path, "label": 0}, None)
  assert set(out) == {"video", "label", "index"}


def test_the_config_audio_section_sets_rate_and_margin():
  import ml_collections
  from sslx import configs
  config = configs.base_video()
  assert video.preprocess_from_config(config, train=True).audio_rate is None
  config.audio = ml_collections.ConfigDict({"sample_rate": 16000, "margin_seconds": 0.25})
  preprocess = video.preprocess_from_config(config, train=True)
  assert (preprocess.audio_rate, preprocess.audio_margin) == (16000, 0.25)
  span = (config.video.num_frames - 1) * config.video.frame_stride + 1
  assert preprocess.audio_length == round((span / config.video.fps + 0.5) * 16000)


# ---------------------------------------------------------------------------- the shipped sample


@requires_data("grid_av")
@pytest.mark.parametrize("name", ["bin/bbaf2n", "set/swiu6p"])
def test_the_sample_keeps_sound_and_frames_where_the_original_has_them(name):
  from scipy import signal
  sample = str(video.SAMPLE_AV_DIR / f"{name}.mp4")
  original = str(GRID / "s1" / (name.split("/")[1] + ".mpg"))
  (a, a_start), (b, b_start) = (audio.decode_audio(p, sample_rate=RATE) for p in (sample, original))
  n = min(len(a), len(b))
  lags = np.arange(-n + 1, n)
  correlation = signal.correlate(a[:n], b[:n], mode="full")
  lag_ms = (lags[np.argmax(correlation)] / RATE + a_start - b_start) * 1000
  assert abs(lag_ms) <= 1, lag_ms
  assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.9
  # Frames: the same times, and frame i's motion (difference to i + 1) matches the original's at lag 0.
  (fs, ts), (fo, to) = (video.decode(sample, fps=25, resize_size=None),
                        video.decode(original, fps=25, resize_size=144))
  assert fs.shape == fo.shape == (75, 144, 180, 3)
  np.testing.assert_allclose(ts, to)
  ds, do = (np.diff(f.astype(np.float32).mean(-1), axis=0).reshape(len(f) - 1, -1) for f in (fs, fo))
  def motion_match(lag):
    return np.corrcoef(ds[max(lag, 0):len(ds) + min(lag, 0)].ravel(),
                       do[max(-lag, 0):len(do) - max(lag, 0)].ravel())[0, 1]
  matches = [motion_match(lag) for lag in (-2, -1, 0, 1, 2)]
  assert np.argmax(matches) == 2, matches
