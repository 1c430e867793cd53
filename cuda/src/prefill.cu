// extern "C" entry points of single / ragged / paged prefill: one kernel template, dispatched on
// (head_dim_qk, head_dim_vo, dtype) from the compiled list in prefill_configs.h.
#include <cmath>
#include <cstddef>
#include <cstring>

#include "../kernels/prefill/prefill.cuh"
#include "attention_args.h"
#include "dispatch.h"
#include "prefill_configs.h"
#include "prefill_hopper.h"

using namespace fi;
using fi::prefill::PrefillArgs;

namespace {

template <typename T, int DQK, int DVO, int MMA_Q, int BN, bool ROPE, typename KT = T, int MINB = 2>
int32_t launch_one(const PrefillArgs& a, int tiles, int heads, cudaStream_t stream) {
  using Cfg = prefill::PrefillConfig<T, DQK, DVO, MMA_Q, BN, KT>;
  auto kernel = prefill::prefill_kernel<T, DQK, DVO, MMA_Q, BN, ROPE, KT, MINB>;
  static bool configured = false;  // the attribute is per device function; setting it twice is harmless
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
    configured = true;
  }
  kernel<<<dim3(tiles, heads >> a.pack_shift), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a);
  FI_CHECK_LAUNCH("prefill");
  return FI_OK;
}

template <typename T, int DQK, int DVO, int MMA_Q, int BN>
int32_t launch(const PrefillArgs& a, int tiles, int heads, cudaStream_t stream) {
  if (a.use_rope) return launch_one<T, DQK, DVO, MMA_Q, BN, true>(a, tiles, heads, stream);
  return launch_one<T, DQK, DVO, MMA_Q, BN, false>(a, tiles, heads, stream);
}

template <typename T, int DQK, int DVO, int MMA_Q, int BN>
int32_t launch_fp8(const PrefillArgs& a, int kv_dtype, int tiles, int heads, cudaStream_t stream) {
  if (a.use_rope) return set_error(FI_ERR_UNSUPPORTED, "prefill: fused RoPE is not compiled for fp8 KV");
  if (kv_dtype == FI_E4M3) return launch_one<T, DQK, DVO, MMA_Q, BN, false, __nv_fp8_e4m3>(a, tiles, heads, stream);
  return launch_one<T, DQK, DVO, MMA_Q, BN, false, __nv_fp8_e5m2>(a, tiles, heads, stream);
}

int tile_q_of(int dqk, int dvo) {
#define FI_TILE(QK, VO, MQ, BN) \
  if (dqk == QK && dvo == VO) return 64 * MQ;
  FI_PREFILL_CONFIGS(FI_TILE)
#undef FI_TILE
  return 0;
}

// Which kernel serves a launch: 0 auto (Hopper wgmma where it applies), 1 FA2 always, 2 Hopper or
// an UNSUPPORTED error. last_kernel: 1 FA2, 2 Hopper, 0 none yet (for tests and benchmarks).
int kernel_mode = 0;
int last_kernel = 0;

// The Hopper kernel covers 16-bit q = kv, head dim 64 / 128 (qk = vo), causal, windows and soft cap.
bool hopper_applies(const fi_prefill_params& p) {
  return p.kv_dtype == p.dtype && p.head_dim_qk == p.head_dim_vo && (p.head_dim_qk == 64 || p.head_dim_qk == 128) &&
         p.pos_encoding == 0 && p.mask == 0 && fi::prefill_hopper::available();
}

}  // namespace

extern "C" int32_t fi_prefill_set_kernel(int32_t mode) {
  if (mode < 0 || mode > 2) return set_error(FI_ERR_INVALID_ARGUMENT, "prefill: kernel mode %d is not 0, 1 or 2", mode);
  kernel_mode = mode;
  return FI_OK;
}

extern "C" int32_t fi_prefill_last_kernel(void) { return last_kernel; }

static_assert(sizeof(fi_prefill_params) == 264, "fi_prefill_params layout is part of the ABI");
static_assert(offsetof(fi_prefill_params, q_stride_n) == 96 && offsetof(fi_prefill_params, num_work) == 176 &&
                  offsetof(fi_prefill_params, paged) == 208 && offsetof(fi_prefill_params, sm_scale) == 232,
              "fi_prefill_params layout is part of the ABI");

extern "C" int32_t fi_prefill_head_pack_shift(int32_t group) {
  int shift = 0;
  while (shift < 3 && group % (2 << shift) == 0) shift++;
  return shift;
}

extern "C" int32_t fi_prefill_tile_q(int32_t head_dim_qk, int32_t head_dim_vo, int32_t dtype) {
  if (dtype != FI_F16 && dtype != FI_BF16) return 0;
  return tile_q_of(head_dim_qk, head_dim_vo);
}

extern "C" int32_t fi_prefill_fp8_compiled(int32_t head_dim_qk, int32_t head_dim_vo) {
#define FI_FP8(QK, VO, MQ, BN) \
  if (head_dim_qk == QK && head_dim_vo == VO) return 1;
  FI_PREFILL_FP8_CONFIGS(FI_FP8)
#undef FI_FP8
  return 0;
}

// Checks a parameter block and turns it into kernel arguments; `tiles` is the grid width.
int32_t fi::prefill::args_from_params(const fi_prefill_params& p, PrefillArgs& a, int& tiles) {
  const int tile_rows = fi_prefill_tile_q(p.head_dim_qk, p.head_dim_vo, p.dtype);
  if (tile_rows == 0)
    return set_error(FI_ERR_UNSUPPORTED, "prefill: head_dim_qk %d, head_dim_vo %d, dtype %d is not compiled",
                     p.head_dim_qk, p.head_dim_vo, p.dtype);
  if (p.num_qo_heads <= 0 || p.num_kv_heads <= 0 || p.num_qo_heads % p.num_kv_heads || p.num_work < 0 ||
      (p.paged && p.page_size <= 0))
    return set_error(FI_ERR_INVALID_ARGUMENT, "prefill: heads %d/%d, work %d, page size %d", p.num_qo_heads,
                     p.num_kv_heads, p.num_work, p.page_size);
  const int pack_shift = fi_prefill_head_pack_shift(p.num_qo_heads / p.num_kv_heads);
  const int tile_q = tile_rows >> pack_shift;  // tokens per tile
  if (p.tile_q != tile_q)
    return set_error(FI_ERR_INVALID_ARGUMENT, "prefill: planned for %d-token query tiles, the kernel takes %d",
                     p.tile_q, tile_q);
  tiles = p.num_work;
  if (p.work == 0) tiles = (p.qo_len + tile_q - 1) / tile_q;  // a single request
  if (tiles > 2147483647 || p.num_qo_heads > 65535)
    return set_error(FI_ERR_INVALID_ARGUMENT, "prefill: grid %d x %d too large", tiles, p.num_qo_heads);

  a = PrefillArgs{};
  a.q = as_ptr<const void>(p.q);
  a.k = as_ptr<const void>(p.k);
  a.v = as_ptr<const void>(p.v);
  a.o = as_ptr<void>(p.o);
  a.lse = as_ptr<float>(p.lse);
  a.qo_indptr = as_ptr<const int>(p.qo_indptr);
  a.kv_indptr = as_ptr<const int>(p.kv_indptr);
  a.kv_indices = as_ptr<const int>(p.kv_indices);
  a.kv_lens = as_ptr<const int>(p.kv_lens);
  a.work = as_ptr<const int>(p.work);
  if (p.queue % 4 != 0) return set_error(FI_ERR_INVALID_ARGUMENT, "prefill: queue %llx is not 4-byte aligned",
                                         (unsigned long long)p.queue);
  a.queue = as_ptr<int>(p.queue);
  a.mask = as_ptr<const uint8_t>(p.mask);
  a.mask_indptr = as_ptr<const int>(p.mask_indptr);
  a.q_stride_n = p.q_stride_n;
  a.q_stride_h = p.q_stride_h;
  a.o_stride_n = p.o_stride_n;
  a.o_stride_h = p.o_stride_h;
  a.k_stride_page = p.k_stride_page;
  a.k_stride_n = p.k_stride_n;
  a.k_stride_h = p.k_stride_h;
  a.v_stride_page = p.v_stride_page;
  a.v_stride_n = p.v_stride_n;
  a.v_stride_h = p.v_stride_h;
  a.qo_len = p.qo_len;
  a.kv_len = p.kv_len;
  a.num_qo_heads = p.num_qo_heads;
  a.group = p.num_qo_heads / p.num_kv_heads;
  a.pack_shift = pack_shift;
  a.page_size = p.paged ? p.page_size : 1;
  a.page_shift = -1;
  a.num_pages = 0x7fffffff;  // the host checked the ids against the cache (the fused entry passes the count)
  for (int sh = 0; sh < 31; sh++)
    if ((1 << sh) == a.page_size) a.page_shift = sh;
  a.paged = p.paged;
  a.causal = p.causal;
  a.use_alibi = p.pos_encoding == 2;
  a.use_rope = p.pos_encoding == 1;
  a.rope_rcp_scale = p.rope_rcp_scale;
  a.rope_log2_rcp_theta = std::log2(p.rope_rcp_theta);
  a.window_left = p.window_left;
  int n = 1;
  while (n * 2 <= p.num_qo_heads) n *= 2;
  a.alibi_n = n;
  const float log2e = 1.4426950408889634f;
  a.scale_log2 = p.sm_scale * log2e;
  a.soft_cap = p.logits_soft_cap;
  a.cap_pre = p.logits_soft_cap > 0.f ? p.sm_scale / p.logits_soft_cap : 0.f;
  a.cap_post = p.logits_soft_cap * log2e;
  a.v_scale = p.v_scale;
  return FI_OK;
}

extern "C" int32_t fi_prefill_run(const uint8_t* params, uint64_t stream) {
  FI_GUARD_BEGIN
  fi_prefill_params p;
  std::memcpy(&p, params, sizeof p);
  PrefillArgs a;
  int tiles = 0;
  if (const int32_t st = prefill::args_from_params(p, a, tiles); st != FI_OK) return st;
  if (tiles == 0) return FI_OK;
  const cudaStream_t s = as_stream(stream);
  if (kernel_mode != 1) {
    if (hopper_applies(p)) {
      last_kernel = 2;
      return fi::prefill_hopper::launch(a, p.dtype, p.head_dim_qk, tiles, p.num_qo_heads, s);
    }
    if (kernel_mode == 2)
      return set_error(FI_ERR_UNSUPPORTED,
                       "prefill: the Hopper kernel was requested but does not apply (sm_90 device, q and kv both "
                       "fp16 or bf16, head dim 64 or 128, no RoPE, ALiBi or custom mask)");
  }
  last_kernel = 1;
  if (p.kv_dtype != p.dtype) {
    if ((p.kv_dtype != FI_E4M3 && p.kv_dtype != FI_E5M2) || !fi_prefill_fp8_compiled(p.head_dim_qk, p.head_dim_vo))
      return set_error(FI_ERR_UNSUPPORTED, "prefill: kv dtype %d with head dims %d/%d is not compiled", p.kv_dtype,
                       p.head_dim_qk, p.head_dim_vo);
#define FI_LAUNCH_FP8(QK, VO, MQ, BN)                                                                   \
  if (p.head_dim_qk == QK && p.head_dim_vo == VO)                                                       \
    return FI_DISPATCH_HALF(p.dtype, T, return launch_fp8<T, QK, VO, MQ, BN>(a, p.kv_dtype, tiles, p.num_qo_heads, s););
    FI_PREFILL_FP8_CONFIGS(FI_LAUNCH_FP8)
#undef FI_LAUNCH_FP8
  }

#define FI_LAUNCH(QK, VO, MQ, BN)                                                               \
  if (p.head_dim_qk == QK && p.head_dim_vo == VO)                                               \
    return FI_DISPATCH_HALF(p.dtype, T, return launch<T, QK, VO, MQ, BN>(a, tiles, p.num_qo_heads, s););
  FI_PREFILL_CONFIGS(FI_LAUNCH)
#undef FI_LAUNCH
  return set_error(FI_ERR_UNSUPPORTED, "prefill: configuration not compiled");
  FI_GUARD_END
}
