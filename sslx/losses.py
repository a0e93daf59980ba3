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


def triplet_semihard(*, embeddings, labels, margin=0.5, reduction=True, weights=None):
  """Triplet loss with semi-hard negatives (Schroff et al., FaceNet, CVPR 2015).

  For every anchor-positive pair (same label, different rows) the negative is
  the closest one farther than the positive (semi-hard); when there is none,
  the farthest negative. Distances are squared Euclidean. Returns the mean of
  ``max(0, d(a, p) - d(a, n) + margin)`` over anchor-positive pairs, or with
  ``reduction=False`` its mean per anchor ``(N,)`` (0 for an anchor without a
  positive). ``weights`` is per anchor.
  """
  x = embeddings.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=-1)
  dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
  same = labels[:, None] == labels[None, :]
  n = x.shape[0]
  positive = same & ~jnp.eye(n, dtype=bool)
  negative = ~same
  big = jnp.finfo(jnp.float32).max
  # d[a, p, n]: is negative n semi-hard for (a, p), i.e. farther than p?
  farther = negative[:, None, :] & (dist[:, None, :] > dist[:, :, None])
  semi_hard = jnp.min(jnp.where(farther, dist[:, None, :], big), axis=-1)
  hardest_fallback = jnp.max(jnp.where(negative, dist, -big), axis=-1)[:, None]
  chosen = jnp.where(jnp.any(farther, axis=-1), semi_hard, hardest_fallback)
  per_pair = jnp.maximum(dist - chosen + margin, 0.0) * positive
  if not reduction:
    counts = jnp.maximum(positive.sum(-1), 1)
    return _reduce(per_pair.sum(-1) / counts, reduction=False, weights=weights)
  pair_weights = positive if weights is None else positive * weights[:, None]
  return jnp.sum(per_pair * pair_weights) / jnp.maximum(jnp.sum(pair_weights), 1e-8)


def l2_loss(*, predictions, targets, reduction=True, weights=None):
  """Squared Euclidean distance ``||predictions - targets||^2``, summed over trailing axes."""
  diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
  per_element = jnp.square(diff)
  per_example = per_element.reshape(per_element.shape[0], -1).sum(axis=-1) if per_element.ndim > 1 else per_element
  return _reduce(per_example, reduction=reduction, weights=weights)
