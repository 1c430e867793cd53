// Gated activations: out[r, i] = act(x[r, i]) * x[r, d + i]. One VEC-wide unit per thread over a
// flat index, so every launch fills the GPU whatever the row count.
#pragma once
#include "vec.cuh"

namespace fi {

enum ActKind { kSilu = 0, kGelu = 1, kGeluTanh = 2 };

template <int KIND>
__device__ __forceinline__ float activate(float x) {
  if constexpr (KIND == kSilu) {
    return x / (1.f + __expf(-x));
  } else if constexpr (KIND == kGelu) {
    return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
  } else {
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.f + tanhf(inner));
  }
}

template <typename T, int VEC, int KIND>
__global__ void act_and_mul_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x,
                                   int64_t x_stride, int64_t rows, int d) {
  pdl_wait();
  pdl_launch_dependents();
  const int nvec = d / VEC;
  const int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= rows * nvec) return;
  const int64_t row = idx / nvec;
  const int col = int(idx - row * nvec) * VEC;
  const T* xr = x + row * x_stride;
  Vec<T, VEC> a, b, o;
  a.load_stream(xr + col);
  b.load_stream(xr + d + col);
#pragma unroll
  for (int e = 0; e < VEC; ++e) o.set(e, activate<KIND>(a.f(e)) * b.f(e));
  o.store(out + row * out_stride + col);
}

}  // namespace fi
