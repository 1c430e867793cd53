// Element conversion and 16-byte vector access, shared by every kernel template.
// Header-only and free of host-only headers so that NVRTC can compile it too.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace fi {

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// N elements of T held in registers, loaded and stored with the widest access N * sizeof(T) allows.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];

  __device__ __forceinline__ void load(const T* p) { *this = *reinterpret_cast<const Vec*>(p); }
  __device__ __forceinline__ void store(T* p) const { *reinterpret_cast<Vec*>(p) = *this; }
  // Streaming variants: data touched once should not evict what other kernels keep in L2.
  __device__ __forceinline__ void load_stream(const T* p) {
    if constexpr (sizeof(Vec) == 16) {
      uint4 u = __ldcs(reinterpret_cast<const uint4*>(p));
      *this = *reinterpret_cast<Vec*>(&u);
    } else {
      load(p);
    }
  }
  __device__ __forceinline__ float f(int i) const { return to_float(v[i]); }
  __device__ __forceinline__ void set(int i, float x) { v[i] = from_float<T>(x); }
};

// Programmatic dependent launch (sm_90+): a kernel launched with the PDL attribute may start while the
// previous kernel on the stream finishes. pdl_wait() blocks until that kernel's writes are visible,
// so it must come before the first global read; pdl_launch_dependents() lets the next kernel start
// being scheduled. Both are no-ops without PDL or before sm_90.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// Sum over the block; every thread gets the result. scratch holds 32 floats.
__device__ __forceinline__ float block_sum(float x, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = (blockDim.x + 31) >> 5;
  x = warp_sum(x);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = lane < warps ? scratch[lane] : 0.f;
  return warp_sum(x);
}

}  // namespace fi
