// RMSNorm, fused add + RMSNorm (Gemma variants too) and LayerNorm over rows of `hidden` elements.
// One block per row. Each thread keeps its ITEMS vectors of VEC elements in registers, so the row is
// read from memory once and written once: two passes of bytes, the floor for these ops. Rows too wide
// for the registers of one block take the *_wide kernels, which re-read the row (mostly from L2).
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
__global__ void __launch_bounds__(1024) rmsnorm_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x,
                               int64_t x_stride, const T* __restrict__ w, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
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
__global__ void __launch_bounds__(1024) fused_add_rmsnorm_kernel(T* __restrict__ x, int64_t x_stride, T* __restrict__ residual,
                                         int64_t r_stride, const T* __restrict__ w, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
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
__global__ void __launch_bounds__(1024) layernorm_kernel(T* __restrict__ out, int64_t out_stride, const T* __restrict__ x,
                                 int64_t x_stride, const W* __restrict__ gamma,
                                 const W* __restrict__ beta, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
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


// ---- rows wider than the register path holds: stream the row twice (three times for LayerNorm) ----

// out = in * rms, weighted (KIND as above), streaming the row from memory again.
template <typename T, int VEC, int KIND>
__device__ __forceinline__ void write_normed_row(T* out, const T* in, const T* w, float rms, const NormShape& s) {
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> v, wv, o;
    v.load(in + j * VEC);
    wv.load(w + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) o.set(e, apply_weight<KIND>(v.f(e) * rms, wv.f(e)));
    o.store(out + j * VEC);
  }
}

template <typename T, int VEC, int KIND>
__global__ void __launch_bounds__(1024) rmsnorm_wide_kernel(T* __restrict__ out, int64_t out_stride,
                                                            const T* __restrict__ x, int64_t x_stride,
                                                            const T* __restrict__ w, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  float sum_sq = 0.f;
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> v;
    v.load(xr + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) sum_sq += v.f(e) * v.f(e);
  }
  const float rms = rsqrtf(block_sum(sum_sq, scratch) / s.hidden + s.eps);
  write_normed_row<T, VEC, KIND>(out + row * out_stride, xr, w, rms, s);
}

// The second pass reads the stored (rounded) residual: wide rows normalize the rounded sum.
template <typename T, int VEC, int KIND>
__global__ void __launch_bounds__(1024) fused_add_rmsnorm_wide_kernel(T* __restrict__ x, int64_t x_stride,
                                                                      T* __restrict__ residual, int64_t r_stride,
                                                                      const T* __restrict__ w, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  T* xr = x + row * x_stride;
  T* rr = residual + row * r_stride;
  float sum_sq = 0.f;
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> a, b, r;
    a.load(xr + j * VEC);
    b.load(rr + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const float sum = a.f(e) + b.f(e);
      sum_sq += sum * sum;
      r.set(e, sum);
    }
    r.store(rr + j * VEC);
  }
  const float rms = rsqrtf(block_sum(sum_sq, scratch) / s.hidden + s.eps);
  write_normed_row<T, VEC, KIND>(xr, rr, w, rms, s);
}

template <typename T, typename W, int VEC>
__global__ void __launch_bounds__(1024) layernorm_wide_kernel(T* __restrict__ out, int64_t out_stride,
                                                              const T* __restrict__ x, int64_t x_stride,
                                                              const W* __restrict__ gamma,
                                                              const W* __restrict__ beta, NormShape s) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * x_stride;
  float sum = 0.f;
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> v;
    v.load(xr + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) sum += v.f(e);
  }
  const float mean = block_sum(sum, scratch) / s.hidden;
  float sq = 0.f;
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> v;
    v.load(xr + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) sq += (v.f(e) - mean) * (v.f(e) - mean);
  }
  const float rstd = rsqrtf(block_sum(sq, scratch) / s.hidden + s.eps);
  T* orow = out + row * out_stride;
  for (int j = threadIdx.x; j < s.nvec; j += blockDim.x) {
    Vec<T, VEC> v, o;
    v.load(xr + j * VEC);
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      const int k = j * VEC + e;
      o.set(e, (v.f(e) - mean) * rstd * to_float(gamma[k]) + to_float(beta[k]));
    }
    o.store(orow + j * VEC);
  }
}

}  // namespace fi
