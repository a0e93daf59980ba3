"""The rotation (2D) and arrow-of-time (3D) train steps in sslx (JAX/Flax) against hand-written
PyTorch twins, side by side.

    pip install torch==2.13.0        # benchmark-only dependency (CPU build from the local index)
    python benchmarks/train_step_vs_torch.py [--models convnet,resnet18] [--batch_size 256] [--steps 5]
        [--kernels auto,taps,xla] [--torch nchw,channels_last|none]
    python benchmarks/train_step_vs_torch.py --models r3d18_w0.25,r3d18,r2plus1d18 --clip 8x64x64 --batch_size 8

Both sides run the same step on the same machine and threads: a uint8 batch of real images from
the embedded sample, scaled to [0, 1] and standardised on the device, all 4 rotations of every
image (RotNet), the same backbone (sslx's NIN-style ConvNet of rotation_convnet_sample.py, or
ResNet-18 with the CIFAR stem of rotation_resnet18_cifar10.py) and linear head, softmax
cross-entropy, SGD with Nesterov momentum 0.9 and weight decay 5e-4 on kernels only, a constant
learning rate. Video models (R3D-18 at width 0.25 or 1.0, R(2+1)D-18; sslx/models/r3d.py) run
the arrow-of-time step of arrow_of_time_r3d_egogestar.py instead: clips of ``--clip`` frames of
real images, half of them reversed in time, pooled features -> 2 classes; PyTorch's channels-last
layout is channels_last_3d there. sslx runs with each of its convolution kernel choices (model.conv_kernels: auto,
i.e. oneDNN where it builds, at start-up as in sslx-train; taps, xla; sslx/models/conv.py),
PyTorch in NCHW and in channels-last. Steps are alternated (sslx, sslx taps, sslx xla, torch, torch channels-last,
sslx, ...) after one warm-up step each, so machine noise hits all alike;
medians are reported as source images per second (a step sees 4x as many inputs). Each round's
figures are printed as it completes, and each model's table row when its rounds are done, so a
slow machine still yields a figure; ``--kernels auto --torch channels_last`` times only the default
against PyTorch's faster layout (the xla variant is the slowest by far on CPU).
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
# Video: the arrow-of-time step (a clip, reversed for half the batch, pooled features -> 2 classes)
# of arrow_of_time_r3d_egogestar.py with these backbones.
VIDEO_CONFIG = "arrow_of_time_r3d_egogestar.py"
VIDEO_MODELS = {"r3d18_w0.25": {"conv": "3d", "width": 0.25}, "r3d18": {"conv": "3d", "width": 1.0},
                "r2plus1d18": {"conv": "2plus1d", "width": 1.0}}
MODELS = (*CONFIGS, *VIDEO_MODELS)
LEARNING_RATE = 0.1


def sslx_config(model: str, batch_size: int, conv_kernels: str, clip=(8, 64, 64)):
  """The step's config: the image model's rotation config, or for a video model the arrow-of-time
  config with that backbone on ``clip`` = (frames, height, width)."""
  config = configs.load(REPO / "experiments" / (VIDEO_CONFIG if model in VIDEO_MODELS else CONFIGS[model]))
  if model in VIDEO_MODELS:
    config.model.update(VIDEO_MODELS[model])
    config.pretext.clip_frames = config.video.num_frames = clip[0]
  config.batch_size = batch_size
  config.model.conv_kernels = conv_kernels
  config.optimizer.update(name="sgd", learning_rate=LEARNING_RATE, schedule="constant", warmup_steps=0,
                          momentum=0.9, nesterov=True, weight_decay=5e-4)
  return config


def real_clips(batch_size: int, clip=(8, 64, 64)) -> np.ndarray:
  """uint8 clips (B, T, H, W, 3) of real images: each a sample image resized to H x W, panning one
  pixel per frame (the step's speed does not depend on the content; its pixels are still real)."""
  frames, height, width = clip
  images = common.real_batch(batch_size, max(height, width))["image"][:, :height, :width]
  return np.stack([np.roll(images, t, axis=2) for t in range(frames)], axis=1)


def real_inputs(model: str, batch_size: int, clip=(8, 64, 64)) -> np.ndarray:
  return real_clips(batch_size, clip) if model in VIDEO_MODELS else common.real_batch(batch_size)["image"]


def sslx_step(config, images: np.ndarray):
  """The trainer's own jitted step, state and global batch; returns (run_one_step, flops)."""
  step, state, _, mesh = common.train_step(config)
  media = "video" if images.ndim == 5 else "image"
  batch = pipeline.to_global({media: images, "index": np.arange(len(images), dtype=np.int32)}, mesh)
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

  if model_name in VIDEO_MODELS:
    return torch_video_model(model_name, config)
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


def torch_video_model(model_name: str, config):
  """sslx's R3D-18 / R(2+1)D-18 (sslx/models/r3d.py) and the arrow-of-time head, in PyTorch."""
  from torch import nn

  from sslx.models import r3d

  def conv_bn(cin, cout, kernel, stride, relu=True):
    padding = tuple(k // 2 for k in kernel)
    layers = [nn.Conv3d(cin, cout, kernel, stride, padding=padding, bias=False),
              nn.BatchNorm3d(cout, momentum=0.1, eps=1e-5)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)

  def factorised(cin, cout, t, d, strides, relu=True):
    st, ss = strides
    if config.model.conv == "3d":
      return conv_bn(cin, cout, (t, d, d), (st, ss, ss), relu)
    mid = r3d.mid_channels(cin, cout, t, d)
    return nn.Sequential(conv_bn(cin, mid, (1, d, d), (1, ss, ss)), conv_bn(mid, cout, (t, 1, 1), (st, 1, 1), relu))

  class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.body = nn.Sequential(factorised(cin, cout, 3, 3, (stride, stride)),
                                factorised(cout, cout, 3, 3, (1, 1), relu=False))
      self.shortcut = (conv_bn(cin, cout, (1, 1, 1), stride, relu=False) if (cin, stride) != (cout, 1)
                       else nn.Identity())

    def forward(self, x):
      return nn.functional.relu(self.body(x) + self.shortcut(x))

  channels = lambda c: max(1, int(round(c * config.model.width)))  # noqa: E731
  layers, cin = [factorised(3, channels(64), 3, 7, (1, 2))], channels(64)
  for stage in range(4):
    for b in range(2):
      cout, stride = channels(64 * 2**stage), (2 if stage > 0 and b == 0 else 1)
      layers.append(BasicBlock(cin, cout, stride))
      cin = cout
  return nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(cin, 2))


def torch_sgd(model):
  """sslx's optimizer in PyTorch: SGD, Nesterov momentum 0.9, weight decay 5e-4 on kernels only."""
  import torch
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  return torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                         lr=LEARNING_RATE, momentum=0.9, nesterov=True)


def torch_update(model, optimizer, x, labels, autocast=None) -> float:
  """One cross-entropy step (the forward pass under ``torch.autocast`` to that dtype when given);
  returns the loss (waits for the step)."""
  import contextlib

  import torch
  from torch import nn
  with torch.autocast(x.device.type, dtype=autocast) if autocast else contextlib.nullcontext():
    loss = nn.functional.cross_entropy(model(x), labels)
  optimizer.zero_grad(set_to_none=True)
  loss.backward()
  optimizer.step()
  return loss.item()


def torch_step(model_name: str, config, images: np.ndarray, *, channels_last: bool, device: str = "cpu",
               autocast=None):
  """The same step, hand-written in PyTorch, on ``device`` (the uint8 batch is sent there once);
  ``autocast``: a dtype for the forward pass (bfloat16 on a GPU). Returns run_one_step."""
  import torch

  if model_name in VIDEO_MODELS:
    return torch_video_step(model_name, config, images, channels_last=channels_last, device=device,
                            autocast=autocast)
  model = torch_model(model_name, config)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device, memory_format=memory_format).train()
  optimizer = torch_sgd(model)
  mean = torch.tensor(config.normalize.mean, device=device).view(1, 3, 1, 1)
  std = torch.tensor(config.normalize.std, device=device).view(1, 3, 1, 1)
  batch = torch.from_numpy(images).to(device)  # uint8 NHWC, as sslx's host sends it.
  labels = torch.arange(4, device=device).repeat_interleave(len(images))

  def run():
    x = batch.permute(0, 3, 1, 2).float().div_(255.0).sub_(mean).div_(std)
    x = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    x = x.contiguous(memory_format=memory_format)
    return torch_update(model, optimizer, x, labels, autocast)

  return run


def torch_video_step(model_name: str, config, clips: np.ndarray, *, channels_last: bool, device: str = "cpu",
                     autocast=None):
  """The arrow-of-time step in PyTorch: every other clip reversed in time, the twin backbone,
  cross-entropy on forward / backward, the same SGD; returns run_one_step."""
  import torch

  model = torch_video_model(model_name, config)
  memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
  model = model.to(device, memory_format=memory_format).train()
  optimizer = torch_sgd(model)
  mean = torch.tensor(config.normalize.mean, device=device).view(1, 3, 1, 1, 1)
  std = torch.tensor(config.normalize.std, device=device).view(1, 3, 1, 1, 1)
  batch = torch.from_numpy(clips).to(device)  # uint8 (B, T, H, W, 3), as sslx's host sends it.
  labels = torch.arange(len(clips), device=device) % 2  # sslx draws them; half reversed on average.

  def run():
    x = batch.permute(0, 4, 1, 2, 3).float().div_(255.0).sub_(mean).div_(std)
    x = torch.where(labels.view(-1, 1, 1, 1, 1) == 1, x.flip(2), x).contiguous(memory_format=memory_format)
    return torch_update(model, optimizer, x, labels, autocast)

  return run


def matmul_flops_per_second(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> float:
  """FLOP/s of a size x size matmul in ``dtype`` (median of ``repeats``), the MFU reference."""
  import jax.numpy as jnp
  a = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), dtype)
  dot = jax.jit(lambda x: x @ x)
  dot(a).block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    dot(a).block_until_ready()
    times.append(time.perf_counter() - start)
  return 2 * size**3 / statistics.median(times)


KERNEL_CHOICES = ("auto", "taps", "xla")
TORCH_LAYOUTS = ("nchw", "channels_last")


def xla_flops(model_name: str, batch_size: int, images: np.ndarray, clip=(8, 64, 64)) -> float:
  """The step's FLOPs from XLA's cost analysis of the conv_kernels=xla step (compiled, not run:
  that variant is the slowest on CPU, minutes per ResNet-18 step on a slow day)."""
  step, state, _, mesh = common.train_step(sslx_config(model_name, batch_size, "xla", clip))
  media = "video" if images.ndim == 5 else "image"
  batch = pipeline.to_global({media: images, "index": np.arange(len(images), dtype=np.int32)}, mesh)
  cost = step.lower(state, batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def measure(model_name: str, batch_size: int, steps: int, kernels=KERNEL_CHOICES, layouts=TORCH_LAYOUTS,
            report=None, clip=(8, 64, 64)) -> dict:
  """Times the selected variants, alternated round by round; ``report(line)`` gets each round's
  figures as soon as the round completes (a slow machine still yields a figure)."""
  if layouts:
    import torch
    torch.set_num_threads(os.cpu_count())
  images = real_inputs(model_name, batch_size, clip)
  runners, flops = {}, None
  # The kernel choices: oneDNN where it builds (auto), per-tap weight-gradient matmuls, and XLA's
  # own convolutions (the reference, what GPUs and TPUs use). FLOPs are counted on the latter:
  # XLA's cost analysis does not see inside oneDNN's custom calls.
  for kernels_choice in kernels:
    name = "sslx" if kernels_choice == "auto" else f"sslx_{kernels_choice}"
    runners[name], step_flops = sslx_step(sslx_config(model_name, batch_size, kernels_choice, clip), images)
    flops = step_flops if kernels_choice == "xla" else flops
  if flops is None:
    flops = xla_flops(model_name, batch_size, images, clip)
  config = sslx_config(model_name, batch_size, "auto", clip)
  for layout in layouts:
    runners["torch" if layout == "nchw" else "torch_channels_last"] = torch_step(
        model_name, config, images, channels_last=layout == "channels_last")
  times: dict[str, list[float]] = {name: [] for name in runners}
  losses: dict[str, list[float]] = {name: [] for name in runners}
  torch_names = [n for n in runners if n.startswith("torch")]
  round_ratios = []
  for i in range(steps + 1):  # Round 0 warms up (first calls, allocator, caches).
    for name, run in runners.items():
      start = time.perf_counter()
      loss = run()
      if i:
        times[name].append(time.perf_counter() - start)
        losses[name].append(loss)
    if not i:
      continue
    # Paired per round (the steps of one round ran back to back): robust to the machine's drift.
    ratio = (min(times[n][-1] for n in torch_names) / times["sslx"][-1]
             if torch_names and "sslx" in times else None)
    if ratio is not None:
      round_ratios.append(ratio)
    if report:
      cells = ", ".join(f"{n} {batch_size / times[n][-1]:.1f}" for n in runners)
      unit = "clips/s" if model_name in VIDEO_MODELS else "img/s"
      report(f"{model_name} round {i}/{steps} ({unit}): {cells}"
             + (f"; sslx / best torch {ratio:.2f}" if ratio is not None else ""))
  label = model_name if model_name not in VIDEO_MODELS else f"{model_name} {'x'.join(map(str, clip))}"
  result = {"model": label, "batch_size": batch_size, "flops": flops,
            "unit": "clips" if model_name in VIDEO_MODELS else "img",
            "kernels": conv.resolve_kernels("auto"), "round_ratios": round_ratios,
            "losses": {name: values[-1] for name, values in losses.items()}}
  for name, values in times.items():
    result[f"{name}_s"] = statistics.median(values)
    result[f"{name}_images_per_s"] = batch_size / statistics.median(values)
  return result


COLUMNS = [("sslx", "sslx {unit}/s (conv_kernels=auto)"), ("sslx_taps", "sslx {unit}/s (=taps)"),
           ("sslx_xla", "sslx {unit}/s (=xla)"), ("torch", "torch {unit}/s"),
           ("torch_channels_last", "torch channels-last {unit}/s")]


def table_header(rows_like: dict, unit: str | None = None) -> list[str]:
  unit = unit or rows_like.get("unit", "img")
  names = [label.format(unit=unit) for key, label in COLUMNS if f"{key}_s" in rows_like]
  names += ["sslx / best torch", "per round: median [min, max]", "sslx auto / xla", "sslx GFLOP/s", "MFU"]
  batch = "batch (clips)" if unit == "clips" else "batch (x4 rotations)" if unit == "img" else "batch"
  return [f"| model | {batch} | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]


def table_row(r: dict, matmul: float) -> str:
  cells = [r["model"], str(r["batch_size"])]
  for key, _ in COLUMNS:
    if f"{key}_s" in r:
      cells.append(f"{r[f'{key}_images_per_s']:.1f}" + (f" ({r['kernels']})" if key == "sslx" else ""))
  torch_rates = [r[f"{k}_images_per_s"] for k in ("torch", "torch_channels_last") if f"{k}_s" in r]
  has_sslx = "sslx_s" in r
  cells.append(f"{r['sslx_images_per_s'] / max(torch_rates):.2f}" if has_sslx and torch_rates else "-")
  ratios = r["round_ratios"]
  cells.append(f"{statistics.median(ratios):.2f} [{min(ratios):.2f}, {max(ratios):.2f}]" if ratios else "-")
  cells.append(f"{r['sslx_images_per_s'] / r['sslx_xla_images_per_s']:.2f}"
               if has_sslx and "sslx_xla_s" in r else "-")
  if has_sslx:
    achieved = r["flops"] / r["sslx_s"]
    cells += [f"{achieved / 1e9:.1f}", f"{achieved / matmul:.1%}"]
  else:
    cells += ["-", "-"]
  return "| " + " | ".join(cells) + " |"


def format_table(rows: list[dict], matmul: float) -> str:
  units = {r.get("unit", "img") for r in rows}
  return "\n".join(table_header(rows[0], units.pop() if len(units) == 1 else "examples")
                   + [table_row(r, matmul) for r in rows])


def _choices(arg: str, allowed, flag: str) -> list[str]:
  chosen = [c for c in arg.split(",") if c and c != "none"]
  unknown = sorted(set(chosen) - set(allowed))
  if unknown:
    raise SystemExit(f"unknown {flag} {unknown}: use some of {list(allowed)} (comma-separated)")
  return chosen


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="convnet,resnet18", help=f"Comma-separated, of {list(MODELS)}.")
  parser.add_argument("--batch_size", type=int, default=256, help="Source images (or clips) per step.")
  parser.add_argument("--clip", default="8x64x64", help="Video models' clips: FRAMESxHEIGHTxWIDTH.")
  parser.add_argument("--steps", type=int, default=5, help="Timed steps per implementation (medians).")
  parser.add_argument("--kernels", default=",".join(KERNEL_CHOICES),
                      help="sslx conv_kernels variants to time, comma-separated (e.g. auto: only the default).")
  parser.add_argument("--torch", default=",".join(TORCH_LAYOUTS),
                      help="PyTorch layouts to time, comma-separated, or none.")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  models = _choices(args.models, MODELS, "--models")
  try:
    clip = tuple(int(n) for n in args.clip.split("x"))
    assert len(clip) == 3 and min(clip) > 0
  except (ValueError, AssertionError):
    raise SystemExit(f"bad --clip {args.clip!r}: use FRAMESxHEIGHTxWIDTH, e.g. 8x64x64 or 16x112x112") from None
  kernels = _choices(args.kernels, KERNEL_CHOICES, "--kernels")
  layouts = _choices(args.torch, TORCH_LAYOUTS, "--torch")
  if not kernels and not layouts:
    raise SystemExit("nothing to time: give --kernels or --torch")
  torch_version = "not timed"
  if layouts:
    try:
      import torch
      torch_version = torch.__version__
    except ImportError:
      raise SystemExit("the PyTorch side needs PyTorch: pip install torch==2.13.0, or --torch none") from None
  matmul = matmul_flops_per_second()
  print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch_version}, "
        f"{os.cpu_count()} CPU threads each; fp32 matmul 2048^2: {matmul / 1e9:.0f} GFLOP/s; "
        f"medians of {args.steps} alternated steps after 1 warm-up", flush=True)
  rows = []
  for model_name in models:
    print(f"measuring {model_name} at batch {args.batch_size}...", flush=True)
    rows.append(measure(model_name, args.batch_size, args.steps, kernels, layouts,
                        report=lambda line: print(line, flush=True), clip=clip))
    print("\n".join(table_header(rows[-1]) + [table_row(rows[-1], matmul)]), flush=True)
  if len(rows) > 1:
    print("all models:\n" + format_table(rows, matmul), flush=True)
  return rows


if __name__ == "__main__":
  main()
