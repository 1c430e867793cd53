// Launcher of the Hopper (wgmma) prefill kernel (cuda/kernels/prefill/hopper.cuh): fp16/bf16, head
// dim 64 or 128. Its own file so it compiles in parallel with the FA2 instantiations.
#include "prefill_hopper.h"

#include "../kernels/prefill/hopper.cuh"
#include "dispatch.h"

namespace fi::prefill_hopper {

namespace {

template <typename T, int D>
int32_t launch_one(const prefill::PrefillArgs& a, int tiles, int heads, cudaStream_t stream) {
  using Cfg = hopper::HopperConfig<D>;
  auto kernel = hopper::prefill_hopper_kernel<T, D>;
  static bool configured = false;  // the attribute is per device function; setting it twice is harmless
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
    configured = true;
  }
  kernel<<<dim3(tiles, heads >> a.pack_shift), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a);
  FI_CHECK_LAUNCH("prefill (hopper)");
  return FI_OK;
}

}  // namespace

bool available() {
  static int cached[64];  // per device: 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  if (cached[dev] == 0) {
    int major = 0;
    cudaFuncAttributes attr{};
    const bool ok = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
                    major == 9 &&
                    cudaFuncGetAttributes(&attr, hopper::prefill_hopper_kernel<__nv_bfloat16, 128>) == cudaSuccess &&
                    attr.binaryVersion == 90;
    cudaGetLastError();  // a failed query must not leak into the next launch check
    cached[dev] = ok ? 1 : 2;
  }
  return cached[dev] == 1;
}

int32_t launch(const prefill::PrefillArgs& a, int dtype, int head_dim, int tiles, int heads, cudaStream_t stream) {
  if (head_dim == 128) return FI_DISPATCH_HALF(dtype, T, return launch_one<T, 128>(a, tiles, heads, stream););
  if (head_dim == 64) return FI_DISPATCH_HALF(dtype, T, return launch_one<T, 64>(a, tiles, heads, stream););
  return set_error(FI_ERR_UNSUPPORTED, "prefill (hopper): head dim %d is not compiled", head_dim);
}

}  // namespace fi::prefill_hopper
