"""A few gradient steps of a pretext on a fixed batch: the "loss goes down" check; and the
abstract inputs of a config, for checks that ``validate``'s bounds are the ones ``make_inputs`` needs."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslx import configs, models, pretexts, run

TINY_CONVNET = {"name": "convnet", "widths": (8, 16, 16), "kernel_sizes": (3, 3, 3)}


def build(pretext, cfg, model_config=None):
  backbone = models.get_backbone(ml_collections.ConfigDict(model_config or TINY_CONVNET))
  return _contract(pretext).model(backbone, cfg)


def _contract(pretext) -> pretexts.Pretext:
  """A pretext module (as the tests import it) through the contract the trainer uses."""
  return pretext if isinstance(pretext, pretexts.Pretext) else pretexts.get(
      pretext.__name__[len("sslx.pretexts."):])


class _FixedPseudoLabels:
  """The pretext with one PRNG key for every step: the same pseudo-labels each step, so the
  loss curve measures fitting, not the draw of new labels."""

  def __init__(self, pretext, seed):
    self._pretext, self._key = pretext, jax.random.PRNGKey(seed)
    self.stateful, self.loss = pretext.stateful, pretext.loss

  def make_inputs(self, rng, batch, cfg, *, state=None):
    del rng
    return self._pretext.make_inputs(self._key, batch, cfg, state=state)


def losses_over_steps(pretext, cfg, batch, *, steps=15, learning_rate=3e-3, model_config=None, seed=0,
                      state=None):
  """Adam on one fixed batch (fixed pseudo-labels) through the trainer's own step
  (sslx.run.make_train_step: standardisation, loss, gradient, update, non-finite guard): the
  pretext loss at every step. ``batch`` holds RGB in [0, 1]; ``state``: a stateful pretext's
  explicit state."""
  contract = _contract(pretext)
  model = build(contract, cfg, model_config)
  key = "video" if "video" in batch else "image"
  config = configs.base_video() if key == "video" else configs.base()
  config.pretext = cfg
  # The step reads uint8-range media (it divides by 255); float values keep the batch exact.
  batch = {k: jnp.asarray(v) * (255.0 if k == key else 1) for k, v in batch.items()}
  batch.setdefault("index", jnp.arange(batch[key].shape[0], dtype=jnp.int32))
  fixed = _FixedPseudoLabels(contract, seed)
  mean, std = tuple(config.normalize.mean), tuple(config.normalize.std)
  # Jitted, as in training: un-jitted pseudo-label makers and inits run op by op, slowly.
  inputs, _ = jax.jit(lambda b: fixed.make_inputs(None, dict(b, **{key: b[key] / 255.0}), cfg, state=state))(batch)
  variables = run.jit_once(lambda rng, x: model.init(rng, run.standardize_inputs(x, mean, std), train=False))(
      jax.random.PRNGKey(seed), inputs)
  params = variables["params"]
  tx = optax.adam(learning_rate)
  train_state = run.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                               rng=jax.random.PRNGKey(seed + 1), pretext_state=state if state is not None else {})
  step = jax.jit(run.make_train_step(config, model, fixed, tx, optax.constant_schedule(learning_rate)))
  values, metrics = [], None
  for _ in range(steps):
    train_state, metrics = step(train_state, batch)
    values.append(float(metrics["loss"]))
  # The pretext's own metrics; the step adds the loss, learning rate, gradient norm and guard.
  own = {k: v for k, v in metrics.items() if k not in ("loss", "learning_rate", "grad_norm", "nonfinite")}
  return values, jax.device_get(own)


def experiment_config(pretext_cfg, *, image_size, num_frames=None):
  """``configs.base()`` (``base_video()`` with ``num_frames``) with this pretext and image size."""
  config = configs.base() if num_frames is None else configs.base_video()
  config.pretext = pretext_cfg
  config.image_size = image_size
  if num_frames is not None:
    config.video.num_frames = num_frames
  return config


def abstract_inputs(pretext, config):
  """``make_inputs`` under ``jax.eval_shape`` on a batch of 2 of the config's size: its inputs' shapes."""
  frames = (config.video.num_frames,) if config.get("video") is not None else ()
  key = "video" if frames else "image"
  media = jax.ShapeDtypeStruct((2,) + frames + (config.image_size, config.image_size, 3), jnp.float32)
  inputs, _ = jax.eval_shape(lambda rng, x: pretext.make_inputs(rng, {key: x}, config.pretext),
                             jax.random.PRNGKey(0), media)
  return jax.tree.map(lambda a: a.shape, inputs)
