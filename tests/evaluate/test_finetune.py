import jax.numpy as jnp
import numpy as np

from sslx.evaluate import finetune


def test_clip_probabilities_are_averaged_not_logits():
  # One confident clip for class 0, two milder ones for class 1: the mean of the
  # probabilities picks class 1, the mean of the logits would pick class 0.
  logits = np.array([[[10.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 3.0, 0.0]]], np.float32)
  probs = np.asarray(finetune.average_clip_probabilities(jnp.asarray(logits)))
  softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, softmax.mean(axis=1), rtol=1e-5)
  assert probs.argmax(-1)[0] == 1 and logits.mean(axis=1).argmax(-1)[0] == 0


def test_markdown_table_names_both_and_the_gain():
  row = {"video_top1": 0.5, "clip_top1": 0.25, "train_loss": 1.0}
  table = finetune.markdown_table({"media": "video", "num_clips": 10, "pretrained": row,
                                   "random_init": dict(row, video_top1=0.25)})
  assert "| random init | 25.00 | 25.00 | 1.000 |" in table and "| gain (points) | +25.00 | +0.00 | |" in table
