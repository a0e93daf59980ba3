"""Pure loss functions: arrays in, arrays out, keyword-only arguments.

Every function takes ``reduction``: ``True`` returns the (weighted) mean over
examples as a scalar, ``False`` returns one value per example. ``weights`` (one
per example, e.g. 0 for padding) enters the mean as ``sum(w * x) / sum(w)``.
They read no config and hold no state, so they work on plain arrays in a
notebook as well as inside the jitted train step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _reduce(per_example, *, reduction, weights):
  if not reduction:
    return per_example if weights is None else per_example * weights
  if weights is None:
    return jnp.mean(per_example)
  weights = weights.astype(per_example.dtype)
  # max(., 1e-8) keeps an all-padding batch at 0 instead of NaN.
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1e-8)


def softmax_xent(*, logits, labels, reduction=True, weights=None):
  """Softmax cross-entropy with integer class labels of shape ``logits.shape[:-1]``."""
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(log_probs, labels[..., None].astype(jnp.int32), axis=-1)
  return _reduce(-picked[..., 0], reduction=reduction, weights=weights)


def softmax_xent_soft(*, logits, targets, reduction=True, weights=None):
  """Softmax cross-entropy against soft targets (probabilities over the last axis)."""
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  per_example = -jnp.sum(targets * log_probs, axis=-1)
  return _reduce(per_example, reduction=reduction, weights=weights)


def sigmoid_xent(*, logits, labels, reduction=True, weights=None):
  """Binary cross-entropy on logits; labels in [0, 1]. Summed over trailing axes."""
  logits = logits.astype(jnp.float32)
  # log(sigmoid(x)) and log(1 - sigmoid(x)) computed stably.
  per_element = -(labels * jax.nn.log_sigmoid(logits) + (1.0 - labels) * jax.nn.log_sigmoid(-logits))
  per_example = per_element.reshape(per_element.shape[0], -1).sum(axis=-1) if per_element.ndim > 1 else per_element
  return _reduce(per_example, reduction=reduction, weights=weights)


def accuracy(*, logits, labels, reduction=True, weights=None):
  """Top-1 accuracy: fraction of examples whose arg-max logit is the label."""
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  return _reduce(correct, reduction=reduction, weights=weights)
