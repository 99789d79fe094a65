// A 2-D convolution and its gradients by oneDNN, as XLA FFI handlers (CPU,
// float32 or bfloat16, NHWC/HWIO), for y (N,OH,OW,O) = conv(x (N,H,W,C),
// w (KH,KW,C,O)).
//
// kmnist_jax.cpu.onednn compiles this file on first use; kmnist_jax.cpu.conv
// calls it through jax.ffi. The handlers share one attribute set (stride_h,
// stride_w, pad_top, pad_left; the bottom/right padding follows from the
// shapes). The inputs of a call share one element type and the results
// another: float32 and float32, or bfloat16 and bfloat16 or float32 (the
// sums are float32 either way):
//   kmnist_conv_fwd:           x, w      -> y
//   kmnist_conv_bwd:           x, w, dy  -> dx, dw
//   kmnist_conv_bwd_data:      dy, w     -> dx
//   kmnist_conv_bwd_weights:   x, dy     -> dw
// Each reorders its operands into the layouts oneDNN's kernels prefer
// (blocked, nChw16c), runs the primitives and reorders the results back;
// kmnist_conv_bwd reorders dy once for both. Where the output is small and
// the input channels many, the weight gradient is one matrix product over
// the im2col copy of x instead (Gemm, WeightGradGemm). Plans are built once
// per shape and cached. Every buffer's element type, rank and dimensions are checked
// against the others first: a mismatch is an InvalidArgument error, never a
// read or write past a buffer (onednn_checks.h). Calls are serialized, with
// the BatchNorm kernels' too (TeamMutex): two OpenMP teams on a 2-core
// machine would only slow each other down.
//
// Only the handful of oneDNN v3 C API entry points used here are declared
// below, so no oneDNN headers are needed; the build links the
// onednn-cpu-gomp wheel's libdnnl.so.3.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <omp.h>

#include "onednn_checks.h"
#include "xla/ffi/api/ffi.h"

extern "C" {
typedef struct dnnl_engine* dnnl_engine_t;
typedef struct dnnl_stream* dnnl_stream_t;
typedef struct dnnl_memory_desc* dnnl_memory_desc_t;
typedef const struct dnnl_memory_desc* const_dnnl_memory_desc_t;
typedef struct dnnl_memory* dnnl_memory_t;
typedef struct dnnl_primitive_desc* dnnl_primitive_desc_t;
typedef struct dnnl_primitive* dnnl_primitive_t;
typedef int64_t dnnl_dims_t[12];
typedef struct {
  int arg;
  dnnl_memory_t memory;
} dnnl_exec_arg_t;
int dnnl_engine_create(dnnl_engine_t*, int kind, size_t index);
int dnnl_stream_create(dnnl_stream_t*, dnnl_engine_t, unsigned flags);
int dnnl_stream_wait(dnnl_stream_t);
int dnnl_memory_desc_create_with_strides(dnnl_memory_desc_t*, int ndims,
                                         const dnnl_dims_t dims, int dtype,
                                         const dnnl_dims_t strides);
int dnnl_memory_desc_create_with_tag(dnnl_memory_desc_t*, int ndims,
                                     const dnnl_dims_t dims, int dtype,
                                     int tag);
int dnnl_memory_desc_destroy(dnnl_memory_desc_t);
int dnnl_memory_desc_equal(const_dnnl_memory_desc_t, const_dnnl_memory_desc_t);
size_t dnnl_memory_desc_get_size(const_dnnl_memory_desc_t);
int dnnl_memory_create(dnnl_memory_t*, const_dnnl_memory_desc_t,
                       dnnl_engine_t, void* handle);
int dnnl_memory_set_data_handle(dnnl_memory_t, void* handle);
int dnnl_memory_get_memory_desc(const dnnl_memory_t,
                                const_dnnl_memory_desc_t* memory_desc);
int dnnl_convolution_forward_primitive_desc_create(
    dnnl_primitive_desc_t*, dnnl_engine_t, int prop_kind, int alg_kind,
    const_dnnl_memory_desc_t src, const_dnnl_memory_desc_t weights,
    const_dnnl_memory_desc_t bias, const_dnnl_memory_desc_t dst,
    const dnnl_dims_t strides, const dnnl_dims_t dilates,
    const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
    const void* attr);
int dnnl_convolution_backward_data_primitive_desc_create(
    dnnl_primitive_desc_t*, dnnl_engine_t, int alg_kind,
    const_dnnl_memory_desc_t diff_src, const_dnnl_memory_desc_t weights,
    const_dnnl_memory_desc_t diff_dst, const dnnl_dims_t strides,
    const dnnl_dims_t dilates, const dnnl_dims_t padding_l,
    const dnnl_dims_t padding_r, const dnnl_primitive_desc_t hint,
    const void* attr);
int dnnl_convolution_backward_weights_primitive_desc_create(
    dnnl_primitive_desc_t*, dnnl_engine_t, int alg_kind,
    const_dnnl_memory_desc_t src, const_dnnl_memory_desc_t diff_weights,
    const_dnnl_memory_desc_t diff_bias, const_dnnl_memory_desc_t diff_dst,
    const dnnl_dims_t strides, const dnnl_dims_t dilates,
    const dnnl_dims_t padding_l, const dnnl_dims_t padding_r,
    const dnnl_primitive_desc_t hint, const void* attr);
int dnnl_reorder_primitive_desc_create(dnnl_primitive_desc_t*,
                                       const_dnnl_memory_desc_t src,
                                       dnnl_engine_t,
                                       const_dnnl_memory_desc_t dst,
                                       dnnl_engine_t, const void* attr);
const_dnnl_memory_desc_t dnnl_primitive_desc_query_md(
    const dnnl_primitive_desc_t, int what, int index);
int dnnl_matmul_primitive_desc_create(dnnl_primitive_desc_t*, dnnl_engine_t,
                                      const_dnnl_memory_desc_t src,
                                      const_dnnl_memory_desc_t weights,
                                      const_dnnl_memory_desc_t bias,
                                      const_dnnl_memory_desc_t dst,
                                      const void* attr);
int dnnl_primitive_desc_destroy(dnnl_primitive_desc_t);
int dnnl_primitive_create(dnnl_primitive_t*, const dnnl_primitive_desc_t);
int dnnl_primitive_execute(const dnnl_primitive_t, dnnl_stream_t, int nargs,
                           const dnnl_exec_arg_t* args);
}

namespace {

namespace ffi = xla::ffi;
using kmnist_checks::CheckBuffer;
using kmnist_checks::CheckProblem;
using kmnist_checks::CheckTypes;
using kmnist_checks::Same;

// oneDNN v3 constants (stable across v3.x).
constexpr int kCpu = 1, kBf16 = 2, kF32 = 3, kTagAny = 1, kStreamInOrder = 1;
constexpr int kForwardTraining = 64, kBackwardData = 160,
              kBackwardWeights = 192, kConvolutionDirect = 1;
constexpr int kQuerySrc = 129, kQueryDiffSrc = 130, kQueryWeights = 131,
              kQueryDiffWeights = 132, kQueryDst = 133,
              kQueryDiffDst = 134;
constexpr int kArgSrc = 1, kArgDst = 17, kArgWeights = 33, kArgDiffSrc = 129,
              kArgDiffDst = 145, kArgDiffWeights = 161;
constexpr int kArgFrom = 1, kArgTo = 17;

struct Engine {
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
  bool ok = false;
  Engine() {
    ok = dnnl_engine_create(&engine, kCpu, 0) == 0 &&
         dnnl_stream_create(&stream, engine, kStreamInOrder) == 0;
  }
};

Engine& GetEngine() {
  static Engine* e = new Engine();
  return *e;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

// A tensor in oneDNN's preferred layout for one primitive argument, and the
// reorder that fills it from (or empties it to) the caller's NHWC/HWIO buffer.
struct Operand {
  dnnl_memory_t user = nullptr;     // wraps the XLA buffer
  dnnl_memory_t inner = nullptr;    // wraps `storage` (or the XLA buffer)
  dnnl_primitive_t reorder = nullptr;
  std::unique_ptr<void, AlignedFree> storage;

  // `to_inner`: reorder user -> inner (an input); else inner -> user.
  bool Init(const_dnnl_memory_desc_t user_md, const_dnnl_memory_desc_t want,
            bool to_inner) {
    Engine& e = GetEngine();
    if (dnnl_memory_create(&user, user_md, e.engine, nullptr) != 0) return false;
    if (dnnl_memory_desc_equal(user_md, want)) {
      inner = user;
      return true;
    }
    size_t bytes = (dnnl_memory_desc_get_size(want) + 63) / 64 * 64;
    storage.reset(std::aligned_alloc(64, bytes));
    if (!storage ||
        dnnl_memory_create(&inner, want, e.engine, storage.get()) != 0)
      return false;
    dnnl_primitive_desc_t pd;
    if ((to_inner ? dnnl_reorder_primitive_desc_create(&pd, user_md, e.engine,
                                                       want, e.engine, nullptr)
                  : dnnl_reorder_primitive_desc_create(&pd, want, e.engine,
                                                       user_md, e.engine,
                                                       nullptr)) != 0)
      return false;
    bool ok = dnnl_primitive_create(&reorder, pd) == 0;
    dnnl_primitive_desc_destroy(pd);
    return ok;
  }

  bool Reorder(bool to_inner) {
    if (!reorder) return true;
    dnnl_exec_arg_t args[2] = {{kArgFrom, to_inner ? user : inner},
                               {kArgTo, to_inner ? inner : user}};
    return dnnl_primitive_execute(reorder, GetEngine().stream, 2, args) == 0;
  }
};

int OneDnnType(ffi::DataType t) {
  return t == ffi::DataType::BF16 ? kBf16 : kF32;
}

enum Kind { kBwdData = 1, kBwdWeights = 2, kBwd = 3, kFwd = 4 };

// Kind, oneDNN element types of the inputs and of the outputs; x (N,H,W,C),
// w (KH,KW,C,O), y (N,OH,OW,O).
using Key = std::tuple<int, int, int, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t>;

// The weight gradient as one matrix product: dw (KH*KW*C, O) =
// cols(x)^T (KH*KW*C, N*OH*OW) . dy (N*OH*OW, O), where row (n, oy, ox) of
// cols(x) holds the KH*KW input pixels under that output pixel's window,
// zeros in the padding (im2col). dw is then HWIO as it stands. Where the
// output is small and the channels many (preact_resnet18's 4x4x512 layers),
// oneDNN's AMX matrix product runs these sums several times faster than its
// backward-weights convolution (WeightGradGemm says where).
struct Gemm {
  int64_t n, h, w, c, kh, kw, oh, ow, sh, sw, pt, pl;
  size_t elt;  // bytes per element of x
  int x_buf, dy_buf, dw_buf;
  std::unique_ptr<void, AlignedFree> cols;
  dnnl_memory_t src = nullptr, wei = nullptr, dst = nullptr;
  dnnl_primitive_t prim = nullptr;

  void Im2col(const char* x) {
    const int64_t k = kh * kw * c, row_bytes = c * elt;
    char* out = static_cast<char*>(cols.get());
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          char* dst_row = out + (((b * oh + oy) * ow + ox) * k) * elt;
          for (int64_t i = 0; i < kh; ++i) {
            const int64_t iy = oy * sh - pt + i;
            for (int64_t j = 0; j < kw; ++j, dst_row += row_bytes) {
              const int64_t ix = ox * sw - pl + j;
              if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                std::memset(dst_row, 0, row_bytes);
              else
                std::memcpy(dst_row, x + ((b * h + iy) * w + ix) * row_bytes,
                            row_bytes);
            }
          }
        }
  }

  bool Run(const std::vector<void*>& data, dnnl_stream_t stream) {
    Im2col(static_cast<const char*>(data[x_buf]));
    if (dnnl_memory_set_data_handle(wei, data[dy_buf]) != 0 ||
        dnnl_memory_set_data_handle(dst, data[dw_buf]) != 0)
      return false;
    dnnl_exec_arg_t args[3] = {
        {kArgSrc, src}, {kArgWeights, wei}, {kArgDst, dst}};
    return dnnl_primitive_execute(prim, stream, 3, args) == 0;
  }
};

// The weight gradient as two backward-weights convolutions, one over each
// half of the batch, each on one thread, their float32 sums added after.
// oneDNN's own threading hardly speeds up a weight gradient whose output is
// small and whose channels are few (resnet_preact20's 7x7x64 layers: 1.31
// ms on 2 threads, 1.52 on 1); the halves run side by side instead.
struct Split {
  int x_buf, dy_buf, dw_buf;
  int64_t x_offset, dy_offset;  // bytes from each buffer to its second half
  int64_t count;                // elements of w
  bool bf16_out;
  dnnl_primitive_t prim[2] = {}, to_plain[2] = {};
  dnnl_memory_t x[2] = {}, dy[2] = {}, dw[2] = {}, plain[2] = {};
  std::unique_ptr<void, AlignedFree> dw_store[2], plain_store[2];
  dnnl_stream_t stream[2] = {};

  bool Run(const std::vector<void*>& data) {
    char* xs = static_cast<char*>(data[x_buf]);
    char* dys = static_cast<char*>(data[dy_buf]);
    if (dnnl_memory_set_data_handle(x[0], xs) != 0 ||
        dnnl_memory_set_data_handle(x[1], xs + x_offset) != 0 ||
        dnnl_memory_set_data_handle(dy[0], dys) != 0 ||
        dnnl_memory_set_data_handle(dy[1], dys + dy_offset) != 0)
      return false;
    bool ok[2] = {true, true};
    const float* p0 = static_cast<const float*>(plain_store[0].get());
    const float* p1 = static_cast<const float*>(plain_store[1].get());
#pragma omp parallel num_threads(2)
    {
      const int id = omp_get_thread_num(), team = omp_get_num_threads();
      // One thread (a team of one) runs both halves.
      for (int t = id; t < 2; t += team) {
        dnnl_exec_arg_t conv[3] = {
            {kArgSrc, x[t]}, {kArgDiffDst, dy[t]}, {kArgDiffWeights, dw[t]}};
        dnnl_exec_arg_t copy[2] = {{kArgFrom, dw[t]}, {kArgTo, plain[t]}};
        ok[t] = dnnl_primitive_execute(prim[t], stream[t], 3, conv) == 0 &&
                dnnl_primitive_execute(to_plain[t], stream[t], 2, copy) == 0 &&
                dnnl_stream_wait(stream[t]) == 0;
      }
#pragma omp barrier
      const int64_t lo = count * id / team, hi = count * (id + 1) / team;
      if (bf16_out) {
        uint16_t* out = static_cast<uint16_t*>(data[dw_buf]);
        for (int64_t i = lo; i < hi; ++i)
          out[i] = kmnist_checks::ToBf16(p0[i] + p1[i]);
      } else {
        float* out = static_cast<float*>(data[dw_buf]);
        for (int64_t i = lo; i < hi; ++i) out[i] = p0[i] + p1[i];
      }
    }
    return ok[0] && ok[1];
  }
};

// What one handler call runs: reorders into oneDNN's layouts, one or two
// convolutions, reorders back. Operands wrap the call's XLA buffers (inputs
// first, then results, in the handler's order).
struct Plan {
  struct Step {
    dnnl_primitive_t prim = nullptr;
    std::vector<std::pair<int, int>> args;  // (oneDNN arg, operand index)
  };
  std::vector<std::unique_ptr<Operand>> ops;
  std::vector<int> buffer;  // XLA buffer of each operand
  std::vector<bool> input;
  std::vector<Step> steps;
  // The weight gradient as one matrix product (see WeightGradGemm), or null.
  std::unique_ptr<Gemm> gemm;
  // The weight gradient by two half-batch convolutions (Split), or null.
  std::unique_ptr<Split> split;

  // An operand for XLA buffer `buf` in layout `want`; one reorder per buffer
  // and layout, shared by the steps that read it.
  int Add(int buf, const_dnnl_memory_desc_t user, const_dnnl_memory_desc_t want,
          bool is_input) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const_dnnl_memory_desc_t have = nullptr;
      if (buffer[i] == buf && input[i] == is_input &&
          dnnl_memory_get_memory_desc(ops[i]->inner, &have) == 0 &&
          dnnl_memory_desc_equal(have, want))
        return static_cast<int>(i);
    }
    auto op = std::make_unique<Operand>();
    if (!op->Init(user, want, is_input)) return -1;
    ops.push_back(std::move(op));
    buffer.push_back(buf);
    input.push_back(is_input);
    return static_cast<int>(ops.size()) - 1;
  }
};

std::map<Key, std::unique_ptr<Plan>>& Cache() {
  static auto* c = new std::map<Key, std::unique_ptr<Plan>>();
  return *c;
}

// Memory descriptors, destroyed with the object.
struct Descs {
  std::vector<dnnl_memory_desc_t> all;
  ~Descs() {
    for (auto d : all) dnnl_memory_desc_destroy(d);
  }
  // Dims with `strides` (nullptr: oneDNN's choice of layout, "any").
  const_dnnl_memory_desc_t Make(const dnnl_dims_t dims, int type,
                                const int64_t* strides) {
    dnnl_memory_desc_t md = nullptr;
    dnnl_dims_t st;
    if (strides) std::copy(strides, strides + 4, st);
    if ((strides ? dnnl_memory_desc_create_with_strides(&md, 4, dims, type, st)
                 : dnnl_memory_desc_create_with_tag(&md, 4, dims, type,
                                                    kTagAny)) != 0)
      return nullptr;
    all.push_back(md);
    return md;
  }
  // A matrix (rows, cols) with `strides`.
  const_dnnl_memory_desc_t Matrix(int64_t rows, int64_t cols, int type,
                                  int64_t row_stride, int64_t col_stride) {
    dnnl_memory_desc_t md = nullptr;
    dnnl_dims_t dims = {rows, cols}, st = {row_stride, col_stride};
    if (dnnl_memory_desc_create_with_strides(&md, 2, dims, type, st) != 0)
      return nullptr;
    all.push_back(md);
    return md;
  }
};

// How a weight gradient is computed. Gemm's matrix product: at least 128
// input channels and an output of at most 7x7 pixels for bfloat16
// operands, 4x4 for float32. Else Split's two halves: bfloat16, an output of
// at most 7x7 pixels. Else oneDNN's backward-weights convolution. Measured
// 2026-12-06 on the 2-core Intel Xeon with AMX (experiments/wgrad.py,
// results in experiments/results/wgrad/; one layer's forward pass and both
// gradients, bfloat16 unless said): preact_resnet18's 4x4x512 layer took 22
// ms with the product, 47 with the convolution; its 7x7x256 one 9.2
// against 13.9, but 47.0 against 43.0 in float32; its 14x14x128 and
// 28x28x64 ones, 12.2 against 8.3 and 35 against 8.1: there the copies of
// x that cols(x) makes cost more than the product saves. resnet_preact20's
// 7x7x64 layer took 1.18 ms in halves, 1.61 in one convolution (whose
// threads split the work poorly: 1.52 ms on one thread, 1.31 on two, by
// ONEDNN_VERBOSE). Layers with larger outputs gained less in halves in that
// table (28x28x16: 1.19 against 1.20 ms) and nothing measurable inside
// resnet_preact20's train step, so they keep the convolution.
// KMNIST_JAX_ONEDNN_WGRAD=conv, gemm or split forces one way everywhere.
enum WeightGrad { kByConv = 0, kByGemm = 1, kBySplit = 2 };

WeightGrad WeightGradBy(int in_t, int64_t n, int64_t oh, int64_t ow,
                        int64_t c, int64_t kh, int64_t kw, int64_t o) {
  static const int forced = [] {
    const char* v = std::getenv("KMNIST_JAX_ONEDNN_WGRAD");
    if (v == nullptr || v[0] == '\0') return -1;
    return std::strcmp(v, "gemm") == 0    ? int{kByGemm}
           : std::strcmp(v, "split") == 0 ? int{kBySplit}
                                          : int{kByConv};
  }();
  if (forced == kBySplit) return n >= 2 ? kBySplit : kByConv;
  if (forced >= 0) return static_cast<WeightGrad>(forced);
  if (c >= 128 && oh * ow <= (in_t == kBf16 ? 49 : 16)) return kByGemm;
  return in_t == kBf16 && oh * ow <= 49 && n >= 2 ? kBySplit : kByConv;
}

struct PdDeleter {
  void operator()(dnnl_primitive_desc* pd) const {
    dnnl_primitive_desc_destroy(pd);
  }
};
using Pd = std::unique_ptr<dnnl_primitive_desc, PdDeleter>;

std::unique_ptr<Plan> Build(const Key& k) {
  auto [kind, in_t, out_t, n, h, w, c, o, kh, kw, oh, ow, sh, sw, pt, pl] = k;
  Engine& e = GetEngine();
  if (!e.ok) return nullptr;
  // Logical dims in oneDNN order (NCHW, OIHW), strides of NHWC and HWIO.
  dnnl_dims_t xd = {n, c, h, w}, xs = {h * w * c, 1, w * c, c};
  dnnl_dims_t yd = {n, o, oh, ow}, ys = {oh * ow * o, 1, ow * o, o};
  dnnl_dims_t wd = {o, c, kh, kw}, ws = {1, o, kw * c * o, c * o};
  dnnl_dims_t strides = {sh, sw}, dil = {0, 0}, pad_l = {pt, pl};
  dnnl_dims_t pad_r = {(oh - 1) * sh + kh - h - pt, (ow - 1) * sw + kw - w - pl};
  // The activations stay in XLA's NHWC layout (no reorders) for 1x1 and 3x3
  // kernels; for larger ones oneDNN picks its layout ("any", usually
  // nChw16c). Measured 2026-11-29 (experiments/throughput.py, train steps):
  // NHWC made resnet_preact20 16% and keras_cnn 4-8% faster but seed_cnn
  // (5x5 and 4x4 kernels) 40% slower. KMNIST_JAX_ONEDNN_NHWC=0 or 1 forces
  // one layout for every kernel. Where oneDNN has no kernel for NHWC, its
  // own layout.
  static const int forced = [] {
    const char* v = std::getenv("KMNIST_JAX_ONEDNN_NHWC");
    return v == nullptr || v[0] == '\0' ? -1 : v[0] == '1' ? 1 : 0;
  }();
  Descs d;
  // The caller's buffers (NHWC, HWIO) of the inputs' and the outputs' type.
  auto user = [&](const dnnl_dims_t dims, const dnnl_dims_t st, bool input) {
    return d.Make(dims, input ? in_t : out_t, st);
  };
  bool nhwc = forced >= 0 ? forced == 1 : kh * kw <= 9;
  // What the primitives see: the weights in oneDNN's layout, the
  // activations in NHWC or in oneDNN's layout.
  auto act = [&](const dnnl_dims_t dims, const dnnl_dims_t st, bool input) {
    return d.Make(dims, input ? in_t : out_t, nhwc ? st : nullptr);
  };
  auto wei = [&](bool input) {
    return d.Make(wd, input ? in_t : out_t, nullptr);
  };
  // The forward primitive descriptor (dst of type `dst_t`): the forward step
  // itself, and oneDNN's hint for the backward ones.
  auto forward_pd = [&](int dst_t) {
    dnnl_primitive_desc_t pd = nullptr;
    dnnl_convolution_forward_primitive_desc_create(
        &pd, e.engine, kForwardTraining, kConvolutionDirect,
        act(xd, xs, true), wei(true),
        nullptr, d.Make(yd, dst_t, nhwc ? ys : nullptr), strides, dil, pad_l,
        pad_r, nullptr);
    return Pd(pd);
  };
  Pd hint = forward_pd(in_t);
  if (!hint && nhwc) {
    nhwc = false;
    hint = forward_pd(in_t);
  }
  if (!hint) return nullptr;
  auto plan = std::make_unique<Plan>();
  // Adds a convolution step; `spec` lists (oneDNN arg, query, XLA buffer,
  // user desc, is input).
  struct Arg {
    int arg, query, buf;
    const_dnnl_memory_desc_t user;
    bool is_input;
  };
  auto add_step = [&](const Pd& pd, std::initializer_list<Arg> spec) {
    if (!pd) return false;
    Plan::Step step;
    if (dnnl_primitive_create(&step.prim, pd.get())) return false;
    for (const Arg& a : spec) {
      int op = plan->Add(a.buf, a.user,
                         dnnl_primitive_desc_query_md(pd.get(), a.query, 0),
                         a.is_input);
      if (op < 0) return false;
      step.args.push_back({a.arg, op});
    }
    plan->steps.push_back(std::move(step));
    return true;
  };
  auto bwd_data_pd = [&]() {  // dy, w in; dx out.
    dnnl_primitive_desc_t pd = nullptr;
    dnnl_convolution_backward_data_primitive_desc_create(
        &pd, e.engine, kConvolutionDirect, act(xd, xs, false), wei(true),
        act(yd, ys, true), strides, dil, pad_l, pad_r, hint.get(), nullptr);
    return Pd(pd);
  };
  auto bwd_weights_pd = [&]() {  // x, dy in; dw out.
    dnnl_primitive_desc_t pd = nullptr;
    dnnl_convolution_backward_weights_primitive_desc_create(
        &pd, e.engine, kConvolutionDirect, act(xd, xs, true), wei(false),
        nullptr, act(yd, ys, true), strides, dil, pad_l, pad_r, hint.get(),
        nullptr);
    return Pd(pd);
  };
  const size_t elt = in_t == kBf16 ? 2 : 4;  // bytes per input element
  // Gemm's weight gradient from XLA buffers x_buf and dy_buf into dw_buf.
  auto add_gemm = [&](int x_buf, int dy_buf, int dw_buf) {
    auto g = std::make_unique<Gemm>();
    *g = Gemm{n, h, w, c, kh, kw, oh, ow, sh, sw, pt, pl,
              elt, x_buf, dy_buf, dw_buf};
    const int64_t m = n * oh * ow, k = kh * kw * c;
    auto src = d.Matrix(k, m, in_t, 1, k);  // cols(x)^T
    auto wei = d.Matrix(m, o, in_t, o, 1);  // dy
    auto dst = d.Matrix(k, o, out_t, o, 1);  // dw, HWIO
    dnnl_primitive_desc_t pd = nullptr;
    if (!src || !wei || !dst ||
        dnnl_matmul_primitive_desc_create(&pd, e.engine, src, wei, nullptr,
                                          dst, nullptr) != 0)
      return false;
    Pd owned(pd);
    g->cols.reset(std::aligned_alloc(64, (m * k * g->elt + 63) / 64 * 64));
    if (!g->cols || dnnl_primitive_create(&g->prim, pd) != 0 ||
        dnnl_memory_create(&g->src, src, e.engine, g->cols.get()) != 0 ||
        dnnl_memory_create(&g->wei, wei, e.engine, nullptr) != 0 ||
        dnnl_memory_create(&g->dst, dst, e.engine, nullptr) != 0)
      return false;
    plan->gemm = std::move(g);
    return true;
  };
  // Split's weight gradient from XLA buffers x_buf and dy_buf into dw_buf:
  // its primitives are made for one thread each.
  auto add_split = [&](int x_buf, int dy_buf, int dw_buf) {
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    auto sp = std::make_unique<Split>();
    const int64_t n0 = n / 2;
    sp->x_buf = x_buf;
    sp->dy_buf = dy_buf;
    sp->dw_buf = dw_buf;
    sp->x_offset = n0 * h * w * c * elt;
    sp->dy_offset = n0 * oh * ow * o * elt;
    sp->count = o * c * kh * kw;
    sp->bf16_out = out_t == kBf16;
    bool ok = true;
    for (int t = 0; ok && t < 2; ++t) {
      const int64_t nt = t == 0 ? n0 : n - n0;
      dnnl_dims_t xdt = {nt, c, h, w}, ydt = {nt, o, oh, ow};
      auto x_md = d.Make(xdt, in_t, xs), y_md = d.Make(ydt, in_t, ys);
      dnnl_primitive_desc_t fwd = nullptr, pd = nullptr, copy = nullptr;
      ok = x_md && y_md &&
           dnnl_convolution_forward_primitive_desc_create(
               &fwd, e.engine, kForwardTraining, kConvolutionDirect, x_md,
               wei(true), nullptr, y_md, strides, dil, pad_l, pad_r,
               nullptr) == 0;
      Pd fwd_owned(fwd);
      ok = ok && dnnl_convolution_backward_weights_primitive_desc_create(
                     &pd, e.engine, kConvolutionDirect, x_md,
                     d.Make(wd, kF32, nullptr), nullptr, y_md,
                     strides, dil, pad_l, pad_r, fwd, nullptr) == 0;
      Pd pd_owned(pd);
      if (!ok) break;
      auto dw_md = dnnl_primitive_desc_query_md(pd, kQueryDiffWeights, 0);
      auto plain_md = d.Make(wd, kF32, ws);
      size_t dw_bytes = (dnnl_memory_desc_get_size(dw_md) + 63) / 64 * 64;
      sp->dw_store[t].reset(std::aligned_alloc(64, dw_bytes));
      sp->plain_store[t].reset(
          std::aligned_alloc(64, (sp->count * 4 + 63) / 64 * 64));
      ok = plain_md && sp->dw_store[t] && sp->plain_store[t] &&
           dnnl_primitive_create(&sp->prim[t], pd) == 0 &&
           dnnl_reorder_primitive_desc_create(&copy, dw_md, e.engine,
                                              plain_md, e.engine,
                                              nullptr) == 0;
      Pd copy_owned(copy);
      ok = ok && dnnl_primitive_create(&sp->to_plain[t], copy) == 0 &&
           dnnl_memory_create(&sp->x[t], x_md, e.engine, nullptr) == 0 &&
           dnnl_memory_create(&sp->dy[t], y_md, e.engine, nullptr) == 0 &&
           dnnl_memory_create(&sp->dw[t], dw_md, e.engine,
                              sp->dw_store[t].get()) == 0 &&
           dnnl_memory_create(&sp->plain[t], plain_md, e.engine,
                              sp->plain_store[t].get()) == 0 &&
           dnnl_stream_create(&sp->stream[t], e.engine, kStreamInOrder) == 0;
    }
    omp_set_num_threads(threads);
    if (ok) plan->split = std::move(sp);
    return ok;
  };
  const WeightGrad by = kind == kBwdWeights || kind == kBwd
                            ? WeightGradBy(in_t, n, oh, ow, c, kh, kw, o)
                            : kByConv;
  const bool gemm = by == kByGemm, split = by == kBySplit && nhwc;
  auto x_in = user(xd, xs, true), x_out = user(xd, xs, false);
  auto w_in = user(wd, ws, true), w_out = user(wd, ws, false);
  auto y_in = user(yd, ys, true), y_out = user(yd, ys, false);
  // dw from XLA buffers x_buf and dy_buf into dw_buf, the way `by` says.
  auto add_weight_grad = [&](int x_buf, int dy_buf, int dw_buf) {
    if (gemm) return add_gemm(x_buf, dy_buf, dw_buf);
    if (split) return add_split(x_buf, dy_buf, dw_buf);
    return add_step(bwd_weights_pd(),
                    {{kArgSrc, kQuerySrc, x_buf, x_in, true},
                     {kArgDiffDst, kQueryDiffDst, dy_buf, y_in, true},
                     {kArgDiffWeights, kQueryDiffWeights, dw_buf, w_out,
                      false}});
  };
  bool ok = false;
  if (kind == kFwd) {  // x, w -> y
    ok = add_step(in_t == out_t ? std::move(hint) : forward_pd(out_t),
                  {{kArgSrc, kQuerySrc, 0, x_in, true},
                   {kArgWeights, kQueryWeights, 1, w_in, true},
                   {kArgDst, kQueryDst, 2, y_out, false}});
  } else if (kind == kBwdData) {  // dy, w -> dx
    ok = add_step(bwd_data_pd(),
                  {{kArgDiffDst, kQueryDiffDst, 0, y_in, true},
                   {kArgWeights, kQueryWeights, 1, w_in, true},
                   {kArgDiffSrc, kQueryDiffSrc, 2, x_out, false}});
  } else if (kind == kBwdWeights) {  // x, dy -> dw
    ok = add_weight_grad(0, 1, 2);
  } else {  // x, w, dy -> dx, dw: dy is reordered once for both.
    ok = add_step(bwd_data_pd(),
                  {{kArgDiffDst, kQueryDiffDst, 2, y_in, true},
                   {kArgWeights, kQueryWeights, 1, w_in, true},
                   {kArgDiffSrc, kQueryDiffSrc, 3, x_out, false}}) &&
         add_weight_grad(0, 2, 4);
  }
  return ok ? std::move(plan) : nullptr;
}

ffi::Error Run(Kind kind, ffi::DataType in, ffi::DataType out,
               std::initializer_list<void*> buffers,
               ffi::Span<const int64_t> x_dims, ffi::Span<const int64_t> w_dims,
               ffi::Span<const int64_t> y_dims, int64_t sh, int64_t sw,
               int64_t pt, int64_t pl) {
  Key key{kind,      OneDnnType(in), OneDnnType(out),
          x_dims[0], x_dims[1],      x_dims[2],       x_dims[3],
          w_dims[3], w_dims[0],      w_dims[1],       y_dims[1],
          y_dims[2], sh,             sw,              pt,
          pl};
  std::lock_guard<std::mutex> lock(kmnist_checks::TeamMutex());
  auto& slot = Cache()[key];
  if (!slot) slot = Build(key);
  if (!slot) {
    Cache().erase(key);
    return ffi::Error::Internal("oneDNN could not build this convolution");
  }
  Plan& plan = *slot;
  std::vector<void*> data(buffers);
  for (size_t i = 0; i < plan.ops.size(); ++i)
    dnnl_memory_set_data_handle(plan.ops[i]->user, data[plan.buffer[i]]);
  bool ok = true;
  for (size_t i = 0; ok && i < plan.ops.size(); ++i)
    if (plan.input[i]) ok = plan.ops[i]->Reorder(true);
  for (const Plan::Step& step : plan.steps) {
    if (!ok) break;
    std::vector<dnnl_exec_arg_t> args;
    for (auto [arg, op] : step.args) args.push_back({arg, plan.ops[op]->inner});
    ok = dnnl_primitive_execute(step.prim, GetEngine().stream,
                                static_cast<int>(args.size()),
                                args.data()) == 0;
  }
  if (ok && plan.gemm) ok = plan.gemm->Run(data, GetEngine().stream);
  if (ok && plan.split) ok = plan.split->Run(data);
  for (size_t i = 0; ok && i < plan.ops.size(); ++i)
    if (!plan.input[i]) ok = plan.ops[i]->Reorder(false);
  if (!ok || dnnl_stream_wait(GetEngine().stream) != 0)
    return ffi::Error::Internal("oneDNN convolution failed");
  return ffi::Error::Success();
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer w,
               ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw,
               int64_t pt, int64_t pl) {
  ffi::DataType in = ffi::DataType::INVALID, out = ffi::DataType::INVALID;
  KMNIST_CHECK(CheckBuffer("x", x, &in));
  KMNIST_CHECK(CheckBuffer("w", w, &in));
  KMNIST_CHECK(CheckBuffer("y", *y, &out, true));
  KMNIST_CHECK(CheckTypes(in, out));
  KMNIST_CHECK(CheckProblem(x.dimensions(), w.dimensions(), y->dimensions(),
                            sh, sw, pt, pl));
  return Run(kFwd, in, out,
             {x.untyped_data(), w.untyped_data(), y->untyped_data()},
             x.dimensions(), w.dimensions(), y->dimensions(), sh, sw, pt, pl);
}

ffi::Error BwdData(ffi::AnyBuffer dy, ffi::AnyBuffer w,
                   ffi::Result<ffi::AnyBuffer> dx, int64_t sh, int64_t sw,
                   int64_t pt, int64_t pl) {
  ffi::DataType in = ffi::DataType::INVALID, out = ffi::DataType::INVALID;
  KMNIST_CHECK(CheckBuffer("dy", dy, &in));
  KMNIST_CHECK(CheckBuffer("w", w, &in));
  KMNIST_CHECK(CheckBuffer("dx", *dx, &out, true));
  KMNIST_CHECK(CheckTypes(in, out));
  KMNIST_CHECK(CheckProblem(dx->dimensions(), w.dimensions(), dy.dimensions(),
                            sh, sw, pt, pl));
  return Run(kBwdData, in, out,
             {dy.untyped_data(), w.untyped_data(), dx->untyped_data()},
             dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt,
             pl);
}

ffi::Error BwdWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                      ffi::Result<ffi::AnyBuffer> dw, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pl) {
  ffi::DataType in = ffi::DataType::INVALID, out = ffi::DataType::INVALID;
  KMNIST_CHECK(CheckBuffer("x", x, &in));
  KMNIST_CHECK(CheckBuffer("dy", dy, &in));
  KMNIST_CHECK(CheckBuffer("dw", *dw, &out, true));
  KMNIST_CHECK(CheckTypes(in, out));
  KMNIST_CHECK(CheckProblem(x.dimensions(), dw->dimensions(), dy.dimensions(),
                            sh, sw, pt, pl));
  return Run(kBwdWeights, in, out,
             {x.untyped_data(), dy.untyped_data(), dw->untyped_data()},
             x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, pt,
             pl);
}

ffi::Error Bwd(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy,
               ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dw,
               int64_t sh, int64_t sw, int64_t pt, int64_t pl) {
  ffi::DataType in = ffi::DataType::INVALID, out = ffi::DataType::INVALID;
  KMNIST_CHECK(CheckBuffer("x", x, &in));
  KMNIST_CHECK(CheckBuffer("w", w, &in));
  KMNIST_CHECK(CheckBuffer("dy", dy, &in));
  KMNIST_CHECK(CheckBuffer("dx", *dx, &out, true));
  KMNIST_CHECK(CheckBuffer("dw", *dw, &out, true));
  KMNIST_CHECK(CheckTypes(in, out));
  if (!Same(dx->dimensions(), x.dimensions()))
    return ffi::Error::InvalidArgument(
        "kmnist_conv: dx's shape differs from x's");
  if (!Same(dw->dimensions(), w.dimensions()))
    return ffi::Error::InvalidArgument(
        "kmnist_conv: dw's shape differs from w's");
  KMNIST_CHECK(CheckProblem(x.dimensions(), w.dimensions(), dy.dimensions(),
                            sh, sw, pt, pl));
  return Run(kBwd, in, out,
             {x.untyped_data(), w.untyped_data(), dy.untyped_data(),
              dx->untyped_data(), dw->untyped_data()},
             x.dimensions(), w.dimensions(), dy.dimensions(), sh, sw, pt, pl);
}

}  // namespace

#define KMNIST_CONV_BINDING                                         \
  ffi::Ffi::Bind()                                                  \
      .Arg<ffi::AnyBuffer>()                                        \
      .Arg<ffi::AnyBuffer>()                                        \
      .Ret<ffi::AnyBuffer>()                                        \
      .Attr<int64_t>("stride_h")                                    \
      .Attr<int64_t>("stride_w")                                    \
      .Attr<int64_t>("pad_top")                                     \
      .Attr<int64_t>("pad_left")

XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_conv_fwd, Fwd, KMNIST_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_conv_bwd_data, BwdData,
                              KMNIST_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_conv_bwd_weights, BwdWeights,
                              KMNIST_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_conv_bwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("stride_h")
                                  .Attr<int64_t>("stride_w")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left"));
