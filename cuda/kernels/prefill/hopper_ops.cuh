// Hopper (sm_90a) building blocks of the wgmma prefill kernel: shared memory matrix descriptors for
// the 128-byte swizzled layout, wgmma fences, mbarriers, register budgets and named barriers.
//
// Shared tiles hold 16-bit [rows][cols] matrices as column blocks of 64 elements (128 bytes): block
// b is a [rows][64] slab, row r of it 128 contiguous bytes whose 16-byte chunk c sits at c ^ (r & 7).
// That is CUTLASS's canonical 128B-swizzle layout, read by wgmma as K-major (Q, K: cols = head dim)
// or MN-major (V: rows = keys, cols = head dim = N). Slabs must start on 1024-byte boundaries.
#pragma once
#include <stdint.h>

#include "wgmma_ops.cuh"

namespace fi::hopper {

// Byte offset of 16-byte chunk `chunk` (of 8 elements) of row `row` in a tile of `rows` rows.
__device__ __forceinline__ uint32_t tile_off(int row, int chunk, int rows) {
  return uint32_t(((chunk >> 3) * rows + row) * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Descriptor of a 128B-swizzled operand at shared address `addr`: lbo / sbo in bytes. K-major: sbo
// = 1024 (8 rows of 128 bytes), lbo unused. MN-major: lbo = the stride between 64-wide MN slabs,
// sbo = 1024 (8 K rows). Offsets within a slab are added to the address field (bits 0-13).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Pins registers an asynchronous wgmma writes or reads to this point of the program: the compiler
// cannot move their uses across it (nor across the wait it follows).
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) asm volatile("" : "+r"(r[i][j])::"memory");
}

// Orders this thread's generic-proxy shared memory accesses (stores, cp.async after their wait)
// before later async-proxy ones (wgmma operand reads), and the reverse.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Arrives on the barrier (one of its expected arrivals) once every cp.async this thread has issued
// so far has landed.
__device__ __forceinline__ void cp_async_arrive(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// Waits for every cp.async this thread has issued (committed to a group or not).
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Waits until the phase with parity `parity` of the barrier has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_AGAIN:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_AGAIN;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

template <int N>
__device__ __forceinline__ void regs_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void regs_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }

// A barrier over `threads` threads (whole warps) with id `id` (0 is __syncthreads).
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

}  // namespace fi::hopper
