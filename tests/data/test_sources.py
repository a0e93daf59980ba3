import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslx import configs
from sslx.data import image_ops, sources
from tests.conftest import DATA_DIR, REPO, requires_data


def _write(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)


def test_sample_is_real_cifar_subset():
  train, test = sources.get_source("sample", "train"), sources.get_source("sample", "test")
  assert (len(train), len(test)) == (2000, 1000)
  assert train.num_classes == 10 and train.classes[0] == "airplane" and train.classes[-1] == "truck"
  image = image_ops.decode(train[0]["image"])
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 10
  assert np.bincount(train.labels).tolist() == [200] * 10 and np.bincount(test.labels).tolist() == [100] * 10
  assert all(archive.stat().st_size < 2**20 for archive in sources.SAMPLE_ARCHIVES)  # No large file in the repo.
  assert not set(train.paths) & set(test.paths)


def test_zip_image_source_reads_as_the_unpacked_folder_does(tmp_path):
  """The same classes, order, labels and bytes as a FolderSource of the same images unpacked;
  members outside <split>/<class>/<image> are ignored; a missing archive or split is one line."""
  import zipfile
  _copy_sample_images(tmp_path / "imgs" / "train", per_class=3, classes=("bird", "airplane"))
  with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
    for path in sorted((tmp_path / "imgs").rglob("*.jpg"), reverse=True):  # Stored out of order.
      z.write(path, path.relative_to(tmp_path / "imgs").as_posix())
    z.writestr("train/notes.txt", "not an image")
  packed = sources.ZipImageSource(tmp_path / "imgs.zip", "train")
  unpacked = sources.FolderSource(tmp_path / "imgs", "train")
  assert packed.classes == unpacked.classes == ["airplane", "bird"] and packed.labels == unpacked.labels
  assert [packed[i]["image"] for i in range(6)] == [unpacked[i]["image"] for i in range(6)]
  assert packed[0]["path"] == f"{tmp_path / 'imgs.zip'}/train/airplane/0000.jpg"
  for name in ("bird", "airplane"):  # One archive per class, as the shipped sample: the same records.
    with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as z:
      for path in sorted((tmp_path / "imgs" / "train" / name).glob("*.jpg")):
        z.write(path, path.relative_to(tmp_path / "imgs").as_posix())
  per_class = sources.ZipImageSource([tmp_path / "bird.zip", tmp_path / "airplane.zip"], "train")
  assert per_class.labels == packed.labels and [per_class[i]["image"] for i in range(6)] == \
      [packed[i]["image"] for i in range(6)]
  with pytest.raises(ValueError, match=r"^no images for split 'test' in .*imgs\.zip: expected test/<class>/<image>"):
    sources.ZipImageSource(tmp_path / "imgs.zip", "test")
  with pytest.raises(FileNotFoundError, match="rebuild it with python -m sslx.data.make_image_sample$"):
    sources.ZipImageSource(tmp_path / "missing.zip", "train")


def test_sample_av_is_sixteen_grid_clips_with_sound_in_four_command_classes():
  from sslx.data import audio, video
  train, test = sources.get_source("sample_av", "train"), sources.get_source("sample_av", "test")
  assert isinstance(train, video.VideoFolderSource) and (len(train), len(test)) == (12, 4)
  assert train.classes == test.classes == ["bin", "lay", "place", "set"]
  assert np.bincount(train.labels).tolist() == [3] * 4 and np.bincount(test.labels).tolist() == [1] * 4
  assert not set(train.paths) & set(test.paths)
  assert all(audio.has_audio(p) for p in train.paths + test.paths)
  assert audio.check_audio(test) == {"audio": 4, "no_audio": 0}
  assert (video.SAMPLE_AV_DIR / "SOURCE.md").is_file()


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
  sample = sources.get_source("sample", "train")
  for name in classes:
    (root / name).mkdir(parents=True)
    indices = [i for i, label in enumerate(sample.labels) if sample.classes[label] == name][:per_class]
    for i in indices:
      record = sample[i]
      (root / name / record["path"].rsplit("/", 1)[1]).write_bytes(record["image"])


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


# --- Labels from a CSV (GRID's labels.csv beside its flat s1/ folder). ---------------------------


@requires_data("grid_av")
def test_grid_s1_takes_its_command_labels_from_labels_csv_above_it():
  config = configs.base_av()  # folder:grid_av/s1, labels.csv, column command.
  train, test = sources.from_config(config, "train"), sources.from_config(config, "test")
  assert (len(train), len(test)) == (45, 15) and not set(train.paths) & set(test.paths)
  assert train.classes == test.classes == ["bin", "lay", "place", "set"]
  assert train.label_file == test.label_file == DATA_DIR / "grid_av" / "labels.csv"
  for source in (train, test):  # GRID's file-name code: its 1st letter is the command's (b/l/p/s).
    assert all(source.classes[y][0] == Path(p).name[0] for p, y in zip(source.paths, source.labels))
  assert np.bincount(test.labels).tolist() == [3, 4, 4, 4]  # Every 4th of the sorted 60 clips.


@requires_data("grid_av", "grid_av_vid2speech")
def test_any_column_of_the_csv_labels_the_clips():
  colour = sources.get_source("folder:grid_av/s1", "train", label_file="labels.csv", label_column="color")
  assert colour.classes == ["blue", "green", "red", "white"] and len(colour) == 45
  assert all(colour.classes[y][0] == Path(p).name[1] for p, y in zip(colour.paths, colour.labels))
  # A manifest in the clips' own folder, naming them bare.
  flat = sources.get_source("folder:grid_av_vid2speech", "test", label_file="manifest.csv", label_column="command")
  assert len(flat) and min(flat.labels) >= 0 and flat.classes == ["bin", "lay", "place", "set"]
  # Evaluation overrides: evaluate.label_column alone reads the run's file for another column.
  config = configs.base_av()
  config.evaluate.label_column = "color"
  assert sources.from_config(config, "test", evaluation=True).classes == colour.classes
  assert sources.from_config(config, "test").classes[0] == "bin"  # Training keeps its own.
  config.evaluate.label_file = ""  # The class folders (s1 has none): every clip unlabeled.
  assert set(sources.from_config(config, "test", evaluation=True).labels) == {-1}


def test_the_shipped_av_sample_keeps_its_class_folders_under_base_av():
  source = sources.from_config(configs.quick_av(configs.base_av()), "train")
  assert source.label_file is None and source.classes == ["bin", "lay", "place", "set"] and len(source) == 12


def _clips_with_csv(tmp_path, rows):
  """A data directory with folder set/clips of 8 empty .mp4 files a..h and set/labels.csv."""
  clips = tmp_path / "data" / "set" / "clips"
  clips.mkdir(parents=True)
  for name in "abcdefgh":
    (clips / f"{name}.mp4").write_bytes(b"")
  (tmp_path / "data" / "set" / "labels.csv").write_text("file,command\n" + "".join(f"{f},{c}\n" for f, c in rows))
  return str(tmp_path / "data")


def test_csv_rows_match_clips_by_path_from_the_csv_folder_unlisted_clips_unlabeled(tmp_path):
  rows = [("clips/a.mp4", "go"), ("clips/b.mp4", "stop"), ("./clips/c.mp4", "go"), ("clips/d.mp4", "wait"),
          ("clips/e.mp4", ""), ("clips/f.mp4", "go"), ("clips/g.mp4", "stop"), ("elsewhere/z.mp4", "zzz")]
  data_dir = _clips_with_csv(tmp_path, rows)
  train = sources.get_source("folder:set/clips", "train", data_dir, label_file="labels.csv", label_column="command")
  test = sources.get_source("folder:set/clips", "test", data_dir, label_file="labels.csv", label_column="command")
  # Classes: the sorted values of the folder's listed clips, whichever split holds them ("wait": test only).
  assert train.classes == test.classes == ["go", "stop", "wait"]
  assert [Path(p).name for p in test.paths] == ["d.mp4", "h.mp4"] and test.labels == [2, -1]  # h unlisted.
  assert train.labels == [0, 1, 0, -1, 0, 1]  # a b c e(empty value) f g.
  by_path = sources.get_source(f"folder:{tmp_path / 'data' / 'set' / 'clips'}", "test", "/elsewhere",
                               label_file=str(tmp_path / "data" / "set" / "labels.csv"), label_column="command")
  assert by_path.labels == test.labels  # An absolute label_file, from a folder outside the data directory.


def test_label_file_errors_are_one_line(tmp_path):
  data_dir = _clips_with_csv(tmp_path, [("clips/a.mp4", "go")])
  (tmp_path / "labels.csv").write_text("file,command\nset/clips/a.mp4,go\n")  # Above the data directory.
  get = lambda split="train", **kw: sources.get_source("folder:set/clips", split, data_dir, **kw)  # noqa: E731
  errors = [
      (FileNotFoundError, "label file nope.csv not found in .*/set/clips or any folder above it up to the data "
                          "directory .*/data: put it there", dict(label_file="nope.csv", label_column="command")),
      (ValueError, r"has no column 'colour' \(columns: file, command\): set label_column to one of them",
       dict(label_file="labels.csv", label_column="colour")),
      (ValueError, "needs a label_column", dict(label_file="labels.csv", label_column=None)),
  ]
  for kind, message, kwargs in errors:
    with pytest.raises(kind, match=message) as error:
      get(**kwargs)
    assert "\n" not in str(error.value)
  # The search stops at the data directory: tmp_path/labels.csv, one level above, is not read.
  (tmp_path / "data" / "set" / "labels.csv").unlink()
  with pytest.raises(FileNotFoundError, match="not found in"):
    get(label_file="labels.csv", label_column="command")
  (tmp_path / "data" / "labels.csv").write_text("file,command\nother/a.mp4,go\n")
  with pytest.raises(ValueError, match=r"labels none of the files under .*/set/clips \(its 'file' paths, e.g. "
                                       r"'other/a.mp4', are relative to .*/data\)"):
    get(label_file="labels.csv", label_column="command")
  (tmp_path / "data" / "notes.csv").write_text("path,command\na.mp4,go\n")
  with pytest.raises(ValueError, match="has no 'file' column"):
    get(label_file="notes.csv", label_column="command")
  _write(tmp_path / "data" / "imgs" / "a" / "0.png", np.zeros((4, 4, 3), np.uint8))
  with pytest.raises(ValueError, match="labels clips, but dataset folder:imgs holds images"):
    sources.get_source("folder:imgs", "train", data_dir, label_file="labels.csv", label_column="command")


def test_mix_reads_several_datasets_as_one_with_their_classes_apart():
  one, two = sources.get_source("sample_av", "train"), sources.get_source("sample_video", "train")
  mixed = sources.get_source("mix:sample_av,sample_video", "train")
  assert len(mixed) == len(one) + len(two) and mixed.num_classes == one.num_classes + two.num_classes
  assert mixed.classes[0] == f"sample_av/{one.classes[0]}" and mixed.classes[-1] == f"sample_video/{two.classes[-1]}"
  assert mixed[0]["video"] == one[0]["video"] and mixed[0]["label"] == one[0]["label"]
  last = len(mixed) - 1
  assert mixed[last]["video"] == two[len(two) - 1]["video"]
  assert mixed[last]["label"] == two[len(two) - 1]["label"] + one.num_classes
  assert mixed.paths == one.paths + two.paths and sources.holds_video(mixed)
  assert len(sources.get_source("mix:sample_av,sample_video", "test")) == 4 + 11
  with pytest.raises(ValueError, match=r"mix: needs at least two datasets"):
    sources.get_source("mix:sample_av", "train")
  with pytest.raises(ValueError, match=r"mixes clips and images"):
    sources.get_source("mix:sample_av,sample", "train")
