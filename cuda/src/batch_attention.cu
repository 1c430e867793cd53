// extern "C" entry points of BatchAttention's fused launch (cuda/kernels/attention/batch_attention.cuh):
// both parameter blocks are checked and converted exactly as the plain prefill and decode entries do.
#include <cstring>

#include "../kernels/attention/batch_attention.cuh"
#include "attention_args.h"
#include "dispatch.h"
#include "prefill_configs.h"
#include "prefill_hopper.h"

using namespace fi;
using namespace fi::attn;

namespace {

// The plain prefill kernel's tile for head dim D (prefill_configs.h): plan sizes the work by it.
constexpr int config_mma_q(int d) {
#define FI_MQ(QK, VO, MQ, BN) \
  if (QK == d && VO == d) return MQ;
  FI_PREFILL_CONFIGS(FI_MQ)
#undef FI_MQ
  return 0;
}
constexpr int config_block_n(int d) {
#define FI_BN(QK, VO, MQ, BN) \
  if (QK == d && VO == d) return BN;
  FI_PREFILL_CONFIGS(FI_BN)
#undef FI_BN
  return 0;
}

template <typename T, int D>
struct Fused {
  static constexpr int kMmaQ = config_mma_q(D), kBlockN = config_block_n(D);
  static_assert(kMmaQ > 0 && kBlockN > 0, "the fused kernel takes the plain prefill configuration of its head dim");
  using Cfg = prefill::PrefillConfig<T, D, D, kMmaQ, kBlockN>;
  static constexpr int kSmem =
      Cfg::kSmemBytes > decode_smem_bytes<T, T, D>() ? Cfg::kSmemBytes : decode_smem_bytes<T, T, D>();
  static constexpr auto kernel = batch_attention_kernel<T, D, kMmaQ, kBlockN>;

  // Resident CTAs of the whole GPU (the persistent grid), computed once per configuration.
  static int32_t resident(int* ctas, int* num_sms = nullptr) {
    static int cached = 0, cached_sms = 0;
    if (cached == 0) {
      FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
      int dev = 0, sms = 0, per_sm = 0;
      FI_CUDA(cudaGetDevice(&dev));
      FI_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
      FI_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 128, kSmem));
      if (per_sm < 1) return set_error(FI_ERR_UNSUPPORTED, "batch attention: the kernel does not fit an SM");
      cached = sms * per_sm;
      cached_sms = sms;
    }
    *ctas = cached;
    if (num_sms) *num_sms = cached_sms;
    return FI_OK;
  }

  static int32_t run(const prefill::PrefillArgs& p, int prefill_packs, const DecodeArgs& d, int decode_width,
                     int* state, cudaStream_t s) {
    int ctas = 0, sms = 0;
    if (const int32_t st = resident(&ctas, &sms); st != FI_OK) return st;
    kernel<<<ctas, 128, kSmem, s>>>(p, d, MixedQueue{state, prefill_packs, decode_width, sms});
    FI_CHECK_LAUNCH("batch_attention");
    return FI_OK;
  }
};

bool compiled(int head_dim, int dtype) {
  return (head_dim == 64 || head_dim == 128) && (dtype == FI_F16 || dtype == FI_BF16);
}

// Both parameter blocks of one batch, checked and turned into kernel arguments.
struct Blocks {
  fi_prefill_params pp;
  fi_decode_params dp;
  prefill::PrefillArgs pa;
  DecodeArgs da;
  int work = 0;  // prefill work entries

  // `form` names the entry in the error.
  int32_t read(const uint8_t* prefill_params, const uint8_t* decode_params, const char* form) {
    std::memcpy(&pp, prefill_params, sizeof pp);
    std::memcpy(&dp, decode_params, sizeof dp);
    const int d = pp.head_dim_qk;
    if (!compiled(d, pp.dtype) || pp.head_dim_vo != d || pp.kv_dtype != pp.dtype || pp.pos_encoding != 0 ||
        !pp.paged || pp.work == 0 || pp.mask != 0)
      return set_error(FI_ERR_UNSUPPORTED,
                       "batch attention (%s): head dims %d/%d, dtype %d, kv dtype %d, pos encoding %d, paged %d, "
                       "mask %d is not compiled",
                       form, d, pp.head_dim_vo, pp.dtype, pp.kv_dtype, pp.pos_encoding, pp.paged, pp.mask != 0);
    if (dp.head_dim != d || dp.q_dtype != pp.dtype || dp.kv_dtype != pp.dtype || dp.rope || dp.alibi ||
        dp.num_qo_heads != pp.num_qo_heads || dp.num_kv_heads != pp.num_kv_heads)
      return set_error(FI_ERR_INVALID_ARGUMENT, "batch attention: the decode block disagrees with the prefill block");
    if (const int32_t st = prefill::args_from_params(pp, pa, work); st != FI_OK) return st;
    if (const int32_t st = attn::args_from_params(dp, da); st != FI_OK) return st;
    pa.num_pages = dp.num_pages;  // a replayed graph may meet page ids its capture never checked
    return FI_OK;
  }
};

}  // namespace

extern "C" int32_t fi_batch_attention_ctas(int32_t head_dim, int32_t dtype) {
  FI_GUARD_BEGIN
  if (!compiled(head_dim, dtype)) return 0;
  int ctas = 0;
  int32_t st = FI_OK;
  if (head_dim == 64) st = FI_DISPATCH_HALF(dtype, T, return Fused<T, 64>::resident(&ctas););
  else st = FI_DISPATCH_HALF(dtype, T, return Fused<T, 128>::resident(&ctas););
  return st == FI_OK ? ctas : -st;
  FI_GUARD_END
}

extern "C" int32_t fi_batch_attention_run(const uint8_t* prefill_params, const uint8_t* decode_params,
                                          uint64_t queue, uint64_t stream) {
  FI_GUARD_BEGIN
  Blocks b;
  if (const int32_t st = b.read(prefill_params, decode_params, "fused"); st != FI_OK) return st;
  if (queue == 0 || (queue & 15))
    return set_error(FI_ERR_INVALID_ARGUMENT, "batch attention: queue not 16-byte aligned");
  const int d = b.pp.head_dim_qk;
  const int packs = b.pp.num_qo_heads >> b.pa.pack_shift;
  const int width = b.dp.num_kv_heads * b.da.head_groups;
  int* state = as_ptr<int>(queue);
  const cudaStream_t s = as_stream(stream);
  if (d == 64)
    return FI_DISPATCH_HALF(b.pp.dtype, T, return Fused<T, 64>::run(b.pa, packs, b.da, width, state, s););
  return FI_DISPATCH_HALF(b.pp.dtype, T, return Fused<T, 128>::run(b.pa, packs, b.da, width, state, s););
  FI_GUARD_END
}

// ---- the split form: the Hopper prefill kernel on prefill_ctas SMs beside the plain decode kernel --
namespace {

// The split form's prefill CTAs launch in clusters of this many when their count is a multiple of it
// (SPLIT_CLUSTER in src/attention/batch_attention_plan.ts rounds the count).
constexpr int kSplitCluster = 8;

// A high-priority side stream and two events per device, made on first use: the prefill half runs on
// the side stream (its waiting CTAs go ahead of the decode's as SMs free up), joined back into the
// caller's stream.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};

int32_t side_stream(SideStream** out) {
  static SideStream sides[64];
  int dev = 0;
  FI_CUDA(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return set_error(FI_ERR_INVALID_ARGUMENT, "batch attention: device %d", dev);
  SideStream& s = sides[dev];
  if (s.stream == nullptr) {
    int least = 0, greatest = 0;
    FI_CUDA(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    FI_CUDA(cudaStreamCreateWithPriority(&s.stream, cudaStreamNonBlocking, greatest));
    FI_CUDA(cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming));
    FI_CUDA(cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming));
  }
  *out = &s;
  return FI_OK;
}

}  // namespace

extern "C" int32_t fi_batch_attention_split_sms(int32_t head_dim, int32_t dtype) {
  FI_GUARD_BEGIN
  if (!compiled(head_dim, dtype) || !prefill_hopper::available()) return 0;
  int dev = 0, sms = 0;
  FI_CUDA(cudaGetDevice(&dev));
  FI_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
  FI_GUARD_END
}

extern "C" int32_t fi_batch_attention_run_split(const uint8_t* prefill_params, const uint8_t* decode_params,
                                                int32_t prefill_ctas, uint64_t stream) {
  FI_GUARD_BEGIN
  Blocks b;
  if (const int32_t st = b.read(prefill_params, decode_params, "split"); st != FI_OK) return st;
  if (!prefill_hopper::available())
    return set_error(FI_ERR_UNSUPPORTED, "batch attention: the split form needs the Hopper prefill kernel (sm_90)");
  const int d = b.pp.head_dim_qk;
  const cudaStream_t s = as_stream(stream);
  if (b.work == 0) return fi_batch_decode_run(decode_params, stream);
  if (b.dp.num_items == 0) return prefill_hopper::launch(b.pa, b.pp.dtype, d, b.work, b.pp.num_qo_heads, s);
  SideStream* side = nullptr;
  if (const int32_t st = side_stream(&side); st != FI_OK) return st;
  // Two streams, forked and joined by events (a later kernel on `stream` waits for both). One stream with
  // the decode launched beside the prefill (programmatic dependent launch, no wait) placed the prefill's
  // CTAs first reliably, but ran no faster at the best share (1603-1608 us against 1600-1611 here), and
  // a decode that does not wait for its predecessor leaves a later dependent launch without a guarantee
  // that the prefill has finished.
  FI_CUDA(cudaEventRecord(side->fork, s));
  FI_CUDA(cudaStreamWaitEvent(side->stream, side->fork, 0));
  // The prefill's CTAs go in clusters of kSplitCluster, which packs them onto fewer GPCs (the host rounds
  // prefill_ctas to a multiple): the decode beside them ran 30-40 us faster on the H100 (bench/NOTES.md).
  if (const int32_t st = prefill_hopper::launch(b.pa, b.pp.dtype, d, b.work, b.pp.num_qo_heads, side->stream,
                                                prefill_ctas > 0 ? prefill_ctas : 1, kSplitCluster);
      st != FI_OK)
    return st;
  const int32_t st = fi_batch_decode_run(decode_params, stream);
  FI_CUDA(cudaEventRecord(side->join, side->stream));  // join even when the decode launch failed
  FI_CUDA(cudaStreamWaitEvent(s, side->join, 0));
  return st;
  FI_GUARD_END
}
