"""The package's layers run one way: data, models, losses, augment, montage at the bottom;
pretexts above them; the run layer (run, checkpoints, process) above those; the trainer,
fine-tuning, the command-line helpers and the evaluation scripts on top."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sslx"

LAYERS = {  # Module (or package) -> layer; a module imports only from its own layer or below.
    "sslx.data": 0, "sslx.models": 0, "sslx.losses": 0, "sslx.augment": 0, "sslx.audio": 0, "sslx.montage": 0,
    "sslx.configs": 0, "sslx": 0,
    "sslx.pretexts": 1,
    "sslx.process": 2, "sslx.run": 2, "sslx.checkpoints": 2,
    "sslx.train": 3, "sslx.finetune": 3, "sslx.cli": 3, "sslx.evaluate": 3,
}


# ``sslx.load_backbone`` is the package's one-call front door: imported on call, it reaches the
# run layer from the package root, which every layer imports for ``__version__``.
FACADE = ("sslx",)


def _module_name(path: Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name: str) -> int:
  best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len)
  return LAYERS[best]


def _imports(path: Path) -> set[str]:
  """Every sslx module a file imports, at the top or inside a function."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out |= {a.name for a in node.names if a.name.startswith("sslx")}
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sslx"):
      for alias in node.names:
        full = f"{node.module}.{alias.name}"
        out.add(full if (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").exists()
                or (PACKAGE.parent / full.replace(".", "/")).is_dir() else node.module)
  return out


def _graph() -> dict[str, set[str]]:
  return {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_no_import_runs_up_the_layers():
  upward = [(module, imported) for module, imports in _graph().items() for imported in imports
            if _layer(imported) > _layer(module) and module not in FACADE]
  assert not upward, upward


def test_evaluation_never_imports_the_trainer():
  for module, imports in _graph().items():
    if module.startswith("sslx.evaluate"):
      assert not any(i == "sslx.train" or i.startswith("sslx.train.") for i in imports), module


def test_no_import_loop():
  graph = _graph()
  modules = set(graph)

  def visit(node, stack):
    for nxt in graph.get(node, ()):
      nxt = nxt if nxt in modules else next((m for m in modules if nxt.startswith(m + ".")), nxt)
      if nxt == node or nxt not in modules or nxt in ("sslx",):
        continue
      assert nxt not in stack, " -> ".join(stack + [nxt])
      visit(nxt, stack + [nxt])

  for module in sorted(modules):
    visit(module, [module])
