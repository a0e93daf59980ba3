import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sslx import configs
from sslx.data import image_ops, sources
from tests.conftest import REPO


def _write(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def test_sample_is_real_cifar_subset():
  train, test = sources.get_source("sample", "train"), sources.get_source("sample", "test")
  assert (len(train), len(test)) == (2000, 1000)
  assert train.num_classes == 10 and train.classes[0] == "airplane" and train.classes[-1] == "truck"
  image = image_ops.decode(train[0]["image"])
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 10


def test_folder_labels_greyscale_and_unlabeled(tmp_path):
  _write(tmp_path / "train" / "cats" / "a.png", np.full((8, 8, 3), 200, np.uint8))
  _write(tmp_path / "train" / "dogs" / "b.jpg", np.full((8, 6), 50, np.uint8))  # Greyscale.
  _write(tmp_path / "train" / "loose.png", np.zeros((5, 5, 3), np.uint8))
  (tmp_path / "train" / "cats" / "notes.txt").write_text("not an image")
  source = sources.get_source(f"folder:{tmp_path}", "train")
  assert len(source) == 3 and source.classes == ["cats", "dogs"]
  assert [source[i]["label"] for i in range(3)] == [0, 1, -1]
  grey = image_ops.decode(source[1]["image"])
  assert grey.shape == (8, 6, 3) and (grey[..., 0] == grey[..., 2]).all()


def test_missing_and_empty_folders_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"^dataset folder:{tmp_path}/nope not found at {tmp_path}/nope: "):
    sources.get_source(f"folder:{tmp_path}/nope", "train")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.FolderSource(tmp_path / "nope", "train")
  (tmp_path / "train" / "cls").mkdir(parents=True)
  with pytest.raises(ValueError, match="no images"):
    sources.get_source(f"folder:{tmp_path}", "train")
  with pytest.raises(FileNotFoundError, match="has no split 'test'"):
    sources.get_source(f"folder:{tmp_path}", "test")


def test_the_data_directory_is_the_config_then_the_environment_then_dot_data(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("SSLX_DATA_DIR", raising=False)
  assert sources.data_root() == tmp_path / "data"
  assert sources.tfds_data_dir() is None  # TFDS keeps its own default unless told.
  monkeypatch.setenv("SSLX_DATA_DIR", str(tmp_path / "env"))
  assert sources.data_root() == tmp_path / "env" and sources.tfds_data_dir() == str(tmp_path / "env")
  assert sources.data_root("cfg") == tmp_path / "cfg" and sources.tfds_data_dir("cfg") == "cfg"
  assert sources.folder_path("cifar10") == tmp_path / "env" / "cifar10"
  assert sources.folder_path("cifar10", "/d") == sources.Path("/d/cifar10")
  assert sources.folder_path(str(tmp_path / "x"), "/d") == tmp_path / "x"  # Absolute: as is.
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert sources.folder_path("~/x") == tmp_path / "home" / "x"


def test_folder_names_resolve_in_the_data_directory(tmp_path, monkeypatch):
  _write(tmp_path / "env" / "mine" / "train" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
  _write(tmp_path / "cfg" / "mine" / "train" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
  _write(tmp_path / "cfg" / "mine" / "train" / "b" / "0.png", np.zeros((4, 4, 3), np.uint8))
  monkeypatch.setenv("SSLX_DATA_DIR", str(tmp_path / "env"))
  assert sources.get_source("folder:mine", "train").paths == [str(tmp_path / "env" / "mine" / "train" / "a" / "0.png")]
  config = configs.base()
  config.dataset, config.data_dir = "folder:mine", str(tmp_path / "cfg")
  assert sources.from_config(config, "train").classes == ["a", "b"]


@pytest.mark.parametrize("how", ["env", "config", "default"])
def test_a_missing_folder_fails_in_one_line_naming_where_it_looked(tmp_path, monkeypatch, how):
  monkeypatch.chdir(tmp_path)
  monkeypatch.delenv("SSLX_DATA_DIR", raising=False)
  data_dir = None
  if how == "env":
    monkeypatch.setenv("SSLX_DATA_DIR", str(tmp_path / "env"))
  elif how == "config":
    data_dir = str(tmp_path / "cfg")
  root = {"env": tmp_path / "env", "config": tmp_path / "cfg", "default": tmp_path / "data"}[how]
  with pytest.raises(FileNotFoundError) as error:
    sources.get_source("folder:cifar10", "train", data_dir)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"dataset folder:cifar10 not found at {root / 'cifar10'} ")
  assert message.endswith("put the data there, set SSLX_DATA_DIR, or pass --config.data_dir=DIR")
  assert {"env": "from $SSLX_DATA_DIR", "config": "set by data_dir", "default": "the default ./data"}[how] in message


def _copy_sample_images(root, per_class: int, classes=("airplane", "bird")):
  """``per_class`` real CIFAR-10 JPEGs of each class from the embedded sample, as root/<class>/."""
  for name in classes:
    (root / name).mkdir(parents=True)
    for path in sorted((sources.SAMPLE_DIR / "train" / name).iterdir())[:per_class]:
      shutil.copy(path, root / name / path.name)


def test_image_folders_without_splits_are_split_every_kth_image_per_class(tmp_path):
  _copy_sample_images(tmp_path / "imgs", per_class=9)
  _write(tmp_path / "imgs" / "loose.png", np.zeros((32, 32, 3), np.uint8))  # Unlabeled, at the top.
  train = sources.get_source(f"folder:{tmp_path / 'imgs'}", "train")
  test = sources.get_source(f"folder:{tmp_path / 'imgs'}", "test")
  assert isinstance(train, sources.FolderSource) and train.classes == test.classes == ["airplane", "bird"]
  # Per class, sorted by name: the 4th and 8th of 9 are test (the video rule), the unlabeled one train.
  names = lambda source: [(source.labels[i], p.rsplit("/", 1)[1]) for i, p in enumerate(source.paths)]  # noqa: E731
  assert names(test) == [(0, "0003.jpg"), (0, "0007.jpg"), (1, "0003.jpg"), (1, "0007.jpg")]
  assert len(train) == 2 * 7 + 1 and names(train)[-1] == (-1, "loose.png")
  assert not set(train.paths) & set(test.paths)
  assert sources.get_source(f"folder:{tmp_path / 'imgs'}", "test").paths == test.paths  # Deterministic.
  assert image_ops.decode(test[0]["image"]).shape == (32, 32, 3)
  # The rule's period is the config's test_every (video configs: video.test_every).
  config = configs.base()
  config.dataset, config.test_every = f"folder:{tmp_path / 'imgs'}", 3
  assert [n for _, n in names(sources.from_config(config, "test"))] == ["0002.jpg", "0005.jpg", "0008.jpg"] * 2
  with pytest.raises(ValueError, match="test_every is 1"):
    sources.get_source(f"folder:{tmp_path / 'imgs'}", "train", test_every=1)


def test_no_path_outside_the_repository_in_the_package_or_the_experiments():
  """Users have no ../shared beside their clone: configs name folders of the data directory."""
  paths = [REPO / "sslx" / "configs.py"] + sorted((REPO / "sslx" / "data").rglob("*.[pm][yd]")) + sorted(
      (REPO / "experiments").glob("*.py"))
  offenders = [f"{path.relative_to(REPO)}:{n}" for path in paths
               for n, line in enumerate(path.read_text().splitlines(), 1) if "../shared" in line]
  assert not offenders, offenders
  for path in sorted((REPO / "experiments").glob("*.py")):
    dataset = configs.load(path).dataset
    assert not dataset.startswith("folder:") or not dataset[len("folder:"):].startswith(("/", ".", "~")), path


def test_sslx_train_without_the_data_fails_in_one_line_before_compiling(tmp_path):
  (tmp_path / "empty").mkdir()
  env = dict(os.environ, SSLX_DATA_DIR=str(tmp_path / "empty"))
  result = subprocess.run(
      [sys.executable, "-m", "sslx.train", "--config", str(REPO / "experiments" / "rotation_convnet_cifar10.py"),
       "--workdir", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) <= 3, result.stderr
  assert lines[-1].startswith(f"sslx-train: error: dataset folder:cifar10 not found at "
                              f"{tmp_path / 'empty' / 'cifar10'} (data dir {tmp_path / 'empty'}, from $SSLX_DATA_DIR)")


def test_unknown_spec_fails_clearly():
  with pytest.raises(ValueError, match="unknown dataset spec 'cifar10'.*'tfds:NAME'"):
    sources.get_source("cifar10", "train")


def test_tfds_source_through_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    source = sources.get_source("tfds:cifar10", "train")
    assert len(source) == 12 and source.num_classes == 10
    record = source[3]
    assert image_ops.decode(record["image"]).shape == (32, 32, 3)
    assert 0 <= record["label"] < 10


def test_unprepared_tfds_dataset_fails_clearly(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    sources.get_source("tfds:cifar10", "train", data_dir=str(tmp_path))
  monkeypatch.setenv("SSLX_DATA_DIR", str(tmp_path / "env"))  # The data directory is TFDS's too.
  with pytest.raises(FileNotFoundError, match=f"not readable in data_dir='{tmp_path / 'env'}'"):
    sources.get_source("tfds:cifar10", "train")
