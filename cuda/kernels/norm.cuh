// RMSNorm, fused add + RMSNorm (Gemma variants too) and LayerNorm over rows of `hidden` elements.
// One block per row. Each thread keeps its ITEMS vectors of VEC elements in registers, so the row is
// read from memory once and written once: two passes of bytes, the floor for these ops.
#pragma once
#include "vec.cuh"

namespace fi {

struct NormShape {
  int hidden;   // elements per row
  int nvec;     // hidden / VEC
  float eps;
};

// KIND 0: x * w; KIND 1 (Gemma): x * (1 + w).
template <int KIND>
__device__ __forceinline__ float apply_weight(float x, float w) {
  return KIND == 0 ? x * w : x * (1.f + w);
}

template <typename T, int VEC, int ITEMS, int KIND>
__global__ void rmsnorm_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x,
                               int64_t x_stride, const T* __restrict__ w, NormShape s) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  Vec<T, VEC> v[ITEMS];
  float sum_sq = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      v[i].load_stream(xr + j * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) sum_sq += v[i].f(e) * v[i].f(e);
    }
  }
  const float rms = rsqrtf(block_sum(sum_sq, scratch) / s.hidden + s.eps);
  T* orow = out + row * out_stride;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      Vec<T, VEC> wv, o;
      wv.load(w + j * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) o.set(e, apply_weight<KIND>(v[i].f(e) * rms, wv.f(e)));
      o.store(orow + j * VEC);
    }
  }
}

// residual = x + residual; x = norm(residual) * weight. The sum is kept in float for the norm, as
// FlashInfer does; residual stores its rounded value.
template <typename T, int VEC, int ITEMS, int KIND>
__global__ void fused_add_rmsnorm_kernel(T* __restrict__ x, int64_t x_stride, T* __restrict__ residual,
                                         int64_t r_stride, const T* __restrict__ w, NormShape s) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  T* xr = x + row * x_stride;
  T* rr = residual + row * r_stride;
  float acc[ITEMS][VEC];
  float sum_sq = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      Vec<T, VEC> a, b, r;
      a.load_stream(xr + j * VEC);
      b.load_stream(rr + j * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        acc[i][e] = a.f(e) + b.f(e);
        sum_sq += acc[i][e] * acc[i][e];
        r.set(e, acc[i][e]);
      }
      r.store(rr + j * VEC);
    }
  }
  const float rms = rsqrtf(block_sum(sum_sq, scratch) / s.hidden + s.eps);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      Vec<T, VEC> wv, o;
      wv.load(w + j * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) o.set(e, apply_weight<KIND>(acc[i][e] * rms, wv.f(e)));
      o.store(xr + j * VEC);
    }
  }
}

// Two-pass mean and variance over the registers: exact, and no extra memory traffic.
template <typename T, typename W, int VEC, int ITEMS>
__global__ void layernorm_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x,
                                 int64_t x_stride, const W* __restrict__ gamma,
                                 const W* __restrict__ beta, NormShape s) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  Vec<T, VEC> v[ITEMS];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      v[i].load_stream(xr + j * VEC);
#pragma unroll
      for (int e = 0; e < VEC; ++e) sum += v[i].f(e);
    }
  }
  const float mean = block_sum(sum, scratch) / s.hidden;
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) sq += (v[i].f(e) - mean) * (v[i].f(e) - mean);
    }
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / s.hidden + s.eps);
  T* orow = out + row * out_stride;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const int j = i * blockDim.x + threadIdx.x;
    if (j < s.nvec) {
      Vec<T, VEC> o;
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int k = j * VEC + e;
        o.set(e, (v[i].f(e) - mean) * rstd * to_float(gamma[k]) + to_float(beta[k]));
      }
      o.store(orow + j * VEC);
    }
  }
}

}  // namespace fi
