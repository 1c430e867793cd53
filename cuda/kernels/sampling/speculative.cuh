// Chain speculative sampling: accept draft token i while u_i * p_draft < p_target (each with its own
// uniform), then draw the first rejected position's replacement from relu(target - draft) (or the
// bonus token from target when every draft was accepted), with the same exponential race as the
// samplers. Draft ids outside [0, d) count as rejected and are never used as addresses.
#pragma once
#include <stdint.h>

#include "philox.cuh"
#include "reduce.cuh"

namespace fi {
namespace sampling {

template <int VEC>
__global__ void __launch_bounds__(1024)
    chain_speculative_kernel(const float* draft_probs, const int32_t* draft_ids, const float* target_probs,
                             int32_t* out_ids, int32_t* accepted, int32_t* emitted, int n, int d, uint64_t seed,
                             uint64_t offset, const uint64_t* seed_ptr, const uint64_t* offset_ptr) {
  __shared__ ReduceSmem red;
  __shared__ int s_pos, s_acc;
  const int b = blockIdx.x;
  if (threadIdx.x == 0) red.phase = 0;
  if (seed_ptr) seed = *seed_ptr;
  if (offset_ptr) offset = *offset_ptr;
  const RngKey key = make_key(seed, offset, uint32_t(b));
  if (threadIdx.x == 0) {
    int pos = n, acc = 0;
    for (int i = 0; i < n; ++i) {
      const int id = draft_ids[int64_t(b) * n + i];
      float q = 0.f, p = 1.f;
      if (id >= 0 && id < d) {
        q = target_probs[(int64_t(b) * (n + 1) + i) * d + id];
        p = draft_probs[(int64_t(b) * n + i) * d + id];
      }
      const float u = to_unit(pick(philox_group(key, uint32_t(i) >> 2, kRowScalars), i & 3));
      const bool ok = u * p < q;
      if (pos == n) {
        if (ok) out_ids[int64_t(b) * (n + 1) + i] = id, ++acc;
        else pos = i;
      } else if (ok) {
        ++acc;  // FlashInfer also counts later drafts that would have been accepted
      }
    }
    s_pos = pos;
    s_acc = acc;
    accepted[b] += acc;
    emitted[b] += pos;
  }
  __syncthreads();
  const int pos = s_pos;
  const float* q = target_probs + (int64_t(b) * (n + 1) + pos) * d;
  const float* p = pos < n ? draft_probs + (int64_t(b) * n + pos) * d : nullptr;
  // Two races at once: over relu(q - p), and over q as the fallback when q == p everywhere.
  unsigned long long best = 0, best_q = 0;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    const float qi = q[i];
    const float w = p ? fmaxf(qi - p[i], 0.f) : qi;
    if (!(qi > 0.f)) continue;
    const float e = -logf(to_unit(pick(philox_group(key, uint32_t(i) >> 2, kResidualNoise), i & 3)));
    const unsigned long long tail = 0xFFFFFFFFu - uint32_t(i);
    const unsigned long long kq = (static_cast<unsigned long long>(__float_as_uint(__fdividef(qi, e))) << 32) | tail;
    best_q = kq > best_q ? kq : best_q;
    if (w > 0.f) {
      const unsigned long long kw = (static_cast<unsigned long long>(__float_as_uint(__fdividef(w, e))) << 32) | tail;
      best = kw > best ? kw : best;
    }
  }
  best = row_max_u64<1>(best, red);
  best_q = row_max_u64<1>(best_q, red);
  if (threadIdx.x == 0) {
    const unsigned long long pick_key = best ? best : best_q;
    out_ids[int64_t(b) * (n + 1) + pos] = pick_key ? int32_t(0xFFFFFFFFu - uint32_t(pick_key)) : 0;
    for (int i = pos + 1; i <= n; ++i) out_ids[int64_t(b) * (n + 1) + i] = -1;
  }
}

}  // namespace sampling
}  // namespace fi
