"""oneDNN's kernel is built only when asked for (issue #18): never inside a model's first trace."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx.models import conv, onednn
from tests.conftest import REPO, with_xla_flags
from tests.models.test_conv import _require_onednn

# A g++ / c++ that leaves a mark and fails: any compile a process attempts shows.
FAKE_COMPILER = """#!/bin/sh
echo "$0 $*" >> "{marker}"
exit 1
"""

# Prints, as JSON, what the default model ran with and whether oneDNN was ready.
FIRST_USE = """
import json, sys
import jax, jax.numpy as jnp
from sslx import configs, models
from sslx.models import conv, onednn
backbone = models.get_backbone(configs.base().model)
x = jnp.zeros((2, 32, 32, 3))
variables = backbone.init(jax.random.PRNGKey(0), x, train=False)
jax.block_until_ready(backbone.apply(variables, x, train=False))
hlo = jax.jit(lambda v: backbone.apply(v, x, train=False)).lower(variables).as_text()
print(json.dumps({"ready": onednn.ready(), "auto": conv.resolve_kernels("auto"),
                  "custom_call": onednn.TARGET in hlo}))
"""


def _fake_compilers(tmp_path) -> tuple[dict, str]:
  """An environment whose PATH finds a fake g++ and c++ first (and no CXX), and their marker file."""
  bin_dir, marker = tmp_path / "bin", tmp_path / "compiled"
  bin_dir.mkdir()
  for name in ("g++", "c++"):
    (bin_dir / name).write_text(FAKE_COMPILER.format(marker=marker))
    (bin_dir / name).chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "CXX"}
  env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", JAX_PLATFORMS="cpu")
  return env, str(marker)


def _first_use(env) -> dict:
  result = subprocess.run([sys.executable, "-c", FIRST_USE], capture_output=True, text=True, timeout=600,
                          env=env, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_fresh_processs_first_init_and_apply_compile_nothing(tmp_path):
  env, marker = _fake_compilers(tmp_path)
  cache = tmp_path / "cache"
  cache.mkdir()
  report = _first_use(dict(env, SSLX_CACHE_DIR=str(cache)))
  # The default config ("auto"), no cached build: the tap matmuls, no g++, nothing in the cache.
  assert report == {"ready": False, "auto": "taps", "custom_call": False}
  assert not os.path.exists(marker)
  assert os.listdir(cache) == []


def test_a_fresh_process_loads_a_cached_build_without_compiling(tmp_path):
  _require_onednn()  # Builds the kernel into this session's cache if it is not there yet.
  env, marker = _fake_compilers(tmp_path)
  report = _first_use(dict(env, SSLX_CACHE_DIR=onednn.cache_dir()))
  assert report == {"ready": True, "auto": "onednn", "custom_call": True}
  assert not os.path.exists(marker)


def test_after_prepare_auto_runs_every_convolution_through_onednn():
  _require_onednn()
  assert onednn.ready()
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), jnp.float32)
  for module in (conv.Conv(4, (3, 3)), conv.Pointwise(4)):  # kernels="auto", the default.
    variables = module.init(jax.random.PRNGKey(0), x)
    loss = lambda v: jnp.sum(module.apply(v, x) ** 2)  # noqa: E731
    hlo = jax.jit(jax.value_and_grad(loss)).lower(variables).as_text()
    assert onednn.TARGET in hlo and "convolution" not in hlo


ON_EIGHT_DEVICES = """
import json
import jax, jax.numpy as jnp
from sslx.models import conv
x = jnp.zeros((8, 8, 8, 3))
errors = []
for call in (lambda: conv.check_kernels("onednn", jax.devices()),
             lambda: conv.Conv(4, (3, 3), kernels="onednn").init(jax.random.PRNGKey(0), x)):
  try:
    call()
  except ValueError as e:
    errors.append(str(e))
print(json.dumps({"auto": conv.prepare_kernels("auto", jax.devices()), "errors": errors}))
"""


def test_explicit_onednn_on_eight_devices_fails_in_one_line_before_and_during_tracing(tmp_path):
  env, marker = _fake_compilers(tmp_path)
  result = subprocess.run([sys.executable, "-c", ON_EIGHT_DEVICES], capture_output=True, text=True, timeout=600,
                          env=dict(env, SSLX_CACHE_DIR=str(tmp_path / "cache"),
                                   XLA_FLAGS=with_xla_flags("--xla_force_host_platform_device_count=8")), cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["auto"] == "conv kernels: taps (auto: 8 CPU devices; oneDNN runs on one)"
  message = "model.conv_kernels='onednn' runs on one CPU device, this run has 8: use 'auto' or 'taps'"
  assert report["errors"] == [message, message]
  assert not os.path.exists(marker)  # Nothing was built for a run that cannot use it.


@pytest.mark.skipif(jax.default_backend() == "cpu", reason="checks the GPU/TPU answer")
def test_prepare_names_the_backend_it_cannot_run_on():
  assert "CPU backend only" in onednn.prepare()
