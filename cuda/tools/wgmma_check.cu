// Standalone check of the Hopper prefill kernel's wgmma path (hopper_ops.cuh): descriptors, the
// 128B-swizzled tile layout and the operand fragments, on one 64 x 128 x 128 product each way:
//   SS: S = A B^T with A [64][128] and B [128][128] both K-major in shared memory (as Q K^T);
//   RS: O = P V with P [64][128] in registers (the accumulator-shaped fragment) and V [128][128]
//       MN-major in shared memory (as P V).
// Small integer inputs make every product exact. Build: nvcc -gencode=arch=compute_90a,code=sm_90a
// -std=c++20 -Icuda/include cuda/tools/wgmma_check.cu -o wgmma_check; prints PASS or the mismatches.
#include <cuda_bf16.h>
#include <stdio.h>

#include <cmath>
#include <vector>

#include "../kernels/attention/mma.cuh"
#include "../kernels/prefill/hopper_ops.cuh"

using namespace fi::hopper;
using T = __nv_bfloat16;

__global__ void check_kernel(const T* a, const T* b, const T* v, float* s_out, float* o_out) {
  extern __shared__ uint8_t raw[];
  const uint32_t base = (fi::attn::smem_addr(raw) + 1023u) & ~1023u;
  uint8_t* gen = raw + (base - fi::attn::smem_addr(raw));
  const uint32_t sA = base, sB = base + 64 * 256, sV = sB + 128 * 256;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < 64 * 16; i += 128)
    *reinterpret_cast<uint4*>(gen + tile_off(i / 16, i % 16, 64)) = reinterpret_cast<const uint4*>(a)[i];
  for (int i = tid; i < 128 * 16; i += 128) {
    *reinterpret_cast<uint4*>(gen + (sB - base) + tile_off(i / 16, i % 16, 128)) = reinterpret_cast<const uint4*>(b)[i];
    *reinterpret_cast<uint4*>(gen + (sV - base) + tile_off(i / 16, i % 16, 128)) = reinterpret_cast<const uint4*>(v)[i];
  }
  fence_proxy_async();
  __syncthreads();

  float s[64];
  for (int i = 0; i < 64; i++) s[i] = 0.f;
  const uint64_t da = make_desc(sA, 16, 1024), db = make_desc(sB, 16, 1024);
  wgmma_fence();
  for (int kk = 0; kk < 8; kk++)
    wgmma_ss_n128<true>(s, da + (((kk / 4) * 64 * 128 + (kk % 4) * 32) >> 4),
                        db + (((kk / 4) * 128 * 128 + (kk % 4) * 32) >> 4), kk > 0);
  wgmma_commit();
  wgmma_wait<0>();
  pin(s);
  const int r0 = warp * 16 + (lane >> 2);
  for (int j = 0; j < 16; j++)
    for (int e = 0; e < 4; e++) s_out[(r0 + 8 * (e >> 1)) * 128 + j * 8 + (lane & 3) * 2 + (e & 1)] = s[4 * j + e];

  // P = A (as 64 x 128 with keys as columns) from registers, fragments as the accumulator's.
  uint32_t p[8][4];
  auto at = [&](int r, int c) { return __bfloat162float(a[r * 128 + c]); };
  for (int kk = 0; kk < 8; kk++) {
    const int c = kk * 16 + (lane & 3) * 2;
    p[kk][0] = fi::attn::pack2<T>(at(r0, c), at(r0, c + 1));
    p[kk][1] = fi::attn::pack2<T>(at(r0 + 8, c), at(r0 + 8, c + 1));
    p[kk][2] = fi::attn::pack2<T>(at(r0, c + 8), at(r0, c + 9));
    p[kk][3] = fi::attn::pack2<T>(at(r0 + 8, c + 8), at(r0 + 8, c + 9));
  }
  float o[64];
  for (int i = 0; i < 64; i++) o[i] = 0.f;
  const uint64_t dv = make_desc(sV, 128 * 128, 1024);
  pin(p);
  wgmma_fence();
  for (int kk = 0; kk < 8; kk++) wgmma_rs_n128<true>(o, p[kk], dv + ((kk * 16 * 128) >> 4), 1);
  wgmma_commit();
  wgmma_wait<0>();
  pin(o);
  for (int j = 0; j < 16; j++)
    for (int e = 0; e < 4; e++) o_out[(r0 + 8 * (e >> 1)) * 128 + j * 8 + (lane & 3) * 2 + (e & 1)] = o[4 * j + e];
}

int main() {
  std::vector<T> a(64 * 128), b(128 * 128), v(128 * 128);
  std::vector<float> fa(a.size()), fb(b.size()), fv(v.size());
  unsigned seed = 12345;
  auto rnd = [&]() {
    seed = seed * 1103515245u + 12345u;
    return float(int((seed >> 16) % 7) - 3);
  };
  for (size_t i = 0; i < a.size(); i++) a[i] = __float2bfloat16(fa[i] = rnd());
  for (size_t i = 0; i < b.size(); i++) b[i] = __float2bfloat16(fb[i] = rnd());
  for (size_t i = 0; i < v.size(); i++) v[i] = __float2bfloat16(fv[i] = rnd());
  T *da, *db, *dv;
  float *ds, *dout;
  cudaMalloc(&da, a.size() * 2);
  cudaMalloc(&db, b.size() * 2);
  cudaMalloc(&dv, v.size() * 2);
  cudaMalloc(&ds, 64 * 128 * 4);
  cudaMalloc(&dout, 64 * 128 * 4);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dv, v.data(), v.size() * 2, cudaMemcpyHostToDevice);
  const int smem = 64 * 256 + 2 * 128 * 256 + 1024;
  cudaFuncSetAttribute(check_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  check_kernel<<<1, 128, smem>>>(da, db, dv, ds, dout);
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    printf("wgmma_check: CUDA error %s\n", cudaGetErrorString(err));
    return 1;
  }
  std::vector<float> s(64 * 128), o(64 * 128);
  cudaMemcpy(s.data(), ds, s.size() * 4, cudaMemcpyDeviceToHost);
  cudaMemcpy(o.data(), dout, o.size() * 4, cudaMemcpyDeviceToHost);
  int bad_s = 0, bad_o = 0;
  for (int i = 0; i < 64; i++)
    for (int j = 0; j < 128; j++) {
      double ws = 0, wo = 0;
      for (int k = 0; k < 128; k++) {
        ws += double(fa[i * 128 + k]) * fb[j * 128 + k];
        wo += double(fa[i * 128 + k]) * fv[k * 128 + j];
      }
      if (s[i * 128 + j] != ws && bad_s++ < 5) printf("SS S[%d][%d] = %g, want %g\n", i, j, s[i * 128 + j], ws);
      if (o[i * 128 + j] != wo && bad_o++ < 5) printf("RS O[%d][%d] = %g, want %g\n", i, j, o[i * 128 + j], wo);
    }
  printf("wgmma_check: SS (Q K^T) %s (%d bad), RS (P V) %s (%d bad)\n", bad_s ? "FAIL" : "PASS", bad_s,
         bad_o ? "FAIL" : "PASS", bad_o);
  return bad_s || bad_o;
}
