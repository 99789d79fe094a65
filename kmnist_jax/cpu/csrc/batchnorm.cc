// Training-mode BatchNorm followed by ReLU, and its gradient, as XLA FFI
// handlers (CPU; activations float32 or bfloat16, channels last):
//   kmnist_bn_relu_fwd: x (..., C), scale (C), bias (C)
//                       -> y (..., C), mean (C), var (C)
//   kmnist_bn_relu_bwd: x, dy (..., C), scale, bias, mean, var (C)
//                       -> dx (..., C), dscale (C), dbias (C)
// with y = max((x - mean) * rsqrt(var + eps) * scale + bias, 0), mean and
// var the batch statistics over every axis but the last (var biased, from
// E[x^2] - E[x]^2 clipped at 0, as flax's BatchNorm with its default fast
// variance). Attribute: eps (float32). After a residual add:
//   kmnist_add_bn_relu_fwd: a, b (..., C), scale, bias (C)
//                           -> s = a + b, then y, mean, var of s
//   kmnist_bn_relu_bwd_add: x, dy, ds (..., C), scale, bias, mean, var (C)
//                           -> dx + ds, dscale, dbias
// (s is written in the statistics pass, rounded as the activations are;
// ds, the gradient that reaches s directly, is added in dx's pass).
//
// Why: XLA:CPU runs flax's BatchNorm+ReLU and its autodiff gradient as
// several loop fusions, at about a third of this CPU's memory bandwidth for
// a ResNet's first-stage activations. Here the forward pass reads x twice
// (statistics, then y) and the backward pass reads x and dy twice (two
// per-channel sums, then dx): the fewest passes the formulas allow. The
// per-channel sums are float32 over blocks of 64 rows, then float64 over
// 16 fixed chunks of rows (run on an OpenMP team); every
// elementwise step is float32; bfloat16 activations are read and written as
// bfloat16 (rounded to nearest even).
// The loops hold a tile of up to 64 channels' per-channel values and sums
// in vector registers while they walk the rows (the same sums, in the same
// order, as a loop over channels). On the 2-core Intel Xeon with AMX
// (2026-12-06), resnet_preact20's kernels at batch 128 in bfloat16 (its 19
// forward and 19 backward calls a step) took 13.3 ms against 15.9 ms with
// the per-channel arrays in memory, and its train step ran 1.08x faster.
//
// kmnist_jax.cpu.onednn compiles this file with onednn_conv.cc into one
// library; kmnist_jax.cpu.batchnorm calls it through jax.ffi. The loops are
// compiled for AVX-512, AVX2 and plain x86-64 (GCC target_clones; the loader
// picks the CPU's best).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "onednn_checks.h"
#include "xla/ffi/api/ffi.h"

namespace {

namespace ffi = xla::ffi;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KMNIST_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KMNIST_CLONES
#endif

inline float Load(const float* p, int64_t i) { return p[i]; }
inline float Load(const uint16_t* p, int64_t i) {
  uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline void Store(float* p, int64_t i, float v) { p[i] = v; }
inline void Store(uint16_t* p, int64_t i, float v) {
  p[i] = kmnist_checks::ToBf16(v);
}

constexpr int64_t kBlock = 64;  // Rows summed in float32 before float64.

// 16 float32 lanes (one AVX-512 register; two AVX2 or four SSE ones in the
// other clones). The loops below keep a tile of 16, 32, 48 or 64 channels of
// per-channel values and sums in such registers while they walk the rows;
// channels past the last whole tile of 16 take the scalar loops.
typedef float VF __attribute__((vector_size(64)));
typedef uint32_t VU __attribute__((vector_size(64)));
typedef uint16_t VH __attribute__((vector_size(32)));
constexpr int kLanes = 16;

#define KMNIST_INLINE static inline __attribute__((always_inline))

KMNIST_INLINE VF LoadV(const float* p) {
  VF v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
KMNIST_INLINE VF LoadV(const uint16_t* p) {
  VH h;
  std::memcpy(&h, p, sizeof(h));
  VU u = __builtin_convertvector(h, VU) << 16;
  VF v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}
KMNIST_INLINE void StoreV(float* p, VF v) { std::memcpy(p, &v, sizeof(v)); }
KMNIST_INLINE void StoreV(uint16_t* p, VF v) {
  VU u;
  std::memcpy(&u, &v, sizeof(u));
  // As Store: round to nearest even; a NaN stays a (quiet) NaN.
  VU r = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u)
                                           : u + 0x7fffu + ((u >> 16) & 1u);
  VH h = __builtin_convertvector(r >> 16, VH);
  std::memcpy(p, &h, sizeof(h));
}
KMNIST_INLINE VF LoadF(const float* p) { return LoadV(p); }
// max(v, 0) that keeps a NaN, as jax.nn.relu.
KMNIST_INLINE VF Relu(VF v) {
  VF zero = {};
  return v < zero ? zero : v;
}

// Calls f(std::integral_constant<int, K>, j0) for each tile of K * 16
// channels (K <= 4) covering [0, c - c % 16), then f(0-constant, j0) for the
// rest, if any: the scalar loops over channels [j0, c).
template <typename F>
void ForTiles(int64_t c, F f) {
  int64_t j = 0;
  for (; j + 4 * kLanes <= c; j += 4 * kLanes)
    f(std::integral_constant<int, 4>{}, j);
  if (j + 3 * kLanes <= c) {
    f(std::integral_constant<int, 3>{}, j);
    j += 3 * kLanes;
  } else if (j + 2 * kLanes <= c) {
    f(std::integral_constant<int, 2>{}, j);
    j += 2 * kLanes;
  } else if (j + kLanes <= c) {
    f(std::integral_constant<int, 1>{}, j);
    j += kLanes;
  }
  if (j < c) f(std::integral_constant<int, 0>{}, j);
}

// Per-channel sums of x and x*x over rows [r0, r1) (at most kBlock) of
// channels [j0, j0 + 16K) (K = 0: [j0, c)), added to s and s2 (float64).
template <int K, typename T>
KMNIST_CLONES void MomentsTile(const T* x, int64_t r0, int64_t r1, int64_t c,
                               int64_t j0, double* s, double* s2) {
  if constexpr (K == 0) {
    float a[kLanes] = {}, a2[kLanes] = {};
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = j0; j < c; ++j) {
        float v = Load(x + r * c, j);
        a[j - j0] += v;
        a2[j - j0] += v * v;
      }
    for (int64_t j = j0; j < c; ++j) {
      s[j] += a[j - j0];
      s2[j] += a2[j - j0];
    }
  } else {
    VF a[K] = {}, a2[K] = {};
    for (int64_t r = r0; r < r1; ++r) {
      const T* row = x + r * c + j0;
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        VF v = LoadV(row + k * kLanes);
        a[k] += v;
        a2[k] += v * v;
      }
    }
    for (int k = 0; k < K; ++k)
      for (int l = 0; l < kLanes; ++l) {
        s[j0 + k * kLanes + l] += a[k][l];
        s2[j0 + k * kLanes + l] += a2[k][l];
      }
  }
}

// MomentsTile of s = a + b, which it writes (rounded to T first, so the sums
// are those of the stored s: as an add followed by BatchNorm computes them).
template <int K, typename T>
KMNIST_CLONES void SumMomentsTile(const T* a, const T* b, T* sum, int64_t r0,
                                  int64_t r1, int64_t c, int64_t j0,
                                  double* s, double* s2) {
  if constexpr (K == 0) {
    float p[kLanes] = {}, p2[kLanes] = {};
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = j0; j < c; ++j) {
        Store(sum + r * c, j, Load(a + r * c, j) + Load(b + r * c, j));
        float v = Load(sum + r * c, j);
        p[j - j0] += v;
        p2[j - j0] += v * v;
      }
    for (int64_t j = j0; j < c; ++j) {
      s[j] += p[j - j0];
      s2[j] += p2[j - j0];
    }
  } else {
    VF p[K] = {}, p2[K] = {};
    for (int64_t r = r0; r < r1; ++r) {
      int64_t o = r * c + j0;
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        StoreV(sum + o + k * kLanes,
               LoadV(a + o + k * kLanes) + LoadV(b + o + k * kLanes));
        VF v = LoadV(sum + o + k * kLanes);  // As stored: rounded to T.
        p[k] += v;
        p2[k] += v * v;
      }
    }
    for (int k = 0; k < K; ++k)
      for (int l = 0; l < kLanes; ++l) {
        s[j0 + k * kLanes + l] += p[k][l];
        s2[j0 + k * kLanes + l] += p2[k][l];
      }
  }
}

// Moments of s = a + b over rows [begin, end), writing s.
template <typename T>
void SumMoments(const T* a, const T* b, T* sum, int64_t begin, int64_t end,
                int64_t c, double* s, double* s2) {
  for (int64_t j = 0; j < c; ++j) s[j] = s2[j] = 0.0;
  for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
    int64_t r1 = r0 + kBlock < end ? r0 + kBlock : end;
    ForTiles(c, [&](auto k, int64_t j0) {
      SumMomentsTile<decltype(k)::value>(a, b, sum, r0, r1, c, j0, s, s2);
    });
  }
}

// Per-channel sums of x and x*x over rows [begin, end) of c channels, each
// the float64 sum of float32 sums over blocks of kBlock rows.
template <typename T>
void Moments(const T* x, int64_t begin, int64_t end, int64_t c, double* s,
             double* s2) {
  for (int64_t j = 0; j < c; ++j) s[j] = s2[j] = 0.0;
  for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
    int64_t r1 = r0 + kBlock < end ? r0 + kBlock : end;
    ForTiles(c, [&](auto k, int64_t j0) {
      MomentsTile<decltype(k)::value>(x, r0, r1, c, j0, s, s2);
    });
  }
}

// y = max(x * a + b, 0) over rows [begin, end), channels [j0, j0 + 16K).
template <int K, typename T>
KMNIST_CLONES void ScaleShiftReluTile(const T* __restrict x, int64_t begin,
                                      int64_t end, int64_t c, int64_t j0,
                                      const float* __restrict a,
                                      const float* __restrict b,
                                      T* __restrict y) {
  if constexpr (K == 0) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t j = j0; j < c; ++j) {
        float v = Load(x + r * c, j) * a[j] + b[j];
        Store(y + r * c, j, v < 0.f ? 0.f : v);  // A NaN stays NaN.
      }
  } else {
    VF va[K], vb[K];
    for (int k = 0; k < K; ++k) {
      va[k] = LoadF(a + j0 + k * kLanes);
      vb[k] = LoadF(b + j0 + k * kLanes);
    }
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c + j0;
      T* yr = y + r * c + j0;
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k)
        StoreV(yr + k * kLanes, Relu(LoadV(xr + k * kLanes) * va[k] + vb[k]));
    }
  }
}

template <typename T>
void ScaleShiftRelu(const T* x, int64_t begin, int64_t end, int64_t c,
                    const float* a, const float* b, T* y) {
  ForTiles(c, [&](auto k, int64_t j0) {
    ScaleShiftReluTile<decltype(k)::value>(x, begin, end, c, j0, a, b, y);
  });
}

// Over rows [r0, r1) (at most kBlock), channels [j0, j0 + 16K): g = dy where
// x * a + b > 0, else 0; the sums of g and of g * (x - mean) * inv added to
// sg and sgx (float64).
template <int K, typename T>
KMNIST_CLONES void GradSumsTile(const T* x, const T* dy, int64_t r0,
                                int64_t r1, int64_t c, int64_t j0,
                                const float* a, const float* b,
                                const float* mean, const float* inv,
                                double* sg, double* sgx) {
  if constexpr (K == 0) {
    float acc[kLanes] = {}, accx[kLanes] = {};
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = j0; j < c; ++j) {
        float v = Load(x + r * c, j);
        float g = v * a[j] + b[j] > 0.f ? Load(dy + r * c, j) : 0.f;
        acc[j - j0] += g;
        accx[j - j0] += g * ((v - mean[j]) * inv[j]);
      }
    for (int64_t j = j0; j < c; ++j) {
      sg[j] += acc[j - j0];
      sgx[j] += accx[j - j0];
    }
  } else {
    VF va[K], vb[K], vm[K], vi[K], acc[K] = {}, accx[K] = {};
    for (int k = 0; k < K; ++k) {
      va[k] = LoadF(a + j0 + k * kLanes);
      vb[k] = LoadF(b + j0 + k * kLanes);
      vm[k] = LoadF(mean + j0 + k * kLanes);
      vi[k] = LoadF(inv + j0 + k * kLanes);
    }
    const VF zero = {};
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * c + j0;
      const T* gr = dy + r * c + j0;
#pragma GCC unroll 4
      for (int k = 0; k < K; ++k) {
        VF v = LoadV(xr + k * kLanes);
        VF g = v * va[k] + vb[k] > zero ? LoadV(gr + k * kLanes) : zero;
        acc[k] += g;
        accx[k] += g * ((v - vm[k]) * vi[k]);
      }
    }
    for (int k = 0; k < K; ++k)
      for (int l = 0; l < kLanes; ++l) {
        sg[j0 + k * kLanes + l] += acc[k][l];
        sgx[j0 + k * kLanes + l] += accx[k][l];
      }
  }
}

// g = dy where x * a + b > 0, else 0; sums of g and of g * (x - mean) * inv.
template <typename T>
void GradSums(const T* x, const T* dy, int64_t begin, int64_t end, int64_t c,
              const float* a, const float* b, const float* mean,
              const float* inv, double* sg, double* sgx) {
  for (int64_t j = 0; j < c; ++j) sg[j] = sgx[j] = 0.0;
  for (int64_t r0 = begin; r0 < end; r0 += kBlock) {
    int64_t r1 = r0 + kBlock < end ? r0 + kBlock : end;
    ForTiles(c, [&](auto k, int64_t j0) {
      GradSumsTile<decltype(k)::value>(x, dy, r0, r1, c, j0, a, b, mean, inv,
                                       sg, sgx);
    });
  }
}

// dx = a * (g - mean(g) - xhat * mean(g * xhat)) over rows [begin, end),
// channels [j0, j0 + 16K).
template <int K, typename T>
KMNIST_CLONES void InputGradTile(
    const T* __restrict x, const T* __restrict dy, const T* __restrict extra,
    int64_t begin, int64_t end, int64_t c, int64_t j0,
    const float* __restrict a, const float* __restrict b,
    const float* __restrict mean, const float* __restrict inv,
    const float* __restrict mg, const float* __restrict mgx,
    T* __restrict dx) {
  if constexpr (K == 0) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t j = j0; j < c; ++j) {
        float v = Load(x + r * c, j);
        float g = v * a[j] + b[j] > 0.f ? Load(dy + r * c, j) : 0.f;
        float xhat = (v - mean[j]) * inv[j];
        float d = a[j] * (g - mg[j] - xhat * mgx[j]);
        Store(dx + r * c, j, extra ? d + Load(extra + r * c, j) : d);
      }
  } else {
    VF va[K], vb[K], vm[K], vi[K], vg[K], vgx[K];
    for (int k = 0; k < K; ++k) {
      int64_t j = j0 + k * kLanes;
      va[k] = LoadF(a + j);
      vb[k] = LoadF(b + j);
      vm[k] = LoadF(mean + j);
      vi[k] = LoadF(inv + j);
      vg[k] = LoadF(mg + j);
      vgx[k] = LoadF(mgx + j);
    }
    const VF zero = {};
    // Two copies of the loop: with and without the extra cotangent.
    auto rows = [&](auto with_extra) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = x + r * c + j0;
        const T* gr = dy + r * c + j0;
        T* dr = dx + r * c + j0;
#pragma GCC unroll 4
        for (int k = 0; k < K; ++k) {
          VF v = LoadV(xr + k * kLanes);
          VF g = v * va[k] + vb[k] > zero ? LoadV(gr + k * kLanes) : zero;
          VF xhat = (v - vm[k]) * vi[k];
          VF d = va[k] * (g - vg[k] - xhat * vgx[k]);
          if constexpr (decltype(with_extra)::value)
            d += LoadV(extra + r * c + j0 + k * kLanes);
          StoreV(dr + k * kLanes, d);
        }
      }
    };
    if (extra)
      rows(std::true_type{});
    else
      rows(std::false_type{});
  }
}

// dx, plus `extra` (a second cotangent of x, or nullptr).
template <typename T>
void InputGrad(const T* x, const T* dy, const T* extra, int64_t begin,
               int64_t end, int64_t c, const float* a, const float* b,
               const float* mean, const float* inv, const float* mg,
               const float* mgx, T* dx) {
  ForTiles(c, [&](auto k, int64_t j0) {
    InputGradTile<decltype(k)::value>(x, dy, extra, begin, end, c, j0, a, b,
                                      mean, inv, mg, mgx, dx);
  });
}

ffi::Error Invalid(const std::string& m) {
  return ffi::Error::InvalidArgument("kmnist_bn_relu: " + m);
}

// x (and every buffer listed with it) float32 or bfloat16, rank >= 1, the
// same dimensions; each per-channel buffer float32 of shape (C).
ffi::Error CheckActivations(std::initializer_list<
                                std::pair<const char*, const ffi::AnyBuffer*>>
                                bufs) {
  const ffi::AnyBuffer& x = *bufs.begin()->second;
  ffi::DataType t = x.element_type();
  if (t != ffi::DataType::F32 && t != ffi::DataType::BF16)
    return Invalid("x must be float32 or bfloat16");
  auto d = x.dimensions();
  if (d.size() < 1) return Invalid("x must have rank 1 or more");
  for (int64_t n : d)
    if (n < 1) return Invalid("x has an empty dimension");
  for (const auto& [name, b] : bufs) {
    if (b->element_type() != t)
      return Invalid(std::string(name) + " must have x's element type");
    auto e = b->dimensions();
    bool same = e.size() == d.size();
    for (size_t i = 0; same && i < d.size(); ++i) same = e[i] == d[i];
    if (!same) return Invalid(std::string(name) + " must have x's shape");
  }
  return ffi::Error::Success();
}

ffi::Error CheckChannels(const char* name, const ffi::AnyBuffer& b,
                         int64_t c) {
  if (b.element_type() != ffi::DataType::F32)
    return Invalid(std::string(name) + " must be float32");
  auto d = b.dimensions();
  if (d.size() != 1 || d[0] != c)
    return Invalid(std::string(name) + " must have shape (" +
                   std::to_string(c) + ",)");
  return ffi::Error::Success();
}

#define KMNIST_BN_CHECK(expr)          \
  do {                                 \
    ::xla::ffi::Error error = (expr);  \
    if (error.failure()) return error; \
  } while (0)

void Rows(const ffi::AnyBuffer& x, int64_t* m, int64_t* c) {
  auto d = x.dimensions();
  *c = d[d.size() - 1];
  *m = 1;
  for (size_t i = 0; i + 1 < d.size(); ++i) *m *= d[i];
}

// a = scale * inv, b = bias - mean * a, inv = 1 / sqrt(var + eps).
void Affine(int64_t c, const float* scale, const float* bias,
            const float* mean, const float* var, float eps, float* inv,
            float* a, float* b) {
  for (int64_t j = 0; j < c; ++j) {
    inv[j] = 1.f / std::sqrt(var[j] + eps);
    a[j] = scale[j] * inv[j];
    b[j] = bias[j] - mean[j] * a[j];
  }
}

// The rows are cut into kChunks ranges; the sums of the ranges are added in
// range order, so results do not depend on which thread ran which range, nor
// on how many there were.
constexpr int kChunks = 16;

int64_t ChunkBegin(int64_t m, int k) { return m * k / kChunks; }

// Runs chunk(k) for every k < kChunks on an OpenMP team, each thread taking
// the next chunk until none is left: the team oneDNN's convolutions run on
// (onednn_conv.cc), so its threads go from a convolution to a BatchNorm
// without waking. Until 2026-12-06 the chunks ran on XLA's intra-op pool;
// on the 2-core Intel Xeon with AMX resnet_preact20's bfloat16 train step
// at batch 128 then took 58.3, 58.6 and 59.8 ms against 57.7, 54.6 and 56.2
// on the team (A/Bs one after the other, 40 steps each).
void ParallelChunks(const std::function<void(int)>& chunk) {
  std::lock_guard<std::mutex> lock(kmnist_checks::TeamMutex());
#pragma omp parallel for schedule(dynamic, 1)
  for (int k = 0; k < kChunks; ++k) chunk(k);
}

// Per-channel totals of `sums(begin, end, s, s2)` over every chunk.
template <typename F>
void ChunkedSums(int64_t m, int64_t c, double* s,
                 double* s2, F sums) {
  std::vector<double> part(2 * kChunks * c);
  ParallelChunks([&](int k) {
    sums(ChunkBegin(m, k), ChunkBegin(m, k + 1), part.data() + 2 * k * c,
         part.data() + (2 * k + 1) * c);
  });
  for (int64_t j = 0; j < c; ++j) s[j] = s2[j] = 0.0;
  for (int k = 0; k < kChunks; ++k)
    for (int64_t j = 0; j < c; ++j) {
      s[j] += part[2 * k * c + j];
      s2[j] += part[(2 * k + 1) * c + j];
    }
}

template <typename F>
void ChunkedRows(int64_t m, F rows) {
  ParallelChunks([&](int k) {
    rows(ChunkBegin(m, k), ChunkBegin(m, k + 1));
  });
}

// BatchNorm+ReLU of x. With `sum_b` non-null, x is the buffer of
// s = sum_a + sum_b, which the statistics pass writes, then normalises.
template <typename T>
void Forward(const ffi::AnyBuffer& x,
             const float* scale, const float* bias, float eps,
             ffi::AnyBuffer* y, float* mean, float* var,
             const T* sum_a = nullptr, const T* sum_b = nullptr) {
  int64_t m, c;
  Rows(x, &m, &c);
  const T* xp = static_cast<const T*>(x.untyped_data());
  std::vector<double> s(c), s2(c);
  ChunkedSums(m, c, s.data(), s2.data(),
              [&](int64_t b0, int64_t b1, double* p, double* p2) {
                if (sum_b)
                  SumMoments(sum_a, sum_b, const_cast<T*>(xp), b0, b1, c, p,
                             p2);
                else
                  Moments(xp, b0, b1, c, p, p2);
              });
  std::vector<float> inv(c), a(c), b(c);
  for (int64_t j = 0; j < c; ++j) {
    // E[x^2] - E[x]^2 in float32 and clipped at 0 as flax's
    // jnp.maximum(0, v), which keeps a NaN: an overflowing step reaches the
    // loss as NaN, and training stops there.
    float mu = static_cast<float>(s[j] / m);
    float v = static_cast<float>(s2[j] / m) - mu * mu;
    mean[j] = mu;
    var[j] = v < 0.f ? 0.f : v;
  }
  Affine(c, scale, bias, mean, var, eps, inv.data(), a.data(), b.data());
  T* yp = static_cast<T*>(y->untyped_data());
  ChunkedRows(m, [&](int64_t b0, int64_t b1) {
    ScaleShiftRelu(xp, b0, b1, c, a.data(), b.data(), yp);
  });
}

// With `extra` non-null, dx also gets that second cotangent of x added.
template <typename T>
void Backward(const ffi::AnyBuffer& x,
              const ffi::AnyBuffer& dy,
              const float* scale, const float* bias, const float* mean,
              const float* var, float eps, ffi::AnyBuffer* dx, float* dscale,
              float* dbias, const T* extra = nullptr) {
  int64_t m, c;
  Rows(x, &m, &c);
  const T* xp = static_cast<const T*>(x.untyped_data());
  const T* gp = static_cast<const T*>(dy.untyped_data());
  std::vector<float> inv(c), a(c), b(c), mg(c), mgx(c);
  Affine(c, scale, bias, mean, var, eps, inv.data(), a.data(), b.data());
  std::vector<double> sg(c), sgx(c);
  ChunkedSums(m, c, sg.data(), sgx.data(),
              [&](int64_t b0, int64_t b1, double* p, double* p2) {
                GradSums(xp, gp, b0, b1, c, a.data(), b.data(), mean,
                         inv.data(), p, p2);
              });
  for (int64_t j = 0; j < c; ++j) {
    dbias[j] = static_cast<float>(sg[j]);
    dscale[j] = static_cast<float>(sgx[j]);
    mg[j] = static_cast<float>(sg[j] / m);
    mgx[j] = static_cast<float>(sgx[j] / m);
  }
  T* dp = static_cast<T*>(dx->untyped_data());
  ChunkedRows(m, [&](int64_t b0, int64_t b1) {
    InputGrad(xp, gp, extra, b0, b1, c, a.data(), b.data(), mean, inv.data(),
              mg.data(), mgx.data(), dp);
  });
}

// Every per-channel buffer float32 of shape (C); eps positive.
ffi::Error CheckPerChannel(
    int64_t c, float eps,
    std::initializer_list<std::pair<const char*, const ffi::AnyBuffer*>>
        bufs) {
  for (const auto& [name, b] : bufs) KMNIST_BN_CHECK(CheckChannels(name, *b, c));
  if (!(eps > 0.f)) return Invalid("eps must be positive");
  return ffi::Error::Success();
}

// f(float{}) for float32 activations, f(uint16_t{}) for bfloat16 ones.
template <typename F>
ffi::Error ForElementType(const ffi::AnyBuffer& x, F f) {
  if (x.element_type() == ffi::DataType::F32) f(float{});
  else f(uint16_t{});
  return ffi::Error::Success();
}

const float* F32(const ffi::AnyBuffer& b) {
  return static_cast<const float*>(b.untyped_data());
}
float* F32(ffi::AnyBuffer* b) { return static_cast<float*>(b->untyped_data()); }
template <typename T>
const T* Data(const ffi::AnyBuffer* b) {
  return b ? static_cast<const T*>(b->untyped_data()) : nullptr;
}

// The per-channel checks, then Forward of x; with `a` and `b`, of the sum
// s = a + b, which it writes into x first.
ffi::Error ForwardHandler(const ffi::AnyBuffer& x,
                          const ffi::AnyBuffer* a, const ffi::AnyBuffer* b,
                          const ffi::AnyBuffer& scale,
                          const ffi::AnyBuffer& bias, ffi::AnyBuffer* y,
                          ffi::AnyBuffer* mean, ffi::AnyBuffer* var,
                          float eps) {
  int64_t m, c;
  Rows(x, &m, &c);
  KMNIST_BN_CHECK(CheckPerChannel(
      c, eps, {{"scale", &scale}, {"bias", &bias}, {"mean", mean},
               {"var", var}}));
  return ForElementType(x, [&](auto tag) {
    using T = decltype(tag);
    Forward<T>(x, F32(scale), F32(bias), eps, y, F32(mean), F32(var),
               Data<T>(a), Data<T>(b));
  });
}

// The per-channel checks, then Backward; with `ds`, a second cotangent of x
// added to dx.
ffi::Error BackwardHandler(const ffi::AnyBuffer& x,
                           const ffi::AnyBuffer& dy, const ffi::AnyBuffer* ds,
                           const ffi::AnyBuffer& scale,
                           const ffi::AnyBuffer& bias,
                           const ffi::AnyBuffer& mean,
                           const ffi::AnyBuffer& var, ffi::AnyBuffer* dx,
                           ffi::AnyBuffer* dscale, ffi::AnyBuffer* dbias,
                           float eps) {
  int64_t m, c;
  Rows(x, &m, &c);
  KMNIST_BN_CHECK(CheckPerChannel(
      c, eps, {{"scale", &scale}, {"bias", &bias}, {"mean", &mean},
               {"var", &var}, {"dscale", dscale}, {"dbias", dbias}}));
  return ForElementType(x, [&](auto tag) {
    using T = decltype(tag);
    Backward<T>(x, dy, F32(scale), F32(bias), F32(mean), F32(var), eps,
                dx, F32(dscale), F32(dbias), Data<T>(ds));
  });
}

ffi::Error Fwd(ffi::AnyBuffer x, ffi::AnyBuffer scale,
               ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
               ffi::Result<ffi::AnyBuffer> mean,
               ffi::Result<ffi::AnyBuffer> var, float eps) {
  KMNIST_BN_CHECK(CheckActivations({{"x", &x}, {"y", &*y}}));
  return ForwardHandler(x, nullptr, nullptr, scale, bias, &*y, &*mean,
                        &*var, eps);
}

ffi::Error Bwd(ffi::AnyBuffer x, ffi::AnyBuffer dy,
               ffi::AnyBuffer scale, ffi::AnyBuffer bias, ffi::AnyBuffer mean,
               ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> dx,
               ffi::Result<ffi::AnyBuffer> dscale,
               ffi::Result<ffi::AnyBuffer> dbias, float eps) {
  KMNIST_BN_CHECK(CheckActivations({{"x", &x}, {"dy", &dy}, {"dx", &*dx}}));
  return BackwardHandler(x, dy, nullptr, scale, bias, mean, var, &*dx,
                         &*dscale, &*dbias, eps);
}

// s = a + b, then Fwd of s: a, b, scale, bias -> s, y, mean, var.
ffi::Error AddFwd(ffi::AnyBuffer a, ffi::AnyBuffer b,
                  ffi::AnyBuffer scale, ffi::AnyBuffer bias,
                  ffi::Result<ffi::AnyBuffer> s,
                  ffi::Result<ffi::AnyBuffer> y,
                  ffi::Result<ffi::AnyBuffer> mean,
                  ffi::Result<ffi::AnyBuffer> var, float eps) {
  KMNIST_BN_CHECK(
      CheckActivations({{"a", &a}, {"b", &b}, {"s", &*s}, {"y", &*y}}));
  return ForwardHandler(*s, &a, &b, scale, bias, &*y, &*mean, &*var,
                        eps);
}

// Bwd with a second cotangent of x, ds, added to dx: x, dy, ds, scale,
// bias, mean, var -> dx, dscale, dbias.
ffi::Error BwdAdd(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                  ffi::AnyBuffer ds, ffi::AnyBuffer scale,
                  ffi::AnyBuffer bias, ffi::AnyBuffer mean,
                  ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> dx,
                  ffi::Result<ffi::AnyBuffer> dscale,
                  ffi::Result<ffi::AnyBuffer> dbias, float eps) {
  KMNIST_BN_CHECK(CheckActivations(
      {{"x", &x}, {"dy", &dy}, {"ds", &ds}, {"dx", &*dx}}));
  return BackwardHandler(x, dy, &ds, scale, bias, mean, var, &*dx,
                         &*dscale, &*dbias, eps);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_bn_relu_fwd, Fwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_bn_relu_bwd, Bwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_add_bn_relu_fwd, AddFwd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
XLA_FFI_DEFINE_HANDLER_SYMBOL(kmnist_bn_relu_bwd_add, BwdAdd,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
