// The Hopper (wgmma) prefill kernel's launcher, called by fi_prefill_run (prefill.cu) when it applies.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "../kernels/prefill/prefill.cuh"

namespace fi::prefill_hopper {

// 1 when the current device is sm_90 and the library holds sm_90a code of the kernel.
bool available();
// Runs `tiles` x (heads >> pack_shift) work items of 128 query rows (the FA2 kernel's tile and work
// table) on a persistent grid of at most one CTA per SM, and at most max_ctas CTAs when max_ctas > 0
// (BatchAttention leaves the other SMs to a concurrent decode). cluster > 1: the grid (when a multiple of
// it and it fits) is launched in clusters of that many CTAs, which packs them onto fewer GPCs.
int32_t launch(const prefill::PrefillArgs& a, int dtype, int head_dim, int tiles, int heads, cudaStream_t stream,
               int max_ctas = 0, int cluster = 1);

}  // namespace fi::prefill_hopper
