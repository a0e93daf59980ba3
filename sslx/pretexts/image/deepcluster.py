"""DeepCluster (Caron, Bojanowski, Joulin & Douze, "Deep Clustering for Unsupervised
Learning of Visual Features", ECCV 2018; official code facebookresearch/deepcluster).

Pseudo-labels are cluster assignments of the network's own features, recomputed
at the start of every epoch:
- Features of every training image (no augmentation) are taken from the MLP's
  last hidden layer before its ReLU, the classifier removed (the official code
  drops the top layer and the last ReLU for this pass).
- They are PCA-reduced with whitening (256 dims in the paper, eigenvalues to the
  power -1/2), L2-normalised per row, and clustered by k-means (k = 10,000 on
  ImageNet; faiss, 20 iterations, random initial centroids). Here PCA and
  k-means are plain JAX, seeded by k-means++ unless ``kmeans_init="random"``.
- Empty clusters (faiss' rule): for each empty cluster, a non-empty one is
  drawn with probability proportional to its size minus one and split: the empty
  cluster takes a copy of its centroid, and the two copies are moved apart by a
  relative 1/1024, in opposite directions on alternate coordinates; the next
  assignment step shares the points between them.
- Training samples images uniformly over the clusters: each non-empty cluster
  gets ``int(N / non_empty) + 1`` draws (with replacement when it is smaller),
  the list is shuffled and cut to N examples per epoch.
- The classifier on top is re-created after every re-assignment (weights
  N(0, 0.01^2), zero bias), with fresh optimizer state: the previous epoch's
  classes mean nothing for the new partition.
- Input: Sobel filtering (greyscale, then horizontal and vertical Sobel
  derivatives; two channels), which removes colour as an easy cue to cluster on.
- The normalised mutual information between successive assignments tracks how
  stable the clustering has become (the paper's Fig. 2).

The state is an explicit pytree (``init_state``) refreshed at the loop level by
the pure ``update_state`` (features -> new assignments), which a notebook can
call directly: ``update_state(state, {"features": f, "index": i}, rng=key, cfg=cfg)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sslx import augment, losses
from sslx.montage import montage

# The top layer, re-initialised after each clustering (a key path into the params).
reinit_params = (("head", "classifier"),)
SPLIT_EPSILON = 1.0 / 1024  # faiss' relative perturbation when splitting a cluster.


def default_config() -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict()
  cfg.name = "image.deepcluster"
  cfg.num_clusters = 10000  # k; the paper's ImageNet value (CIFAR configs use fewer).
  cfg.num_examples = 1281167  # Training images the assignments cover (set per dataset).
  cfg.pca_dim = 256
  cfg.kmeans_iterations = 20
  cfg.kmeans_init = "kmeans++"  # Or "random" (faiss' default, the official code's).
  cfg.hidden_dim = 4096  # The MLP whose pre-ReLU output is clustered.
  cfg.sobel = True
  cfg.epochs_per_clustering = 1
  return cfg


def validate(config) -> None:
  cfg = config.pretext
  if cfg.num_clusters < 2:
    raise ValueError(f"deepcluster: num_clusters must be >= 2, got {cfg.num_clusters}")
  if cfg.num_clusters > cfg.num_examples:
    raise ValueError(f"deepcluster: k = {cfg.num_clusters} clusters is larger than the dataset "
                     f"({cfg.num_examples} images): lower --config.pretext.num_clusters")
  if config.get("train_examples") is not None and config.train_examples != cfg.num_examples:
    raise ValueError(f"deepcluster: train_examples is {config.train_examples} but pretext.num_examples is "
                     f"{cfg.num_examples}: set both to the number of training images")
  if config.batch_size > cfg.num_examples:
    raise ValueError(f"deepcluster: batch_size {config.batch_size} exceeds the {cfg.num_examples} training "
                     f"images: lower --config.batch_size")


# --- Clustering: pure functions of arrays. -----------------------------------------------------


def pca_whiten(features, dim: int, eps: float = 1e-5):
  """``(N, D)`` -> ``(N, min(dim, D))``: centred, projected on the top principal
  axes and scaled to unit variance along each (whitening)."""
  x = jnp.asarray(features, jnp.float32)
  centred = x - x.mean(axis=0)
  cov = augment.exact_matmul(centred.T, centred) / x.shape[0]
  values, vectors = jnp.linalg.eigh(cov)  # Ascending.
  dim = min(dim, x.shape[1])
  top_values, top_vectors = values[::-1][:dim], vectors[:, ::-1][:, :dim]
  return augment.exact_matmul(centred, top_vectors) / jnp.sqrt(jnp.maximum(top_values, 0.0) + eps)


def l2_normalize(x, eps: float = 1e-10):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def assign(points, centroids):
  """Index of the nearest centroid (squared Euclidean) for every point."""
  distances = (jnp.sum(points ** 2, axis=1)[:, None] - 2.0 * augment.exact_matmul(points, centroids.T)
               + jnp.sum(centroids ** 2, axis=1)[None, :])
  return jnp.argmin(distances, axis=1).astype(jnp.int32)


def reseed_empty(rng, centroids, counts):
  """Splits a size-weighted random non-empty cluster into every empty one (faiss' rule).

  Returns (centroids, counts, number of clusters re-seeded).
  """
  k, dim = centroids.shape
  n = jnp.sum(counts)
  signs = jnp.where(jnp.arange(dim) % 2 == 0, 1.0, -1.0) * SPLIT_EPSILON

  def split(j, carry):
    centroids, counts, reseeded = carry
    weight = jnp.maximum(counts - 1, 0).astype(jnp.float32)
    donor = jax.random.categorical(jax.random.fold_in(rng, j), jnp.log(weight / jnp.maximum(n - k, 1)))
    source = centroids[donor]
    centroids = centroids.at[j].set(source * (1 + signs)).at[donor].set(source * (1 - signs))
    moved = counts[donor] // 2
    return centroids, counts.at[j].add(moved).at[donor].add(-moved), reseeded + 1

  def visit(j, carry):
    # Counts are updated as clusters are split, so a later empty one sees the new sizes.
    return jax.lax.cond(carry[1][j] == 0, split, lambda j, carry: carry, j, carry)

  start = (centroids, counts, jnp.zeros((), jnp.int32))
  return jax.lax.cond(jnp.any(counts == 0), lambda c: jax.lax.fori_loop(0, k, visit, c), lambda c: c, start)


def kmeans_plus_plus(rng, x, num_clusters: int):
  """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centroid is a point
  drawn with probability proportional to its squared distance to the nearest one so far."""
  first_rng, loop_rng = jax.random.split(rng)
  first = x[jax.random.randint(first_rng, (), 0, x.shape[0])]
  centroids = jnp.zeros((num_clusters, x.shape[1]), x.dtype).at[0].set(first)
  nearest = jnp.sum((x - first) ** 2, axis=1)

  def pick(i, carry):
    centroids, nearest = carry
    logits = jnp.log(jnp.maximum(nearest, 1e-30))
    chosen = x[jax.random.categorical(jax.random.fold_in(loop_rng, i), logits)]
    nearest = jnp.minimum(nearest, jnp.sum((x - chosen) ** 2, axis=1))
    return centroids.at[i].set(chosen), nearest

  return jax.lax.fori_loop(1, num_clusters, pick, (centroids, nearest))[0]


def kmeans(points, num_clusters: int, *, rng, iterations: int = 20, init: str = "kmeans++",
           init_centroids=None):
  """Lloyd's k-means with empty-cluster re-seeding. Returns (centroids, assignments, re-seeds).

  ``init``: "random" draws ``num_clusters`` distinct points (faiss, as the official
  DeepCluster); "kmeans++" (default) seeds by D^2 sampling, which avoids most of
  the poor local minima where two centroids start in one true cluster.
  ``init_centroids`` overrides both.
  """
  x = jnp.asarray(points, jnp.float32)
  init_rng, loop_rng = jax.random.split(rng)
  if init_centroids is None and init == "random":
    centroids = x[jax.random.choice(init_rng, x.shape[0], (num_clusters,), replace=False)]
  elif init_centroids is None and init == "kmeans++":
    centroids = kmeans_plus_plus(init_rng, x, num_clusters)
  elif init_centroids is None:
    raise ValueError(f"deepcluster: unknown k-means init {init!r}: use 'kmeans++' or 'random'")
  else:
    centroids = jnp.asarray(init_centroids, jnp.float32)

  def step(i, carry):
    centroids, reseeded = carry
    labels = assign(x, centroids)
    counts = jnp.bincount(labels, length=num_clusters)
    sums = jnp.zeros_like(centroids).at[labels].add(x)
    centroids = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centroids)
    centroids, _, n_reseeded = reseed_empty(jax.random.fold_in(loop_rng, i), centroids, counts)
    return centroids, reseeded + n_reseeded

  centroids, reseeded = jax.lax.fori_loop(0, iterations, step, (centroids, jnp.zeros((), jnp.int32)))
  return centroids, assign(x, centroids), reseeded


def normalized_mutual_information(a, b) -> float:
  """NMI(a, b) = I(a; b) / sqrt(H(a) H(b)) of two labelings (numpy), 1 for identical partitions."""
  a, b = np.asarray(a), np.asarray(b)
  _, a = np.unique(a, return_inverse=True)
  _, b = np.unique(b, return_inverse=True)
  joint = np.zeros((a.max() + 1, b.max() + 1))
  np.add.at(joint, (a, b), 1.0)
  joint /= joint.sum()
  pa, pb = joint.sum(1), joint.sum(0)
  nz = joint > 0
  mutual = np.sum(joint[nz] * np.log(joint[nz] / (pa[:, None] * pb[None, :])[nz]))
  ha, hb = -np.sum(pa * np.log(pa)), -np.sum(pb * np.log(pb))
  if ha == 0 or hb == 0:
    return float(ha == hb)
  return float(mutual / np.sqrt(ha * hb))


# --- Explicit state. ---------------------------------------------------------------------------


def init_state(cfg):
  return {"assignments": jnp.zeros((cfg.num_examples,), jnp.int32),
          "clusterings": jnp.zeros((), jnp.int32),  # How many times update_state ran.
          "nmi_previous": jnp.zeros((), jnp.float32),  # NMI(t-1, t); 0 before the second clustering.
          "reseeded": jnp.zeros((), jnp.int32),
          "empty_clusters": jnp.zeros((), jnp.int32),
          "largest_cluster_fraction": jnp.zeros((), jnp.float32)}


def collect(predict, batch, cfg):
  """Per-example clustering features (the hidden layer, pre-ReLU) and source indices."""
  inputs, _ = make_inputs(jax.random.PRNGKey(0), batch, cfg)
  return {"features": predict(inputs)["features"], "index": batch["index"]}


def update_state(state, collected, *, rng, cfg):
  """Clusters ``collected["features"]`` (N, D) of the images ``collected["index"]`` (N,)."""
  features, indices = np.asarray(collected["features"]), np.asarray(collected["index"])
  n = len(indices)
  if cfg.num_clusters > n:
    raise ValueError(f"deepcluster: k = {cfg.num_clusters} clusters is larger than the {n} training images: "
                     f"lower --config.pretext.num_clusters")
  if n != cfg.num_examples:
    raise ValueError(f"deepcluster: the training set has {n} images but pretext.num_examples is "
                     f"{cfg.num_examples}: set --config.pretext.num_examples={n}")
  points = l2_normalize(pca_whiten(features, cfg.pca_dim))
  _, labels, reseeded = jax.jit(kmeans, static_argnums=(1,), static_argnames=("iterations", "init"))(
      points, cfg.num_clusters, rng=rng, iterations=cfg.kmeans_iterations, init=cfg.kmeans_init)
  assignments = np.zeros((cfg.num_examples,), np.int32)
  assignments[indices] = np.asarray(labels)
  previous = np.asarray(state["assignments"])
  sizes = np.bincount(assignments, minlength=cfg.num_clusters)
  clusterings = int(state["clusterings"])
  return {"assignments": assignments,
          "clusterings": np.int32(clusterings + 1),
          "nmi_previous": np.float32(normalized_mutual_information(previous, assignments) if clusterings else 0.0),
          "reseeded": np.int32(reseeded),
          "empty_clusters": np.int32(np.sum(sizes == 0)),
          "largest_cluster_fraction": np.float32(sizes.max() / n)}


def update_interval(config, num_examples: int) -> int:
  """Re-cluster every ``epochs_per_clustering`` epochs of N samples."""
  return max(1, num_examples // config.batch_size) * config.pretext.epochs_per_clustering


def epoch_indices(state, rng, cfg) -> np.ndarray:
  """N training indices drawn uniformly over the non-empty clusters, shuffled."""
  assignments = np.asarray(state["assignments"])
  n = len(assignments)
  generator = np.random.default_rng(np.asarray(rng, np.uint32).ravel().tolist())
  clusters = [np.flatnonzero(assignments == c) for c in np.unique(assignments)]
  per_cluster = n // len(clusters) + 1
  drawn = [generator.choice(members, per_cluster, replace=len(members) <= per_cluster) for members in clusters]
  indices = np.concatenate(drawn)
  generator.shuffle(indices)
  return indices[:n].astype(np.int64)


# --- Inputs, model, loss. ----------------------------------------------------------------------


def sobel(images):
  """``(B, H, W, 3)`` in [0, 1] -> ``(B, H, W, 2)``: Sobel x and y derivatives of the grey image."""
  grey = augment.to_grey(images)[..., :1]
  kx = jnp.asarray([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
  kernel = jnp.stack([kx, kx.T], axis=-1)[:, :, None, :]  # HWIO: (3, 3, 1, 2).
  return jax.lax.conv_general_dilated(grey, kernel, (1, 1), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      precision=jax.lax.Precision.HIGHEST)


def backbone_input(images, cfg):
  """What the backbone sees at evaluation: the Sobel maps (None: the usual standardised RGB)."""
  return sobel(images) if cfg.sobel else None


def make_inputs(rng, batch, cfg, *, state=None):
  """Images (Sobel-filtered by default) and their current cluster as the label."""
  del rng
  images = batch["image"]
  inputs = {"edges": sobel(images)} if cfg.sobel else {"image": images}
  if state is None:
    return inputs, {}
  return inputs, {"label": state["assignments"][batch["index"]]}


class Head(nn.Module):
  """Hidden layer (clustered, pre-ReLU) -> ReLU -> classifier over the clusters."""
  hidden_dim: int
  num_clusters: int

  @nn.compact
  def __call__(self, features, *, train: bool):
    del train
    hidden = nn.Dense(self.hidden_dim, name="hidden")(features["pooled"].astype(jnp.float32))
    logits = nn.Dense(self.num_clusters, kernel_init=nn.initializers.normal(0.01),
                      bias_init=nn.initializers.zeros, name="classifier")(nn.relu(hidden))
    return {"logits": logits, "features": hidden}


def head(cfg) -> nn.Module:
  return Head(hidden_dim=cfg.hidden_dim, num_clusters=cfg.num_clusters)


class Model(nn.Module):
  backbone: nn.Module
  head: nn.Module
  sobel: bool

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    features = self.backbone(inputs["edges"] if self.sobel else inputs["image"], train=train)
    return self.head(features, train=train), features


def model(backbone, cfg) -> nn.Module:
  return Model(backbone=backbone, head=head(cfg), sobel=cfg.sobel)


def loss(outputs, targets, *, cfg):
  del cfg
  logits, labels = outputs["logits"], targets["label"]
  return losses.classification(logits=logits, labels=labels)


picture_images = 5000  # Without a state: enough test images for ~10 per cluster at k = 500.


def pictures(predict, images, *, rng, cfg, state=None, train_images=None, rows: int = 8,
             columns: int = 10):
  """One row per cluster, the most populated first, up to ``columns`` images each.

  With the run's ``state`` and ``train_images(indices) -> (n, H, W, 3)`` (as
  ``sslx-pictures`` passes them): the last k-means assignments of the training
  images, i.e. the pseudo-labels themselves. Without: test images grouped by the
  cluster the classifier predicts for them.
  """
  if state is not None and train_images is not None:
    assignments = np.asarray(state["assignments"])
    clusters, sizes = np.unique(assignments, return_counts=True)
    order = clusters[np.argsort(-sizes, kind="stable")][:rows]
    # A random sample of each cluster: sources are often class-sorted, so the first
    # members would all share the first class present.
    sampler = np.random.default_rng(0)
    members = [sampler.permutation(np.flatnonzero(assignments == c))[:columns] for c in order]
    loaded = np.asarray(train_images(np.concatenate(members)))
    groups, start = [], 0
    for m in members:
      groups.append(list(loaded[start:start + len(m)]))
      start += len(m)
    name = "clusters"
  else:
    predicted = []
    for start in range(0, len(images), 500):
      inputs, _ = make_inputs(rng, {"image": images[start:start + 500]}, cfg)
      predicted.append(np.asarray(jnp.argmax(predict(inputs)["logits"], axis=-1)))
    predicted = np.concatenate(predicted)
    clusters, sizes = np.unique(predicted, return_counts=True)
    order = clusters[np.argsort(-sizes, kind="stable")][:rows]
    groups = [[np.asarray(images[i]) for i in np.flatnonzero(predicted == c)[:columns]] for c in order]
    name = "predicted_clusters"
  blank = np.ones(images.shape[1:], np.float32)
  grid = [g + [blank] * (columns - len(g)) for g in groups]
  return {name: montage(grid)}
