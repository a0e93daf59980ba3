"""One command for a lent GPU or TPU: the train steps' speed and MFU, and whether the host keeps up.

    python benchmarks/accelerator.py [--models convnet,resnet18,resnet50,r3d18] [--dtypes float32,bfloat16]
        [--steps 20] [--torch auto|none] [--workers 0,8]
    python benchmarks/accelerator.py --quick   # CPU-sized: tiny batches and models, 2 steps (the tests run it).

Prints each figure as it is measured, then three tables (under 6 minutes on one H100-class GPU):

1. Train step: source images (clips) per second of the trainer's own jitted step (rotation on
   ConvNet and ResNet-18 at 32 px, batch 256 = 1,024 rotated inputs; ResNet-50 at 224 px, batch 64;
   R3D-18 arrow of time on 16 x 112 x 112 clips, batch 8), each in float32 and bfloat16
   (``model.dtype``), on a fixed batch of real images. The loss is read back after every step
   (on both sides), so each step's time is complete. MFU: the step's FLOPs from XLA's cost
   analysis over its time, over the device's dense peak for the dtype (PEAK_TFLOPS, by device
   kind: TF32 tensor cores for float32, as XLA runs float32 matmuls on NVIDIA GPUs by default;
   bfloat16), or, on a device not in that table, over the rate of a 4096^2 matmul in the dtype
   measured in the same run (named in the header).
2. PyTorch twins (benchmarks/train_step_vs_torch.py, the same layers, loss and SGD; no
   ResNet-50 twin) on CUDA where torch sees one (bfloat16: ``torch.autocast``), beside each row,
   in channels-last.
3. Host pipeline beside the step (benchmarks/input_pipeline.py's ``measure``: delivered,
   consumed, the trainer's loop, the share of loop time inside ``next``) for ResNet-18 on the
   CIFAR JPEGs (the data directory's, else the embedded sample) and ResNet-50 on ImageNet-sized
   JPEGs made from them (benchmarks/pipeline_rates.py), each with ``data.workers`` in
   ``--workers`` (and the config's decoded-image cache, ``data.cache_mb``).

``--quick`` (CPU, the tests): ConvNet and R3D-18 at width 0.25 on 4 x 32 x 32 clips, tiny
batches, 2 steps; the host row on the quick ConvNet config with 0 and 1 worker.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
from absl import logging

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For the other benchmarks.
import common  # noqa: E402
import input_pipeline  # noqa: E402
import pipeline_rates  # noqa: E402
import train_step_vs_torch as twins  # noqa: E402
from sslx import configs, process

# Dense peak TFLOP/s (no sparsity) by a substring of jax's device_kind: (float32 as XLA runs it, bfloat16).
PEAK_TFLOPS = {
    "H200": (494.7, 989.4), "H100": (494.7, 989.4),  # SXM; float32 matmuls on TF32 tensor cores.
    "A100": (156.0, 312.0), "L4": (60.0, 121.0), "A10G": (35.0, 70.0),
    "TPU v4": (275.0, 275.0), "TPU v5 lite": (197.0, 197.0), "TPU v5p": (459.0, 459.0), "TPU v6": (918.0, 918.0),
}
MODELS = {  # name -> (experiment config, batch, crop or clip, model overrides)
    "convnet": ("rotation_convnet_cifar10.py", 256, 32, {}),
    "resnet18": ("rotation_resnet18_cifar10.py", 256, 32, {}),
    "resnet50": ("rotation_resnet50_imagenet.py", 64, 224, {}),
    "r3d18": ("arrow_of_time_r3d_egogestar.py", 8, (16, 112, 112), {"width": 1.0, "conv": "3d"}),
}
QUICK_MODELS = {
    "convnet": ("rotation_convnet_cifar10.py", 8, 32, {}),
    "r3d18": ("arrow_of_time_r3d_egogestar.py", 2, (4, 32, 32), {"width": 0.25, "conv": "3d"}),
}
TWINS = {"convnet": "convnet", "resnet18": "resnet18", "r3d18": "r3d18"}  # benchmark names of the twins.


def step_config(name: str, dtype: str, models=MODELS):
  experiment, batch, shape, overrides = models[name]
  config = configs.load(common.REPO / "experiments" / experiment)
  config.model.update(overrides)
  config.model.dtype = dtype
  config.batch_size = batch
  if isinstance(shape, tuple):
    config.pretext.clip_frames = config.video.num_frames = shape[0]
    config.image_size = shape[1]
  else:
    config.image_size = shape
  return config


def inputs(name: str, models=MODELS) -> np.ndarray:
  _, batch, shape, _ = models[name]
  return twins.real_clips(batch, shape) if isinstance(shape, tuple) else common.real_batch(batch, shape)["image"]


def time_steps(run, steps: int) -> float:
  """Median seconds of ``run`` (one step, loss read back) after two warm-up calls."""
  run()
  run()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_tflops(dtype: str) -> tuple[float, str]:
  kind = jax.devices()[0].device_kind
  for key, (fp32, bf16) in PEAK_TFLOPS.items():
    if key in kind:
      return (bf16 if dtype == "bfloat16" else fp32), f"{kind} dense peak"
  return twins.matmul_flops_per_second(4096, dtype=dtype) / 1e12, f"measured {dtype} 4096^2 matmul on {kind}"


def torch_device() -> str | None:
  try:
    import torch
  except ImportError:
    return None
  return "cuda" if torch.cuda.is_available() else None


def measure_steps(names, dtypes, steps: int, use_torch: bool, models=MODELS, report=print) -> list[dict]:
  device = torch_device() if use_torch else None
  rows = []
  for name in names:
    images = inputs(name, models)
    for dtype in dtypes:
      config = step_config(name, dtype, models)
      run, flops = twins.sslx_step(config, images)
      seconds = time_steps(run, steps)
      peak, peak_source = peak_tflops(dtype)
      row = {"model": name, "dtype": dtype, "batch": len(images), "unit": "clips" if images.ndim == 5 else "img",
             "per_s": len(images) / seconds, "mfu": flops / seconds / (peak * 1e12), "peak": peak,
             "peak_source": peak_source, "torch_per_s": None}
      if device and name in TWINS:
        import torch
        torch_run = twins.torch_step(TWINS[name], config, images, channels_last=True, device=device,
                                     autocast=torch.bfloat16 if dtype == "bfloat16" else None)
        row["torch_per_s"] = len(images) / time_steps(torch_run, steps)
      report(f"{name} {dtype}: {row['per_s']:.1f} {row['unit']}/s, MFU {100 * row['mfu']:.1f}%"
             + (f", PyTorch {row['torch_per_s']:.1f}" if row["torch_per_s"] else ""))
      rows.append(row)
  return rows


def measure_host(workers_list, steps: int, rounds: int, window: int, quick: bool, report=print) -> list[dict]:
  """input_pipeline.measure for ResNet-18 on CIFAR JPEGs and ResNet-50 on made ImageNet-sized files."""
  rows = []
  with tempfile.TemporaryDirectory() as folder:
    cifar = pipeline_rates.cifar_source(256 if quick else 5000)
    sets = ([("convnet", "rotation_convnet_sample.py", 32, cifar, 8)] if quick else
            [("resnet18", "rotation_resnet18_cifar10.py", 32, cifar, 256)])
    if not quick:
      large = pipeline_rates.make_large_files(pipeline_rates.cifar_source(1000), pathlib.Path(folder))
      sets.append(("resnet50", "rotation_resnet50_imagenet.py", 224, large, 64))
    for name, experiment, size, source, batch in sets:
      for workers in workers_list:
        config = configs.load(common.REPO / "experiments" / experiment, "quick" if quick else None)
        config.batch_size, config.image_size = batch, size
        config.data.workers = workers
        result = input_pipeline.measure(config, source, steps=steps, rounds=rounds, window=window)
        row = {"model": name, "size": size, "workers": workers, **result}
        report(f"host {name} {size} px, workers {workers}: delivered {result['delivered_per_s']:.0f}/s, step "
               f"{result['consumed_per_s']:.0f}/s, loop {result['loop_per_s']:.0f}/s, in next() "
               f"{100 * result['wait_share']:.1f}%")
        rows.append(row)
  return rows


def format_tables(step_rows, host_rows) -> str:
  lines = ["| model | dtype | batch | sslx /s | MFU | PyTorch /s (channels-last) | sslx / PyTorch |",
           "|---|---|---|---|---|---|---|"]
  for r in step_rows:
    torch_cell = f"{r['torch_per_s']:.1f}" if r["torch_per_s"] else "-"
    ratio = f"{r['per_s'] / r['torch_per_s']:.2f}" if r["torch_per_s"] else "-"
    lines.append(f"| {r['model']} | {r['dtype']} | {r['batch']} | {r['per_s']:.1f} {r['unit']} "
                 f"| {100 * r['mfu']:.1f}% | {torch_cell} | {ratio} |")
  lines += ["", "| host pipeline | workers | delivered /s | step consumes /s | delivered / consumed | loop /s "
                "| in next() share |", "|---|---|---|---|---|---|---|"]
  for r in host_rows:
    lines.append(f"| {r['model']}, {r['size']} px | {r['workers']} | {r['delivered_per_s']:.0f} "
                 f"| {r['consumed_per_s']:.0f} | {r['delivered_per_s'] / r['consumed_per_s']:.2f} "
                 f"| {r['loop_per_s']:.0f} | {r['wait_share']:.3f} |")
  return "\n".join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--steps", type=int, default=20, help="Timed steps per row (medians).")
  parser.add_argument("--torch", default="auto", choices=("auto", "none"),
                      help="auto: the PyTorch twins on CUDA when torch sees a GPU.")
  parser.add_argument("--workers", default=f"0,{min(8, max(1, (os.cpu_count() or 2) // 2))}",
                      help="data.workers values for the host-pipeline rows.")
  parser.add_argument("--quick", action="store_true", help="CPU-sized run for the tests.")
  return parser.parse_args(argv)


def main(argv=None) -> tuple[list[dict], list[dict]]:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  report = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
  models = QUICK_MODELS if args.quick else MODELS
  names = list(models) if args.quick else [n for n in args.models.split(",") if n]
  unknown = [n for n in names if n not in models]
  if unknown:
    raise SystemExit(f"unknown --models {unknown}: choose from {sorted(models)}")
  dtypes = [d for d in args.dtypes.split(",") if d]
  steps = 2 if args.quick else args.steps
  workers = [0, 1] if args.quick else [int(w) for w in args.workers.split(",")]
  start = time.perf_counter()
  step_rows = measure_steps(names, dtypes, steps, args.torch == "auto", models, report)
  host_rows = measure_host(workers, steps=4 if args.quick else 20, rounds=2 if args.quick else 3,
                           window=2 if args.quick else 3, quick=args.quick, report=report)
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} host "
        f"cores; MFU against {step_rows[0]['peak_source']}; {time.perf_counter() - start:.0f} s in all")
  print(format_tables(step_rows, host_rows))
  sys.stdout.flush()
  return step_rows, host_rows


if __name__ == "__main__":
  process.request_deterministic_gpu_ops()  # As sslx-train does, before any computation.
  main()
