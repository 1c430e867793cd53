// extern "C" entry point of batch decode: maps the run-time dtypes and head dim onto the compiled
// kernels (the set src/attention/compiled.ts names) and launches decode over the planned work items
// (split requests are merged inside the kernel by their last chunk).
#include <cstddef>
#include <cstring>

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
