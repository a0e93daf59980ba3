// 2D and 3D convolutions (channels-last activations: NHWC / NDHWC; weights HWIO / DHWIO; fp32)
// through oneDNN, as an XLA FFI custom call. The rank of the operands says which.
//
// One handler serves the three passes, chosen by the attribute `pass` (2D shown; 3D adds D):
//   0 forward:          a = x (N,H,W,Ci),     b = w (KH,KW,Ci,Co)  -> y  (N,Ho,Wo,Co)
//   1 input gradient:   a = dy (N,Ho,Wo,Co),  b = w (KH,KW,Ci,Co)  -> dx (N,H,W,Ci)
//   2 weight gradient:  a = x (N,H,W,Ci),     b = dy (N,Ho,Wo,Co) -> dw (KH,KW,Ci,Co)
// Activations stay channels-last (oneDNN's nhwc / ndhwc kernels, what PyTorch uses with
// channels_last / channels_last_3d);
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
  std::unique_ptr<memory> scratchpad;        // the convolution's own (user-managed) scratchpad
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
  const bool three_d = x_dims.size() == 5;
  Plan plan;
  plan.x_md = memory::desc(x_dims, f32, three_d ? tag::ndhwc : tag::nhwc);
  plan.y_md = memory::desc(y_dims, f32, three_d ? tag::ndhwc : tag::nhwc);
  plan.w_user_md = memory::desc(w_dims, f32, three_d ? tag::dhwio : tag::hwio);
  const memory::desc w_any(w_dims, f32, tag::any);
  const auto algo = dnnl::algorithm::convolution_direct;
  // Each plan owns its scratchpad. With oneDNN's default (a library-managed buffer shared between
  // primitives) R3D-18's train step at 4x16x16 crashed in 2 of 4 runs, in the memset of the 3D
  // GEMM weight gradient (execute_backward_weights_nspc); with its own, in none of 12.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::convolution_forward::primitive_desc fwd(
      s.engine, dnnl::prop_kind::forward_training, algo, plan.x_md, w_any, plan.y_md, strides,
      pad_l, pad_r, attr);
  memory::desc scratchpad_md;
  if (pass == 0) {
    plan.w_md = fwd.weights_desc();
    plan.conv = dnnl::convolution_forward(fwd);
    scratchpad_md = fwd.scratchpad_desc();
  } else if (pass == 1) {
    dnnl::convolution_backward_data::primitive_desc bwd(s.engine, algo, plan.x_md, w_any,
                                                        plan.y_md, strides, pad_l, pad_r, fwd, attr);
    plan.w_md = bwd.weights_desc();
    plan.conv = dnnl::convolution_backward_data(bwd);
    scratchpad_md = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        s.engine, algo, plan.x_md, w_any, plan.y_md, strides, pad_l, pad_r, fwd, attr);
    plan.w_md = bwd.diff_weights_desc();
    plan.conv = dnnl::convolution_backward_weights(bwd);
    scratchpad_md = bwd.scratchpad_desc();
  }
  plan.scratchpad = std::make_unique<memory>(scratchpad_md, s.engine);
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
  const auto x_cl = pass == 1 ? out->dimensions() : a.dimensions();  // channels-last
  const auto w_cl = pass == 2 ? out->dimensions() : b.dimensions();  // (spatial..., I, O)
  const auto y_cl = pass == 0 ? out->dimensions() : (pass == 1 ? a.dimensions() : b.dimensions());
  const size_t rank = x_cl.size();
  if ((rank != 4 && rank != 5) || w_cl.size() != rank || y_cl.size() != rank)
    return ffi::Error::InvalidArgument("activations must be NHWC / NDHWC and weights HWIO / DHWIO");
  const size_t spatial = rank - 2;
  if (strides.size() != spatial || padding.size() != 2 * spatial)
    return ffi::Error::InvalidArgument("strides needs one value per spatial axis and padding two (low, high)");
  // oneDNN's logical dimensions are (N, C, spatial...) and (O, I, kernel...) whatever the memory layout.
  memory::dims x_dims{x_cl[0], x_cl[rank - 1]}, y_dims{y_cl[0], y_cl[rank - 1]};
  memory::dims w_dims{w_cl[rank - 1], w_cl[rank - 2]};
  memory::dims stride, pad_l, pad_r;
  for (size_t i = 0; i < spatial; ++i) {
    x_dims.push_back(x_cl[i + 1]);
    y_dims.push_back(y_cl[i + 1]);
    w_dims.push_back(w_cl[i]);
    stride.push_back(strides[i]);
    pad_l.push_back(padding[2 * i]);
    pad_r.push_back(padding[2 * i + 1]);
  }

  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  try {
    std::vector<int64_t> dims(x_dims.begin(), x_dims.end());
    dims.insert(dims.end(), w_dims.begin(), w_dims.end());
    dims.insert(dims.end(), y_dims.begin(), y_dims.end());
    std::vector<int64_t> geometry(stride.begin(), stride.end());
    geometry.insert(geometry.end(), pad_l.begin(), pad_l.end());
    geometry.insert(geometry.end(), pad_r.begin(), pad_r.end());
    const Key key{pass, dims, geometry};
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
    const auto& pad = *plan.scratchpad;
    if (pass == 0) {
      plan.conv.execute(s.stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, w_mem}, {DNNL_ARG_DST, y_mem},
                                   {DNNL_ARG_SCRATCHPAD, pad}});
    } else if (pass == 1) {
      plan.conv.execute(s.stream, {{DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_WEIGHTS, w_mem},
                                   {DNNL_ARG_DIFF_SRC, x_mem}, {DNNL_ARG_SCRATCHPAD, pad}});
    } else {
      plan.conv.execute(s.stream, {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_DST, y_mem},
                                   {DNNL_ARG_DIFF_WEIGHTS, w_mem}, {DNNL_ARG_SCRATCHPAD, pad}});
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
