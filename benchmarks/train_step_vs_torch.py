"""The rotation train step in sslx (JAX/Flax) against a hand-written PyTorch twin, side by side.

    pip install torch==2.13.0        # benchmark-only dependency (CPU build from the local index)
    python benchmarks/train_step_vs_torch.py [--models convnet,resnet18] [--batch_size 256] [--steps 5]

Both sides run the same step on the same machine and threads: a uint8 batch of real images from
the embedded sample, scaled to [0, 1] and standardised on the device, all 4 rotations of every
image (RotNet), the same backbone (sslx's NIN-style ConvNet of rotation_convnet_sample.py, or
ResNet-18 with the CIFAR stem of rotation_resnet18_cifar10.py) and linear head, softmax
cross-entropy, SGD with Nesterov momentum 0.9 and weight decay 5e-4 on kernels only, a constant
learning rate. sslx runs with each of its convolution kernel choices (model.conv_kernels: auto,
i.e. oneDNN where it builds, at start-up as in sslx-train; taps, xla; sslx/models/conv.py),
PyTorch in NCHW and in channels-last. Steps are alternated (sslx, sslx taps, sslx xla, torch, torch channels-last,
sslx, ...) after one warm-up step each, so machine noise hits all alike;
medians are reported as source images per second (a step sees 4x as many inputs).
The ratio is also taken per round (the faster PyTorch layout's time over sslx's in that round),
median and range: a slow spell of this shared machine moves both sides of a round alike.

Model FLOP utilisation (MFU): the step's FLOPs from XLA's cost analysis of the compiled step with
conv_kernels=xla (the same arithmetic; the analysis cannot see into oneDNN's custom calls), over
the default (auto) step's median time, over this machine's fp32 matmul rate (2048 x 2048 jnp.dot,
measured in the same run).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # For common.py.
import common  # noqa: E402
from sslx import configs
from sslx.data import pipeline
from sslx.models import conv

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {"convnet": "rotation_convnet_sample.py", "resnet18": "rotation_resnet18_cifar10.py"}
LEARNING_RATE = 0.1


def sslx_config(model: str, batch_size: int, conv_kernels: str):
  config = configs.load(REPO / "experiments" / CONFIGS[model])
  config.batch_size = batch_size
  config.model.conv_kernels = conv_kernels
  config.optimizer.update(name="sgd", learning_rate=LEARNING_RATE, schedule="constant", warmup_steps=0,
                          momentum=0.9, nesterov=True, weight_decay=5e-4)
  return config


def sslx_step(config, images: np.ndarray):
  """The trainer's own jitted step, state and global batch; returns (run_one_step, flops)."""
  step, state, _, mesh = common.train_step(config)
  batch = pipeline.to_global({"image": images, "index": np.arange(len(images), dtype=np.int32)}, mesh)
  compiled = step.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  holder = {"state": state}

  def run():
    holder["state"], metrics = compiled(holder["state"], batch)
    return float(metrics["loss"])  # Waits for the step.

  return run, float(cost.get("flops", float("nan")))


def torch_model(model_name: str, config):
  """sslx's backbone and rotation head, written again in PyTorch (same layers and shapes)."""
  import torch
  from torch import nn

  def conv_bn(cin, cout, kernel, stride=1, relu=True):
    layers = [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
              nn.BatchNorm2d(cout, momentum=0.1, eps=1e-5)]  # Flax momentum 0.9 = torch 0.1.
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)

  class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = nn.Sequential(conv_bn(cin, cout, 3, stride), conv_bn(cout, cout, 3, relu=False))
      self.shortcut = conv_bn(cin, cout, 1, stride, relu=False) if (cin, stride) != (cout, 1) else nn.Identity()

    def forward(self, x):
      return torch.relu(self.body(x) + self.shortcut(x))

  if model_name == "convnet":
    layers, cin = [], 3
    for i, (width, kernel) in enumerate(zip(config.model.widths, config.model.kernel_sizes)):
      if i == 1:
        layers.append(nn.MaxPool2d(3, 2, padding=1))
      elif i > 1:
        layers.append(nn.AvgPool2d(3, 2, padding=1))
      for k in (kernel, 1, 1):
        layers.append(conv_bn(cin, width, k))
        cin = width
  else:
    base = int(round(64 * config.model.width))
    layers, cin = [conv_bn(3, base, 3)], base
    for stage in range(4):
      for b in range(2):
        cout, stride = base * 2**stage, (2 if stage > 0 and b == 0 else 1)
        layers.append(BasicBlock(cin, cout, stride))
        cin = cout
  return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 4))


def torch_step(model_name: str, config, images: np.ndarray, *, channels_last: bool):
  """The same step, hand-written in PyTorch; returns run_one_step."""
  import torch
  from torch import nn

  model = torch_model(model_name, config)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format).train()
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=LEARNING_RATE, momentum=0.9, nesterov=True)
  mean = torch.tensor(config.normalize.mean).view(1, 3, 1, 1)
  std = torch.tensor(config.normalize.std).view(1, 3, 1, 1)
  batch = torch.from_numpy(images)  # uint8 NHWC, as sslx's host sends it.
  labels = torch.arange(4).repeat_interleave(len(images))

  def run():
    x = batch.permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std)
    x = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    x = x.contiguous(memory_format=memory_format)
    loss = nn.functional.cross_entropy(model(x), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()

  return run


def matmul_flops_per_second(size: int = 2048, repeats: int = 5) -> float:
  import jax.numpy as jnp
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
  dot = jax.jit(lambda x: x @ x)
  dot(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


def measure(model_name: str, batch_size: int, steps: int) -> dict:
  import torch
  torch.set_num_threads(os.cpu_count())
  config = sslx_config(model_name, batch_size, "auto")
  images = common.real_batch(batch_size)["image"]
  runners = {}
  runners["sslx"], _ = sslx_step(config, images)
  # The other kernel choices: per-tap weight-gradient matmuls, and XLA's own convolutions
  # (the reference, what GPUs and TPUs use). The FLOPs are counted on the latter: XLA's cost
  # analysis does not see inside oneDNN's custom calls.
  runners["sslx_taps"], _ = sslx_step(sslx_config(model_name, batch_size, "taps"), images)
  runners["sslx_xla"], flops = sslx_step(sslx_config(model_name, batch_size, "xla"), images)
  runners["torch"] = torch_step(model_name, config, images, channels_last=False)
  runners["torch_channels_last"] = torch_step(model_name, config, images, channels_last=True)
  times: dict[str, list[float]] = {name: [] for name in runners}
  losses: dict[str, list[float]] = {name: [] for name in runners}
  for i in range(steps + 1):  # Round 0 warms up (first calls, allocator, caches).
    for name, run in runners.items():
      start = time.perf_counter()
      loss = run()
      if i:
        times[name].append(time.perf_counter() - start)
        losses[name].append(loss)
  result = {"model": model_name, "batch_size": batch_size, "flops": flops,
            "kernels": conv.resolve_kernels("auto"),
            "losses": {name: values[-1] for name, values in losses.items()}}
  for name, values in times.items():
    result[f"{name}_s"] = statistics.median(values)
    result[f"{name}_images_per_s"] = batch_size / statistics.median(values)
  # Paired per round (the steps of one round ran back to back): robust to the machine's drift.
  result["round_ratios"] = [min(t, tc) / s for s, t, tc in
                            zip(times["sslx"], times["torch"], times["torch_channels_last"])]
  return result


def format_table(rows: list[dict], matmul: float) -> str:
  lines = ["| model | batch (x4 rotations) | sslx img/s (conv_kernels=auto) | sslx img/s (=taps) "
           "| sslx img/s (=xla) | torch img/s | torch channels-last img/s | sslx / best torch "
           "| per round: median [min, max] | sslx auto / xla | sslx GFLOP/s | MFU |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    best = max(r["torch_images_per_s"], r["torch_channels_last_images_per_s"])
    achieved = r["flops"] / r["sslx_s"]
    lines.append(f"| {r['model']} | {r['batch_size']} | {r['sslx_images_per_s']:.1f} ({r['kernels']}) "
                 f"| {r['sslx_taps_images_per_s']:.1f} "
                 f"| {r['sslx_xla_images_per_s']:.1f} | {r['torch_images_per_s']:.1f} "
                 f"| {r['torch_channels_last_images_per_s']:.1f} | {r['sslx_images_per_s'] / best:.2f} "
                 f"| {statistics.median(r['round_ratios']):.2f} [{min(r['round_ratios']):.2f}, "
                 f"{max(r['round_ratios']):.2f}] "
                 f"| {r['sslx_images_per_s'] / r['sslx_xla_images_per_s']:.2f} "
                 f"| {achieved / 1e9:.1f} | {achieved / matmul:.1%} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="convnet,resnet18", help=f"Comma-separated, of {sorted(CONFIGS)}.")
  parser.add_argument("--batch_size", type=int, default=256, help="Source images per step.")
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per implementation (medians).")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  try:
    import torch
  except ImportError:
    raise SystemExit("this benchmark needs PyTorch: pip install torch==2.13.0") from None
  models = [m for m in args.models.split(",") if m]
  unknown = sorted(set(models) - set(CONFIGS))
  if unknown:
    raise SystemExit(f"unknown --models {unknown}: use {sorted(CONFIGS)}")
  matmul = matmul_flops_per_second()
  rows = []
  for model_name in models:
    print(f"measuring {model_name} at batch {args.batch_size}...", file=sys.stderr, flush=True)
    rows.append(measure(model_name, args.batch_size, args.steps))
  print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__}, "
        f"{os.cpu_count()} CPU threads each; fp32 matmul 2048^2: {matmul / 1e9:.0f} GFLOP/s; "
        f"medians of {args.steps} alternated steps after 1 warm-up")
  print(format_table(rows, matmul), flush=True)
  return rows


if __name__ == "__main__":
  main()
