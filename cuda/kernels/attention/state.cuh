// The online-softmax state shared by decode, prefill and the merge kernels. Scores are kept in base 2
// (logits * log2(e)), so the log-sum-exp is base 2, as FlashInfer's.
#pragma once
#include <math.h>

namespace fi::attn {

constexpr float kLog2e = 1.4426950408889634f;

// Partial softmax over some keys: running max m (base 2), denominator d = sum 2^(s - m).
struct SoftmaxState {
  float m, d;
  __device__ __forceinline__ void init() { m = -INFINITY, d = 0.f; }
  __device__ __forceinline__ float lse() const { return d > 0.f ? m + __log2f(d) : -INFINITY; }
};

// Weights that combine normalized partial outputs with log-sum-exps lse_a and lse_b:
// v = wa * va + wb * vb, lse = max + log2(2^(lse_a - max) + 2^(lse_b - max)).
struct MergeWeights {
  float wa, wb, lse;
};
__device__ __forceinline__ MergeWeights merge_weights(float lse_a, float lse_b) {
  const float m = fmaxf(lse_a, lse_b);
  if (m == -INFINITY) return {0.f, 0.f, -INFINITY};
  const float ea = exp2f(lse_a - m), eb = exp2f(lse_b - m), s = ea + eb;
  return {ea / s, eb / s, m + __log2f(s)};
}

}  // namespace fi::attn
