"""Shared fixtures: real images from the embedded sample, tiny configs."""

import atexit
import os
import pickle
import shutil
import tempfile
from pathlib import Path

# The data directory of folder:NAME datasets (sslx/data/sources.py): the data beside the
# repository unless SSLX_DATA_DIR names another; processes that tests start inherit it. Tests
# that read more than the embedded samples are marked ``requires_data``.
DATA_DIR = Path(os.environ.setdefault("SSLX_DATA_DIR",
                                      str(Path(__file__).resolve().parents[2] / "shared" / "data")))

# One persistent XLA compilation cache for the test session, set before jax is imported and
# inherited by the sslx-train and worker processes tests start: a tiny step compiled once is
# loaded by every later process that builds the same program (the resume, interruption and
# multi-process tests run the same step in several processes; about half their time). Removed
# at exit; a JAX_COMPILATION_CACHE_DIR of the user's own is kept and used instead.
_XLA_CACHE = tempfile.mkdtemp(prefix="sslx-tests-xla-cache-")
atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _XLA_CACHE)
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
# Tests run a few steps of many programs, so compiling is most of their time: XLA's CPU backend
# at optimisation level 1 compiles a training step up to twice as fast as at its default and
# runs it a little slower (values agree to rounding; level 0 gave NaN gradients in fused
# audio-visual steps, see sslx.run.jit_once). Processes that tests start inherit it; those that
# set their own XLA_FLAGS keep it with ``with_xla_flags``.
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()


def with_xla_flags(*flags: str) -> str:
  """The tests' XLA_FLAGS with ``flags`` added (for a process that sets its own devices)."""
  return " ".join([os.environ["XLA_FLAGS"], *flags])

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from sslx import process, train
from sslx.data import image_ops, sources  # noqa: E402

# As sslx-train does, before any computation: deterministic GPU kernels, so the
# exact-resume tests hold on a GPU too.
process.request_deterministic_gpu_ops()

REPO = Path(__file__).resolve().parents[1]


def requires_data(*names):
  """Skips a test when a folder it reads is missing from the data directory (a clone without it)."""
  missing = [DATA_DIR / name for name in names if not (DATA_DIR / name).is_dir()]
  return pytest.mark.skipif(bool(missing), reason=f"needs {missing[0] if missing else ''} (set SSLX_DATA_DIR)")


@pytest.fixture(scope="session")
def sample_images():
  """64 real CIFAR-10 train images (uint8, 32x32x3) and their labels, 6-7 per class."""
  source = sources.get_source("sample", "train")
  indices = np.linspace(0, len(source) - 1, 64).astype(int)
  records = [source[int(i)] for i in indices]
  images = np.stack([image_ops.decode(r["image"]) for r in records])
  return images, np.array([r["label"] for r in records])


def tiny_config(name="rotation_convnet_sample.py"):
  """An experiment config in quick mode."""
  from sslx import configs
  config = configs.load(REPO / "experiments" / name, "quick")
  config.progress_bar = False
  return config


def tiny_video_config():
  """A quick OPN run on the embedded clip sample: per-frame ConvNet, 7-frame windows."""
  from sslx import configs
  from sslx.pretexts.video import opn
  c = configs.base_video()
  c.pretext = opn.default_config()
  c.pretext.crop_size, c.pretext.max_jitter = 28, 2
  c.video.num_frames = 7
  c = configs.quick_video(c)
  c.progress_bar = False
  return c


_SHARED_RUNS: dict = {}


def shared_run(key: str, make_config, tmp_path_factory):
  """A short run trained once per test session, also across xdist's worker processes: (workdir,
  final state, metrics). The first process to ask trains it into a folder the workers share, under
  a file lock, and pickles its final state and metrics beside it; every process then works on its
  own copy of the workdir, since tests write into it (``eval/``). The state comes back as numpy."""
  if key not in _SHARED_RUNS:
    import filelock
    import jax
    from sslx import train
    # xdist gives each worker basetemp/popen-gwN; their parent is this session's and shared.
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "shared_runs" / key
    shared.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{shared}.lock"):
      if not (shared / "final.pkl").exists():
        state, metrics = train.train(make_config(), str(shared / "workdir"))
        with open(shared / "final.pkl.tmp", "wb") as f:
          pickle.dump((jax.device_get(state), metrics), f)
        os.replace(shared / "final.pkl.tmp", shared / "final.pkl")
    workdir = tmp_path_factory.mktemp(key)
    shutil.copytree(shared / "workdir", workdir, dirs_exist_ok=True)
    with open(shared / "final.pkl", "rb") as f:
      state, metrics = pickle.load(f)
    _SHARED_RUNS[key] = (str(workdir), state, metrics)
  return _SHARED_RUNS[key]


def quick_run(name, tmp_path_factory):
  """The two-step quick run of ``experiments/<name>`` (see ``shared_run``). The every-config
  test and the evaluation scripts' tests share it."""
  return shared_run(name[:-len(".py")], lambda: tiny_config(name), tmp_path_factory)


@pytest.fixture(scope="session")
def trained_video_workdir(tmp_path_factory):
  """A two-step quick video run: its workdir, final state and metrics."""
  return shared_run("video_run", tiny_video_config, tmp_path_factory)


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory):
  """A two-step quick rotation run: its workdir, final state and metrics (the every-config test's)."""
  return quick_run("rotation_convnet_sample.py", tmp_path_factory)


@pytest.fixture(scope="session")
def trained_av_workdir(tmp_path_factory):
  """Two steps of L3-Net correspondence in quick mode (the shipped talking-face sample): its workdir."""
  return quick_run("correspondence_l3_grid.py", tmp_path_factory)[0]


def train_until_killed(config, workdir, monkeypatch, *, kill_at_batch: int, batch_size=None):
  """Runs train.train and kills it while the ``kill_at_batch``-th training batch is assembled
  (counting only batches of ``batch_size`` rows when given, so other passes don't count)."""
  from sslx.data import pipeline
  real_to_global, calls = pipeline.to_global, []

  def crashing_to_global(batch, mesh):
    rows = len(batch["video"] if "video" in batch else batch["image"])
    if batch_size is None or rows == batch_size:
      calls.append(1)
      if len(calls) == kill_at_batch:
        raise KeyboardInterrupt("simulated kill")
    return real_to_global(batch, mesh)

  monkeypatch.setattr(pipeline, "to_global", crashing_to_global)
  with pytest.raises(KeyboardInterrupt):
    train.train(config, workdir)
  monkeypatch.setattr(pipeline, "to_global", real_to_global)

