// Tensor-core and async-copy building blocks for the attention kernels (sm_80+): cp.async with
// zero fill, ldmatrix, mma.sync m16n8k16 and the XOR swizzle of 16-byte chunks in shared memory.
// Header-only and free of host-only headers, so NVRTC can compile it too.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace fi::attn {

// Which CTA of a (virtual) 2-D grid a block body is working for. GridCta reads the hardware
// indices on each use (as a plain kernel would: no registers held); VirtualCta carries the indices
// a persistent kernel assigned (batch_attention.cuh).
struct GridCta {
  __device__ __forceinline__ int x() const { return blockIdx.x; }
  __device__ __forceinline__ int y() const { return blockIdx.y; }
  __device__ __forceinline__ int width() const { return gridDim.x; }
};
struct VirtualCta {
  int vx, vy, vwidth;
  __device__ __forceinline__ int x() const { return vx; }
  __device__ __forceinline__ int y() const { return vy; }
  __device__ __forceinline__ int width() const { return vwidth; }
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes global -> shared asynchronously; when !valid the destination is zero filled (so a
// masked row holds zeros, never stale NaNs that 0 * NaN would spread). The shared destination is a
// pointer or an address from smem_addr() (kernels that precompute addresses pass those).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, bool valid) {
  cp_async_16(smem_addr(dst), src, valid);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// ldmatrix from a shared address (smem_addr()) or a pointer into shared memory.
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, const void* p) { ldmatrix_x4(r, smem_addr(p)); }
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t* r, const void* p) {
  ldmatrix_x4_trans(r, smem_addr(p));
}

// c += a * b for a 16x16 (row) by 16x8 (col) tile of T (fp16 or bf16), fp32 accumulators.
template <typename T>
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (sizeof(T) == 2 && __is_same(T, __half)) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// The same with the two B registers as an array.
template <typename T>
__device__ __forceinline__ void mma_16816(float* c, const uint32_t* a, const uint32_t* b) {
  mma_16816<T>(c, a, b[0], b[1]);
}

// 2^x on the special-function unit (flush-to-zero), for the base-2 online softmax.
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as one register of two T.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float x, float y) {
  if constexpr (__is_same(T, __half)) {
    __half2 h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}

// Element offset of 16-byte chunk `chunk` of row `row` in a [rows][D] tile of 2-byte elements, with the
// chunk index XORed by the row: the 8 rows one ldmatrix reads then hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

}  // namespace fi::attn
