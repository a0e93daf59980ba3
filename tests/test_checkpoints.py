import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sslx
from sslx import checkpoints, models, run
from sslx.data import image_ops


def test_load_backbone_embeds_raw_images_as_in_training(trained_workdir, sample_images):
  workdir, state, _ = trained_workdir
  backbone = sslx.load_backbone(workdir)
  assert backbone.step == 2 and backbone.config.pretext.name == "image.rotation"
  images = sample_images[0][:8]  # uint8, as read from disk.
  maps = backbone.module.apply(backbone.variables, backbone.prepare(images), train=False)
  assert maps["pooled"].shape[0] == 8 and models.block_names(maps)
  # The same as the trained state's backbone on the dataset-standardised images.
  config = backbone.config
  direct = models.get_backbone(config.model).apply(
      {"params": state.params["backbone"], "batch_stats": state.batch_stats["backbone"]},
      image_ops.normalize(jnp.asarray(images), tuple(config.normalize.mean), tuple(config.normalize.std)),
      train=False)
  np.testing.assert_allclose(maps["pooled"], direct["pooled"], rtol=1e-5, atol=1e-6)


def test_load_backbone_of_a_step_and_of_a_missing_one(trained_workdir):
  workdir, _, _ = trained_workdir
  assert sslx.load_backbone(workdir, step=1).step == 1
  with pytest.raises(FileNotFoundError, match="no checkpoint of step 7"):
    sslx.load_backbone(workdir, step=7)


def test_prepare_gives_a_per_frame_backbone_its_frames(trained_video_workdir):
  workdir, _, _ = trained_video_workdir
  backbone = sslx.load_backbone(workdir)
  clips = np.zeros((2, 5, 32, 32, 3), np.uint8)
  assert backbone.prepare(clips).shape == (10, 32, 32, 3)
  assert not run.takes_video(backbone.module)


def test_a_checkpoint_of_another_model_fails_in_one_line(trained_workdir, tmp_path):
  workdir, _, _ = trained_workdir
  loaded = checkpoints.load_run(workdir)
  config = loaded.config
  config.model.widths = (4, 8, 8)
  pretext, model = run.build_model(config)
  tx, _ = run.make_optimizer(config.optimizer, config.total_steps)
  target = jax.eval_shape(run.train_state_init_fn(config, model, pretext, tx), jax.random.PRNGKey(0))
  manager, step = checkpoints.latest_step(workdir)
  with pytest.raises(ValueError) as error:
    checkpoints.restore_state(manager, step, target, workdir=workdir)
  message = str(error.value)
  assert "does not fit this config's model" in message and "\n" not in message
  assert "strict" not in message
