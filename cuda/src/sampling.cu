// extern "C" entry points for the samplers, renorm/mask/softmax and chain speculative sampling.
#include <initializer_list>

#include "../kernels/sampling/sampler.cuh"
#include "../kernels/sampling/speculative.cuh"
#include "dispatch.h"

namespace fi {
namespace {

using namespace sampling;

// Compacted weights kept in shared memory per CTA: (float, int) pairs.
constexpr int kListCap = 25600;  // 200 KiB: 1600 entries for each of the 16 warps

int sm_count() {
  static int count = 0;
  if (count == 0) {
    int dev = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev);
    int major = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    if (major < 9) count = -count;  // no clusters before Hopper
  }
  return count;
}

size_t sampler_smem(int64_t list_cap) { return sizeof(SamplerSmem) + size_t(list_cap) * 8; }

// Whether a cluster of 16 CTAs (non-portable, sm_90) with the sampler's shared memory fits on this
// device: it needs 16 SMs of one GPC free.
bool cluster16_fits() {
  static int fits = -1;
  if (fits < 0) {
    fits = 0;
    auto kernel = sampler_kernel<4, 16>;
    const size_t smem = sampler_smem(kListCap);
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)) == cudaSuccess &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess) {
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(16);
      cfg.blockDim = dim3(kThreads);
      cfg.dynamicSmemBytes = smem;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = 16;
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      int clusters = 0;
      if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess && clusters > 0) fits = 1;
    }
    cudaGetLastError();  // a refusal above is an answer, not an error for the caller
  }
  return fits == 1;
}

// CTAs per row: enough that a small batch still spreads over the GPU (up to 16 where a GPC can
// hold 16 of them; 8 is the portable cluster size).
int choose_cluster(int64_t requested, int64_t batch, int64_t d) {
  const int sms = sm_count();
  if (sms < 0) return 1;
  if (requested == 16) return cluster16_fits() ? 16 : 8;
  if (requested == 1 || requested == 2 || requested == 4 || requested == 8) return int(requested);
  const int cap = cluster16_fits() ? 16 : 8;
  int cl = 1;
  while (cl < cap && batch * cl * 2 <= sms && d / (cl * 2) >= 2048) cl *= 2;
  return cl;
}

template <int VEC, int CL>
int32_t launch_sampler(fi_sampling_params& p, cudaStream_t stream) {
  auto kernel = sampler_kernel<VEC, CL>;
  const size_t smem = sampler_smem(p.list_cap);
  FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(p.batch * CL));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if constexpr (CL > 1) {
    FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, CL > 8 ? 1 : 0));
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = CL;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  FI_CUDA(cudaLaunchKernelEx(&cfg, kernel, p));
  return FI_OK;
}

template <int VEC>
int32_t launch_sampler_cl(fi_sampling_params& p, int cl, cudaStream_t stream) {
  switch (cl) {
    case 16: return launch_sampler<VEC, 16>(p, stream);
    case 8: return launch_sampler<VEC, 8>(p, stream);
    case 4: return launch_sampler<VEC, 4>(p, stream);
    case 2: return launch_sampler<VEC, 2>(p, stream);
    default: return launch_sampler<VEC, 1>(p, stream);
  }
}

}  // namespace
}  // namespace fi

using namespace fi;

extern "C" {

int32_t fi_sampling_run(uint8_t* params, uint64_t stream) {
  FI_GUARD_BEGIN
  fi_sampling_params p;
  memcpy(&p, params, sizeof(p));
  if (p.batch < 0 || p.d <= 0 || p.d > (int64_t(1) << 30) || p.rows_in <= 0 || p.op < 0 || p.op > 3)
    return set_error(FI_ERR_INVALID_ARGUMENT, "sampling: batch %lld, d %lld, rows %lld or op %lld out of range",
                     (long long)p.batch, (long long)p.d, (long long)p.rows_in, (long long)p.op);
  if (p.batch == 0) return FI_OK;
  if (p.batch > 0x7fffffff / 8)
    return set_error(FI_ERR_INVALID_ARGUMENT, "sampling: batch %lld is too large", (long long)p.batch);
  const int cl = choose_cluster(p.cluster, p.batch, p.d);
  p.list_cap = kListCap;
  const int vec = vector_width(4, {p.input}, {p.d, p.in_stride}) >= 4 ? 4 : 1;
  const cudaStream_t s = as_stream(stream);
  int32_t st = vec == 4 ? launch_sampler_cl<4>(p, cl, s) : launch_sampler_cl<1>(p, cl, s);
  if (st) return st;
  if (p.offset_ptr && p.offset_step) {
    sampling::advance_offset_kernel<<<1, 1, 0, s>>>(as_ptr<uint64_t>(p.offset_ptr), uint64_t(p.offset_step));
    FI_CHECK_LAUNCH("advance_offset");
  }
  return FI_OK;
  FI_GUARD_END
}

int32_t fi_chain_speculative_sampling(uint64_t draft_probs, uint64_t draft_ids, uint64_t target_probs,
                                      uint64_t out_ids, uint64_t accepted, uint64_t emitted, int32_t batch,
                                      int32_t n, int32_t d, uint64_t seed, uint64_t offset, uint64_t seed_ptr,
                                      uint64_t offset_ptr, uint64_t offset_step, uint64_t stream) {
  FI_GUARD_BEGIN
  if (batch < 0 || n < 0 || d <= 0)
    return set_error(FI_ERR_INVALID_ARGUMENT, "chain speculative sampling: batch %d, n %d, d %d out of range",
                     batch, n, d);
  if (batch == 0) return FI_OK;
  const cudaStream_t s = as_stream(stream);
  sampling::chain_speculative_kernel<1><<<batch, 1024, 0, s>>>(
      as_ptr<const float>(draft_probs), as_ptr<const int32_t>(draft_ids), as_ptr<const float>(target_probs),
      as_ptr<int32_t>(out_ids), as_ptr<int32_t>(accepted), as_ptr<int32_t>(emitted), n, d, seed, offset,
      as_ptr<const uint64_t>(seed_ptr), as_ptr<const uint64_t>(offset_ptr));
  FI_CHECK_LAUNCH("chain_speculative_sampling");
  if (offset_ptr && offset_step) {
    sampling::advance_offset_kernel<<<1, 1, 0, s>>>(as_ptr<uint64_t>(offset_ptr), offset_step);
    FI_CHECK_LAUNCH("advance_offset");
  }
  return FI_OK;
  FI_GUARD_END
}

}  // extern "C"
