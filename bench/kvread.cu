// Read-only skeletons of the decode kernel (no math): how fast the KV bytes can be read with the decode's
// CTA structure (grid (kv head, item), 4 warps, a 16-token page a warp and tile, 3 stages, 100 KB of shared
// memory: 2 CTAs an SM), with cp.async (as the kernel) or TMA boxes, against plain streaming reads.
// Build here, run on the GPU machine (bench/NOTES.md, sixth session):
//   nvcc -O3 -arch=sm_90a -Wno-deprecated-declarations -o /tmp/kvread bench/kvread.cu && /tmp/kvread
#include <cuda.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define CK(x)                                                                   \
  do {                                                                          \
    cudaError_t e = (x);                                                        \
    if (e != cudaSuccess) {                                                     \
      printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));          \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

constexpr int HKV = 8, D = 128, PS = 16, ROW = D * 2, STAGES = 3, NW = 4;
constexpr int PAGE_BYTES = 2 * PS * HKV * ROW;  // K then V, NHD: [2][16][8][128] bf16
constexpr int WARP_STAGE = 2 * PS * ROW;        // one warp's tile: 16 rows of K and of V
constexpr int SMEM = STAGES * NW * WARP_STAGE + 4096;

__device__ __forceinline__ unsigned smem_u32(const void* p) { return unsigned(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N>
__device__ __forceinline__ void wait_group() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void mbar_init(uint64_t* b, int n) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(b)), "r"(n));
}
__device__ __forceinline__ void mbar_expect(uint64_t* b, int bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* b, int parity) {
  asm volatile(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(
          smem_u32(b)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void tma3(void* dst, const CUtensorMap* map, int c0, int c1, int c2, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(smem_u32(dst)),
      "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
      : "memory");
}
__device__ __forceinline__ void bulk1(void* dst, const void* src, int bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                   smem_u32(dst)),
               "l"(src), "r"(bytes), "r"(smem_u32(bar))
               : "memory");
}

struct Item {
  int first_page, pages;  // a run of consecutive pages of one request (page table read per tile below)
};

// The decode's structure: grid (head, item), 4 warps, each warp one page (16 tokens) a tile, 3 stages.
// mode 0: cp.async 16-byte chunks (the kernel's copy); 1: two TMA boxes a tile ([16 rows][128] of K, of V).
template <int MODE, bool EARLY = false>
__global__ void __launch_bounds__(128) skeleton(const uint8_t* kv, const int* page_ids, const Item* items,
                                                const __grid_constant__ CUtensorMap map, int* sink, int spin = 0) {
  extern __shared__ __align__(128) uint8_t smem[];
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + STAGES * NW * WARP_STAGE);
  const int head = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const Item it = items[blockIdx.y];
  uint8_t* ws = smem + warp * STAGES * WARP_STAGE;
  uint64_t* wb = bars + warp * STAGES;
  if (MODE == 1 && lane == 0) {
    for (int s = 0; s < STAGES; s++) mbar_init(wb + s, 1);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncwarp();
  const int ntiles = (it.pages - warp + NW - 1) / NW;  // warp w takes pages w, w + 4, ...
  auto issue = [&](int t, int s) {
    const int page = page_ids[it.first_page + warp + t * NW];
    if (MODE == 0) {
      const uint8_t* base = kv + int64_t(page) * PAGE_BYTES + head * ROW;
      // 16 rows x 256 B for K and V: 32 lanes x 16 B covers 2 rows a pass.
#pragma unroll
      for (int i = 0; i < PS / 2; i++) {
        const int r = i * 2 + lane / 16, c = lane % 16;
        cp16(ws + s * WARP_STAGE + r * ROW + c * 16, base + r * HKV * ROW + c * 16);
        cp16(ws + s * WARP_STAGE + PS * ROW + r * ROW + c * 16, base + PS * HKV * ROW + r * HKV * ROW + c * 16);
      }
    } else if (lane == 0) {
      mbar_expect(wb + s, WARP_STAGE);
      tma3(ws + s * WARP_STAGE, &map, 0, head, page * 2 * PS, wb + s);
      tma3(ws + s * WARP_STAGE + PS * ROW, &map, 0, head, page * 2 * PS + PS, wb + s);
    }
  };
  int acc = 0;
  auto burn = [&]() {  // stands in for the tile's math
    if (spin) {
      const long long t0 = clock64();
      while (clock64() - t0 < spin) {
      }
    }
  };
  if (!EARLY) {
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
      if (s < ntiles) issue(s, s);
      if (MODE == 0) commit();
    }
    for (int t = 0; t < ntiles; t++) {
      const int next = t + STAGES - 1;
      if (next < ntiles) issue(next, next % STAGES);
      const int s = t % STAGES;
      if (MODE == 0) {
        commit();
        wait_group<STAGES - 1>();
      } else {
        mbar_wait(wb + s, (t / STAGES) & 1);
      }
      __syncwarp();
      acc ^= reinterpret_cast<const int*>(ws + s * WARP_STAGE)[lane * 64];
      burn();
      __syncwarp();
    }
  } else {
    // The stage is read into registers first and refilled at once: STAGES tiles in flight all the time.
#pragma unroll
    for (int s = 0; s < STAGES; s++) {
      if (s < ntiles) issue(s, s);
      if (MODE == 0) commit();
    }
    for (int t = 0; t < ntiles; t++) {
      const int s = t % STAGES;
      if (MODE == 0) {
        wait_group<STAGES - 1>();
      } else {
        mbar_wait(wb + s, (t / STAGES) & 1);
      }
      __syncwarp();
      acc ^= reinterpret_cast<const int*>(ws + s * WARP_STAGE)[lane * 64];
      __syncwarp();
      if (t + STAGES < ntiles) issue(t + STAGES, s);
      if (MODE == 0) commit();
      burn();
    }
  }
  if (acc == 0x12345678) sink[0] = acc;
}

// Plain streaming reads of the whole buffer (the ceiling without structure).
__global__ void ldg_stream(const int4* p, size_t n, int* sink) {
  int acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    int4 a = __ldg(p + i), b = __ldg(p + i + stride), c = __ldg(p + i + 2 * stride), d = __ldg(p + i + 3 * stride);
    acc ^= a.x ^ b.y ^ c.z ^ d.w;
  }
  for (; i < n; i += stride) acc ^= __ldg(p + i).x;
  if (acc == 0x12345678) sink[0] = acc;
}

// 1-D bulk copies of contiguous 16 KB chunks, 4 in flight a CTA, persistent grid.
__global__ void bulk_stream(const uint8_t* p, size_t chunks, int* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  constexpr int CB = 16384, NS = 4;
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem + NS * CB);
  if (threadIdx.x == 0) {
    for (int s = 0; s < NS; s++) mbar_init(bars + s, 1);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  }
  __syncthreads();
  int acc = 0;
  const size_t mine = (chunks - blockIdx.x + gridDim.x - 1) / gridDim.x;
  auto issue = [&](size_t t, int s) {
    if (threadIdx.x == 0) {
      mbar_expect(bars + s, CB);
      bulk1(smem + s * CB, p + (blockIdx.x + t * gridDim.x) * size_t(CB), CB, bars + s);
    }
  };
  for (int s = 0; s < NS - 1; s++)
    if (s < mine) issue(s, s);
  for (size_t t = 0; t < mine; t++) {
    if (t + NS - 1 < mine) issue(t + NS - 1, (t + NS - 1) % NS);
    mbar_wait(bars + t % NS, (t / NS) & 1);
    acc ^= reinterpret_cast<const int*>(smem + (t % NS) * CB)[threadIdx.x];
    __syncthreads();
  }
  if (acc == 0x12345678) sink[0] = acc;
}

typedef CUresult (*EncodeFn)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                             const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                             CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

template <typename F>
float time_us(F f, int reps = 20) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) f();
  std::vector<float> ts;
  for (int r = 0; r < reps; r++) {
    CK(cudaEventRecord(a));
    f();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms * 1e3f);
  }
  std::sort(ts.begin(), ts.end());
  return ts[ts.size() / 2];
}

int main() {
  const size_t total = size_t(4) << 30;
  uint8_t* kv;
  CK(cudaMalloc(&kv, total));
  CK(cudaMemset(kv, 1, total));
  int* sink;
  CK(cudaMalloc(&sink, 4));
  const int max_pages = int(total / PAGE_BYTES);
  std::vector<int> ids(max_pages);
  for (int i = 0; i < max_pages; i++) ids[i] = i;
  int* page_ids;
  CK(cudaMalloc(&page_ids, max_pages * 4));
  CK(cudaMemcpy(page_ids, ids.data(), max_pages * 4, cudaMemcpyHostToDevice));
  Item* items;
  CK(cudaMalloc(&items, 1 << 20));

  EncodeFn encode;
  cudaDriverEntryPointQueryResult q;
  CK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", reinterpret_cast<void**>(&encode), cudaEnableDefault, &q));
  CUtensorMap map;
  {
    // [rows = pages x 32][8 heads][128 dims] bf16
    cuuint64_t dims[3] = {D, HKV, cuuint64_t(max_pages) * 2 * PS};
    cuuint64_t strides[2] = {ROW, HKV * ROW};
    cuuint32_t box[3] = {D, 1, PS};
    cuuint32_t es[3] = {1, 1, 1};
    CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, kv, dims, strides, box, es,
                        CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_NONE,
                        CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) printf("encode failed %d\n", int(r));
  }
  CK(cudaFuncSetAttribute(skeleton<0>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  CK(cudaFuncSetAttribute(skeleton<1>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  CK(cudaFuncSetAttribute(skeleton<0, true>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  CK(cudaFuncSetAttribute(bulk_stream, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * 16384 + 64));

  // 1. Plain streaming reads of 4 GiB: the read ceiling without the decode's structure.
  const size_t bytes4 = size_t(4) << 30;
  float us = time_us([&] { ldg_stream<<<132 * 8, 512>>>(reinterpret_cast<const int4*>(kv), bytes4 / 16, sink); });
  printf("ldg_stream 4 GiB: %.1f us %.0f GB/s\n", us, bytes4 / us / 1e3);
  for (int per_sm : {1, 2}) {
    us = time_us([&] { bulk_stream<<<132 * per_sm, 128, 4 * 16384 + 64>>>(kv, bytes4 / 16384, sink); });
    printf("bulk_stream 4 GiB, %d CTAs/SM: %.1f us %.0f GB/s\n", per_sm, us, bytes4 / us / 1e3);
  }
  // 2. The decode's structure at the issue's shapes (bf16 B16 splits in 2048-token chunks as the plan does):
  //    cp.async against TMA, then the tile's math stood in for by `spin` cycles, the stage refilled after
  //    the math (late, as the kernel) or as soon as it is read (early).
  struct Shape {
    int b, len, split;
  };
  for (Shape s : {Shape{16, 4096, 2048}, Shape{64, 2048, 0}, Shape{128, 8192, 0}, Shape{256, 1024, 0}}) {
    const int pages_per = s.len / PS, chunk = s.split ? s.split / PS : pages_per;
    std::vector<Item> hv;
    for (int b = 0; b < s.b; b++)
      for (int p = 0; p < pages_per; p += chunk) hv.push_back({b * pages_per + p, std::min(chunk, pages_per - p)});
    CK(cudaMemcpy(items, hv.data(), hv.size() * sizeof(Item), cudaMemcpyHostToDevice));
    const double bytes = double(s.b) * pages_per * PAGE_BYTES;
    const dim3 grid(HKV, hv.size());
    us = time_us([&] { skeleton<1><<<grid, 128, SMEM>>>(kv, page_ids, items, map, sink, 0); });
    printf("skeleton tma            B%d L%d split %d: %.1f us %.0f GB/s\n", s.b, s.len, s.split, us, bytes / us / 1e3);
    for (int spin : {0, 1000, 2000, 3000}) {
      for (int v = 0; v < 2; v++) {
        auto k = v ? skeleton<0, true> : skeleton<0, false>;
        us = time_us([&] { k<<<grid, 128, SMEM>>>(kv, page_ids, items, map, sink, spin); });
        CK(cudaGetLastError());
        printf("skeleton cp.async %s spin %4d B%d L%d split %d: %.1f us %.0f GB/s\n", v ? "early" : "late ", spin,
               s.b, s.len, s.split, us, bytes / us / 1e3);
      }
    }
  }
  CK(cudaDeviceSynchronize());
  return 0;
}
