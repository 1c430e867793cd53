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

// Launches kernel<<<grid, block, smem, stream>>>(args...) with programmatic dependent launch on, so
// its blocks can be scheduled while the previous kernel on the stream drains (the kernels call
// pdl_wait() before touching memory). Works inside CUDA graph capture too.
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, static_cast<Params>(args)...);
}

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
