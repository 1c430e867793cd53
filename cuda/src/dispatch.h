// Maps the ABI's run-time codes onto template parameters.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "status.h"

// Runs body with `T` bound to the element type of a 16-bit float dtype code.
#define FI_DISPATCH_HALF(dtype, T, ...)                                                     \
  [&]() -> int32_t {                                                                        \
    switch (dtype) {                                                                        \
      case FI_F16: { using T = __half; __VA_ARGS__ }                                        \
      case FI_BF16: { using T = __nv_bfloat16; __VA_ARGS__ }                                \
      default:                                                                              \
        return ::fi::set_error(FI_ERR_UNSUPPORTED, "dtype code %d is not fp16 or bf16", int(dtype)); \
    }                                                                                       \
  }()

namespace fi {

// The widest vector of `elem_bytes`-sized elements, at most 16 bytes, that every address and stride
// allows: the kernels load whole vectors, so each must be aligned to the vector's size.
inline int vector_width(int elem_bytes, std::initializer_list<uint64_t> ptrs,
                        std::initializer_list<int64_t> element_counts) {
  int vec = 16 / elem_bytes;
  while (vec > 1) {
    bool ok = true;
    for (uint64_t p : ptrs) ok = ok && p % (uint64_t(vec) * elem_bytes) == 0;
    for (int64_t n : element_counts) ok = ok && n % vec == 0;
    if (ok) break;
    vec /= 2;
  }
  return vec;
}

}  // namespace fi
