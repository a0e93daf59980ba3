"""Page faults, system time and speed of the CPU train step under each memory allocator, sslx
beside PyTorch.

    apt-get install libjemalloc2 libtcmalloc-minimal4   # Debian's packages; glibc needs nothing
    python benchmarks/allocator.py [--models convnet] [--batch_size 64] [--steps 10] [--rounds 2]
        [--allocators glibc,jemalloc,jemalloc_keep,tcmalloc] [--sides sslx,torch]

Why: XLA:CPU allocates each step's temporary buffers afresh and frees them at its end. glibc
serves large blocks with mmap and returns them with munmap, so every step touches new pages and
the kernel zero-fills them (minor faults, system time). An allocator that keeps freed memory for
reuse (jemalloc, tcmalloc, preloaded with LD_PRELOAD) should remove most of that.

How: every (round, allocator, side) is one fresh worker process (this file with --worker) under
``LD_PRELOAD`` of that allocator (none for glibc): it builds the step (the rotation step of
benchmarks/train_step_vs_torch.py: sslx's own trainer step, or its hand-written PyTorch twin in
channels-last), runs one warm-up step, then times ``--steps`` steps, reading ``getrusage`` around
each for minor faults and user/system CPU time, and reports the medians and its peak resident
memory. Rounds alternate the allocators and sides so that the machine's drift hits all alike;
each worker's line is printed when it ends, the table when all are done. The ratios are each
setting's images/s over glibc's for the same side, per round, then the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

from sslx import process

HERE = pathlib.Path(__file__).resolve().parent
LIBRARY_DIRS = process.LIBRARY_DIRS
# name: (library to preload, extra environment). jemalloc's default returns freed pages to the
# kernel after 10 s of decay; "jemalloc_keep" never does, as tcmalloc's default behaves here.
ALLOCATORS = {"glibc": (None, {}), "jemalloc": ("libjemalloc.so.2", {}),
              "jemalloc_keep": ("libjemalloc.so.2", {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}),
              "tcmalloc": ("libtcmalloc_minimal.so.4", {})}
PACKAGES = {"libjemalloc.so.2": "libjemalloc2", "libtcmalloc_minimal.so.4": "libtcmalloc-minimal4"}
SIDES = ("sslx", "torch")


def find_library(allocator: str) -> str | None:
  """The shared library to preload for ``allocator`` (None for glibc's own malloc); a one-line
  error naming the Debian package when it is missing."""
  name = ALLOCATORS[allocator][0]
  if name is None:
    return None
  for folder in LIBRARY_DIRS:
    path = os.path.join(folder, name)
    if os.path.exists(path):
      return path
  raise SystemExit(f"{allocator}: {name} not found in {LIBRARY_DIRS}; install it with "
                   f"apt-get install {PACKAGES[name]}, or leave {allocator} out of --allocators")


def _usage():
  u = resource.getrusage(resource.RUSAGE_SELF)
  return time.perf_counter(), u.ru_minflt, u.ru_utime, u.ru_stime


def worker(side: str, model: str, batch_size: int, steps: int) -> dict:
  """Builds one side's step in this process, times ``steps`` steps after one warm-up."""
  sys.path.insert(0, str(HERE))
  import train_step_vs_torch as bench
  images = bench.common.real_batch(batch_size)["image"]
  if side == "sslx":
    run, _ = bench.sslx_step(bench.sslx_config(model, batch_size, "auto"), images)
  else:
    import torch
    torch.set_num_threads(os.cpu_count())
    run = bench.torch_step(model, bench.sslx_config(model, batch_size, "auto"), images, channels_last=True)
  loss = run()  # Warm-up: compiles, and the first step's allocations.
  per_step = []
  for _ in range(steps):
    before = _usage()
    loss = run()
    after = _usage()
    per_step.append([a - b for a, b in zip(after, before)])
  seconds, faults, user, system = (statistics.median(column) for column in zip(*per_step))
  return {"side": side, "model": model, "batch_size": batch_size, "images_per_s": batch_size / seconds,
          "step_s": seconds, "minor_faults_per_step": faults, "user_s_per_step": user,
          "system_s_per_step": system, "system_share": system / max(user + system, 1e-9),
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "final_loss": float(loss)}


def run_worker(allocator: str, side: str, model: str, batch_size: int, steps: int) -> dict:
  env = dict(os.environ)
  library = find_library(allocator)
  if library:
    env["LD_PRELOAD"] = ":".join(p for p in (library, env.get("LD_PRELOAD")) if p)
  env.update(ALLOCATORS[allocator][1])
  command = [sys.executable, __file__, "--worker", "--sides", side, "--models", model,
             "--batch_size", str(batch_size), "--steps", str(steps)]
  done = subprocess.run(command, env=env, capture_output=True, text=True)
  if done.returncode:
    # A setting that kills the step (out of memory, say) is a result, not a crash of the benchmark.
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {"allocator": allocator, "side": side, "model": model, "failed": f"exit {done.returncode}: {tail}"}
  result = json.loads(done.stdout.strip().splitlines()[-1])
  result["allocator"] = allocator
  return result


def summarise(results: list[dict], allocators: list[str]) -> list[dict]:
  """One row per (model, side, allocator): medians over rounds, and the per-round ratio of
  images/s against glibc's worker of the same round."""
  rows = []
  keys = sorted({(r["model"], r["side"]) for r in results}, key=lambda k: (k[0], SIDES.index(k[1])))
  for model, side in keys:
    for allocator in allocators:
      mine = [r for r in results if (r["model"], r["side"], r["allocator"]) == (model, side, allocator)]
      ok = [r for r in mine if "failed" not in r]
      row = {"model": model, "side": side, "allocator": allocator, "runs": len(mine), "failed": len(mine) - len(ok)}
      if ok:
        for key in ("images_per_s", "minor_faults_per_step", "system_s_per_step", "user_s_per_step",
                    "system_share", "peak_rss_mb"):
          row[key] = statistics.median(r[key] for r in ok)
        base = [r for r in results if (r["model"], r["side"], r["allocator"]) == (model, side, "glibc")
                and "failed" not in r]
        ratios = [r["images_per_s"] / b["images_per_s"] for r, b in zip(
            sorted(ok, key=lambda r: r["round"]), sorted(base, key=lambda r: r["round"])) if r["round"] == b["round"]]
        row["vs_glibc"] = statistics.median(ratios) if ratios else None
      rows.append(row)
  return rows


def format_table(rows: list[dict]) -> str:
  lines = ["| model | side | allocator | img/s | vs glibc (median of rounds) | minor faults / step "
           "| system s / step | user s / step | system share | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "images_per_s" not in r:
      lines.append(f"| {r['model']} | {r['side']} | {r['allocator']} | failed ({r['failed']} of {r['runs']}) "
                   "| | | | | | |")
      continue
    failed = f" ({r['failed']} of {r['runs']} failed)" if r["failed"] else ""
    vs = f"{r['vs_glibc']:.2f}" if r.get("vs_glibc") is not None else "-"
    lines.append(f"| {r['model']} | {r['side']} | {r['allocator']}{failed} | {r['images_per_s']:.1f} | {vs} "
                 f"| {r['minor_faults_per_step']:,.0f} | {r['system_s_per_step']:.3f} | {r['user_s_per_step']:.3f} "
                 f"| {r['system_share']:.2f} | {r['peak_rss_mb']:,.0f} |")
  return "\n".join(lines)


def _choices(arg: str, allowed, flag: str) -> list[str]:
  chosen = [c for c in arg.split(",") if c]
  unknown = sorted(set(chosen) - set(allowed))
  if unknown or not chosen:
    raise SystemExit(f"bad {flag} {arg!r}: use some of {list(allowed)} (comma-separated)")
  return chosen


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="convnet", help="Comma-separated, of convnet, resnet18.")
  parser.add_argument("--batch_size", type=int, default=64, help="Source images per step (x4 rotations).")
  parser.add_argument("--steps", type=int, default=10, help="Timed steps per worker (medians).")
  parser.add_argument("--rounds", type=int, default=2, help="Workers per setting, alternated.")
  parser.add_argument("--allocators", default=",".join(ALLOCATORS), help=f"Of {list(ALLOCATORS)}.")
  parser.add_argument("--sides", default="sslx,torch", help="sslx, torch (channels-last), or both.")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  models = _choices(args.models, ("convnet", "resnet18"), "--models")
  sides = _choices(args.sides, SIDES, "--sides")
  if args.worker:
    print(json.dumps(worker(sides[0], models[0], args.batch_size, args.steps)))
    return []
  allocators = _choices(args.allocators, ALLOCATORS, "--allocators")
  if "glibc" not in allocators:
    allocators.insert(0, "glibc")  # The reference of every ratio.
  for allocator in allocators:
    find_library(allocator)  # Every missing library named before anything runs.
  if "torch" in sides:
    try:
      import torch  # noqa: F401
    except ImportError:
      raise SystemExit("the PyTorch side needs PyTorch: pip install torch==2.13.0, or --sides sslx") from None
  print(f"{os.cpu_count()} CPU threads; batch {args.batch_size} (x4 rotations); medians of {args.steps} steps "
        f"per worker after 1 warm-up; {args.rounds} rounds", flush=True)
  results = []
  for round_index in range(args.rounds):
    for model in models:
      for allocator in allocators:
        for side in sides:
          result = run_worker(allocator, side, model, args.batch_size, args.steps)
          result["round"] = round_index
          results.append(result)
          if "failed" in result:
            print(f"round {round_index + 1} {model} {side} {allocator}: FAILED {result['failed']}", flush=True)
          else:
            print(f"round {round_index + 1} {model} {side} {allocator}: {result['images_per_s']:.1f} img/s, "
                  f"{result['minor_faults_per_step']:,.0f} faults/step, system {result['system_s_per_step']:.3f} s "
                  f"of {result['system_s_per_step'] + result['user_s_per_step']:.3f} s CPU/step, "
                  f"peak RSS {result['peak_rss_mb']:,.0f} MB", flush=True)
  rows = summarise(results, allocators)
  print(format_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
