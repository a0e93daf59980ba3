// 2D convolution (NHWC activations, HWIO weights, fp32) through oneDNN, as an XLA FFI custom call.
//
// One handler serves the three passes, chosen by the attribute `pass`:
//   0 forward:          a = x (N,H,W,Ci),     b = w (KH,KW,Ci,Co)  -> y  (N,Ho,Wo,Co)
//   1 input gradient:   a = dy (N,Ho,Wo,Co),  b = w (KH,KW,Ci,Co)  -> dx (N,H,W,Ci)
//   2 weight gradient:  a = x (N,H,W,Ci),     b = dy (N,Ho,Wo,Co) -> dw (KH,KW,Ci,Co)
// Activations stay NHWC (oneDNN's channels-last kernels, what PyTorch uses with channels_last);
// weights are reordered to and from the blocked layout the chosen kernel wants.
// Primitives (the convolution and its weight reorder) are built once per (pass, shapes, strides,
// padding) and cached; one mutex serialises execution, since the cached primitives share their
// weight buffers and oneDNN's scratchpad.
// Built by sslx/models/onednn.py's prepare() (g++, against the onednn-devel wheel's headers).

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;

namespace {

using Key = std::tuple<int64_t, std::vector<int64_t>, std::vector<int64_t>>;

struct Plan {
  dnnl::primitive conv;
  memory::desc x_md, y_md, w_user_md, w_md;  // w_md: the kernel's layout (diff weights for pass 2)
  std::unique_ptr<memory> w_buffer;          // weights in the kernel's layout, when it differs
  dnnl::reorder w_reorder;                   // into w_buffer (passes 0, 1), out of it (pass 2)
};

struct State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  std::map<Key, Plan> plans;
};

State& state() {
  static State* s = new State();  // never destroyed: XLA may call in during interpreter exit
  return *s;
}

Plan make_plan(State& s, int64_t pass, const memory::dims& x_dims, const memory::dims& w_dims,
               const memory::dims& y_dims, const memory::dims& strides,
               const memory::dims& pad_l, const memory::dims& pad_r) {
  using tag = memory::format_tag;
  const auto f32 = memory::data_type::f32;
  Plan plan;
  plan.x_md = memory::desc(x_dims, f32, tag::nhwc);
  plan.y_md = memory::desc(y_dims, f32, tag::nhwc);
  plan.w_user_md = memory::desc(w_dims, f32, tag::hwio);
  const memory::desc w_any(w_dims, f32, tag::any);
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      s.engine, dnnl::prop_kind::forward_training, algo, plan.x_md, w_any, plan.y_md, strides,
      pad_l, pad_r);
  if (pass == 0) {
    plan.w_md = fwd.weights_desc();
    plan.conv = dnnl::convolution_forward(fwd);
  } else if (pass == 1) {
    dnnl::convolution_backward_data::primitive_desc bwd(s.engine, algo, plan.x_md, w_any,
                                                        plan.y_md, strides, pad_l, pad_r, fwd);
    plan.w_md = bwd.weights_desc();
    plan.conv = dnnl::convolution_backward_data(bwd);
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        s.engine, algo, plan.x_md, w_any, plan.y_md, strides, pad_l, pad_r, fwd);
    plan.w_md = bwd.diff_weights_desc();
    plan.conv = dnnl::convolution_backward_weights(bwd);
  }
  if (plan.w_md != plan.w_user_md) {
    plan.w_buffer = std::make_unique<memory>(plan.w_md, s.engine);
    const bool out = pass == 2;
    plan.w_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
        s.engine, out ? plan.w_md : plan.w_user_md, s.engine, out ? plan.w_user_md : plan.w_md));
  }
  return plan;
}

ffi::Error Convolution(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                       ffi::ResultBuffer<ffi::F32> out, int64_t pass,
                       ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  if (pass < 0 || pass > 2) return ffi::Error::InvalidArgument("pass must be 0, 1 or 2");
  if (strides.size() != 2 || padding.size() != 4)
    return ffi::Error::InvalidArgument("strides needs 2 values and padding 4 (top, bottom, left, right)");
  const auto x_nhwc = pass == 1 ? out->dimensions() : a.dimensions();
  const auto w_hwio = pass == 2 ? out->dimensions() : b.dimensions();
  const auto y_nhwc = pass == 0 ? out->dimensions() : (pass == 1 ? a.dimensions() : b.dimensions());
  if (x_nhwc.size() != 4 || w_hwio.size() != 4 || y_nhwc.size() != 4)
    return ffi::Error::InvalidArgument("activations must be NHWC and weights HWIO (rank 4)");
  // oneDNN's logical dimensions are (N, C, H, W) and (O, I, KH, KW) whatever the memory layout.
  const memory::dims x_dims{x_nhwc[0], x_nhwc[3], x_nhwc[1], x_nhwc[2]};
  const memory::dims w_dims{w_hwio[3], w_hwio[2], w_hwio[0], w_hwio[1]};
  const memory::dims y_dims{y_nhwc[0], y_nhwc[3], y_nhwc[1], y_nhwc[2]};
  const memory::dims stride{strides[0], strides[1]};
  const memory::dims pad_l{padding[0], padding[2]}, pad_r{padding[1], padding[3]};

  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  try {
    std::vector<int64_t> dims(x_dims.begin(), x_dims.end());
    dims.insert(dims.end(), w_dims.begin(), w_dims.end());
    dims.insert(dims.end(), y_dims.begin(), y_dims.end());
    const Key key{pass, dims, {stride[0], stride[1], pad_l[0], pad_l[1], pad_r[0], pad_r[1]}};
    auto it = s.plans.find(key);
    if (it == s.plans.end())
      it = s.plans.emplace(key, make_plan(s, pass, x_dims, w_dims, y_dims, stride, pad_l, pad_r)).first;
    Plan& plan = it->second;

    void* x_ptr = pass == 1 ? out->untyped_data() : a.untyped_data();
    void* y_ptr = pass == 0 ? out->untyped_data() : (pass == 1 ? a.untyped_data() : b.untyped_data());
    void* w_ptr = pass == 2 ? out->untyped_data() : b.untyped_data();
    memory x_mem(plan.x_md, s.engine, x_ptr), y_mem(plan.y_md, s.engine, y_ptr);
    memory w_user(plan.w_user_md, s.engine, w_ptr);
    memory w_mem = plan.w_buffer ? *plan.w_buffer : w_user;

    if (pass != 2 && plan.w_buffer) plan.w_reorder.execute(s.stream, w_user, w_mem);
    if (pass == 0) {
      plan.conv.execute(s.stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem}});
    } else if (pass == 1) {
      plan.conv.execute(s.stream, {{DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_WEIGHTS, w_mem},
                                   {DNNL_ARG_DIFF_SRC, x_mem}});
    } else {
      plan.conv.execute(s.stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_DST, y_mem},
                                   {DNNL_ARG_DIFF_WEIGHTS, w_mem}});
      if (plan.w_buffer) plan.w_reorder.execute(s.stream, w_mem, w_user);
    }
    s.stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SslxOnednnConv, Convolution,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("pass")
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding"));
