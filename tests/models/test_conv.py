import importlib.metadata

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sslx import models
from sslx.models import conv, onednn


def _onednn_skip_reason() -> str:
  """"" where the oneDNN kernels can run (always in CI: x86-64 Linux, CPU), else why not."""
  if jax.default_backend() != "cpu":
    return f"oneDNN convolutions run on the CPU backend only (this is {jax.default_backend()})"
  try:
    importlib.metadata.distribution("onednn-cpu-gomp")
  except importlib.metadata.PackageNotFoundError:
    return "the oneDNN wheels are x86-64 Linux only (requirements.txt)"
  return ""


# Collecting the tests builds nothing: the kernels are built by the tests that ask for them.
RUNNABLE_KERNELS = [k for k in conv.KERNELS if k != "onednn" or not _onednn_skip_reason()]


def _reference(x, kernel, strides):
  return jax.lax.conv_general_dilated(x, kernel, strides, "SAME", dimension_numbers=conv.DIMENSIONS[x.ndim - 2])


@pytest.mark.parametrize("size, kernel_size, cin, cout, stride", [
    (8, 3, 4, 5, 1), (9, 3, 3, 6, 2), (8, 7, 3, 4, 2), (7, 1, 5, 3, 2), (6, 5, 2, 3, 1), (10, 4, 3, 2, 3)])
def test_tap_weight_gradient_equals_jax_grad_of_the_plain_convolution(size, kernel_size, cin, cout, stride):
  rng = np.random.default_rng(size * kernel_size + stride)
  x = jnp.asarray(rng.standard_normal((3, size, size + 1, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, cin, cout)), jnp.float32)
  strides = (stride, stride)
  padding = (conv.same_padding(size, kernel_size, stride), conv.same_padding(size + 1, kernel_size, stride))
  out = conv.tap_conv(x, kernel, strides, padding)
  reference = _reference(x, kernel, strides)
  np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-5)
  g = jnp.asarray(rng.standard_normal(reference.shape), jnp.float32)
  loss = lambda f: lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
  dx, dk = jax.grad(loss(lambda x_, k_: conv.tap_conv(x_, k_, strides, padding)), argnums=(0, 1))(x, kernel)
  rx, rk = jax.grad(loss(lambda x_, k_: _reference(x_, k_, strides)), argnums=(0, 1))(x, kernel)
  np.testing.assert_array_equal(dx, rx)  # The input gradient is XLA's own.
  # The weight gradient is the same sum in another order: fp32 rounding only.
  scale = float(jnp.max(jnp.abs(rk)))
  assert float(jnp.max(jnp.abs(dk - rk))) / scale < 1e-5


# 3D: (T, H, W), kernel (t, d, d), strides; R3D's stem (3x7x7 /1x2x2), R(2+1)D's factors, C3D's 3x3x3.
CASES_3D = [((4, 6, 7), (3, 3, 3), (1, 1, 1)), ((5, 8, 8), (3, 3, 3), (2, 2, 2)),
            ((4, 9, 9), (3, 7, 7), (1, 2, 2)), ((3, 7, 6), (1, 3, 3), (1, 2, 2)), ((6, 4, 4), (3, 1, 1), (2, 1, 1))]


def _case_3d(spatial, window, cin=3, cout=4, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((2, *spatial, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((*window, cin, cout)), jnp.float32)
  return x, kernel


@pytest.mark.parametrize("spatial, window, strides", CASES_3D)
def test_3d_tap_weight_gradient_equals_jax_grad_of_the_plain_convolution(spatial, window, strides):
  x, kernel = _case_3d(spatial, window)
  padding = tuple(conv.same_padding(n, k, s) for n, k, s in zip(spatial, window, strides))
  reference = _reference(x, kernel, strides)
  np.testing.assert_allclose(conv.tap_conv(x, kernel, strides, padding), reference, rtol=1e-6, atol=1e-5)
  g = jnp.asarray(np.random.default_rng(1).standard_normal(reference.shape), jnp.float32)
  loss = lambda f: lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
  dk = jax.grad(loss(lambda x_, k_: conv.tap_conv(x_, k_, strides, padding)), argnums=1)(x, kernel)
  rk = jax.grad(loss(lambda x_, k_: _reference(x_, k_, strides)), argnums=1)(x, kernel)
  assert float(jnp.max(jnp.abs(dk - rk))) / float(jnp.max(jnp.abs(rk))) < 1e-5


def _assert_onednn_equals_xla(x, kernel, g, strides, padding):
  """oneDNN's convolution, input and weight gradients (of sum(conv * g)) against XLA's."""
  def value_and_grads(f):
    loss = lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
    return jax.jit(lambda x_, k_: (f(x_, k_), jax.grad(loss, argnums=(0, 1))(x_, k_)))

  ours = value_and_grads(lambda x_, k_: onednn.conv(x_, k_, strides, padding))
  # All three passes are oneDNN's custom call, not XLA's convolution.
  hlo = ours.lower(x, kernel).as_text()
  assert hlo.count(onednn.TARGET) == 3 and "convolution" not in hlo
  out, (dx, dk) = ours(x, kernel)
  reference, (rx, rk) = value_and_grads(lambda x_, k_: _reference(x_, k_, strides))(x, kernel)
  # The same sums in another order: fp32 rounding only.
  for ours_, theirs in ((out, reference), (dx, rx), (dk, rk)):
    assert ours_.shape == theirs.shape
    assert float(jnp.max(jnp.abs(ours_ - theirs))) / float(jnp.max(jnp.abs(theirs))) < 1e-5


def _require_onednn():
  """Skips where oneDNN cannot run; elsewhere builds (or loads) the kernel, as the tests ask for it."""
  if _onednn_skip_reason():
    pytest.skip(_onednn_skip_reason())
  # Installed, the kernel must build and register.
  assert onednn.prepare() is None


@pytest.mark.parametrize("size, kernel_size, cin, cout, stride", [
    (8, 3, 4, 5, 1), (9, 3, 3, 6, 2), (8, 7, 3, 4, 2), (7, 1, 5, 3, 2), (6, 5, 2, 3, 1), (10, 4, 3, 2, 3),
    (6, 1, 7, 4, 1)])  # The last: Pointwise's 1x1.
def test_onednn_convolution_and_its_gradients_equal_the_plain_convolutions(size, kernel_size, cin, cout, stride):
  _require_onednn()
  rng = np.random.default_rng(size * kernel_size + stride)
  x = jnp.asarray(rng.standard_normal((3, size, size + 1, cin)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, cin, cout)), jnp.float32)
  strides = (stride, stride)
  padding = (conv.same_padding(size, kernel_size, stride), conv.same_padding(size + 1, kernel_size, stride))
  g = jnp.asarray(rng.standard_normal(_reference(x, kernel, strides).shape), jnp.float32)
  _assert_onednn_equals_xla(x, kernel, g, strides, padding)


@pytest.mark.parametrize("spatial, window, strides", CASES_3D)
def test_3d_onednn_convolution_and_its_gradients_equal_the_plain_convolutions(spatial, window, strides):
  _require_onednn()
  x, kernel = _case_3d(spatial, window, cin=5, cout=6, seed=2)
  padding = tuple(conv.same_padding(n, k, s) for n, k, s in zip(spatial, window, strides))
  g = jnp.asarray(np.random.default_rng(3).standard_normal(_reference(x, kernel, strides).shape), jnp.float32)
  _assert_onednn_equals_xla(x, kernel, g, strides, padding)


def test_3d_conv_module_is_a_drop_in_for_nn_conv():
  x, _ = _case_3d((4, 7, 7), (3, 3, 3))
  for strides in ((1, 1, 1), (2, 2, 2)):
    plain = nn.Conv(4, (3, 3, 3), strides, padding="SAME", use_bias=False)
    params = plain.init(jax.random.PRNGKey(0), x)
    for kernels in RUNNABLE_KERNELS:
      assert kernels != "onednn" or onednn.prepare() is None
      module = conv.Conv(4, (3, 3, 3), strides, kernels=kernels)
      assert jax.tree.map(jnp.shape, module.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, params)
      np.testing.assert_allclose(module.apply(params, x), plain.apply(params, x), rtol=1e-5, atol=1e-5)


class _Device:
  def __init__(self, platform):
    self.platform = platform


def test_conv_kernels_resolve_per_backend_and_explain_what_cannot_run(monkeypatch):
  _require_onednn()
  cpu, gpu = [_Device("cpu")], [_Device("gpu")]
  assert conv.resolve_kernels("auto") == "onednn"  # One CPU device, fp32, the kernel prepared.
  assert conv.prepare_kernels("auto", cpu) == "conv kernels: onednn (auto: one CPU device, oneDNN ready)"
  assert conv.resolve_kernels("auto", jnp.bfloat16) == "taps"
  assert conv.check_kernels("auto", cpu, "bfloat16") == (
      "conv kernels: taps (auto: a bfloat16 model; oneDNN's kernels are fp32)")
  assert conv.check_kernels("auto", cpu * 8) == "conv kernels: taps (auto: 8 CPU devices; oneDNN runs on one)"
  assert conv.check_kernels("auto", gpu) == "conv kernels: xla (auto: gpu backend)"
  assert conv.check_kernels("taps", cpu * 8) == "conv kernels: taps (model.conv_kernels)"
  assert conv.resolve_kernels("xla") == "xla"
  with pytest.raises(ValueError, match="conv_kernels='onednn' cannot run: its kernels are fp32 and the model is bfloat16"):
    conv.resolve_kernels("onednn", jnp.bfloat16)
  with pytest.raises(ValueError, match="unknown model.conv_kernels 'fast'"):
    conv.check_kernels("fast", cpu)
  # Without the wheels (or a compiler): "auto" falls back to the tap matmuls, "onednn" says how to get them.
  monkeypatch.setattr(onednn, "ready", lambda: False)
  monkeypatch.setattr(onednn, "prepare", lambda: "no C++ compiler found to build the kernel: install g++")
  assert conv.resolve_kernels("auto") == "taps"
  assert conv.check_kernels("auto", cpu) == (
      "conv kernels: taps (auto: oneDNN not built yet; conv.prepare_kernels builds it)")
  assert conv.prepare_kernels("auto", cpu) == (
      "conv kernels: taps (auto: oneDNN unavailable: no C++ compiler found to build the kernel: install g++)")
  with pytest.raises(ValueError, match=r"cannot run: no C\+\+ compiler found .* install g\+\+; or set model.conv_kernels to 'taps'"):
    conv.resolve_kernels("onednn")


def test_explicit_onednn_on_several_devices_or_another_backend_is_a_one_line_error():
  with pytest.raises(ValueError) as error:
    conv.check_kernels("onednn", [_Device("cpu")] * 8)
  assert str(error.value) == "model.conv_kernels='onednn' runs on one CPU device, this run has 8: use 'auto' or 'taps'"
  with pytest.raises(ValueError, match="^model.conv_kernels='onednn' runs on the CPU backend, this run is on gpu: "
                                       "use 'auto' or 'xla'$"):
    conv.prepare_kernels("onednn", [_Device("gpu")])


def test_kernel_lines_read_the_model_config_and_its_old_option_name():
  cpu = [_Device("cpu")]
  assert conv.check_kernels({"name": "waveform"}, cpu) == (
      "conv kernels: xla (the backbone has no model.conv_kernels)")
  assert conv.check_kernels({"name": "r3d", "width": 0.25, "conv_kernels": "taps"}, cpu) == (
      "conv kernels: taps (model.conv_kernels)")
  assert conv.check_kernels({"name": "convnet", "conv_weight_grad": "taps"}, cpu) == (
      "conv kernels: taps (model.conv_kernels)")
  assert conv.check_kernels({"name": "convnet", "dtype": "bfloat16"}, cpu) == (
      "conv kernels: taps (auto: a bfloat16 model; oneDNN's kernels are fp32)")
  with pytest.raises(ValueError, match="^model.conv_kernels='onednn' runs on one CPU device, this run has 2"):
    conv.check_kernels({"name": "resnet", "conv_kernels": "onednn"}, cpu * 2)


def test_conv_kernels_are_a_runtime_setting_that_leaves_the_model_unchanged():
  assert set(models.RUNTIME_KEYS) == {"conv_kernels", "conv_weight_grad"}
  x = jnp.zeros((1, 16, 16, 3))
  shapes = lambda config: jax.tree.map(jnp.shape, jax.eval_shape(  # noqa: E731
      lambda: models.get_backbone(config).init(jax.random.PRNGKey(0), x, train=False)))
  base = {"name": "convnet", "widths": (8, 8, 8)}
  reference = shapes(base)
  for extra in ({"conv_kernels": "xla"}, {"conv_kernels": "taps"}, {"conv_weight_grad": "xla"},
                {"conv_weight_grad": "xla", "conv_kernels": "taps"}):
    assert shapes(dict(base, **extra)) == reference
  # Both names in one config (an old checkpoint's merged with today's defaults): the new name wins.
  assert models.get_backbone(dict(base, conv_weight_grad="xla", conv_kernels="taps")).conv_kernels == "taps"


def test_conv_module_is_a_drop_in_for_nn_conv():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 9, 9, 3)), jnp.float32)
  for strides in ((1, 1), (2, 2)):
    plain = nn.Conv(4, (3, 3), strides, padding="SAME", use_bias=False)
    params = plain.init(jax.random.PRNGKey(0), x)
    for kernels in RUNNABLE_KERNELS:
      assert kernels != "onednn" or onednn.prepare() is None
      module = conv.Conv(4, (3, 3), strides, kernels=kernels)
      assert jax.tree.map(jnp.shape, module.init(jax.random.PRNGKey(0), x)) == jax.tree.map(jnp.shape, params)
      np.testing.assert_allclose(module.apply(params, x), plain.apply(params, x), rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="unknown model.conv_kernels 'fast'"):
    conv.Conv(4, (3, 3), kernels="fast").init(jax.random.PRNGKey(0), x)


def test_pointwise_gradients_equal_jax_grad_of_the_plain_matmul():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((3, 5, 6, 7)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((7, 4)), jnp.float32)
  g = jnp.asarray(rng.standard_normal((3, 5, 6, 4)), jnp.float32)
  np.testing.assert_array_equal(conv.pointwise(x, kernel), jnp.dot(x, kernel))
  loss = lambda f: lambda x_, k_: jnp.sum(f(x_, k_) * g)  # noqa: E731
  dx, dk = jax.grad(loss(conv.pointwise), argnums=(0, 1))(x, kernel)
  rx, rk = jax.grad(loss(jnp.dot), argnums=(0, 1))(x, kernel)
  np.testing.assert_allclose(dx, rx, rtol=1e-6, atol=1e-5)
  assert float(jnp.max(jnp.abs(dk - rk))) / float(jnp.max(jnp.abs(rk))) < 1e-5


def test_pointwise_module_is_a_drop_in_for_nn_dense():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 5, 3)), jnp.float32)
  dense = nn.Dense(4, use_bias=False)
  params = dense.init(jax.random.PRNGKey(0), x)
  for kernels in RUNNABLE_KERNELS:
    assert kernels != "onednn" or onednn.prepare() is None
    module = conv.Pointwise(4, kernels=kernels)
    own = module.init(jax.random.PRNGKey(0), x)
    # Same names, shapes and initial values: checkpoints of either load into the other.
    jax.tree.map(np.testing.assert_array_equal, own, params)
    np.testing.assert_allclose(module.apply(params, x), dense.apply(params, x), rtol=1e-6, atol=1e-6)


def test_maps_smaller_than_the_kernel_go_to_xla_not_onednn():
  # oneDNN 2023.2 corrupted the heap (a crash at a later free, on some runs) for a 3x3 kernel
  # on 2x1, 1x2 and 2x2 maps, with 16 examples and 16 -> 32 channels: SyncNet's MFCC tower.
  _require_onednn()
  layer = conv.Conv(8, (3, 3), kernels="onednn")
  for shape, uses_onednn in (((4, 2, 1, 3), False), ((4, 2, 2, 3), False), ((4, 3, 3, 3), True)):
    x = jnp.ones(shape)
    variables = layer.init(jax.random.PRNGKey(0), x)
    hlo = jax.jit(lambda v, x_: layer.apply(v, x_)).lower(variables, x).as_text()
    assert (onednn.TARGET in hlo) == uses_onednn, shape
    np.testing.assert_allclose(layer.apply(variables, x), _reference(x, variables["params"]["kernel"], (1, 1)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, window", [((4, 1, 5, 3), (3, 3)), ((2, 1, 4, 4, 3), (3, 3, 3)),
                                           ((2, 2, 1, 1, 3), (3, 3, 3)), ((3, 6, 1, 2), (5, 5))])
def test_taps_that_only_see_padding_are_cut_so_one_frame_maps_run_on_onednn(shape, window):
  """A map of 1 (an 8-frame clip's last R3D stage) on a 3-tap axis: only the centre tap reaches
  data, so oneDNN gets the cut kernel; the output and both gradients equal XLA's full
  convolution. Axes that stay smaller than their cut kernel (2 frames, 3 taps) still go to XLA."""
  _require_onednn()
  layer = conv.Conv(8, window, kernels="onednn")
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  variables = layer.init(jax.random.PRNGKey(0), x)
  kernel = variables["params"]["kernel"]
  hlo = jax.jit(lambda v, x_: layer.apply(v, x_)).lower(variables, x).as_text()
  assert (onednn.TARGET in hlo) == (shape[1] != 2), shape
  g = jax.random.normal(jax.random.PRNGKey(2), layer.apply(variables, x).shape)
  ours = jax.value_and_grad(lambda k_, x_: jnp.sum(layer.apply({"params": {"kernel": k_}}, x_) * g),
                            argnums=(0, 1))(kernel, x)
  theirs = jax.value_and_grad(lambda k_, x_: jnp.sum(_reference(x_, k_, (1,) * len(window)) * g),
                              argnums=(0, 1))(kernel, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  used, padding = conv.taps_touching_data(kernel, shape[1:-1], (1,) * len(window))
  if shape == (4, 1, 5, 3):
    assert used.shape == (1, 3, 3, 8) and padding == ((0, 0), (1, 1))
    np.testing.assert_array_equal(used[0], kernel[1])
