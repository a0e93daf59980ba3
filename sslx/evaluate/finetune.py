"""Testing fine-tuned checkpoints: multi-clip video top-1 (and single-image top-1).

The fine-tuning itself runs through the one trainer (``sslx-finetune``, sslx/finetune.py,
with the supervised objective of sslx/pretexts/supervised.py); this module reads the
checkpoints it writes. Test protocol of VCOP (Xu et al., CVPR 2019) and most video SSL
papers: ``evaluate.num_clips`` windows spread evenly over each test video, centre crops,
the softmax probabilities averaged over them -> video top-1; also the top-1 of the single
centre clip. Image runs test on the centre crop. BatchNorm in eval mode.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sslx import checkpoints, run
from sslx.data import pipeline


def average_clip_probabilities(logits):
  """``(B, K, C)`` logits of K clips per video -> ``(B, C)``: the mean of their softmax
  probabilities (VCOP's multi-clip test), not the softmax of the mean logits."""
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).mean(axis=1)


def predict_fn(config, model):
  """A jitted (variables, uint8 media ``(B, [K,] ...)``) -> ``(B, C)`` class probabilities, the
  K clips of a video averaged; inputs made as in fine-tuning (the supervised pretext)."""
  pretext = run.build_model(config)[0]
  key = run.media_key(config)
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  per_example = 4 if key == "video" else 3  # Dims of one clip (T, H, W, 3) or image (H, W, 3).

  @jax.jit
  def predict(variables, media):
    batch = media.shape[0]
    flat = media.reshape((-1,) + media.shape[-per_example:]).astype(jnp.float32) / 255.0
    inputs, _ = pretext.make_inputs(None, {key: flat, "label": jnp.zeros(flat.shape[0], jnp.int32)},
                                    config.pretext)
    logits, _ = model.apply(variables, run.standardize_inputs(inputs, mean, std), train=False)
    return average_clip_probabilities(logits.reshape(batch, -1, logits.shape[-1]))

  return predict


def top1(workdirs: dict[str, str], source, preprocess, *, batch_size: int, mesh) -> tuple[dict, int]:
  """One pass over ``source`` for each fine-tuned workdir: ({name: top-1}, examples)."""
  loaded = {name: checkpoints.load_run(path, mesh=mesh) for name, path in workdirs.items()}
  first = next(iter(loaded.values()))
  model = run.build_model(first.config)[1]
  predict = predict_fn(first.config, model)
  variables = {name: {"params": r.state.params, "batch_stats": r.state.batch_stats} for name, r in loaded.items()}
  key = run.media_key(first.config)
  batch_size = -(-batch_size // mesh.devices.size) * mesh.devices.size
  dataset = pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False,
                                  num_threads=first.config.get("data_threads", 2))
  correct, count = {name: 0 for name in workdirs}, 0
  for batch in dataset:
    n = len(batch["label"])
    padded = pipeline.pad_batch({key: batch[key], "label": batch["label"]}, batch_size)
    media = pipeline.to_global({key: padded[key]}, mesh)[key]
    for name, v in variables.items():
      probs = np.asarray(jax.device_get(predict(v, media)))[:n]
      correct[name] += int((probs.argmax(axis=-1) == batch["label"]).sum())
    count += n
  return {name: c / max(count, 1) for name, c in correct.items()}, count


def markdown_table(results: dict) -> str:
  names = {"pretrained": "pretrained", "random_init": "random init"}
  if results["media"] == "video":
    columns = [("video_top1", f"video top-1, {results['num_clips']} clips (%)"),
               ("clip_top1", "centre clip top-1 (%)")]
  else:
    columns = [("top1", "top-1 (%)")]
  lines = ["| backbone | " + " | ".join(title for _, title in columns) + " | train loss (last log) |",
           "|---|" + "---|" * (len(columns) + 1)]
  for name, title in names.items():
    row = results[name]
    lines.append(f"| {title} | " + " | ".join(f"{100 * row[k]:.2f}" for k, _ in columns)
                 + f" | {row['train_loss']:.3f} |")
  gains = [100 * (results["pretrained"][k] - results["random_init"][k]) for k, _ in columns]
  lines.append("| gain (points) | " + " | ".join(f"{g:+.2f}" for g in gains) + " | |")
  return "\n".join(lines)
