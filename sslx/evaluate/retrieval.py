"""Nearest-neighbour retrieval of test videos among training videos, per block.

    python -m sslx.evaluate.retrieval --workdir DIR [--dataset folder:/data]

The protocol of VCOP (Xu et al., CVPR 2019, section 4.4, after Büchler et al.
2018): every test video is a query, every training video is in the gallery;
a video's feature is the mean over ``evaluate.num_clips`` clips spread evenly
over it (sslx/evaluate/common.py); neighbours by cosine similarity; a query
scores a hit at k when one of its k nearest training videos has its class.
Reported: the top-k hit rate for k in ``evaluate.retrieval_k`` (1, 5, 10, 20,
50), for the checkpoint's backbone and the same backbone at random init.
Writes DIR/eval/retrieval.json and .md. Works for image runs as well.
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from sslx.evaluate import common


def top_k_hits(query, query_labels, gallery, gallery_labels, ks) -> dict[int, float]:
  """Fraction of queries with a same-class gallery item among their k nearest (cosine)."""
  q = query / (np.linalg.norm(query, axis=1, keepdims=True) + 1e-12)
  g = gallery / (np.linalg.norm(gallery, axis=1, keepdims=True) + 1e-12)
  order = np.argsort(-(q @ g.T), axis=1, kind="stable")
  same = gallery_labels[order] == query_labels[:, None]  # (queries, gallery) in neighbour order.
  first_hit = np.where(same.any(axis=1), same.argmax(axis=1), np.inf)
  return {int(k): float(np.mean(first_hit < k)) for k in ks}


def markdown_table(results: dict) -> str:
  ks = results["k"]
  lines = ["| block | " + " | ".join(f"top-{k} pretrained / random (%)" for k in ks) + " |",
           "|---|" + "---|" * len(ks)]
  for block, row in results["blocks"].items():
    cells = [f"{100 * row['pretrained'][str(k)]:.1f} / {100 * row['random_init'][str(k)]:.1f}" for k in ks]
    lines.append(f"| {block} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             temporal_segments: int | None = None, overrides: dict[str, str] | None = None) -> dict:
  loaded = common.load_for_evaluation(workdir, "sslx-retrieval", overrides=overrides,
                                      temporal_segments=temporal_segments)
  cfg = loaded.config.evaluate
  ks = tuple(cfg.get("retrieval_k", (1, 5, 10, 20, 50)))
  dataset, (gallery, gallery_y), (query, query_y), _, skipped = common.train_and_test_features(
      loaded, dataset=dataset, data_dir=data_dir, purpose="retrieval")
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "gallery": int(len(gallery_y)), "queries": int(len(query_y)), "skipped": skipped,
             "k": list(ks), "num_clips": cfg.get("num_clips", 1),
             "whole_clip": bool(cfg.get("whole_clip", False)), "blocks": {}}
  for block in gallery["pretrained"]:
    results["blocks"][block] = {
        name: {str(k): v for k, v in top_k_hits(query[name][block], query_y, gallery[name][block],
                                                gallery_y, ks).items()}
        for name in ("pretrained", "random_init")}
  return common.write_results(
      workdir, common.results_stem("retrieval", loaded.config), results, table=markdown_table(results),
      title=f"Retrieval, {dataset}, checkpoint step {loaded.step}: {len(query_y)} test queries, "
            f"{len(gallery_y)} training videos in the gallery")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_integer("temporal_segments", None, "Video: clip features as means over this many "
                       "consecutive stretches of time, concatenated; default: the config's.")


USAGE = """Usage: sslx-retrieval --workdir=DIR [--dataset=SPEC] [--config.evaluate.KEY=VALUE ...]

Nearest-neighbour retrieval of test videos (or images) among the training split, per block,
pretrained against random init (top-k for the run's evaluate.retrieval_k). Writes
DIR/eval/retrieval.json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir,
                     temporal_segments=args.temporal_segments, overrides=overrides)
  print(f"\nRetrieval on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['queries']} queries, {results['gallery']} in the gallery)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-retrieval", _main, usage=USAGE, flag_names=("temporal_segments",))


if __name__ == "__main__":
  cli_main()
