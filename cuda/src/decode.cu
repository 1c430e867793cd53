// extern "C" entry point of batch decode: maps the run-time dtypes and head dim onto the compiled
// kernels (the set src/attention/compiled.ts names) and launches decode over the planned work items
// (split requests are merged inside the kernel by their last chunk).
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../kernels/attention/decode.cuh"
#include "attention_args.h"
#include "dispatch.h"

using namespace fi;
using namespace fi::attn;

static_assert(sizeof(fi_decode_params) == 216, "fi_decode_params layout is part of the ABI");
static_assert(offsetof(fi_decode_params, q_stride_b) == 88 && offsetof(fi_decode_params, num_items) == 144 &&
                  offsetof(fi_decode_params, sm_scale) == 192,
              "fi_decode_params layout is part of the ABI");

namespace {

// ---- experiment switches (timing runs only; read at every launch) ----
int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : 0;
}

// FI_DECODE_CLOCKS=<file>: the launch runs the clocked kernel instead; every second such launch the two
// launches' records are appended to <file> (a line per CTA slot: item lane x smid t_start t_wait
// t_first_tile t_loop_end t_written t_end flags; ns of %globaltimer).
template <typename T, typename TKV, int D>
int32_t launch_clocked(const DecodeArgs& a, int items, int lanes, dim3 grid, int smem, cudaStream_t stream,
                       const char* path) {
  static unsigned long long* buf[2] = {nullptr, nullptr};
  static size_t cap = 0;
  static int count = 0;
  static int meta[2][4];
  static bool configured = false;
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(batch_decode_clk_kernel<T, TKV, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    FI_CUDA(cudaFuncSetAttribute(batch_decode_lanes_clk_kernel<T, TKV, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 smem));
    configured = true;
  }
  const size_t bytes = size_t(items) * grid.x * 8 * sizeof(unsigned long long);
  if (bytes > cap) {
    FI_CUDA(cudaStreamSynchronize(stream));
    for (auto& b : buf) {
      if (b) FI_CUDA(cudaFree(b));
      FI_CUDA(cudaMalloc(&b, bytes));
    }
    cap = bytes;
  }
  const int k = count++ & 1;
  if (k == 0) {  // both before the first launch, so nothing runs between the two kernels
    FI_CUDA(cudaMemsetAsync(buf[0], 0, bytes, stream));
    FI_CUDA(cudaMemsetAsync(buf[1], 0, bytes, stream));
  }
  meta[k][0] = items, meta[k][1] = int(grid.x), meta[k][2] = lanes, meta[k][3] = sizeof(TKV);
  if (lanes > 0) {
    FI_CUDA(fi::launch(batch_decode_lanes_clk_kernel<T, TKV, D>, grid, dim3(kDecodeThreads), smem, stream, a, buf[k]));
  } else {
    FI_CUDA(fi::launch(batch_decode_clk_kernel<T, TKV, D>, grid, dim3(kDecodeThreads), smem, stream, a, buf[k]));
  }
  FI_CHECK_LAUNCH("batch_decode (clocked)");
  if (k == 0) return FI_OK;
  FI_CUDA(cudaStreamSynchronize(stream));
  FILE* f = std::fopen(path, "a");
  if (!f) return FI_OK;
  for (int j = 0; j < 2; j++) {
    const int n = meta[j][0], w = meta[j][1], L = meta[j][2];
    std::vector<unsigned long long> h(size_t(n) * w * 8);
    FI_CUDA(cudaMemcpy(h.data(), buf[j], h.size() * 8, cudaMemcpyDeviceToHost));
    std::vector<int> starts(L + 1, 0);
    if (L > 0) FI_CUDA(cudaMemcpy(starts.data(), a.lane_starts, (L + 1) * 4, cudaMemcpyDeviceToHost));
    std::fprintf(f, "# launch %d items %d width %d lanes %d kvbytes %d\n", j, n, w, L, meta[j][3]);
    int lane = 0;
    for (int i = 0; i < n; i++) {
      while (L > 0 && lane < L && starts[lane + 1] <= i) lane++;
      for (int x = 0; x < w; x++) {
        const unsigned long long* r = &h[(size_t(i) * w + x) * 8];
        std::fprintf(f, "%d %d %d %llu %llu %llu %llu %llu %llu %llu %llu\n", i, L > 0 ? lane : i, x, r[1], r[0],
                     r[2], r[3], r[4], r[5], r[6], r[7]);
      }
    }
  }
  std::fclose(f);
  return FI_OK;
}

// Experiment: fp8 kernel variant V (decode.cuh decode_fp8_pdl; bit 1: launched plainly).
template <typename T, typename TKV, int D, int V>
int32_t launch_variant(const DecodeArgs& a, int lanes, dim3 grid, int smem, cudaStream_t stream) {
  static bool configured = false;
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(batch_decode_kernel<T, TKV, D, V>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    FI_CUDA(cudaFuncSetAttribute(batch_decode_lanes_kernel<T, TKV, D, V>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 smem));
    configured = true;
  }
  if (V & 2) {
    if (lanes > 0) {
      batch_decode_lanes_kernel<T, TKV, D, V><<<grid, kDecodeThreads, smem, stream>>>(a);
    } else {
      batch_decode_kernel<T, TKV, D, V><<<grid, kDecodeThreads, smem, stream>>>(a);
    }
  } else if (lanes > 0) {
    FI_CUDA(fi::launch(batch_decode_lanes_kernel<T, TKV, D, V>, grid, dim3(kDecodeThreads), smem, stream, a));
  } else {
    FI_CUDA(fi::launch(batch_decode_kernel<T, TKV, D, V>, grid, dim3(kDecodeThreads), smem, stream, a));
  }
  FI_CHECK_LAUNCH("batch_decode");
  return FI_OK;
}

template <typename T, typename TKV, int D>
int32_t launch_decode(const DecodeArgs& a, int items, int lanes, int kv_heads, cudaStream_t stream) {
  constexpr int smem = decode_smem_bytes<T, TKV, D>();
  static bool configured = false;  // the attribute is per function; setting it twice is harmless
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(batch_decode_kernel<T, TKV, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    FI_CUDA(cudaFuncSetAttribute(batch_decode_lanes_kernel<T, TKV, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 smem));
    configured = true;
  }
  const int rows = lanes > 0 ? lanes : items;
  if (rows > 65535) return set_error(FI_ERR_UNSUPPORTED, "batch decode: %d work items (at most 65535)", rows);
  const dim3 grid(kv_heads * a.head_groups, rows);
  // Experiments at the benchmark shape only (bf16 q, D 128): clocks, and PDL for fp8 (e4m3).
  if constexpr (__is_same(T, __nv_bfloat16) && D == 128 &&
                (__is_same(TKV, __nv_fp8_e4m3) || __is_same(TKV, __nv_bfloat16))) {
    if (const char* path = std::getenv("FI_DECODE_CLOCKS"); path && *path)
      return launch_clocked<T, TKV, D>(a, items, lanes, grid, smem, stream, path);
  }
  if constexpr (__is_same(T, __nv_bfloat16) && D == 128 && __is_same(TKV, __nv_fp8_e4m3)) {
    const int v = env_int("FI_DECODE_FP8_VARIANT");
    if (v == 1) return launch_variant<T, TKV, D, 1>(a, lanes, grid, smem, stream);
    if (v == 2) return launch_variant<T, TKV, D, 2>(a, lanes, grid, smem, stream);
    if (v == 4) return launch_variant<T, TKV, D, 4>(a, lanes, grid, smem, stream);
  }
  // Programmatic dependent launch: the CTAs read their work item and first page ids while the previous
  // kernel drains (16-bit KV: B1 L4k 14.9 -> 13.9 us; fp8 triggers its dependents late, see decode.cuh).
  if (lanes > 0 && sizeof(TKV) == 2) {  // 16-bit lanes (off by default) trigger early: launched plainly
    batch_decode_lanes_kernel<T, TKV, D><<<grid, kDecodeThreads, smem, stream>>>(a);
  } else if (lanes > 0) {  // persistent grid (num_lanes; the default for fp8)
    FI_CUDA(fi::launch(batch_decode_lanes_kernel<T, TKV, D>, grid, dim3(kDecodeThreads), smem, stream, a));
  } else {
    FI_CUDA(fi::launch(batch_decode_kernel<T, TKV, D>, grid, dim3(kDecodeThreads), smem, stream, a));
  }
  FI_CHECK_LAUNCH("batch_decode");
  return FI_OK;
}

template <typename T, typename TKV>
int32_t by_head_dim(int d, const DecodeArgs& a, int items, int lanes, int kv_heads, cudaStream_t s) {
  switch (d) {
    case 64: return launch_decode<T, TKV, 64>(a, items, lanes, kv_heads, s);
    case 128: return launch_decode<T, TKV, 128>(a, items, lanes, kv_heads, s);
    case 256: return launch_decode<T, TKV, 256>(a, items, lanes, kv_heads, s);
    default: return set_error(FI_ERR_UNSUPPORTED, "batch decode: head dim %d is not compiled (64, 128, 256)", d);
  }
}

template <typename T>
int32_t by_kv_dtype(int kv_dtype, int q_dtype, int d, const DecodeArgs& a, int items, int lanes, int kv_heads,
                    cudaStream_t s) {
  if (kv_dtype == q_dtype) return by_head_dim<T, T>(d, a, items, lanes, kv_heads, s);
  if (kv_dtype == FI_E4M3) return by_head_dim<T, __nv_fp8_e4m3>(d, a, items, lanes, kv_heads, s);
  if (kv_dtype == FI_E5M2) return by_head_dim<T, __nv_fp8_e5m2>(d, a, items, lanes, kv_heads, s);
  return set_error(FI_ERR_UNSUPPORTED, "batch decode: q dtype %d with kv dtype %d is not compiled", q_dtype, kv_dtype);
}

}  // namespace

// Checks a parameter block and turns it into kernel arguments.
int32_t fi::attn::args_from_params(const fi_decode_params& p, DecodeArgs& a) {
  if (p.num_items < 0 || p.num_qo_heads <= 0 || p.num_kv_heads <= 0 || p.num_qo_heads % p.num_kv_heads ||
      p.page_size <= 0 || p.num_lanes < 0)
    return set_error(FI_ERR_INVALID_ARGUMENT, "batch decode: items %d, heads %d/%d, page size %d", p.num_items,
                     p.num_qo_heads, p.num_kv_heads, p.page_size);
  a = DecodeArgs{};
  a.q = as_ptr<const void>(p.q);
  a.k = as_ptr<const void>(p.k);
  a.v = as_ptr<const void>(p.v);
  a.out = as_ptr<void>(p.out);
  a.lse = as_ptr<float>(p.lse);
  a.items = as_ptr<const int>(p.items);
  a.indices = as_ptr<const int>(p.indices);
  a.alibi = as_ptr<const float>(p.alibi);
  a.tmp_o = as_ptr<float>(p.tmp_o);
  a.tmp_lse = as_ptr<float>(p.tmp_lse);
  a.counters = as_ptr<int>(p.counters);
  // The lane starts follow the items.
  a.lane_starts = p.num_lanes > 0 ? as_ptr<const int>(p.items) + int64_t(p.num_items) * kItemInts : nullptr;
  a.q_sb = p.q_stride_b, a.q_sh = p.q_stride_h, a.o_sb = p.o_stride_b, a.o_sh = p.o_stride_h;
  a.kv_sp = p.kv_stride_page, a.kv_ss = p.kv_stride_slot, a.kv_sh = p.kv_stride_head;
  a.num_qo_heads = p.num_qo_heads;
  a.group = p.num_qo_heads / p.num_kv_heads;
  a.head_groups = (a.group + 15) / 16;
  a.page_size = p.page_size;
  a.num_pages = p.num_pages;
  a.page_shift = (p.page_size & (p.page_size - 1)) ? -1 : __builtin_ctz(p.page_size);
  a.qk_scale = p.sm_scale * p.k_scale;
  a.soft_cap = p.logits_soft_cap;
  a.v_scale = p.v_scale;
  a.rope = p.rope;
  a.rope_rcp_scale = p.rope_rcp_scale;
  a.rope_log2_rcp_theta = std::log2(p.rope_rcp_theta);
  return FI_OK;
}

extern "C" int32_t fi_batch_decode_run(const uint8_t* params, uint64_t stream) {
  FI_GUARD_BEGIN
  fi_decode_params p;
  std::memcpy(&p, params, sizeof p);
  DecodeArgs a;
  if (const int32_t st = attn::args_from_params(p, a); st != FI_OK) return st;
  if (p.num_items == 0) return FI_OK;
  return FI_DISPATCH_HALF(p.q_dtype, T, {
    return by_kv_dtype<T>(p.kv_dtype, p.q_dtype, p.head_dim, a, p.num_items, p.num_lanes, p.num_kv_heads,
                          as_stream(stream));
  });
  FI_GUARD_END
}
