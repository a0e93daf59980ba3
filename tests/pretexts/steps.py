"""A few gradient steps of a pretext on a fixed batch: the "loss goes down" check; and the
abstract inputs of a config, for checks that ``validate``'s bounds are the ones ``make_inputs`` needs."""

import jax
import jax.numpy as jnp
import ml_collections
import optax

from sslx import configs, models

TINY_CONVNET = {"name": "convnet", "widths": (8, 16, 16), "kernel_sizes": (3, 3, 3)}


def build(pretext, cfg, model_config=None):
  backbone = models.get_backbone(ml_collections.ConfigDict(model_config or TINY_CONVNET))
  if hasattr(pretext, "model"):
    return pretext.model(backbone, cfg)
  return models.PretextModel(backbone=backbone, head=pretext.head(cfg))


def losses_over_steps(pretext, cfg, batch, *, steps=15, learning_rate=3e-3, model_config=None, seed=0,
                      state=None):
  """Adam on one fixed batch (fixed pseudo-labels): the pretext loss at every step.

  ``state``: a stateful pretext's explicit state, passed to ``make_inputs``.
  """
  model = build(pretext, cfg, model_config)
  batch = jax.tree.map(jnp.asarray, batch)
  extra = {} if state is None else {"state": state}
  # Jitted, as in training: un-jitted pseudo-label makers and inits run op by op, slowly.
  inputs, targets = jax.jit(lambda rng, b: pretext.make_inputs(rng, b, cfg, **extra))(
      jax.random.PRNGKey(seed), batch)
  variables = jax.jit(lambda rng, x: model.init(rng, x, train=False))(jax.random.PRNGKey(seed), inputs)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.adam(learning_rate)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      (out, _), upd = model.apply({"params": p, "batch_stats": batch_stats}, inputs, train=True,
                                  mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(seed + 1)})
      value, metrics = pretext.loss(out, targets, cfg=cfg)
      return value, (metrics, upd["batch_stats"])
    (value, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value, metrics

  values, metrics = [], None
  for _ in range(steps):
    params, batch_stats, opt_state, value, metrics = step(params, batch_stats, opt_state)
    values.append(float(value))
  return values, jax.device_get(metrics)


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
