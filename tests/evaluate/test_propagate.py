import json
import os

import numpy as np
import pytest

from sslx.evaluate import propagate
from tests.conftest import quick_run, requires_data


def square(shape, top, left, side):
  mask = np.zeros(shape, bool)
  mask[top:top + side, left:left + side] = True
  return mask


def test_region_and_boundary_measures():
  truth = square((100, 120), 20, 30, 40)
  assert propagate.region_similarity(truth, truth) == 1.0 == propagate.boundary_f_measure(truth, truth)
  assert propagate.region_similarity(truth, square((100, 120), 20, 50, 40)) == pytest.approx(20 / 60)
  # Tolerance: ceil(0.008 * diagonal) = 2 px here; a boundary 2 px off still matches, 10 px off does not.
  assert propagate.boundary_f_measure(square((100, 120), 22, 30, 40), truth) == pytest.approx(1.0)
  assert propagate.boundary_f_measure(square((100, 120), 30, 40, 40), truth) < 0.5
  empty = np.zeros((100, 120), bool)
  assert propagate.region_similarity(empty, empty) == 1.0 == propagate.boundary_f_measure(empty, empty)
  assert propagate.boundary_f_measure(empty, truth) == 0.0
  # The first and the last frame are not scored.
  scores = propagate.score_sequence(np.stack([empty, truth, empty]), np.stack([truth, truth, truth]))
  assert scores == {"J": 1.0, "F": 1.0, "J&F": 1.0}


def brute_force(features, first_labels, *, context, top_k, temperature, radius):
  """The propagation written plainly: every pair of cells, a Chebyshev radius, the context frames."""
  num_frames, h, w, _ = features.shape
  y, x = np.divmod(np.arange(h * w), w)
  near = (np.abs(y[:, None] - y[None]) <= radius) & (np.abs(x[:, None] - x[None]) <= radius)
  flat = features.reshape(num_frames, h * w, -1).astype(np.float64)
  labels = [first_labels.reshape(h * w, -1)]
  for t in range(1, num_frames):
    sources = [0] + list(range(max(1, t - context), t))
    scores = np.concatenate([np.where(near, -0.5 * ((flat[t][:, None] - flat[s][None]) ** 2).sum(-1), -np.inf)
                             for s in sources], axis=1)
    pool = np.concatenate([labels[s] for s in sources])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    top = np.take_along_axis(scores, best, axis=1) / temperature
    weights = np.exp(top - top.max(1, keepdims=True))
    labels.append(np.einsum("nk,nkc->nc", weights / weights.sum(1, keepdims=True), pool[best]))
  return np.stack(labels).reshape(num_frames, h, w, -1)


@pytest.mark.parametrize("context,radius", [(2, 2), (0, 1), (20, 3)])
def test_tiled_propagation_equals_the_plain_computation(context, radius):
  rng = np.random.default_rng(context + radius)
  features = rng.normal(size=(6, 10, 13, 4)).astype(np.float32)
  first = rng.dirichlet(np.ones(3), size=(10, 13)).astype(np.float32)
  settings = dict(context=context, top_k=4, temperature=0.5, radius=radius)
  np.testing.assert_allclose(propagate.propagate(features, first, **settings),
                             brute_force(features, first, **settings), atol=1e-4)


def test_tiling_gives_each_cell_its_square_neighbourhood():
  target_index, target_inside, window_index, pair_valid = propagate.tiling(11, 9, 2, tile=4)
  counts = np.zeros(11 * 9, int)
  for tile in range(len(target_index)):
    for p in np.flatnonzero(target_inside[tile]):
      cell = target_index[tile, p]
      neighbours = window_index[tile, pair_valid[tile, p]]
      dy, dx = np.divmod(neighbours, 9)[0] - cell // 9, np.divmod(neighbours, 9)[1] - cell % 9
      assert np.abs(dy).max() <= 2 and np.abs(dx).max() <= 2 and len(set(neighbours)) == len(neighbours)
      counts[cell] = len(neighbours)
  assert counts[5 * 9 + 4] == 25 and counts[0] == 9 and counts[10 * 9 + 8] == 9  # Interior, corners.


def test_a_moving_object_is_followed_by_its_colour():
  # A textured red square moves 1 cell a frame over a static textured grey background.
  rng = np.random.default_rng(0)
  frames, masks = [], []
  background = rng.uniform(0.3, 0.5, (24, 24, 1)) * np.ones(3)
  for t in range(8):
    frame, mask = background.copy(), square((24, 24), 4 + t, 3 + t, 6)
    frame[mask] = [0.9, 0.1, 0.1] + rng.uniform(-0.05, 0.05, (mask.sum(), 3))
    frames.append(frame)
    masks.append(mask)
  labels = propagate.propagate(np.stack(frames), propagate.mask_labels(masks[0], (24, 24)),
                               context=3, top_k=5, temperature=0.05, radius=3)
  predicted = propagate.masks_from_labels(labels, (24, 24))
  assert propagate.score_sequence(predicted, np.stack(masks))["J"] > 0.95
  assert propagate.score_sequence(np.broadcast_to(masks[0], (8, 24, 24)), np.stack(masks))["J"] < 0.5


@requires_data("davis2016")
def test_script_reads_the_checkpoint_and_scores_against_the_baselines(tmp_path_factory):
  # A tracking-by-colorization run: its backbone sees grey frames (the pretext's backbone_input).
  workdir, _, _ = quick_run("colorization_tracking_convnet_mix.py", tmp_path_factory)
  results = propagate.evaluate(workdir, overrides={"evaluate.propagation.sequences": "blackswan",
                                                   "evaluate.propagation.size": "48",
                                                   "evaluate.propagation.pictures": "2",
                                                   "evaluate.propagation.max_frames": "12"})
  assert list(results["sequences"]) == ["blackswan"] and results["block"] == "block3"
  row = results["sequences"]["blackswan"]
  assert set(row) == set(propagate.METHODS)
  assert all(0.0 <= row[m][k] <= 1.0 for m in row for k in ("J", "F", "J&F"))
  assert results["settings"]["context"] == 20 and results["settings"]["top_k"] == 10
  # Identity: the first mask scored against every frame, computed here independently.
  from sslx.data import davis
  from tests.conftest import DATA_DIR
  seq = davis.load_sequence(DATA_DIR / "davis2016", "blackswan")
  identity = np.mean([propagate.region_similarity(seq.masks[0], m) for m in seq.masks[1:11]])  # 12 frames.
  assert row["identity"]["J"] == pytest.approx(identity)
  assert os.path.getsize(os.path.join(workdir, "eval", "propagate", "blackswan.jpg")) > 1000
  assert json.load(open(results["written_to"]))["mean"]["pixels"] == results["mean"]["pixels"]
  with pytest.raises(ValueError, match=r"no sequence 'swan'"):
    propagate.evaluate(workdir, overrides={"evaluate.propagation.sequences": "swan"})
  with pytest.raises(ValueError, match=r"max_frames 2: give 0 \(all frames\) or 3 or more"):
    propagate.evaluate(workdir, overrides={"evaluate.propagation.max_frames": "2"})
