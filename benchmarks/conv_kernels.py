"""Each convolution pass of ResNet-18's 3x3 layers, per kernel choice, side by side with PyTorch.

    python benchmarks/conv_kernels.py [--batch_size 256] [--repeats 3] [--layers all]
    python benchmarks/conv_kernels.py --r3d [--batch_size 2]   # R3D-18's 3D layers, 16 x 112 x 112 clips.

For every layer shape (CIFAR ResNet-18 at 32 x 32: the stem, then 64 -> 512 channels; with
``--r3d`` R3D-18's on a 16 x 112 x 112 clip: the 3 x 7 x 7 stem, then 3 x 3 x 3 layers) it times the
forward convolution, the input gradient and the weight gradient of sslx's convolution kernel
choices (model.conv_kernels, sslx/models/conv.py): "xla" (XLA's own convolutions), "taps" (XLA's
forward and input gradient, the weight gradient as per-tap matmuls) and "onednn" (all three
through oneDNN's custom call), and PyTorch's channels-last `conv2d` (`conv3d`, channels-last-3d)
and its two gradients where
PyTorch is installed (pip install torch==2.13.0). Each pass of each kernel is jitted alone,
warmed up, then timed round-robin (every kernel once per round) so that the machine's drift hits
all alike; medians, as GFLOP/s, each layer's row printed as soon as it is measured. The last columns are each sslx kernel's largest error against
XLA's result relative to that result's largest magnitude (fp32 rounding is ~1e-6).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from sslx.models import conv, onednn

# (name, input spatial size, input channels, output channels, strides, kernel size), SAME padding.
LAYERS = [("stem", (32, 32), 3, 64, (1, 1), (3, 3)), ("block1", (32, 32), 64, 64, (1, 1), (3, 3)),
          ("block2_down", (32, 32), 64, 128, (2, 2), (3, 3)), ("block2", (16, 16), 128, 128, (1, 1), (3, 3)),
          ("block3", (8, 8), 256, 256, (1, 1), (3, 3)), ("block4", (4, 4), 512, 512, (1, 1), (3, 3))]
# R3D-18 (sslx/models/r3d.py, width 1) on a 16 x 112 x 112 clip.
LAYERS_3D = [("stem", (16, 112, 112), 3, 64, (1, 2, 2), (3, 7, 7)),
             ("block1", (16, 56, 56), 64, 64, (1, 1, 1), (3, 3, 3)),
             ("block2_down", (16, 56, 56), 64, 128, (2, 2, 2), (3, 3, 3)),
             ("block2", (8, 28, 28), 128, 128, (1, 1, 1), (3, 3, 3)),
             ("block3", (4, 14, 14), 256, 256, (1, 1, 1), (3, 3, 3)),
             ("block4", (2, 7, 7), 512, 512, (1, 1, 1), (3, 3, 3))]
PASSES = ("forward", "input_grad", "weight_grad")


def sslx_passes(kernels: str, x, kernel, strides):
  """Jitted (forward, input gradient, weight gradient) of ``conv.Conv``'s path for ``kernels``."""
  padding = tuple(conv.same_padding(n, k, s) for n, k, s in zip(x.shape[1:-1], kernel.shape[:-2], strides))
  f = {"xla": lambda x_, k_: conv._conv(x_, k_, strides, padding),
       "taps": lambda x_, k_: conv.tap_conv(x_, k_, strides, padding),
       "onednn": lambda x_, k_: onednn.conv(x_, k_, strides, padding)}[kernels]
  y = jax.eval_shape(f, x, kernel)
  g = jax.random.normal(jax.random.PRNGKey(1), y.shape, y.dtype)
  forward = jax.jit(f)
  input_grad = jax.jit(lambda x_, k_, g_: jax.vjp(lambda a: f(a, k_), x_)[1](g_)[0])
  weight_grad = jax.jit(lambda x_, k_, g_: jax.vjp(lambda b: f(x_, b), k_)[1](g_)[0])
  return {"forward": lambda: forward(x, kernel), "input_grad": lambda: input_grad(x, kernel, g),
          "weight_grad": lambda: weight_grad(x, kernel, g)}, g


def torch_passes(x, kernel, g, strides):
  import torch
  three_d = x.ndim == 5
  layout = torch.channels_last_3d if three_d else torch.channels_last
  to_torch = lambda a, order: torch.from_numpy(np.array(a)).permute(*order).contiguous(memory_format=layout)  # noqa: E731
  activations = (0, 4, 1, 2, 3) if three_d else (0, 3, 1, 2)
  xt, gt = to_torch(x, activations), to_torch(g, activations)
  wt = to_torch(kernel, (4, 3, 0, 1, 2) if three_d else (3, 2, 0, 1))
  # PyTorch pads symmetrically: at stride 2 one row more than SAME, the same output size and FLOPs
  # (only timed, not compared).
  pad = tuple(k // 2 for k in kernel.shape[:-2])
  conv_fn = torch.nn.functional.conv3d if three_d else torch.nn.functional.conv2d
  grad = torch.nn.grad
  input_grad = grad.conv3d_input if three_d else grad.conv2d_input
  weight_grad = grad.conv3d_weight if three_d else grad.conv2d_weight
  with torch.no_grad():
    return {"forward": lambda: conv_fn(xt, wt, stride=strides, padding=pad),
            "input_grad": lambda: input_grad(xt.shape, wt, gt, stride=strides, padding=pad),
            "weight_grad": lambda: weight_grad(xt, wt.shape, gt, stride=strides, padding=pad)}


def block(result):
  return jax.block_until_ready(result) if isinstance(result, jax.Array) else result


def measure(layer, batch_size: int, repeats: int, kernels: list[str], use_torch: bool) -> dict:
  name, size, cin, cout, strides, kernel_size = layer
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((batch_size, *size, cin)), jnp.float32)
  taps = int(np.prod(kernel_size))
  kernel = jnp.asarray(rng.standard_normal((*kernel_size, cin, cout)) / np.sqrt(taps * cin), jnp.float32)
  runners, g = {}, None
  for k in kernels:
    runners[k], g = sslx_passes(k, x, kernel, strides)
  if use_torch:
    runners["torch"] = torch_passes(x, kernel, g, strides)
  outputs_per_example = int(np.prod([-(-n // s) for n, s in zip(size, strides)]))
  flops = 2 * batch_size * outputs_per_example * cin * cout * taps
  if max(strides) == 1:
    stride_note = ""
  elif len(set(strides)) == 1:
    stride_note = f" /{strides[0]}"
  else:
    stride_note = " /" + "x".join(map(str, strides))
  kernel_note = "" if kernel_size == (3,) * len(size) else f", {'x'.join(map(str, kernel_size))} kernel"
  row = {"layer": name, "shape": f"{'x'.join(map(str, size))}, {cin}->{cout}{stride_note}{kernel_note}"}
  outputs = {k: {p: np.asarray(block(run())) for p, run in runs.items()} for k, runs in runners.items()
             if k != "torch"}  # The first calls also warm up (compile, primitive creation).
  if use_torch:
    for run in runners["torch"].values():
      run()
  times = {(k, p): [] for k in runners for p in PASSES}
  for _ in range(repeats):
    for p in PASSES:
      for k, runs in runners.items():
        start = time.perf_counter()
        block(runs[p]())
        times[k, p].append(time.perf_counter() - start)
  for (k, p), values in times.items():
    row[f"{k}_{p}"] = flops / statistics.median(values) / 1e9
  if "xla" in outputs:
    for k in outputs:
      if k != "xla":
        row[f"{k}_error"] = max(float(np.max(np.abs(outputs[k][p] - outputs["xla"][p])) / np.max(np.abs(outputs["xla"][p])))
                                for p in PASSES)
  return row


def format_table(rows: list[dict], kernels: list[str], use_torch: bool) -> str:
  columns = kernels + (["torch"] if use_torch else [])
  errors = [k for k in kernels if k != "xla" and "xla" in kernels]
  header = ["layer", "shape"] + [f"{k} {p.replace('_', ' ')}" for k in columns for p in PASSES]
  header += [f"{k} max rel. error" for k in errors]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    cells = [r["layer"], r["shape"]] + [f"{r[f'{k}_{p}']:.0f}" for k in columns for p in PASSES]
    cells += [f"{r[f'{k}_error']:.1e}" for k in errors]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch_size", type=int, default=256)
  parser.add_argument("--repeats", type=int, default=3, help="Timed rounds (medians).")
  parser.add_argument("--layers", default="all", help=f"Comma-separated of {[l[0] for l in LAYERS]}, or all.")
  parser.add_argument("--kernels", default="xla,taps,onednn", help="sslx kernel choices to time.")
  parser.add_argument("--no_torch", action="store_true", help="Skip PyTorch even where installed.")
  parser.add_argument("--r3d", action="store_true", help="R3D-18's 3D layers on a 16 x 112 x 112 clip instead.")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  kernels = [k for k in args.kernels.split(",") if k]
  unknown = sorted(set(kernels) - (set(conv.KERNELS) - {"auto"}))
  if unknown:
    raise SystemExit(f"unknown --kernels {unknown}: use some of xla, taps, onednn")
  # Built (or loaded from its cache) before anything is traced, as sslx-train does.
  why = onednn.prepare() if "onednn" in kernels else None
  if why:
    raise SystemExit(f"--kernels onednn: {why}; or leave onednn out of --kernels")
  table = LAYERS_3D if args.r3d else LAYERS
  layers = table if args.layers == "all" else [l for l in table if l[0] in args.layers.split(",")]
  if not layers:
    raise SystemExit(f"no --layers matched: use some of {[l[0] for l in table]}")
  use_torch = False
  if not args.no_torch:
    try:
      import torch
      torch.set_num_threads(os.cpu_count())
      use_torch = True
    except ImportError:
      print("PyTorch not installed (pip install torch==2.13.0): its columns are left out")
  print(f"jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} CPU threads, batch {args.batch_size}, "
        f"medians of {args.repeats} rounds; GFLOP/s of each pass", flush=True)
  rows = []
  for i, layer in enumerate(layers):  # Each layer's row as soon as it is measured.
    rows.append(measure(layer, args.batch_size, args.repeats, kernels, use_torch))
    table = format_table(rows[-1:], kernels, use_torch).splitlines()
    print("\n".join(table if i == 0 else table[2:]), flush=True)
  return rows


if __name__ == "__main__":
  main()
