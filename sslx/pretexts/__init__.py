"""Pretext tasks, one module each, found by name (no registry); the one written contract.

``get("image.rotation")`` imports ``sslx.pretexts.image.rotation`` (``get("multitask")``
and ``get("supervised")`` the family-free modules) and returns a ``Pretext``: the module
seen through this contract, with every optional name resolved once, so the trainer and
the evaluation scripts never probe a module with ``hasattr``.

Required names of a pretext module:
- ``default_config() -> ConfigDict``: its settings, with ``name`` set to its own name.
- ``make_inputs(rng, batch, cfg, *, state=None) -> (inputs, targets)``: pure jnp, jit-able,
  on the device. ``batch["image"]`` is float RGB in [0, 1], ``(B, H, W, 3)``, and
  ``batch["index"]`` each example's position in the source (``batch["label"]`` its label,
  -1 when unlabeled). Video pretexts receive ``batch["video"]``, ``(B, T, H, W, 3)``: the
  ``video.num_frames`` consecutive frames of one window per clip, ``video.frame_stride``
  apart at ``video.fps``, picked by the host among high-motion windows (the host knows
  nothing of the pretext, which picks, shuffles and labels frames on the device). They
  return ``{"image": (B*K, h, w, 3)}`` for a per-frame 2D backbone with shared weights or
  ``{"video": (B*K, t, h, w, 3)}`` for a 3D one. The trainer standardises every input array
  keyed ``image`` or ``video`` with the dataset's statistics. ``state`` is always passed by
  keyword: the pretext's explicit state when it is stateful, else None. With sound
  (``config.audio``) ``batch["audio"]`` is ``(B, A)`` mono float32 waveforms covering each
  window plus ``audio.margin_seconds`` on each side (sslx/data/video.py). In training,
  ``batch["step"]`` is the step number, for curricula (absent elsewhere).
- ``head(cfg) -> nn.Module``: backbone features (a dict of block maps) -> outputs.
- ``loss(outputs, targets, *, cfg) -> (scalar, {name: scalar})``.

Optional names (the default when absent):
- ``validate(config)``: config checks before anything compiles, one-line ValueErrors (none).
- ``model(backbone, cfg) -> nn.Module``: a wiring other than backbone -> head, e.g. one
  backbone and several heads; the backbone's parameters stay under ``backbone``
  (``models.PretextModel(backbone, head(cfg))``).
- ``backbone_input(images, cfg)``: what the backbone sees for images in [0, 1] when it is not
  the standardised RGB (colorization's L channel, DeepCluster's Sobel maps); the evaluation
  scripts and ``load_backbone`` use it (standardised RGB).
- ``clip_input(clips, cfg)``: clips in [0, 1] -> what the backbone saw in training, in [0, 1]:
  a per-frame 2D backbone's frames (O3N's dynamic images), a 3D backbone's clips (the arrow of
  time's frame differences) (the frames themselves).
- ``pictures(predict, images, *, rng, cfg, state=None, train_images=None)``: named uint8
  images for ``sslx-pictures`` (none); ``state`` is the run's pretext state (or None) and
  ``train_images(indices)`` the training images at those indices, in [0, 1] (DeepCluster shows
  its clusters with them); ``picture_images``: how many test images it wants (16).
- ``combinable = False``: the task cannot be one of ``multitask``'s tasks (True for image
  pretexts without state; video and stateful pretexts are refused there in any case).

Stateful pretexts (DeepCluster's clusters, colorization's colour prior) keep an explicit
pytree in the train state, never inside a loss. They define all of:
- ``init_state(cfg)``: the initial state (fixed shapes);
- ``collect(predict, batch, cfg)``: per-example arrays from one ordered, unaugmented pass
  over the training set (``predict(inputs)`` runs the current model with ``train=False``);
- ``update_state(state, collected, *, rng, cfg)``: pure, run at the loop level before step 1
  and every ``update_interval(config, num_examples)`` steps (0: only before step 1);
and optionally ``reinit_params`` (key paths re-initialised, with their optimizer state, after
each update) and ``epoch_indices(state, rng, cfg)`` (the training examples of the next epoch).
The trainer asks once, through ``Pretext.state`` (None for a stateless pretext).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
from typing import Any, Callable

REQUIRED = ("default_config", "make_inputs", "head", "loss")
STATE_REQUIRED = ("init_state", "collect", "update_state", "update_interval")


@dataclasses.dataclass(frozen=True)
class StateHooks:
  """A stateful pretext's hooks, grouped (see the module docstring)."""
  init_state: Callable
  collect: Callable
  update_state: Callable
  update_interval: Callable
  reinit_params: tuple = ()
  epoch_indices: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Pretext:
  """A pretext module through the contract: required names, resolved optional ones."""
  name: str
  module: types.ModuleType
  state: StateHooks | None
  validate: Callable
  backbone_input: Callable | None
  clip_input: Callable | None
  pictures: Callable | None
  picture_images: int
  combinable: bool

  @property
  def stateful(self) -> bool:
    return self.state is not None

  def default_config(self):
    return self.module.default_config()

  def make_inputs(self, rng, batch, cfg, *, state=None):
    return self.module.make_inputs(rng, batch, cfg, state=state)

  def head(self, cfg):
    return self.module.head(cfg)

  def loss(self, outputs, targets, *, cfg):
    return self.module.loss(outputs, targets, cfg=cfg)

  def model(self, backbone, cfg):
    """The whole model: the module's own wiring, else backbone -> head."""
    if hasattr(self.module, "model"):
      return self.module.model(backbone, cfg)
    from sslx import models
    return models.PretextModel(backbone=backbone, head=self.module.head(cfg))

  def init_state(self, cfg) -> Any:
    """The explicit state the train state carries: the pretext's, or {} when stateless."""
    return self.state.init_state(cfg) if self.state is not None else {}


def _no_checks(config) -> None:
  del config


def get(name: str) -> Pretext:
  """The pretext ``sslx.pretexts.<name>`` through the contract; one-line errors for an
  unknown name or a module that breaks the contract."""
  try:
    module = importlib.import_module(f"sslx.pretexts.{name}")
  except ModuleNotFoundError as e:
    wanted = f"sslx.pretexts.{name}"
    if e.name and not (wanted == e.name or wanted.startswith(e.name + ".")):
      raise  # The module exists but imports something missing: not a naming problem.
    raise ValueError(f"unknown pretext {name!r}: give '<family>.<module>' for a module under "
                     f"sslx/pretexts/, e.g. 'image.rotation'") from None
  missing = [n for n in REQUIRED if not hasattr(module, n)]
  if missing:
    raise ValueError(f"pretext module sslx.pretexts.{name} lacks {missing}: every pretext "
                     f"defines {list(REQUIRED)}")
  state = None
  if hasattr(module, "init_state"):
    lacking = [n for n in STATE_REQUIRED if not hasattr(module, n)]
    if lacking:
      raise ValueError(f"stateful pretext sslx.pretexts.{name} lacks {lacking}: a pretext with "
                       f"init_state defines all of {list(STATE_REQUIRED)}")
    state = StateHooks(init_state=module.init_state, collect=module.collect,
                       update_state=module.update_state, update_interval=module.update_interval,
                       reinit_params=tuple(getattr(module, "reinit_params", ())),
                       epoch_indices=getattr(module, "epoch_indices", None))
  is_image = name.startswith("image.")
  return Pretext(name=name, module=module, state=state,
                 validate=getattr(module, "validate", _no_checks),
                 backbone_input=getattr(module, "backbone_input", None),
                 clip_input=getattr(module, "clip_input", None),
                 pictures=getattr(module, "pictures", None),
                 picture_images=int(getattr(module, "picture_images", 16)),
                 combinable=bool(getattr(module, "combinable", is_image and state is None)))
