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
The trainer standardises every array keyed ``image`` or ``video`` in the inputs
it returns.

Video pretexts (``sslx/pretexts/video/``, configs from ``configs.base_video()``)
receive ``batch["video"]`` instead: ``(B, T, H, W, 3)``, the ``video.num_frames``
consecutive frames of one window per clip, ``video.frame_stride`` apart at
``video.fps``, chosen by the host among high-motion windows (sslx/data/video.py);
the host knows nothing of the pretext, which picks, shuffles and labels frames
on the device. They return ``{"image": (B*K, h, w, 3)}`` for a per-frame 2D
backbone with shared weights (each example's K frames next to each other) or
``{"video": (B*K, t, h, w, 3)}`` for a 3D backbone; their ``validate(config)``
checks that ``video.num_frames`` covers their sampling rule.

Stateful pretexts keep an explicit pytree in the train state, never inside a loss:
- ``init_state(cfg)``: the initial state (fixed shapes); ``make_inputs`` then
  takes ``state=`` as well.
- ``collect(predict, batch, cfg)``: per-example arrays from one ordered pass over
  the training set (``predict(inputs)`` runs the current model, ``train=False``);
- ``update_state(state, collected, *, rng, cfg)``: pure, at the loop level,
  called before step 1 and every ``update_interval(config, num_examples)``
  steps (0: only before step 1);
- optional ``reinit_params`` (key paths re-initialised, with their optimizer
  state, after each update) and ``epoch_indices(state, rng, cfg)`` (the
  training examples of the next epoch).

Also optional: ``backbone_input(images, cfg)`` (what the backbone sees for
images in [0, 1] when it is not the standardised RGB, e.g. the L channel; the
probes use it; None means the default) and ``pictures(predict, images, *, rng,
cfg)`` (named uint8 images for ``sslx-pictures``).
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
