"""What every sslx command line shares: its own flags in ``--help``, a mistyped config key in
one line, and bad input ending the program in one line (no traceback, no teardown noise)."""

from __future__ import annotations

import ast
import difflib
import os
import sys

from absl import flags


def help_text(usage: str, names: tuple[str, ...]) -> str:
  """The usage and the program's own flags: absl's --help lists only the flags of the module
  run as __main__, which an installed console script is not, so it would list none."""
  lines = []
  for name in names:
    flag = flags.FLAGS[name]
    default = "" if flag.default is None else f" (default: {flag.default})"
    lines.append(f"  --{name}: {flag.help}{default}")
  return usage.rstrip() + "\n\nFlags:\n" + "\n".join(lines) + "\n\nabsl's own flags: --helpfull"


def _dotted_keys(tree: dict, prefix: str = ""):
  for name, value in tree.items():
    yield prefix + name
    if isinstance(value, dict):
      yield from _dotted_keys(value, prefix + name + ".")


def config_key_error(program: str, argv: list[str], config) -> str | None:
  """One line for the first ``--config.KEY=...`` in ``argv`` whose KEY ``config`` (a ConfigDict
  or plain dict) lacks, naming the closest valid key; None when all exist."""
  tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  valid = list(_dotted_keys(tree))
  for item in argv:
    if not item.startswith("--config."):
      continue
    key = item[len("--config."):].split("=", 1)[0]
    if key not in valid:
      close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
      hint = f"did you mean --config.{close[0]}?" if close else "--print_config lists the fields"
      return f"{program}: error: the config has no field {key!r}: {hint}"
  return None


def config_path_arg(argv: list[str]) -> str | None:
  """The value of ``--config`` in ``argv`` (``--config=P`` or ``--config P``)."""
  for i, item in enumerate(argv):
    if item.startswith("--config="):
      return item[len("--config="):]
    if item == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def wants_help(argv: list[str]) -> bool:
  return any(a in ("--help", "-h", "--helpshort", "-?") for a in argv)


def exit_quietly(message: str, code: int = 1):
  """``message`` on stderr and exit, skipping interpreter teardown: background threads of
  Orbax and grain would otherwise print "Event loop is closed" tracebacks after it."""
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)


def config_overrides(argv: list[str]) -> dict[str, str]:
  """{KEY: VALUE text} for every ``--config.KEY=VALUE`` in ``argv``."""
  out = {}
  for item in argv:
    if item.startswith("--config."):
      key, _, value = item[len("--config."):].partition("=")
      out[key] = value
  return out


def parse_value(text: str, like):
  """``text`` as a value of the type of ``like`` (a config field's current value)."""
  if isinstance(like, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError(f"{text!r} is not a boolean")
  if isinstance(like, str) or like is None:
    return text if like is not None or not text else _literal_or_text(text)
  value = _literal_or_text(text)
  if isinstance(like, float) and isinstance(value, int):
    return float(value)
  if isinstance(like, (tuple, list)) and isinstance(value, (tuple, list)):
    return tuple(value)
  if not isinstance(value, type(like)):
    raise TypeError(f"{text!r} is not a {type(like).__name__}")
  return value


def _literal_or_text(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text
