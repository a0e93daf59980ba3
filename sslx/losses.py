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


def classification(*, logits, labels, reduction=True, weights=None):
  """A classifier's loss and metrics in one call, as the classification pretexts report them:
  ``(softmax_xent, {"accuracy": accuracy})``, both reduced (or per example) the same way."""
  return softmax_xent(logits=logits, labels=labels, reduction=reduction, weights=weights), {
      "accuracy": accuracy(logits=logits, labels=labels, reduction=reduction, weights=weights)}


def binary_classification(*, logits, labels, reduction=True, weights=None):
  """A binary classifier's loss and metrics from one logit per example (label 1 where the logit
  should be positive): ``(sigmoid_xent, {"accuracy": sign of the logit against the label})``."""
  correct = ((logits > 0).astype(jnp.int32) == labels).astype(jnp.float32)
  return (sigmoid_xent(logits=logits, labels=labels.astype(jnp.float32), reduction=reduction, weights=weights),
          {"accuracy": _reduce(correct, reduction=reduction, weights=weights)})


def contrastive_margin(*, distances, labels, margin=1.0, reduction=True, weights=None):
  """The contrastive loss of Hadsell, Chopra & LeCun (CVPR 2006), as SyncNet trains with it:
  ``(y d^2 + (1 - y) max(margin - d, 0)^2) / 2`` per pair of Euclidean distance ``d`` (label 1:
  the pair matches), and ``{"accuracy": d < margin / 2 against the label}``."""
  d = distances.astype(jnp.float32)
  y = labels.astype(jnp.float32)
  per_pair = 0.5 * (y * jnp.square(d) + (1.0 - y) * jnp.square(jnp.maximum(margin - d, 0.0)))
  correct = ((d < margin / 2).astype(jnp.int32) == labels).astype(jnp.float32)
  return (_reduce(per_pair, reduction=reduction, weights=weights),
          {"accuracy": _reduce(correct, reduction=reduction, weights=weights)})


def triplet_semihard(*, embeddings, labels, margin=0.5, reduction=True, weights=None):
  """Triplet loss with semi-hard negatives (Schroff et al., FaceNet, CVPR 2015).

  For every anchor-positive pair (same label, different rows) the negative is
  the closest one farther than the positive (semi-hard); when there is none,
  the farthest negative. Distances are squared Euclidean. Returns the mean of
  ``max(0, d(a, p) - d(a, n) + margin)`` over anchor-positive pairs, or with
  ``reduction=False`` its mean per anchor ``(N,)`` (0 for an anchor without a
  positive). ``weights`` is per anchor.
  """
  same = labels[:, None] == labels[None, :]
  return triplet_semihard_masked(embeddings=embeddings, positives=same & ~jnp.eye(len(labels), dtype=bool),
                                 negatives=~same, margin=margin, reduction=reduction, weights=weights)


def triplet_semihard_masked(*, embeddings, positives, negatives, margin=0.5, reduction=True, weights=None):
  """``triplet_semihard`` with the pairs given as ``(N, N)`` boolean masks: ``positives[a, p]``
  (a positive of anchor a; the diagonal should be False) and ``negatives[a, n]``; pairs in
  neither are ignored (time-contrastive networks leave a gap between the two ranges). An
  anchor-positive pair without any negative contributes nothing."""
  x = embeddings.astype(jnp.float32)
  sq = jnp.sum(x * x, axis=-1)
  dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
  big = jnp.finfo(jnp.float32).max
  # farther[a, p, n]: is negative n semi-hard for (a, p), i.e. farther from a than p is?
  farther = negatives[:, None, :] & (dist[:, None, :] > dist[:, :, None])
  semi_hard = jnp.min(jnp.where(farther, dist[:, None, :], big), axis=-1)
  hardest_fallback = jnp.max(jnp.where(negatives, dist, -big), axis=-1)[:, None]
  chosen = jnp.where(jnp.any(farther, axis=-1), semi_hard, hardest_fallback)
  positive = positives & jnp.any(negatives, axis=-1, keepdims=True)
  per_pair = jnp.where(positive, jnp.maximum(dist - chosen + margin, 0.0), 0.0)
  if not reduction:
    counts = jnp.maximum(positive.sum(-1), 1)
    return _reduce(per_pair.sum(-1) / counts, reduction=False, weights=weights)
  pair_weights = positive if weights is None else positive * weights[:, None]
  return jnp.sum(per_pair * pair_weights) / jnp.maximum(jnp.sum(pair_weights), 1e-8)


def npairs(*, anchors, positives, valid=None, temperature=1.0, reduction=True, weights=None):
  """Multi-class N-pair loss (Sohn, NeurIPS 2016): anchor i must pick its own positive i
  among all positives of the batch, softmax cross-entropy over ``anchors @ positives.T /
  temperature``. ``valid[i, j]`` (boolean ``(N, N)``, optional) drops positive j from anchor
  i's candidates when it is not a true negative for it (for example, a frame close in time in
  the same video); the own positive is always kept."""
  logits = anchors.astype(jnp.float32) @ positives.astype(jnp.float32).T / temperature
  n = logits.shape[0]
  own = jnp.eye(n, dtype=bool)
  if valid is not None:
    logits = jnp.where(valid | own, logits, -jnp.inf)
  per_anchor = -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1))
  return _reduce(per_anchor, reduction=reduction, weights=weights)


def pointer_xent(*, logits, reference_labels, target_labels, reduction=True, weights=None):
  """Cross-entropy of a pointer that copies labels (Vondrick et al., ECCV 2018): each target
  location i points at reference location j with probability softmax_j(logits[..., i, j]) and
  predicts j's label, so the probability of the true label is the pointer's mass on references
  that carry it: loss_i = -log sum_{j: ref_j = target_i} softmax(logits_i)_j.

  ``logits`` ``(..., T, R)``, ``reference_labels`` ``(..., R)`` and ``target_labels``
  ``(..., T)`` integers. A target whose label no reference carries cannot be copied: its loss
  is 0 and it leaves the mean (``reduction=True`` averages over the copyable targets only).
  """
  logits = logits.astype(jnp.float32)
  match = reference_labels[..., None, :] == target_labels[..., :, None]
  copyable = jnp.any(match, axis=-1)
  matched = jax.nn.logsumexp(jnp.where(match, logits, -jnp.inf), axis=-1)
  per_target = jnp.where(copyable, jax.nn.logsumexp(logits, axis=-1) - jnp.where(copyable, matched, 0.0), 0.0)
  mask = copyable if weights is None else copyable * weights
  if not reduction:
    return per_target * mask
  mask = mask.astype(jnp.float32)
  return jnp.sum(per_target * mask) / jnp.maximum(jnp.sum(mask), 1e-8)


def l2_loss(*, predictions, targets, reduction=True, weights=None):
  """Squared Euclidean distance ``||predictions - targets||^2``, summed over trailing axes."""
  diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
  per_element = jnp.square(diff)
  per_example = per_element.reshape(per_element.shape[0], -1).sum(axis=-1) if per_element.ndim > 1 else per_element
  return _reduce(per_example, reduction=reduction, weights=weights)


def nt_xent(*, embeddings_a, embeddings_b, temperature, reduction=True, weights=None):
  """NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., ICML 2020).

  ``embeddings_a[i]`` and ``embeddings_b[i]`` (``(N, D)``) are two views of example i. Both are
  L2-normalised; each of the 2N views must pick its partner by cosine similarity / ``temperature``
  among the 2N - 1 other views, the 2N - 2 views of the other examples being its negatives. The
  per-example value is the mean of the pair's two directions, so the mean over examples is the
  paper's loss (the official code returns the sum of the two directions, twice this). ``weights``
  ``(N,)``: examples of weight 0 (padding) are also removed from everyone's negatives. On a
  data-parallel mesh the arrays are global, so the negatives are the whole global batch.
  """
  if not isinstance(temperature, jax.core.Tracer) and float(temperature) <= 0:
    raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
  n = embeddings_a.shape[0]
  z = jnp.concatenate([embeddings_a, embeddings_b], 0).astype(jnp.float32)
  z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  logits = z @ z.T / temperature
  others = ~jnp.eye(2 * n, dtype=bool)
  if weights is not None:
    others = others & jnp.tile(weights > 0, 2)[None, :]
  # A large finite negative rather than -inf keeps the softmax's gradient free of NaNs.
  log_probs = jax.nn.log_softmax(jnp.where(others, logits, -1e9), axis=-1)
  partner = jnp.concatenate([jnp.arange(n) + n, jnp.arange(n)])
  per_view = -jnp.take_along_axis(log_probs, partner[:, None], axis=-1)[:, 0]
  per_example = 0.5 * (per_view[:n] + per_view[n:])
  return _reduce(per_example, reduction=reduction, weights=weights)


def _masked_mean(per_element, mask):
  """Per-example mean of ``per_element (B, ...)`` weighted by ``mask`` (broadcast to it; None: all)."""
  if mask is None:
    return per_element.reshape(per_element.shape[0], -1).mean(axis=-1)
  mask = jnp.broadcast_to(mask.astype(jnp.float32), per_element.shape).reshape(per_element.shape[0], -1)
  total = (per_element.reshape(per_element.shape[0], -1) * mask).sum(axis=-1)
  # max(., 1e-8): an example with an empty mask contributes 0, not NaN.
  return total / jnp.maximum(mask.sum(axis=-1), 1e-8)


def masked_l2(*, predictions, targets, mask=None, reduction=True, weights=None):
  """Mean squared error per example over the elements ``mask`` selects (or weights, e.g. a 10x
  boundary); ``mask`` broadcasts to ``predictions`` (e.g. ``(B, H, W, 1)`` for all channels)."""
  diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
  return _reduce(_masked_mean(jnp.square(diff), mask), reduction=reduction, weights=weights)


def masked_l1(*, predictions, targets, mask=None, reduction=True, weights=None):
  """Mean absolute error per example over the elements ``mask`` selects (see ``masked_l2``)."""
  diff = predictions.astype(jnp.float32) - targets.astype(jnp.float32)
  return _reduce(_masked_mean(jnp.abs(diff), mask), reduction=reduction, weights=weights)


def gan_discriminator_loss(*, real_logits, fake_logits, reduction=True, weights=None):
  """The discriminator's cross-entropy: ``-log D(real) - log(1 - D(fake))`` per example,
  with ``D = sigmoid(logits)`` of shape ``(B,)`` or ``(B, 1)``."""
  real = real_logits.astype(jnp.float32).reshape(real_logits.shape[0])
  fake = fake_logits.astype(jnp.float32).reshape(fake_logits.shape[0])
  per_example = -jax.nn.log_sigmoid(real) - jax.nn.log_sigmoid(-fake)
  return _reduce(per_example, reduction=reduction, weights=weights)


def gan_generator_loss(*, fake_logits, reduction=True, weights=None):
  """The non-saturating generator loss ``-log D(fake)`` per example (Goodfellow et al. 2014)."""
  fake = fake_logits.astype(jnp.float32).reshape(fake_logits.shape[0])
  return _reduce(-jax.nn.log_sigmoid(fake), reduction=reduction, weights=weights)
