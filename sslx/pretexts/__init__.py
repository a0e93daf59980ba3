"""Pretext tasks, one module each, found by name (no registry).

``get("image.rotation")`` imports ``sslx.pretexts.image.rotation`` (and
``get("multitask")`` the family-free ``sslx.pretexts.multitask``). A pretext
module defines ``default_config()``, ``make_inputs(rng, batch, cfg)``,
``head(cfg)`` and ``loss(outputs, targets, *, cfg)``; stateful tasks add
``init_state`` and ``update_state``. Optional: ``validate(config)`` (config
checks run by the trainer before compilation) and ``model(backbone, cfg)``
(a wiring other than backbone -> head, e.g. one backbone and several heads).

``make_inputs`` receives ``batch["image"]``, float RGB in [0, 1] of shape
``(B, H, W, 3)``, and ``batch["index"]``, each image's position in the source.
"""

from __future__ import annotations

import importlib
import types

REQUIRED = ("default_config", "make_inputs", "head", "loss")


def get(name: str) -> types.ModuleType:
  try:
    module = importlib.import_module(f"sslx.pretexts.{name}")
  except ModuleNotFoundError:
    raise ValueError(f"unknown pretext {name!r}: give '<family>.<module>' for a module under "
                     f"sslx/pretexts/, e.g. 'image.rotation'") from None
  missing = [n for n in REQUIRED if not hasattr(module, n)]
  if missing:
    raise ValueError(f"pretext module sslx.pretexts.{name} lacks {missing}: every pretext "
                     f"defines {list(REQUIRED)}")
  return module
