"""2D convolutions on CPU through oneDNN, the kernels PyTorch uses there.

XLA:CPU's own convolutions run at 40-60% of oneDNN's speed on this project's CPU machines
(README, "Performance against PyTorch"): its weight-gradient kernel most of all, but also the
forward and input-gradient passes. ``conv2d`` computes all three passes with oneDNN (NHWC
activations, as PyTorch's channels_last) through an XLA FFI custom call, so it runs inside
the jitted train step like any other op, and is differentiable by its custom VJP. Only fp32,
only on the CPU backend; ``sslx.models.conv.Conv`` picks it under ``model.conv_kernels``
("onednn"; "auto" where it is available) and checks it against XLA's convolution in tests.

The kernel (``onednn_conv.cc`` beside this file) is compiled on first use with the system's
C++ compiler against the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp`` wheels (pinned in
requirements.txt) and jaxlib's FFI headers, into ``$SSLX_CACHE_DIR`` (default
``~/.cache/sslx``), keyed by a hash of the source and of those versions; later processes load
the cached library. Compiling takes about 8 s.
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

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "onednn_conv.cc")
TARGET = "sslx_onednn_conv"
WHEELS = "onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"


def _locate(distribution: str, suffix: str) -> str:
  dist = importlib.metadata.distribution(distribution)
  for file in dist.files or ():
    if str(file).endswith(suffix):
      return str(dist.locate_file(file).resolve())
  raise FileNotFoundError(f"{suffix} not in {distribution}")


@functools.lru_cache(maxsize=None)
def _library() -> tuple[str | None, str]:
  """(path of the compiled kernel library, "") or (None, why it is unavailable)."""
  try:
    lib = _locate("onednn-cpu-gomp", "libdnnl.so.3")
    header = _locate("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
  except (importlib.metadata.PackageNotFoundError, FileNotFoundError) as e:
    return None, f"the oneDNN wheels are not installed ({e}): pip install {WHEELS} (pinned in requirements.txt)"
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    return None, "no C++ compiler found to build the kernel: install g++ (or set CXX)"
  include = os.path.dirname(os.path.dirname(os.path.dirname(header)))
  with open(SOURCE, "rb") as f:
    source = f.read()
  versions = f"{importlib.metadata.version('onednn-cpu-gomp')} {jax.__version__} {jax.lib.__version__}"
  digest = hashlib.sha256(source + versions.encode()).hexdigest()[:16]
  cache = os.environ.get("SSLX_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sslx")
  path = os.path.join(cache, f"onednn_conv_{digest}.so")
  if os.path.exists(path):
    return path, ""
  try:
    os.makedirs(cache, exist_ok=True)
    # Compile beside the target and rename: processes starting together never load a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
    os.close(fd)
  except OSError as e:
    return None, f"cannot write the kernel cache {cache} ({e}); set SSLX_CACHE_DIR to a writable folder"
  command = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", "-I", include,
             "-I", jax.ffi.include_dir(), SOURCE, os.path.dirname(lib) + "/libdnnl.so.3",
             f"-Wl,-rpath,{os.path.dirname(lib)}", "-o", tmp]
  done = subprocess.run(command, capture_output=True, text=True)
  if done.returncode != 0:
    os.unlink(tmp)
    errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()[-1:]
    return None, f"compiling {SOURCE} failed: {errors[0] if errors else done.returncode}"
  os.replace(tmp, path)
  logging.info("compiled the oneDNN convolution kernel into %s", path)
  return path, ""


@functools.lru_cache(maxsize=None)
def _register() -> str:
  path, why = _library()
  if path is None:
    return why
  handler = ctypes.cdll.LoadLibrary(path).SslxOnednnConv
  jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
  return ""


def unavailable_reason() -> str:
  """"" when oneDNN convolutions can run here (compiling and registering the kernel if needed),
  else why not, as one line naming the fix."""
  if jax.default_backend() != "cpu":
    return f"oneDNN convolutions run on the CPU backend only (this is {jax.default_backend()})"
  why = _register()
  return f"{why}; or set model.conv_kernels to 'taps' or 'xla'" if why else ""


def _call(pass_: int, a, b, out_shape, strides, padding):
  (pt, pb), (pl, pr) = padding
  return jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(out_shape, jnp.float32),
                          vmap_method="sequential")(
      a, b, **{"pass": np.int64(pass_)}, strides=np.asarray(strides, np.int64),
      padding=np.asarray([pt, pb, pl, pr], np.int64))


def output_shape(x_shape, kernel_shape, strides, padding):
  n, h, w, _ = x_shape
  kh, kw, _, cout = kernel_shape
  (pt, pb), (pl, pr) = padding
  return (n, (h + pt + pb - kh) // strides[0] + 1, (w + pl + pr - kw) // strides[1] + 1, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, kernel, strides: tuple[int, int], padding: tuple[tuple[int, int], tuple[int, int]]):
  """NHWC x HWIO fp32 convolution with explicit ``padding`` ((low, high) per spatial axis), as
  ``lax.conv_general_dilated``; call ``unavailable_reason()`` first (it registers the kernel)."""
  return _call(0, x, kernel, output_shape(x.shape, kernel.shape, strides, padding), strides, padding)


def _conv2d_fwd(x, kernel, strides, padding):
  return conv2d(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, residuals, g):
  x, kernel = residuals
  dx = _call(1, g, kernel, x.shape, strides, padding)
  dkernel = _call(2, x, g, kernel.shape, strides, padding)
  return dx, dkernel


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
