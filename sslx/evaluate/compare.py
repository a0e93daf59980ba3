"""One table and one plot of every evaluation of several runs.

    sslx-compare RUN [RUN ...] [--out DIR]

Reads each run's ``config.json`` (pretext, backbone, steps), its TensorBoard logs (training
time) and every ``eval/<name>.json`` an evaluation script wrote, and writes to DIR (default
``compare/``):

- ``compare.md``: the runs (pretext, backbone, steps, training time), then one row per
  evaluation, metric and block with each run's pretrained / random-init value;
- ``compare.csv``: the same in long form, one line per run, evaluation, metric and block;
- ``compare.png``: one panel per per-block metric (linear probe, kNN, each low-shot setting,
  retrieval top-k): the value per block, one solid line per run and its random init dashed in
  the same colour. This is what a reader looks at first.

Evaluations without blocks (synchronisation, correspondence, localisation, propagation,
segmentation, future prediction) enter the table and the CSV with their headline numbers.
"""

from __future__ import annotations

import csv
import json
import os
import sys

import numpy as np

from sslx.evaluate import common

BASELINE = "random_init"


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _scalars(prefix: str, pre: dict, base: dict | None):
  """(metric, pretrained, baseline) for the numbers of two parallel dicts (one level of nesting:
  ``video_to_audio: {1: ...}`` becomes ``video_to_audio@1``)."""
  for key, value in pre.items():
    other = (base or {}).get(key)
    if _is_number(value):
      yield f"{prefix}{key}", float(value), float(other) if _is_number(other) else None
    elif isinstance(value, dict):
      for sub, v in value.items():
        if _is_number(v):
          o = other.get(sub) if isinstance(other, dict) else None
          yield f"{prefix}{key}@{sub}", float(v), float(o) if _is_number(o) else None


def flatten(stem: str, results: dict) -> list[dict]:
  """Rows {evaluation, metric, block, pretrained, random_init} of one evaluation's JSON
  (``block`` is "" for an evaluation of the whole network)."""
  rows = []

  def per_block(metric_prefix, blocks):
    for block, r in blocks.items():
      pre, base = r.get("pretrained"), r.get(BASELINE)
      if _is_number(pre):
        rows.append(dict(evaluation=stem, metric=metric_prefix or "top-1", block=block, pretrained=float(pre),
                         random_init=float(base) if _is_number(base) else None))
      elif isinstance(pre, dict):  # Retrieval: {k: hit rate}.
        for k, v in pre.items():
          if _is_number(v):
            o = (base or {}).get(k)
            rows.append(dict(evaluation=stem, metric=f"{metric_prefix}top-{k}".strip(), block=block,
                             pretrained=float(v), random_init=float(o) if _is_number(o) else None))
      for k, by in r.get("by_k", {}).items():  # kNN's other k.
        if str(k) != str(results.get("k", [None])[0]):
          rows.append(dict(evaluation=stem, metric=f"k={k}", block=block, pretrained=float(by["pretrained"]),
                           random_init=float(by[BASELINE])))

  if isinstance(results.get("blocks"), dict):
    first_k = results.get("k", [None])[0] if stem.startswith("knn") else None
    per_block(f"k={first_k}" if first_k is not None else "", results["blocks"])
  elif isinstance(results.get("settings"), dict) and all(
      isinstance(s, dict) and "blocks" in s for s in results["settings"].values()):
    for name, setting in results["settings"].items():
      per_block(name, setting["blocks"])
  else:
    summary = results.get("mean") if isinstance(results.get("mean"), dict) else results
    if isinstance(summary.get("pretrained"), dict):
      for metric, pre, base in _scalars("", summary["pretrained"], summary.get(BASELINE)):
        rows.append(dict(evaluation=stem, metric=metric, block="", pretrained=pre, random_init=base))
    for i, step in enumerate(results.get("steps") or []):  # Future prediction: per horizon step.
      if isinstance(step, dict):
        for metric, value, _ in _scalars("", step, None):
          rows.append(dict(evaluation=stem, metric=f"{metric} (step {i + 1})", block="", pretrained=value,
                           random_init=None))
  return rows


def describe_run(workdir: str) -> dict:
  """{name, pretext, backbone, steps, training_minutes} of a training workdir."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing: is {workdir} a training workdir?")
  with open(path) as f:
    config = json.load(f)["config"]
  model = config.get("model", {})
  backbone = model.get("name", "?") + (f" x{model['width']}" if model.get("width") else "")
  try:
    scalars = common.read_scalars(workdir)
    logged = [int(v["step"][-1]) for k, v in scalars.items() if not k.startswith("_") and len(v["step"])]
    steps, minutes = (max(logged) if logged else None), scalars["_training_seconds"] / 60
  except FileNotFoundError:
    steps, minutes = None, None
  return {"name": os.path.basename(os.path.normpath(workdir)),
          "pretext": (config.get("pretext") or {}).get("name", "supervised"), "backbone": backbone,
          "steps": steps, "total_steps": config.get("total_steps"), "training_minutes": minutes}


def _cell(row) -> str:
  """"pretrained / random init": rates (both in [0, 1]) in %, other values (PSNR, frames) as they are."""
  if row is None:
    return ""
  values = [v for v in (row["pretrained"], row["random_init"]) if v is not None]
  rates = all(0.0 <= v <= 1.0 for v in values)
  return " / ".join(f"{100 * v:.1f}" if rates else f"{v:.4g}" for v in values)


def compare(workdirs, *, out_dir: str) -> dict:
  """Writes compare.md, compare.csv and compare.png to ``out_dir``; returns {"runs", "rows",
  "written": {kind: path}}."""
  if not workdirs:
    raise ValueError("sslx-compare needs at least one workdir: sslx-compare RUN [RUN ...]")
  runs, rows = [], []
  for workdir in workdirs:
    run_info = describe_run(workdir)
    names = [r["name"] for r in runs]
    if run_info["name"] in names:  # Two runs of one name in different folders.
      run_info["name"] = f"{run_info['name']} ({len(names)})"
    results = common.read_results(workdir)
    run_info["evaluations"] = sorted(results)
    runs.append(run_info)
    for stem, result in results.items():
      rows.extend(dict(r, run=run_info["name"]) for r in flatten(stem, result))
  if not rows:
    raise ValueError(f"none of {', '.join(workdirs)} has evaluation results (eval/*.json): run sslx-linear, "
                     f"sslx-knn, ... on them first")
  os.makedirs(out_dir, exist_ok=True)
  written = {"md": os.path.join(out_dir, "compare.md"), "csv": os.path.join(out_dir, "compare.csv")}
  with open(written["md"], "w") as f:
    f.write(markdown(runs, rows) + "\n")
  with open(written["csv"], "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["run", "pretext", "backbone", "steps", "training_minutes", "evaluation", "metric", "block",
                     "pretrained", "random_init"])
    info = {r["name"]: r for r in runs}
    for r in rows:
      i = info[r["run"]]
      writer.writerow([r["run"], i["pretext"], i["backbone"], i["steps"],
                       "" if i["training_minutes"] is None else f"{i['training_minutes']:.1f}", r["evaluation"],
                       r["metric"], r["block"], r["pretrained"], "" if r["random_init"] is None else r["random_init"]])
  picture = plot(runs, rows, os.path.join(out_dir, "compare.png"))
  if picture:
    written["png"] = picture
  return {"runs": runs, "rows": rows, "written": written}


def _series(rows):
  """{(evaluation, metric): {run: {block: row}}} of the per-block rows, in first-seen order."""
  out: dict = {}
  for r in rows:
    if r["block"]:
      out.setdefault((r["evaluation"], r["metric"]), {}).setdefault(r["run"], {})[r["block"]] = r
  return out


def markdown(runs, rows) -> str:
  lines = ["| run | pretext | backbone | steps | training time |", "|---|---|---|---|---|"]
  for r in runs:
    minutes = "" if r["training_minutes"] is None else f"{r['training_minutes']:.1f} min"
    lines.append(f"| {r['name']} | {r['pretext']} | {r['backbone']} | {r['steps'] or ''} | {minutes} |")
  names = [r["name"] for r in runs]
  lines += ["", "Cells: pretrained / random init; rates (accuracy, J, F) in %, other values (PSNR, SSIM, "
            "frames) as they are; one value where there is no random init.", "",
            "| evaluation | metric | block | " + " | ".join(names) + " |",
            "|---|---|---|" + "---|" * len(names)]
  table: dict = {}
  order = {"evaluation": {}, "metric": {}, "block": {}}  # First-seen order of each.
  for r in rows:
    table.setdefault((r["evaluation"], r["metric"], r["block"]), {})[r["run"]] = r
    for field in order:
      order[field].setdefault((r["evaluation"], r[field]) if field == "metric" else r[field], len(order[field]))
  rank = lambda key: (order["evaluation"][key[0]], order["metric"][(key[0], key[1])], key[2])  # noqa: E731
  for (evaluation, metric, block), by_run in sorted(table.items(), key=lambda item: rank(item[0])):
    lines.append(f"| {evaluation} | {metric} | {block} | " + " | ".join(_cell(by_run.get(n)) for n in names) + " |")
  return "\n".join(lines)


def plot(runs, rows, path: str) -> str | None:
  """One panel per per-block metric: a solid line per run, its random init dashed; None when no
  evaluation has blocks."""
  series = _series(rows)
  if not series:
    return None
  import matplotlib
  matplotlib.use("Agg")  # Files only; no display needed.
  import matplotlib.pyplot as plt

  columns = min(3, len(series))
  panels = -(-len(series) // columns)
  fig, axes = plt.subplots(panels, columns, figsize=(5.2 * columns, 3.8 * panels), squeeze=False)
  colours = plt.get_cmap("tab10")
  names = [r["name"] for r in runs]
  for ax, ((evaluation, metric), by_run) in zip(axes.flat, series.items()):
    # One x position per block name over all runs (a ResNet's block4 beside a ConvNet's three).
    every_block = sorted({b for by_block in by_run.values() for b in by_block})
    for run_name, by_block in by_run.items():
      colour = colours(names.index(run_name) % 10)
      blocks = [b for b in every_block if b in by_block]
      x = [every_block.index(b) for b in blocks]
      ax.plot(x, [100 * by_block[b]["pretrained"] for b in blocks], "-o", color=colour, label=run_name)
      base = [by_block[b]["random_init"] for b in blocks]
      if all(v is not None for v in base):
        ax.plot(x, [100 * v for v in base], "--", color=colour, alpha=0.7)
    ax.set_xticks(np.arange(len(every_block)), every_block)
    ax.set_title(f"{evaluation}: {metric}")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
  for ax in list(axes.flat)[len(series):]:
    ax.axis("off")
  handles, labels = axes.flat[0].get_legend_handles_labels()
  handles.append(matplotlib.lines.Line2D([], [], color="grey", linestyle="--"))
  labels.append("random init (dashed, same colour)")
  fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), frameon=False)
  fig.tight_layout(rect=(0, 0.1 if panels == 1 else 0.05, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


USAGE = """Usage: sslx-compare RUN [RUN ...] [--out DIR]

One table (compare.md, compare.csv) and one plot (compare.png) of every evaluation result in
the runs' eval/ folders, per block, pretrained against random init; written to DIR (default
compare/).
"""


def main(argv: list[str]) -> int:
  if not argv or argv[0] in ("-h", "--help", "-help", "--helpfull"):
    print(USAGE)
    return 0 if argv else 2
  out_dir, workdirs, i = "compare", [], 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--out" and i + 1 < len(argv):
      out_dir, i = argv[i + 1], i + 2
      continue
    if arg.startswith("--out="):
      out_dir = arg.split("=", 1)[1]
    elif arg.startswith("-"):
      print(f"sslx-compare: error: unknown flag {arg}: sslx-compare RUN [RUN ...] [--out DIR]", file=sys.stderr)
      return 2
    else:
      workdirs.append(arg)
    i += 1
  try:
    result = compare(workdirs, out_dir=out_dir)
  except (ValueError, FileNotFoundError) as e:
    print(f"sslx-compare: error: {e}", file=sys.stderr)
    return 1
  print(markdown(result["runs"], result["rows"]))
  print("\nWritten: " + ", ".join(result["written"].values()))
  return 0


def cli_main():
  sys.exit(main(sys.argv[1:]))


if __name__ == "__main__":
  cli_main()
