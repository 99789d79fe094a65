// Checks of the buffers and attributes of kmnist_jax's oneDNN FFI handlers
// (onednn_conv.cc): each returns InvalidArgument naming what is wrong, so a
// handler never reads or writes memory its buffers do not hold.

#ifndef KMNIST_JAX_CPU_CSRC_ONEDNN_CHECKS_H_
#define KMNIST_JAX_CPU_CSRC_ONEDNN_CHECKS_H_

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>

#include "xla/ffi/api/ffi.h"

namespace kmnist_checks {

namespace ffi = xla::ffi;

// A buffer must be NHWC/HWIO (rank 4, no empty dimension) and float32 or
// bfloat16. The inputs of a call share one element type, the results
// another: the first buffer of each sets `*type` (pass it INVALID), the
// others must match it (see CheckTypes).
inline ffi::Error CheckBuffer(const char* name, const ffi::AnyBuffer& buf,
                              ffi::DataType* type, bool result = false) {
  std::string what = std::string("kmnist_conv: ") + name;
  ffi::DataType t = buf.element_type();
  if (*type == ffi::DataType::INVALID) {
    if (t != ffi::DataType::F32 && t != ffi::DataType::BF16)
      return ffi::Error::InvalidArgument(what +
                                         " must be float32 or bfloat16");
    *type = t;
  } else if (t != *type) {
    return ffi::Error::InvalidArgument(
        what + " must be " +
        (*type == ffi::DataType::F32 ? "float32" : "bfloat16") +
        (result ? ", as the other results" : ", as the other inputs"));
  }
  ffi::Span<const int64_t> d = buf.dimensions();
  if (d.size() != 4)
    return ffi::Error::InvalidArgument(what + " must have rank 4, not " +
                                       std::to_string(d.size()));
  for (int64_t n : d)
    if (n < 1 || n > (int64_t{1} << 31))
      return ffi::Error::InvalidArgument(what + " has a dimension of " +
                                         std::to_string(n));
  return ffi::Error::Success();
}

// float32 inputs give float32 results; bfloat16 inputs, bfloat16 or float32
// results (oneDNN accumulates in float32 either way).
inline ffi::Error CheckTypes(ffi::DataType in, ffi::DataType out) {
  if (in == ffi::DataType::F32 && out != ffi::DataType::F32)
    return ffi::Error::InvalidArgument(
        "kmnist_conv: float32 inputs need float32 results");
  return ffi::Error::Success();
}

inline bool Same(ffi::Span<const int64_t> a, ffi::Span<const int64_t> b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// x (N,H,W,C), w (KH,KW,C,O) and y (N,OH,OW,O) describe one convolution.
inline ffi::Error CheckProblem(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                        ffi::Span<const int64_t> y, int64_t sh, int64_t sw,
                        int64_t pt, int64_t pl) {
  auto invalid = [](const std::string& m) {
    return ffi::Error::InvalidArgument("kmnist_conv: " + m);
  };
  if (w[2] != x[3])
    return invalid("the weights' input channels (" + std::to_string(w[2]) +
                   ") differ from the input's (" + std::to_string(x[3]) + ")");
  if (y[0] != x[0])
    return invalid("the output gradient's batch (" + std::to_string(y[0]) +
                   ") differs from the input's (" + std::to_string(x[0]) + ")");
  if (y[3] != w[3])
    return invalid("the output gradient's channels (" + std::to_string(y[3]) +
                   ") differ from the weights' (" + std::to_string(w[3]) + ")");
  constexpr int64_t kMax = int64_t{1} << 31;  // Keeps the sums below exact.
  if (sh < 1 || sw < 1 || sh > kMax || sw > kMax)
    return invalid("strides out of range: " + std::to_string(sh) + "x" +
                   std::to_string(sw));
  if (pt < 0 || pl < 0 || pt > kMax || pl > kMax)
    return invalid("top/left padding out of range: " + std::to_string(pt) +
                   ", " + std::to_string(pl));
  // The bottom/right padding the output size implies must not be negative:
  // the input holds every row and column the windows cover.
  if ((y[1] - 1) * sh + w[0] - x[1] - pt < 0 ||
      (y[2] - 1) * sw + w[1] - x[2] - pl < 0)
    return invalid("the output gradient's size (" + std::to_string(y[1]) +
                   "x" + std::to_string(y[2]) +
                   ") does not fit the input, kernel, strides and padding");
  return ffi::Error::Success();
}

// float -> bfloat16 bits, rounded to nearest even; a NaN stays a (quiet)
// NaN. oneDNN's conversions round the same way.
inline uint16_t ToBf16(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u)
                                      : u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

// Held while a handler's OpenMP team runs (the convolutions of
// onednn_conv.cc, the BatchNorm kernels of batchnorm.cc): XLA may run two
// independent custom calls at once, and two teams on a 2-core machine would
// only slow each other down. One mutex for the library (an inline function:
// one instance across its files).
inline std::mutex& TeamMutex() {
  static std::mutex* m = new std::mutex();
  return *m;
}

}  // namespace kmnist_checks

#define KMNIST_CHECK(expr)             \
  do {                                 \
    ::xla::ffi::Error error = (expr);  \
    if (error.failure()) return error; \
  } while (0)

#endif  // KMNIST_JAX_CPU_CSRC_ONEDNN_CHECKS_H_
