"""Zero-shot object segmentation of single frames, for a run trained with
``video.motion_segmentation``, scored against DAVIS-format masks.

    sslx-segment --workdir DIR [--dataset folder:davis2016]

Every frame of every sequence (resized so that its shorter side is ``evaluate.segmentation.size``,
by default the run's own ``resize_size``, the scale it trained at) goes through the run's whole
model on its own; its mask is the sigmoid of the head's logits above 0.5, upsampled bilinearly to
the frame's size. Scored with J (region IoU) and F (boundary F-measure) as sslx-propagate does
(frames but the first and the last, per sequence, then the mean), beside the same model at random
init and the centre prior: a centred ellipse with half the frame's width and height as axes, the
same mask for every frame. No mask of the evaluated sequences is ever given to the model.
Pictures: DIR/eval/segment/<sequence>.jpg. Writes DIR/eval/segment.json and .md.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import checkpoints, run
from sslx.evaluate import common, propagate
from sslx.pretexts.video import motion_segmentation

METHODS = ("pretrained", "random_init", "centre_prior")


def default_settings(config) -> ml_collections.ConfigDict:
  """``config.evaluate.segmentation``: a stored config without it gets these."""
  return ml_collections.ConfigDict({
      "dataset": "folder:davis2016",
      "sequences": "",  # Comma-separated names; "" = all.
      "max_frames": 0,  # The first n frames of each sequence only (a quick look); 0 = all.
      "size": int(config.get("resize_size") or config.image_size),  # Shorter side, px: the training scale.
      "pictures": 6,
  })


def centre_prior(shape) -> np.ndarray:
  """A centred ellipse whose axes are half the frame's width and height (a quarter each way)."""
  h, w = shape
  y, x = np.mgrid[0:h, 0:w]
  return ((y - (h - 1) / 2) / (h / 4)) ** 2 + ((x - (w - 1) / 2) / (w / 4)) ** 2 <= 1.0


def logits_fn(config, model):
  """Jitted (variables, uint8 frames (N, h, w, 3)) -> (N, h', w') mask logits."""
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def logits(variables, frames):
    inputs = run.standardize_inputs({"image": frames.astype(jnp.float32) / 255.0}, mean, std)
    return model.apply(variables, inputs, train=False)[0]

  return logits


def markdown_table(results: dict) -> str:
  lines = ["| sequence | " + " | ".join(f"{m} J / F" for m in METHODS) + " |", "|---|" + "---|" * len(METHODS)]
  for name, row in list(results["sequences"].items()) + [("**mean**", results["mean"])]:
    lines.append(f"| {name} | " + " | ".join(f"{100 * row[m]['J']:.1f} / {100 * row[m]['F']:.1f}" for m in METHODS)
                 + " |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = ml_collections.ConfigDict(loaded.config.to_dict())
  if config.pretext.name != "video.motion_segmentation":
    raise ValueError(f"sslx-segment reads runs trained with video.motion_segmentation, but {workdir} was "
                     f"trained with {config.pretext.name}")
  settings = default_settings(config)
  settings.update(config.evaluate.get("segmentation", {}))
  config.evaluate.segmentation = settings
  config = common.apply_overrides(config, overrides or {}, "sslx-segment")
  cfg = config.evaluate.segmentation
  dataset = dataset or cfg.dataset
  sequences, skipped = propagate.open_sequences(dataset, data_dir or config.get("data_dir"), cfg.sequences,
                                                "sslx-segment", cfg.max_frames)
  _, model = run.build_model(config)
  logits = logits_fn(config, model)
  trained = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  example = jnp.zeros((1, config.image_size, config.image_size, 3), jnp.float32)
  fresh = run.jit_once(lambda rng: model.init(rng, {"image": example}, train=False))(
      jax.random.PRNGKey(config.evaluate.seed))
  variables = {"pretrained": trained, "random_init": fresh}
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "size": cfg.size, "skipped": skipped, "sequences": {}}
  picture_dir = os.path.join(workdir, "eval", "segment")
  for seq in sequences:
    shape = seq.masks.shape[1:]
    frames = jnp.asarray(propagate.resize_frames(seq.frames, propagate.input_size(*shape, cfg.size)))
    masks = {}
    for method, values in variables.items():
      out = np.concatenate([np.asarray(logits(values, frames[i:i + 16])) for i in range(0, len(frames), 16)])
      masks[method] = np.asarray(motion_segmentation.predict_masks(jnp.asarray(out), shape))
    masks["centre_prior"] = np.broadcast_to(centre_prior(shape), seq.masks.shape)
    results["sequences"][seq.name] = {m: propagate.score_sequence(masks[m], seq.masks) for m in METHODS}
    if cfg.pictures:
      propagate.save_overlays(os.path.join(picture_dir, f"{seq.name}.jpg"), seq, [masks["pretrained"]], cfg.pictures)
  results["mean"] = propagate.mean_scores(results["sequences"], METHODS)
  return common.write_results(
      workdir, "segment", results, table=markdown_table(results),
      title=f"Zero-shot segmentation of single frames, {dataset}, checkpoint step {loaded.step}: "
            f"{len(results['sequences'])} sequences at {cfg.size} px (J / F, %)")


USAGE = """Usage: sslx-segment --workdir=DIR [--dataset=folder:davis2016] [--config.evaluate.segmentation.KEY=VALUE ...]

A motion_segmentation run's masks of single frames against DAVIS-format masks (J, F), beside its
random init and a centre prior; pictures under DIR/eval/segment/. Writes DIR/eval/segment.json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, overrides=overrides)
  print(f"\nZero-shot segmentation on {results['dataset']} (checkpoint step {results['checkpoint_step']})\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}")


def cli_main():
  common.define_workdir_flags("A folder of DAVIS-format sequences; default: evaluate.segmentation.dataset.")
  common.run_script("sslx-segment", _main, usage=USAGE, flag_names=())


if __name__ == "__main__":
  cli_main()
