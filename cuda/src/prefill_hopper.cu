// Launcher of the Hopper (wgmma) prefill kernel (cuda/kernels/prefill/hopper.cuh): fp16/bf16, head
// dim 64 or 128. Its own file so it compiles in parallel with the FA2 instantiations.
#include "prefill_hopper.h"

#include "../kernels/prefill/hopper.cuh"
#include "dispatch.h"

namespace fi::prefill_hopper {

namespace {

cudaLaunchConfig_t clustered_config(int grid, int cluster, int threads, int smem, cudaStream_t stream,
                                    cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = cluster;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  return config;
}

// Whether `grid` CTAs in clusters of `cluster` can all be resident at once (a GPU partitioned or shared
// so that no GPC has `cluster` free SMs falls back to a plain grid). Asked once per device, kernel, grid
// and cluster in a row.
template <typename Kernel>
bool clusters_fit(int dev, Kernel kernel, int grid, int cluster, int threads, int smem) {
  static Kernel asked_kernel = nullptr;
  static int asked_dev = -1, asked_grid = 0, asked_cluster = 0;
  static bool fits = false;
  if (asked_dev != dev || asked_kernel != kernel || asked_grid != grid || asked_cluster != cluster) {
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t config = clustered_config(grid, cluster, threads, smem, nullptr, &attr);
    int most = 0;
    fits = cudaOccupancyMaxActiveClusters(&most, kernel, &config) == cudaSuccess && most * cluster >= grid;
    cudaGetLastError();  // a failed query must not leak into the next launch check
    asked_dev = dev;
    asked_kernel = kernel;
    asked_grid = grid;
    asked_cluster = cluster;
  }
  return fits;
}

template <typename Kernel, typename... Args>
cudaError_t launch_clustered(Kernel kernel, int grid, int cluster, int threads, int smem, cudaStream_t stream,
                             Args... args) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = clustered_config(grid, cluster, threads, smem, stream, &attr);
  return cudaLaunchKernelEx(&config, kernel, args...);
}

template <typename T, int D, int QB>
int32_t launch_one(const prefill::PrefillArgs& a, int tiles, int heads, cudaStream_t stream, int max_ctas,
                   int cluster) {
  using Cfg = hopper::HopperConfig<D, QB>;
  auto kernel = hopper::prefill_hopper_kernel<T, D, QB>;
  static bool configured = false;  // the attribute is per device function; setting it twice is harmless
  if (!configured) {
    FI_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes));
    configured = true;
  }
  const int head_groups = heads >> a.pack_shift;
  const long long items = (long long)tiles * head_groups;
  if (items > 2147483647LL) return set_error(FI_ERR_INVALID_ARGUMENT, "prefill (hopper): %lld work items", items);
  // Persistent: one CTA per SM (its shared memory takes the SM), items round-robin.
  static int sms[64];
  int dev = 0;
  FI_CUDA(cudaGetDevice(&dev));
  if (dev < 0 || dev >= 64) return set_error(FI_ERR_INVALID_ARGUMENT, "prefill (hopper): device %d", dev);
  if (sms[dev] == 0) FI_CUDA(cudaDeviceGetAttribute(&sms[dev], cudaDevAttrMultiProcessorCount, dev));
  const int cap = max_ctas > 0 && max_ctas < sms[dev] ? max_ctas : sms[dev];
  const int grid = (int)(items < cap ? items : cap);
  if (cluster > 1 && grid % cluster == 0 && clusters_fit(dev, kernel, grid, cluster, Cfg::kThreads, Cfg::kSmemBytes)) {
    FI_CUDA(launch_clustered(kernel, grid, cluster, Cfg::kThreads, Cfg::kSmemBytes, stream, a, tiles, head_groups));
  } else {
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, tiles, head_groups);
  }
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
                    cudaFuncGetAttributes(&attr, hopper::prefill_hopper_kernel<__nv_bfloat16, 128, 2>) == cudaSuccess &&
                    attr.binaryVersion == 90;
    cudaGetLastError();  // a failed query must not leak into the next launch check
    cached[dev] = ok ? 1 : 2;
  }
  return cached[dev] == 1;
}

template <int D, int QB>
int32_t launch_d(const prefill::PrefillArgs& a, int dtype, int tiles, int heads, cudaStream_t stream, int max_ctas,
                 int cluster) {
  return FI_DISPATCH_HALF(dtype, T, return launch_one<T, D, QB>(a, tiles, heads, stream, max_ctas, cluster););
}

int32_t launch(const prefill::PrefillArgs& a, int dtype, int head_dim, int tiles, int heads, cudaStream_t stream,
               int max_ctas, int cluster) {
  if (head_dim == 128) return launch_d<128, 2>(a, dtype, tiles, heads, stream, max_ctas, cluster);
  if (head_dim == 64) return launch_d<64, 2>(a, dtype, tiles, heads, stream, max_ctas, cluster);
  return set_error(FI_ERR_UNSUPPORTED, "prefill (hopper): head dim %d is not compiled", head_dim);
}

}  // namespace fi::prefill_hopper
