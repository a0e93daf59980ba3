"""Weighted k-nearest-neighbour classification on frozen features, per block.

    sslx-knn --workdir DIR [--dataset SPEC] [--k 20,200] [--temperature 0.07]

The protocol of Wu et al. (CVPR 2018, "Unsupervised feature learning via non-parametric
instance discrimination") as solo-learn runs it: every block's pooled features (the linear
probe's, sslx/evaluate/common.py; for videos the multi-clip features of the other video
evaluations) are L2-normalised; a test example's k most cosine-similar training examples vote
for their classes with weight exp(similarity / T), k = 20 and T = 0.07 by default; the class
with the most weight wins. Several k are scored in one pass (the neighbours of the largest).
The similarity is computed for ``chunk_size`` test examples at a time, so 10,000 queries against
50,000 training examples never hold more than ``chunk_size`` x 50,000 similarities. The same
backbone at random init goes through the identical protocol. Writes DIR/eval/knn.json and .md.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from sslx import models, run
from sslx.data import sources
from sslx.evaluate import common

DEFAULT_K = (20,)
DEFAULT_TEMPERATURE = 0.07
DEFAULT_CHUNK_SIZE = 1024


def l2_normalize(x):
  """Rows scaled to unit length (a zero row stays zero)."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("num_classes", "ks", "temperature"))
def _chunk_predictions(query, gallery, gallery_labels, *, num_classes: int, ks: tuple[int, ...],
                       temperature: float):
  """(len(ks), Q) predicted classes of one chunk of normalised queries."""
  # Exact dot products: default-precision matmuls keep ~11 bits on GPUs (TF32) and TPUs, enough
  # to reorder near-tied neighbours.
  similarity = jnp.einsum("qd,nd->qn", query, gallery, precision=jax.lax.Precision.HIGHEST)
  top_similarity, top_index = jax.lax.top_k(similarity, max(ks))  # Sorted, ties to the lower index.
  votes = jax.nn.one_hot(gallery_labels[top_index], num_classes) * jnp.exp(top_similarity / temperature)[..., None]
  return jnp.stack([jnp.argmax(votes[:, :k].sum(axis=1), axis=-1) for k in ks])


def knn_predict(train_x, train_y, test_x, *, num_classes: int, ks=DEFAULT_K,
                temperature: float = DEFAULT_TEMPERATURE, chunk_size: int = DEFAULT_CHUNK_SIZE) -> dict[int, np.ndarray]:
  """{k: (N_test,) predicted class} of the weighted kNN vote among ``train_x`` for each k.

  Features are L2-normalised here; ``k`` larger than the training set is an error. Queries go
  ``chunk_size`` at a time (the last chunk padded, so one compilation serves all).
  """
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"k must be positive integers, got {ks}")
  if max(ks) > len(train_x):
    raise ValueError(f"k = {max(ks)} is more than the {len(train_x)} training examples: lower --k")
  if temperature <= 0:
    raise ValueError(f"the temperature must be > 0, got {temperature}")
  gallery = jnp.asarray(l2_normalize(train_x))
  labels = jnp.asarray(np.asarray(train_y, np.int32))
  query = l2_normalize(test_x)
  chunk = max(1, min(int(chunk_size), len(query)))
  out = []
  for start in range(0, len(query), chunk):
    part = query[start:start + chunk]
    padded = np.concatenate([part, np.zeros((chunk - len(part), part.shape[1]), np.float32)])
    predicted = _chunk_predictions(jnp.asarray(padded), gallery, labels, num_classes=int(num_classes),
                                   ks=ks, temperature=float(temperature))
    out.append(np.asarray(predicted)[:, :len(part)])
  predictions = np.concatenate(out, axis=1) if out else np.zeros((len(ks), 0), np.int32)
  return {k: predictions[i] for i, k in enumerate(ks)}


def knn_accuracy(train_x, train_y, test_x, test_y, **kwargs) -> dict[int, float]:
  """{k: top-1 accuracy} of ``knn_predict`` on labelled test features."""
  return {k: float(np.mean(p == np.asarray(test_y))) for k, p in knn_predict(train_x, train_y, test_x, **kwargs).items()}


class KnnMonitor:
  """kNN top-1 per block while pretraining: every ``evaluate.every`` steps the trainer calls it
  with the train state, and it embeds ``evaluate.monitor_train_examples`` training and
  ``evaluate.monitor_test_examples`` test examples (spread evenly over the evaluation's splits,
  the same ones every time) with the state's backbone and scores the test ones by the weighted
  vote of ``evaluate.monitor_k`` neighbours (T = ``evaluate.monitor_temperature``).

  It reads its own data through its own pipeline and draws no random numbers, so the run's
  data order, its PRNG stream and its final state are those of a run without it. The labelled
  splits are opened (and checked) when it is built, before the first step compiles.
  """

  def __init__(self, config):
    cfg = config.evaluate
    self.config = common.for_evaluation(config)
    dataset = cfg.get("dataset") or config.dataset
    opened = common.labeled_sources(self.config, (cfg.train_split, cfg.test_split), dataset=dataset,
                                    data_dir=config.get("data_dir"), purpose="the kNN monitor (evaluate.every)")
    self.train = sources.SubsetSource.spread(opened[cfg.train_split], cfg.monitor_train_examples)
    self.test = sources.SubsetSource.spread(opened[cfg.test_split], cfg.monitor_test_examples)
    self.num_classes = max(s.num_classes for s in opened.values())
    self.k = min(int(cfg.monitor_k), len(self.train))
    self.temperature = float(cfg.monitor_temperature)
    self.batch_size = int(cfg.batch_size)
    self.fn = common.feature_fn(models.get_backbone(config.model), self.config, cfg.max_features)
    self.mesh = run.make_mesh(jax.local_devices())

  def __call__(self, state) -> dict[str, float]:
    """{block: kNN top-1} of the state's backbone."""
    variables = {"params": state.params["backbone"], "batch_stats": state.batch_stats.get("backbone", {})}
    if jax.process_count() > 1:  # This process's copy of the replicated weights, on its own devices.
      variables = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), variables)
    features = {}
    for name, source in (("train", self.train), ("test", self.test)):
      out, labels, _ = common.extract(source, self.config, {"m": self.fn}, {"m": variables},
                                      batch_size=self.batch_size, mesh=self.mesh)
      features[name] = (out["m"], labels)
    (train_f, train_y), (test_f, test_y) = features["train"], features["test"]
    return {block: knn_accuracy(train_f[block], train_y, test_f[block], test_y, num_classes=self.num_classes,
                                ks=(self.k,), temperature=self.temperature)[self.k] for block in train_f}


def markdown_table(results: dict) -> str:
  ks = results["k"]
  lines = ["| block | dims | " + " | ".join(f"k={k}: pretrained / random init (%)" for k in ks)
           + f" | gain at k={ks[0]} (points) |",
           "|---|---|" + "---|" * (len(ks) + 1)]
  for block, row in results["blocks"].items():
    cells = [f"{100 * row['by_k'][str(k)]['pretrained']:.2f} / {100 * row['by_k'][str(k)]['random_init']:.2f}"
             for k in ks]
    gain = 100 * (row["pretrained"] - row["random_init"])
    lines.append(f"| {block} | {row['dims']} | " + " | ".join(cells) + f" | {gain:+.2f} |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             ks=DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE, chunk_size: int = DEFAULT_CHUNK_SIZE,
             temporal_segments: int | None = None, overrides: dict[str, str] | None = None) -> dict:
  """kNN top-1 per block of the checkpoint's backbone and of the same backbone at random init.

  ``blocks[b]["pretrained"]`` and ``["random_init"]`` are the accuracies at the first k (the
  fields every evaluation's JSON shares); ``blocks[b]["by_k"]`` has every k.
  """
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1 or temperature <= 0 or chunk_size < 1:
    raise ValueError(f"kNN needs k >= 1, temperature > 0 and chunk_size >= 1, got k={ks}, "
                     f"temperature={temperature}, chunk_size={chunk_size}")
  loaded = common.load_for_evaluation(workdir, "sslx-knn", overrides=overrides, temporal_segments=temporal_segments)
  dataset, (train_f, train_y), (test_f, test_y), num_classes, skipped = common.train_and_test_features(
      loaded, dataset=dataset, data_dir=data_dir, purpose="kNN evaluation")
  if max(ks) > len(train_y):
    raise ValueError(f"k = {max(ks)} is more than the {len(train_y)} training examples: lower --k")
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "train_examples": int(len(train_y)), "test_examples": int(len(test_y)), "skipped": skipped,
             "k": list(ks), "temperature": float(temperature), "blocks": {}}
  for block in train_f["pretrained"]:
    by_k = {str(k): {} for k in ks}
    for name in ("pretrained", "random_init"):
      accuracy = knn_accuracy(train_f[name][block], train_y, test_f[name][block], test_y,
                              num_classes=num_classes, ks=ks, temperature=temperature, chunk_size=chunk_size)
      for k, value in accuracy.items():
        by_k[str(k)][name] = value
    first = by_k[str(ks[0])]
    results["blocks"][block] = {"dims": int(train_f["pretrained"][block].shape[1]),
                                "pretrained": first["pretrained"], "random_init": first["random_init"],
                                "by_k": by_k}
  return common.write_results(
      workdir, common.results_stem("knn", loaded.config), results, table=markdown_table(results),
      title=f"Weighted kNN (T = {temperature:g}), {dataset}, checkpoint step {loaded.step}, "
            f"{len(train_y)} train / {len(test_y)} test")


def _define_flags():
  common.define_workdir_flags()
  flags.DEFINE_list("k", [str(k) for k in DEFAULT_K], "Neighbours voting; several (e.g. 10,20,200) are "
                    "scored in one pass; the first is the headline.")
  flags.DEFINE_float("temperature", DEFAULT_TEMPERATURE, "Votes weigh exp(cosine similarity / T).")
  flags.DEFINE_integer("chunk_size", DEFAULT_CHUNK_SIZE, "Test examples per similarity chunk "
                       "(memory: chunk_size x training examples floats).")
  flags.DEFINE_integer("temporal_segments", None, "Video: clip features as means over this many "
                       "consecutive stretches of time, concatenated; default: the config's.")


USAGE = """Usage: sslx-knn --workdir=DIR [--dataset=SPEC] [--k=20,200] [--temperature=0.07]

Weighted kNN top-1 per block of the workdir's latest checkpoint and of the same backbone at
random init (cosine similarity, votes exp(s / T)); writes DIR/eval/knn.json.
"""


def _main(args, overrides):
  try:
    ks = tuple(int(k) for k in args.k)
  except ValueError:
    raise ValueError(f"--k takes integers, e.g. --k 20,200; got {','.join(args.k)}") from None
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, ks=ks,
                     temperature=args.temperature, chunk_size=args.chunk_size,
                     temporal_segments=args.temporal_segments, overrides=overrides)
  print(f"\nWeighted kNN on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['train_examples']} train / {results['test_examples']} test)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  _define_flags()
  common.run_script("sslx-knn", _main, usage=USAGE, flag_names=("k", "temperature", "chunk_size",
                                                                "temporal_segments"))


if __name__ == "__main__":
  cli_main()
