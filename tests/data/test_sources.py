import numpy as np
import pytest
from PIL import Image

from sslx.data import image_ops, sources


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
  with pytest.raises(FileNotFoundError, match="does not exist"):
    sources.get_source(f"folder:{tmp_path}/nope", "train")
  (tmp_path / "train" / "cls").mkdir(parents=True)
  with pytest.raises(ValueError, match="no images"):
    sources.get_source(f"folder:{tmp_path}", "train")


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


def test_unprepared_tfds_dataset_fails_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="tfds build cifar10"):
    sources.get_source("tfds:cifar10", "train", data_dir=str(tmp_path))
