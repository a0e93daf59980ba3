"""Future-frame prediction on held-out clips, for a run trained with ``video.future_prediction``.

    sslx-future --workdir DIR [--dataset folder:egogestar]

Each held-out clip gives ``evaluate.num_clips`` windows of ``num_past + num_future`` consecutive
frames spread evenly over it (the host's evaluation sampling, centre crops). The model sees the
past frames and predicts the rest; each predicted frame (clipped to [0, 1]) is scored against
the true one by PSNR (dB, peak 1) and SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5,
K1 0.01, K2 0.03, per RGB channel, averaged; borders reflected), per horizon step, averaged over
the windows; beside the copy of the last past frame, which is also what the untrained model
predicts (its decoder starts at zero). Pictures: one row per clip, its middle window, for the
first clips (past frames, true future, predicted future) in DIR/eval/future.png.
Writes DIR/eval/future.json and .md.
"""

from __future__ import annotations

import os

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from sslx import checkpoints, run
from sslx.data import pipeline, sources
from sslx.evaluate import common
from sslx.montage import montage
from sslx.pretexts.video import future_prediction

PICTURE_ROWS = 8


def ssim(a, b) -> float:
  """Mean SSIM of two images in [0, 1], ``(H, W, C)``: Gaussian 11 x 11 window, sigma 1.5."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  c1, c2 = 0.01 ** 2, 0.03 ** 2
  blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)  # noqa: E731
  mu_a, mu_b = blur(a), blur(b)
  var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
  index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
  return float(index.mean())


def psnr(a, b) -> float:
  mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
  return 10.0 * np.log10(1.0 / max(mse, 1e-10))


def predict_fn(config, model):
  """Jitted (variables, uint8 windows (B, T, H, W, 3)) -> (predictions (B, F, H, W, 3) in [0, 1],
  true future, last past frame)."""
  cfg = config.pretext
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)

  @jax.jit
  def predict(variables, video):
    clips = video.astype(jnp.float32) / 255.0
    # Windows of exactly num_past + num_future frames: the only start is 0, whatever the key.
    inputs, targets = future_prediction.make_inputs(jax.random.PRNGKey(0), {"video": clips}, cfg)
    outputs, _ = model.apply(variables, run.standardize_inputs(inputs, mean, std), train=False)
    return jnp.clip(outputs, 0.0, 1.0), targets["future"], targets["last"]

  return predict


def markdown_table(results: dict) -> str:
  lines = ["| step | PSNR model (dB) | PSNR copy-last (dB) | SSIM model | SSIM copy-last |", "|---|---|---|---|---|"]
  for step, row in enumerate(results["steps"], 1):
    lines.append(f"| {step} | {row['psnr']:.2f} | {row['psnr_copy_last']:.2f} | {row['ssim']:.4f} | "
                 f"{row['ssim_copy_last']:.4f} |")
  return "\n".join(lines)


def evaluate(workdir: str, *, dataset: str | None = None, data_dir: str | None = None,
             overrides: dict[str, str] | None = None) -> dict:
  loaded = checkpoints.load_run(workdir)
  config = common.apply_overrides(loaded.config, overrides or {}, "sslx-future")
  if config.pretext.name != "video.future_prediction":
    raise ValueError(f"sslx-future reads runs trained with video.future_prediction, but {workdir} was "
                     f"trained with {config.pretext.name}")
  cfg = config.pretext
  config.video.num_frames = cfg.num_past + cfg.num_future
  dataset = dataset or config.evaluate.get("dataset") or config.dataset
  split = config.evaluate.test_split
  source = sources.from_config(config, split, dataset=dataset, data_dir=data_dir, evaluation=True)
  num_clips = config.evaluate.get("num_clips", 1)
  preprocess = run.make_preprocess(config, source, train=False, num_clips=num_clips)
  batch_size = config.evaluate.batch_size
  _, model = run.build_model(config)
  variables = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
  predict = predict_fn(config, model)
  scores = {k: [[] for _ in range(cfg.num_future)] for k in ("psnr", "psnr_copy_last", "ssim", "ssim_copy_last")}
  rows = []
  for batch in pipeline.make_dataset(source, preprocess, batch_size=batch_size, seed=0, train=False):
    video = batch["video"].reshape((-1,) + batch["video"].shape[-4:])  # (B * K, T, H, W, 3)
    n = len(video)
    padded = np.concatenate([video, np.zeros((-(-n // batch_size) * batch_size - n,) + video.shape[1:], video.dtype)])
    for start in range(0, n, batch_size):
      predicted, future, last = jax.device_get(predict(variables, jnp.asarray(padded[start:start + batch_size])))
      for i in range(min(batch_size, n - start)):
        for step in range(cfg.num_future):
          scores["psnr"][step].append(psnr(predicted[i, step], future[i, step]))
          scores["psnr_copy_last"][step].append(psnr(last[i], future[i, step]))
          scores["ssim"][step].append(ssim(predicted[i, step], future[i, step]))
          scores["ssim_copy_last"][step].append(ssim(last[i], future[i, step]))
        # One row per clip (its middle window), for the first clips.
        if len(rows) < PICTURE_ROWS and (start + i) % num_clips == num_clips // 2:
          past = padded[start + i, :cfg.num_past].astype(np.float32) / 255.0
          rows.append(list(past) + list(future[i]) + list(predicted[i]))
  if not rows:
    raise ValueError(f"no clip of {dataset} split {split!r} could be evaluated ({preprocess.skipped} skipped): "
                     f"check the dataset holds clips of at least {config.video.num_frames} frames")
  os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
  picture = os.path.join(workdir, "eval", "future.png")
  cv2.imwrite(picture, np.ascontiguousarray(montage(rows)[..., ::-1]))
  results = {"workdir": os.path.abspath(workdir), "checkpoint_step": loaded.step, "dataset": dataset,
             "split": split, "windows": len(scores["psnr"][0]), "skipped": preprocess.skipped,
             "num_past": cfg.num_past, "num_future": cfg.num_future, "picture": picture,
             "steps": [{k: float(np.mean(v[step])) for k, v in scores.items()} for step in range(cfg.num_future)]}
  return common.write_results(
      workdir, "future", results, table=markdown_table(results),
      title=f"Future prediction, {dataset} split {split}, checkpoint step {loaded.step}: "
            f"{results['windows']} windows of {cfg.num_past} past frames")


USAGE = """Usage: sslx-future --workdir=DIR [--dataset=SPEC] [--config.evaluate.KEY=VALUE ...]

PSNR and SSIM of a future_prediction run's predicted frames per horizon step on held-out clips,
beside the copy of the last past frame; pictures in DIR/eval/future.png. Writes DIR/eval/future.json.
"""


def _main(args, overrides):
  results = evaluate(args.workdir, dataset=args.dataset, data_dir=args.data_dir, overrides=overrides)
  print(f"\nFuture prediction on {results['dataset']} (checkpoint step {results['checkpoint_step']}; "
        f"{results['windows']} windows)\n")
  print(markdown_table(results))
  print(f"\nWritten to {results['written_to']}; pictures: {results['picture']}")


def cli_main():
  common.define_workdir_flags()
  common.run_script("sslx-future", _main, usage=USAGE, flag_names=())


if __name__ == "__main__":
  cli_main()
