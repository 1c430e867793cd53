// Merging attention states (normalized partial outputs with their base-2 LSEs): the cascade/split-KV
// reduction. One warp per (row, head); lanes take 4 columns at a time.
#pragma once
#include <stdint.h>

#include "../vec.cuh"
#include "state.cuh"

namespace fi::attn {

// Merges `count` states per (row, head). State j of row r sits at index start + j, where
// start = table ? table[2r] : r * fixed_count and count = table ? table[2r + 1] : fixed_count.
// Rows with count 0 are left alone (the decode kernel wrote them directly).
struct MergeArgs {
  const void* v;       // states: v + i * v_si + h * v_sh + c
  const float* s;      // lse:    s + i * s_si + h * s_sh
  void* vo;            // out:    vo + r * o_sr + h * o_sh + c
  float* so;           // out lse [rows, heads] (may be null)
  const int* table;    // [rows][2] start, count; or null
  int64_t v_si, v_sh, s_si, s_sh, o_sr, o_sh;
  int rows, heads, head_dim, fixed_count;
};

template <typename TIn>
__device__ __forceinline__ float4 load4(const TIn* p) {
  if constexpr (sizeof(TIn) == 4) {
    return *reinterpret_cast<const float4*>(p);
  } else {
    const Vec<TIn, 4> x = *reinterpret_cast<const Vec<TIn, 4>*>(p);
    return make_float4(x.f(0), x.f(1), x.f(2), x.f(3));
  }
}
template <typename TOut>
__device__ __forceinline__ void store4(TOut* p, float4 x) {
  if constexpr (sizeof(TOut) == 4) {
    *reinterpret_cast<float4*>(p) = x;
  } else {
    Vec<TOut, 4> y;
    y.set(0, x.x), y.set(1, x.y), y.set(2, x.z), y.set(3, x.w);
    *reinterpret_cast<Vec<TOut, 4>*>(p) = y;
  }
}

template <typename TIn, typename TOut>
__global__ void merge_states_kernel(const MergeArgs a) {
  const int r = blockIdx.x, h = blockIdx.y * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (h >= a.heads) return;
  const int start = a.table ? a.table[2 * r] : r * a.fixed_count;
  const int count = a.table ? a.table[2 * r + 1] : a.fixed_count;
  if (count <= 0) return;
  // LSE max and denominator across lanes (one state per lane per pass), so the loads run in parallel.
  auto lse_of = [&](int j) { return a.s[int64_t(start + j) * a.s_si + int64_t(h) * a.s_sh]; };
  float mx = -INFINITY;
  for (int j = lane; j < count; j += 32) mx = fmaxf(mx, lse_of(j));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  float dsum = 0.f;
  if (mx != -INFINITY)
    for (int j = lane; j < count; j += 32) dsum += exp2f(lse_of(j) - mx);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) dsum += __shfl_xor_sync(0xffffffffu, dsum, o);
  const float inv = dsum > 0.f ? 1.f / dsum : 0.f;
  const TIn* v = static_cast<const TIn*>(a.v);
  for (int c = lane * 4; c < a.head_dim; c += 128) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mx != -INFINITY) {
#pragma unroll 4
      for (int j = 0; j < count; j++) {
        const int64_t i = start + j;
        const float w = exp2f(lse_of(j) - mx) * inv;
        const float4 x = load4(v + i * a.v_si + int64_t(h) * a.v_sh + c);
        acc.x += w * x.x, acc.y += w * x.y, acc.z += w * x.z, acc.w += w * x.w;
      }
    }
    store4(static_cast<TOut*>(a.vo) + int64_t(r) * a.o_sr + int64_t(h) * a.o_sh + c, acc);
  }
  if (lane == 0 && a.so) a.so[int64_t(r) * a.heads + h] = dsum > 0.f ? mx + __log2f(dsum) : -INFINITY;
}

// Pairwise merge of (va, sa) and (vb, sb), [rows, heads, D] and [rows, heads], contiguous, into (vo, so)
// (which may alias a). mask [rows] (uint8, may be null): rows with mask 0 are copied from a (or, in
// place, left alone).
struct PairArgs {
  const void* va;
  const float* sa;
  const void* vb;
  const float* sb;
  void* vo;
  float* so;
  const uint8_t* mask;
  int rows, heads, head_dim;
};

template <typename T>
__global__ void merge_pair_kernel(const PairArgs a) {
  const int r = blockIdx.x, h = blockIdx.y * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (h >= a.heads) return;
  const int64_t row = int64_t(r) * a.heads + h;
  const bool merge = !a.mask || a.mask[r];
  if (!merge && a.vo == a.va) return;
  const float la = a.sa[row], lb = a.sb[row];
  const MergeWeights w = merge ? merge_weights(la, lb) : MergeWeights{1.f, 0.f, la};
  for (int c = lane * 4; c < a.head_dim; c += 128) {
    const float4 x = load4(static_cast<const T*>(a.va) + row * a.head_dim + c);
    float4 y = make_float4(0.f, 0.f, 0.f, 0.f);
    if (merge) y = load4(static_cast<const T*>(a.vb) + row * a.head_dim + c);
    store4(static_cast<T*>(a.vo) + row * a.head_dim + c,
           make_float4(w.wa * x.x + w.wb * y.x, w.wa * x.y + w.wb * y.y, w.wa * x.z + w.wb * y.z,
                       w.wa * x.w + w.wb * y.w));
  }
  if (lane == 0) a.so[row] = w.lse;
}

}  // namespace fi::attn
