"""Synchronisation offset detection on held-out clips, for a run trained with
``audiovisual.synchronization`` (a sync logit per pair) or ``audiovisual.syncnet`` (a distance
per pair: the smaller, the better in sync).

    sslx-sync --workdir DIR [--dataset folder:grid_av_vid2speech --splits train,test]

SyncNet's protocol (Chung & Zisserman, 2016): every window of video is scored against its own
clip's audio at every offset of ``evaluate.max_offset_frames`` (15) frames either way, in steps
of one frame; the predicted offset is the best-scoring one, and the truth is 0 (the clips are
in sync). Each clip gives ``evaluate.num_clips`` windows spread evenly over it (the host's
evaluation sampling). Reported: exact accuracy (chance 1 / 31), accuracy within +-1 frame
(chance 3 / 31), and the mean absolute error in frames, for the checkpoint and for the same
model at random initialisation (seed ``evaluate.seed``), twice: per window, and per clip,
where each offset's scores are first averaged over all windows of the clip (what the public
SyncNet code does with a whole video's distances before taking the best offset). The host
must deliver audio for the largest offset: ``audio.margin_seconds`` >= ``max_offset_frames / video.fps`` (0.6 s at 25 fps).
Writes DIR/eval/sync[-NAME].json and .md.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from sslx import checkpoints, run
from sslx.data import sources
from sslx.evaluate import common
from sslx.pretexts.audiovisual import synchronization, syncnet

# The pretexts whose models score audio-visual pairs, each with its ``offset_scores``.
SYNC_PRETEXTS = {"audiovisual.synchronization": synchronization, "audiovisual.syncnet": syncnet}


def offset_windows(audio, offsets_frames, *, num_frames: int, cfg):
  """Delivered audio ``(N, A)`` -> ``(len(offsets), N, L)``: for each offset (frames), the
  window-long audio starting that many frames after the aligned position (the centre)."""
  length = synchronization.window_samples(num_frames, cfg)
  centre = (audio.shape[1] - length) // 2
  per_frame = cfg.audio_model.sample_rate / cfg.fps
  starts = [centre + int(round(d * per_frame)) for d in offsets_frames]
  if min(starts) < 0 or max(starts) + length > audio.shape[1]:
    raise ValueError(f"offsets of up to {max(abs(d) for d in offsets_frames)} frames need "
                     f"{max(abs(d) for d in offsets_frames) / cfg.fps:.2f} s of audio beyond the window: raise "
                     f"--config.audio.margin_seconds or lower --config.evaluate.max_offset_frames")
  return np.stack([audio[:, s:s + length] for s in starts])


def scores_fn(config, model):
  """Jitted (variables, uint8 windows (B, T, H, W, 3), audio (K, B, L)) -> (K, B) scores, higher
  in sync: each window against K audio windows (the head pairs audio row j with video row
  j mod B)."""
  offset_scores = SYNC_PRETEXTS[config.pretext.name].offset_scores
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def scores(variables, video, audio):
    frames = run.standardize_inputs({"video": video.astype(jnp.float32) / 255.0}, mean, std)["video"]
    inputs = {"video": frames, "audio": audio.reshape((-1, audio.shape[-1]))}
    outputs, _ = model.apply(variables, inputs, train=False)
    return offset_scores(outputs).reshape(audio.shape[:2])

  return scores


def offset_metrics(predicted: np.ndarray) -> dict:
  """Predicted offsets (frames; the truth is 0) -> exact, within-1 and mean absolute error."""
  predicted = np.abs(np.asarray(predicted))
  return {"exact": float(np.mean(predicted == 0)), "within_1": float(np.mean(predicted <= 1)),
          "mean_abs_error_frames": float(np.mean(predicted))}


def per_clip_offsets(scores: np.ndarray, clips: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """``(offsets, windows)`` scores and each window's clip -> each clip's best offset, its
  windows' scores averaged first (SyncNet's whole-video decision)."""
  return np.array([offsets[np.argmax(scores[:, clips == c].mean(axis=1))] for c in np.unique(clips)])


def markdown_table(results: dict) -> str:
  span = 2 * results["max_offset_frames"] + 1
  rows = [("exact offset (%)", "exact", 100 / span), ("within +-1 frame (%)", "within_1", 300 / span),
          ("mean absolute error (frames)", "mean_abs_error_frames",
           2 * sum(range(results["max_offset_frames"] + 1)) / span)]
  lines = ["| measure | pretrained | random init | chance |", "|---|---|---|---|"]
  for unit, suffix in (("window", ""), ("clip", "_per_clip")):
    for name, key, chance in rows:
      scale = 100 if key != "mean_abs_error_frames" else 1
      lines.append(f"| per {unit}: {name} | {scale * results['pretrained'][key + suffix]:.1f} | "
                   f"{scale * results['random_init'][key + suffix]:.1f} | {chance:.1f} |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             splits: tuple[str, ...] | None = None, name: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = common.apply_overrides(loaded.config, overrides or {}, "sslx-sync")
  if config.pretext.name not in SYNC_PRETEXTS:
    raise ValueError(f"{workdir} was trained with {config.pretext.name}, not one of {sorted(SYNC_PRETEXTS)}: "
                     f"sync offsets need a model that scores audio-visual pairs")
  cfg = config.evaluate
  max_offset = int(cfg.get("max_offset_frames", 15))
  offsets = np.arange(-max_offset, max_offset + 1)
  dataset = dataset or cfg.get("dataset") or config.dataset
  splits = tuple(splits or (cfg.test_split,))
  parts = [common.av_windows(sources.from_config(config, split, dataset=dataset, data_dir=data_dir, labels=False),
                      config,
                      batch_size=cfg.batch_size) for split in splits]
  video = np.concatenate([p[0] for p in parts])
  audio = offset_windows(np.concatenate([p[1] for p in parts]), offsets, num_frames=video.shape[1],
                         cfg=config.pretext)
  # A window's clip, unique across splits (each split numbers its clips from 0).
  first_ids = np.cumsum([0] + [int(p[2].max()) + 1 for p in parts[:-1]])
  clip_of = np.concatenate([p[2] + first for p, first in zip(parts, first_ids)])
  clips = sum(len(np.unique(p[2])) for p in parts)
  pretext, model = run.build_model(config)
  example = {"video": jnp.zeros((1,) + video.shape[1:], jnp.float32), "audio": jnp.asarray(audio[:2, :1, :]).reshape(2, -1)}
  random_init = run.jit_once(lambda rng: model.init(rng, example, train=False))(jax.random.PRNGKey(cfg.seed))
  trained = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  score = scores_fn(config, model)
  batch = max(1, cfg.batch_size // len(offsets))
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "splits": list(splits), "clips": int(clips), "windows": int(len(video)),
             "max_offset_frames": max_offset, "skipped": int(sum(p[4] for p in parts))}
  for label, variables in (("pretrained", trained), ("random_init", random_init)):
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    logits = np.concatenate([np.asarray(score(variables, jnp.asarray(video[s:s + batch]),
                                              jnp.asarray(audio[:, s:s + batch])))
                             for s in range(0, len(video), batch)], axis=1)  # (offsets, windows)
    predicted = offsets[np.argmax(logits, axis=0)]
    per_clip = {f"{k}_per_clip": v for k, v in offset_metrics(per_clip_offsets(logits, clip_of, offsets)).items()}
    results[label] = dict(offset_metrics(predicted), **per_clip, predicted=predicted.tolist())
  stem = "sync" + (f"-{name}" if name else "")
  return common.write_results(
      workdir, stem, results, table=markdown_table(results),
      title=f"Sync offset detection (+-{max_offset} frames), {dataset} {'+'.join(splits)}, checkpoint step "
            f"{loaded.step}: {clips} clips, {len(video)} windows")


def _define_flags():
  common.define_workdir_flags()
  common.define_split_flags("sync")


USAGE = """Usage: sslx-sync --workdir=DIR [--dataset=SPEC] [--splits=a,b] [--name=NAME]

Audio-visual offset detection (SyncNet's protocol: the best of +-15 frames) on held-out clips,
pretrained against random init. Writes DIR/eval/sync[-NAME].json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir,
                     splits=tuple(args.splits) if args.splits else None, name=args.name, overrides=overrides)
  print(f"\nSync offsets on {results['dataset']} {'+'.join(results['splits'])} (checkpoint step "
        f"{results['checkpoint_step']}; {results['clips']} clips, {results['windows']} windows)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-sync", _main, usage=USAGE, flag_names=("splits", "name"))


if __name__ == "__main__":
  cli_main()
