"""Audio-visual correspondence on held-out clips, and cross-modal retrieval, for a run trained
with an audio-visual correspondence head (L3-Net or AVE-Net, sslx/pretexts/audiovisual/).

    sslx-correspondence --workdir DIR [--dataset folder:grid_av_vid2speech --splits train,test]

Every clip of the evaluated splits gives ``evaluate.num_clips`` windows spread evenly over it
(the host's evaluation sampling, sslx/data/video.py), each a frame and the audio around it,
exactly as in training (the middle frame, ``pretext.audio_seconds`` of audio centred on it).

- **Correspondence accuracy**, balanced: every window is scored with its own audio (a
  positive) and with the audio of the same window slot of the next clip in the list (a
  negative from another clip), so there are as many positives as negatives and chance is 50 %.
  Same-slot negatives are the hard case on data whose clips share a structure in time (every
  GRID sentence is silence, six words, silence: the negative is also speech, or also silence).
  A second accuracy pairs each frame with the next clip's audio half a clip away in time
  (slot ``s + num_clips // 2``), closer to L3-Net's negatives at any time of another video;
  the gap between the two says how much of the accuracy is speech against silence.
- **Retrieval** among the N test windows: the network's correspondence score (the logit of
  "corresponds" minus that of "does not") of every (frame, audio) pair ranks, for each frame,
  all N audio windows (video -> audio) and, for each audio window, all N frames (audio ->
  video); recall@k is how often the window's own partner is among the top k (chance k / N).
  Other windows of the same clip count as misses: same speaker, another moment.

Each number is given for the checkpoint and for the same model at random initialisation
(seed ``evaluate.seed``). Writes DIR/eval/correspondence[-NAME].json and .md.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from sslx import checkpoints, models, run
from sslx.data import sources
from sslx.evaluate import common
from sslx.pretexts.audiovisual import correspondence

RECALL_K = (1, 5, 10)


def tower_features_fn(config):
  """Jitted (variables, uint8 windows (N, T, H, W, 3), audio (N, A)) -> pooled visual and audio
  features (the head's ``pool``), as the training step computes them."""
  cfg = config.pretext
  backbone, audio_tower = models.get_backbone(config.model), models.get_backbone(cfg.audio_model)
  head = correspondence.head(cfg)
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def features(variables, video, audio):
    def part(name):
      return {"params": variables["params"][name], "batch_stats": variables["batch_stats"].get(name, {})}
    frames = video[:, video.shape[1] // 2].astype(jnp.float32) / 255.0
    frames = run.standardize_inputs({"image": frames}, mean, std)["image"]
    heard = correspondence.centre_audio(audio, cfg.audio_seconds, cfg.audio_model.sample_rate)
    visual = backbone.apply(part("backbone"), frames, train=False)
    sound = audio_tower.apply(part("audio"), heard, train=False)
    return head.apply({"params": variables["params"]["head"]}, visual, sound, method=type(head).pool)

  return features


def pair_scores_fn(config):
  """Jitted (head params, pooled visual (N, C), pooled audio (M, C')) -> (N, M) scores: the
  "corresponds" logit minus the "does not" logit for every pair."""
  head = correspondence.head(config.pretext)

  @jax.jit
  def scores(params, v, a):
    def row(one_v):
      logits = head.apply({"params": params}, jnp.broadcast_to(one_v, (a.shape[0], v.shape[1])), a,
                          method=type(head).fuse)
      return logits[:, 1] - logits[:, 0]
    return jax.lax.map(row, v)

  return scores


def negative_partners(clip: np.ndarray, slot: np.ndarray, *, slot_shift: int = 0) -> np.ndarray:
  """For each window, slot ``s + slot_shift`` (cyclically over the slots) of the next clip in
  the list (cyclically): another clip, at the same time (0) or another time."""
  order = np.unique(clip)
  if len(order) < 2:
    raise ValueError("correspondence needs at least 2 clips to draw negatives from: evaluate more clips")
  position = {(c, s): i for i, (c, s) in enumerate(zip(clip, slot))}
  following = {c: order[(k + 1) % len(order)] for k, c in enumerate(order)}
  num_slots = int(slot.max()) + 1
  return np.asarray([position.get((following[c], (s + slot_shift) % num_slots), position[(following[c], 0)])
                     for c, s in zip(clip, slot)])


def recall_at(scores: np.ndarray, ks=RECALL_K) -> dict[str, float]:
  """Row i's own column i among its top k: {"k": fraction of rows}."""
  own = np.diag(scores)[:, None]
  rank = (scores > own).sum(axis=1)  # Ties count in the window's favour.
  return {str(k): float(np.mean(rank < k)) for k in ks}


def score_model(variables, features_fn, scores_fn, video, audio, partners, other_time_partners, *,
                batch_size: int) -> dict:
  v_parts, a_parts = [], []
  for start in range(0, len(video), batch_size):
    v, a = features_fn(variables, jnp.asarray(video[start:start + batch_size]),
                       jnp.asarray(audio[start:start + batch_size]))
    v_parts.append(np.asarray(v))
    a_parts.append(np.asarray(a))
  v, a = np.concatenate(v_parts), np.concatenate(a_parts)
  scores = np.asarray(scores_fn(variables["params"]["head"], v, a))
  n = len(v)
  positive = np.diag(scores) > 0
  negative = scores[np.arange(n), partners] <= 0
  other_time = scores[np.arange(n), other_time_partners] <= 0
  return {"accuracy": float((positive.sum() + negative.sum()) / (2 * n)),
          "positives_right": float(positive.mean()), "negatives_right": float(negative.mean()),
          "accuracy_other_time": float((positive.sum() + other_time.sum()) / (2 * n)),
          "negatives_right_other_time": float(other_time.mean()),
          "video_to_audio": recall_at(scores), "audio_to_video": recall_at(scores.T)}


def markdown_table(results: dict) -> str:
  n = results["windows"]
  rows = [("correspondence accuracy, negatives at the same time (%)", lambda r: 100 * r["accuracy"], 50.0),
          ("correspondence accuracy, negatives at another time (%)", lambda r: 100 * r["accuracy_other_time"],
           50.0)]
  for direction in ("video_to_audio", "audio_to_video"):
    for k in RECALL_K:
      rows.append((f"{direction.replace('_', ' ')} recall@{k} (%)",
                   lambda r, d=direction, k=k: 100 * r[d][str(k)], 100 * min(k, n) / n))
  lines = ["| measure | pretrained | random init | chance |", "|---|---|---|---|"]
  for name, get, chance in rows:
    lines.append(f"| {name} | {get(results['pretrained']):.1f} | {get(results['random_init']):.1f} | "
                 f"{chance:.1f} |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             splits: tuple[str, ...] | None = None, name: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = common.apply_overrides(loaded.config, overrides or {}, "sslx-correspondence")
  if not config.pretext.name.startswith("audiovisual.") or config.pretext.get("fusion") is None:
    raise ValueError(f"{workdir} was trained with {config.pretext.name}, which has no correspondence head: "
                     f"evaluate a run of audiovisual.correspondence")
  cfg = config.evaluate
  dataset = dataset or cfg.get("dataset") or config.dataset
  splits = tuple(splits or (cfg.test_split,))
  parts = [common.av_windows(sources.from_config(config, split, dataset=dataset, data_dir=data_dir, labels=False),
                      config,
                      batch_size=cfg.batch_size) for split in splits]
  # Clip ids are per split; offset them so that clips of different splits never share one.
  offset, clip_ids = 0, []
  for part in parts:
    clip_ids.append(part[2] + offset)
    offset += int(part[2].max()) + 1
  video, audio = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
  clip, slot = np.concatenate(clip_ids), np.concatenate([p[3] for p in parts])
  partners = negative_partners(clip, slot)
  other_time_partners = negative_partners(clip, slot, slot_shift=max(1, cfg.get("num_clips", 1) // 2))
  pretext, model = run.build_model(config)
  inputs, _ = pretext.make_inputs(jax.random.PRNGKey(0), {"video": jnp.asarray(video[:2], jnp.float32) / 255,
                                                           "audio": jnp.asarray(audio[:2]),
                                                           "index": jnp.arange(2)}, config.pretext)
  random_init = run.jit_once(lambda rng: model.init(rng, inputs, train=False))(jax.random.PRNGKey(cfg.seed))
  trained = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  features_fn, scores_fn = tower_features_fn(config), pair_scores_fn(config)
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "splits": list(splits), "clips": int(len(np.unique(clip))), "windows": int(len(clip)),
             "num_clips": cfg.get("num_clips", 1), "skipped": int(sum(p[4] for p in parts))}
  for label, variables in (("pretrained", trained), ("random_init", random_init)):
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    results[label] = score_model(variables, features_fn, scores_fn, video, audio, partners,
                                 other_time_partners, batch_size=cfg.batch_size)
  stem = "correspondence" + (f"-{name}" if name else "")
  return common.write_results(
      workdir, stem, results, table=markdown_table(results),
      title=f"Audio-visual correspondence, {dataset} {'+'.join(splits)}, checkpoint step {loaded.step}: "
            f"{results['clips']} clips, {results['windows']} windows")


def _define_flags():
  common.define_workdir_flags()
  common.define_split_flags("correspondence")


USAGE = """Usage: sslx-correspondence --workdir=DIR [--dataset=SPEC] [--splits=a,b] [--name=NAME]

Audio-visual correspondence accuracy (balanced) and cross-modal retrieval recall@1/5/10 on
held-out clips, pretrained against random init. Writes DIR/eval/correspondence[-NAME].json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir,
                     splits=tuple(args.splits) if args.splits else None, name=args.name, overrides=overrides)
  print(f"\nCorrespondence on {results['dataset']} {'+'.join(results['splits'])} (checkpoint step "
        f"{results['checkpoint_step']}; {results['clips']} clips, {results['windows']} windows)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-correspondence", _main, usage=USAGE, flag_names=("splits", "name"))


if __name__ == "__main__":
  cli_main()
