"""2D and 3D convolutions on CPU through oneDNN, the kernels PyTorch uses there.

XLA:CPU's own convolutions run at 40-60% of oneDNN's speed on this project's CPU machines
(README, "Performance against PyTorch"): its weight-gradient kernel most of all, but also the
forward and input-gradient passes. ``conv`` computes all three passes of a 2D or 3D convolution
with oneDNN (NHWC / NDHWC activations, as PyTorch's channels_last / channels_last_3d) through an
XLA FFI custom call, so it runs inside the jitted train step like any other op, and is
differentiable by its custom VJP. Only fp32,
only on the CPU backend; ``sslx.models.conv.Conv`` picks it under ``model.conv_kernels``
("onednn"; "auto" where it is ready) and checks it against XLA's convolution in tests.

The kernel (``onednn_conv.cc`` beside this file) is compiled with the system's C++ compiler
against the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels (pinned in requirements.txt)
and jaxlib's FFI headers, into ``$SSLX_CACHE_DIR`` (default ``~/.cache/sslx``), keyed by a hash
of the source and of those versions. Compiling takes about 8 s, so it happens only when asked
for: ``prepare()`` (sslx-train and the benchmarks call it at start-up, through
``conv.prepare_kernels``; an explicit ``model.conv_kernels="onednn"`` calls it too). ``ready()``
never compiles: it loads a cached build if there is one, and "auto" uses oneDNN only then, so
a model's first ``init`` in a notebook neither runs g++ nor writes into the user's cache.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
TARGET = "sslx_onednn_conv"
WHEELS = "onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"

_lock = threading.Lock()
_loaded: list[str] = []  # The path of the library registered in this process, once it is.


def _locate(distribution: str, suffix: str) -> str:
  dist = importlib.metadata.distribution(distribution)
  for file in dist.files or ():
    if str(file).endswith(suffix):
      return str(dist.locate_file(file).resolve())
  raise FileNotFoundError(f"{suffix} not in {distribution}")


def cache_dir() -> str:
  """Where compiled kernels are kept, shared by every process of this user."""
  return os.environ.get("SSLX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sslx")


@functools.lru_cache(maxsize=None)
def _build() -> tuple[str, str, str] | str:
  """(libdnnl.so.3, the include folder, the library's name in the cache) or why the wheels are missing."""
  try:
    lib = _locate("onednn-cpu-gomp", "libdnnl.so.3")
    header = _locate("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
  except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as e:
    return f"the oneDNN wheels are not installed ({e}): pip install {WHEELS} (pinned in requirements.txt)"
  include = os.path.dirname(os.path.dirname(os.path.dirname(header)))
  with open(SOURCE, "rb") as f:
    source = f.read()
  versions = f"{importlib.metadata.version('onednn-cpu-gomp')} {jax.__version__} {jax.lib.__version__}"
  digest = hashlib.sha256(source + versions.encode()).hexdigest()[:16]
  return lib, include, f"onednn_conv_{digest}.so"


def _load(path: str) -> bool:
  """Registers the kernel of the library at ``path``; False if it does not load (e.g. truncated)."""
  try:
    handler = ctypes.cdll.LoadLibrary(path).SslxOnednnConv
  except (OSError, AttributeError):
    return False
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  _loaded.append(path)
  return True


def ready() -> bool:
  """Whether the kernel is registered in this process, loading a cached build of this exact source
  and versions if there is one; never compiles, never writes."""
  with _lock:
    if _loaded:
      return True
    build = _build()
    if isinstance(build, str):
      return False
    path = os.path.join(cache_dir(), build[2])
    return os.path.exists(path) and _load(path)


def _compile(lib: str, include: str, path: str) -> str:
  """Compiles the kernel into ``path``: "" or why it failed, as one line naming the fix."""
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    return "no C++ compiler found to build the kernel: install g++ (or set CXX)"
  cache = os.path.dirname(path)
  try:
    os.makedirs(cache, exist_ok=True)
    # Compile beside the target and rename: processes starting together never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
  except OSError as e:
    return f"cannot write the kernel cache {cache} ({e}); set SSLX_CACHE_DIR to a writable folder"
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", "-I", include,
             "-I", jax.ffi.include_dir(), SOURCE, os.path.dirname(lib) + "/libdnnl.so.3",
             f"-Wl,-rpath,{os.path.dirname(lib)}", "-o", tmp]
  logging.info("compiling the oneDNN convolution kernel into %s (about 8 s)", path)
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    os.unlink(tmp)
    errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()[-1:]
    return f"compiling {SOURCE} failed: {errors[0] if errors else done.returncode}"
  os.replace(tmp, path)
  return ""


@functools.lru_cache(maxsize=None)
def _prepare() -> str:
  if ready():
    return ""
  build = _build()
  if isinstance(build, str):
    return build
  lib, include, name = build
  path = os.path.join(cache_dir(), name)
  with _lock:
    if _loaded:  # Another thread built it meanwhile.
      return ""
    why = _compile(lib, include, path)
    if not why and not _load(path):
      why = f"the compiled kernel {path} does not load: delete it and run again"
  return why


def prepare() -> str | None:
  """Builds the kernel if no cached build exists (about 8 s) and registers it: None when oneDNN
  convolutions can run in this process, else why not, as one line naming the fix. Call it
  before tracing (``conv.prepare_kernels`` does, with a line saying which kernels run)."""
  if jax.default_backend() != "cpu":
    return f"oneDNN convolutions run on the CPU backend only (this is {jax.default_backend()})"
  return _prepare() or None


def _call(pass_: int, a, b, out_shape, strides, padding):
  flat_padding = [p for low_high in padding for p in low_high]  # (low, high) per spatial axis.
  return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")(
      a, b, **{"pass": np.int64(pass_)}, strides=np.asarray(strides, np.int64),
      padding=np.asarray(flat_padding, np.int64))


def output_shape(x_shape, kernel_shape, strides, padding):
  spatial = [(size + low + high - k) // s + 1
             for size, k, s, (low, high) in zip(x_shape[1:-1], kernel_shape[:-2], strides, padding)]
  return (x_shape[0], *spatial, kernel_shape[-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, kernel, strides: tuple[int, ...], padding: tuple[tuple[int, int], ...]):
  """Channels-last fp32 convolution, 2D (NHWC x HWIO) or 3D (NDHWC x DHWIO), with explicit
  ``padding`` ((low, high) per spatial axis), as ``lax.conv_general_dilated``; call
  ``prepare()`` first (it registers the kernel)."""
  return _call(0, x, kernel, output_shape(x.shape, kernel.shape, strides, padding), strides, padding)


def _conv_fwd(x, kernel, strides, padding):
  return conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  dx = _call(1, g, kernel, x.shape, strides, padding)
  dkernel = _call(2, x, g, kernel.shape, strides, padding)
  return dx, dkernel


conv.defvjp(_conv_fwd, _conv_bwd)
