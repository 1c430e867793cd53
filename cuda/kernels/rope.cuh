// Rotary position embedding over q [nnz, Hq, D] and k [nnz, Hk, D], FlashInfer's semantics.
// One block per token: blockDim.x threads cover the rotary units of one head (a unit is VEC
// elements), blockDim.y heads go in parallel. Each thread computes its sin/cos once per token and
// reuses them for every head, so the trigonometry is amortized over Hq + Hk heads and the kernel
// stays bound by memory.
#pragma once
#include "vec.cuh"

namespace fi {

struct RopeArgs {
  const void* q;
  const void* k;
  void* q_out;
  void* k_out;
  const int* indptr;      // pos_mode 0
  const int* offsets;     // pos_mode 0
  const void* pos_ids;    // pos_mode 1 (int32 or int64, see pos_is_i64)
  const float* cos_sin;   // freq_mode 2
  long long q_stride_n, q_stride_h, k_stride_n, k_stride_h;
  long long qo_stride_n, qo_stride_h, ko_stride_n, ko_stride_h;
  int nnz, batch, num_q_heads, num_k_heads, head_dim, rotary_dim;
  int pos_mode, pos_is_i64, freq_mode, cache_rows;
  int copy_pass_through;  // out-of-place: copy dims [rotary_dim, head_dim) too
  float rope_rcp_scale, log2_rcp_theta;
  float smooth_a, smooth_b;  // Llama 3.1 frequency smoothing
};

__device__ __forceinline__ int token_position(const RopeArgs& a, int token) {
  if (a.pos_mode == 1) {
    return a.pos_is_i64 ? int(static_cast<const long long*>(a.pos_ids)[token])
                        : static_cast<const int*>(a.pos_ids)[token];
  }
  // The request holding this token: the last b with indptr[b] <= token.
  int lo = 0, hi = a.batch - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (a.indptr[mid] <= token) lo = mid; else hi = mid - 1;
  }
  return a.offsets[lo] + token - a.indptr[lo];
}

// Frequency of pair index j (0 <= j < rotary_dim / 2).
__device__ __forceinline__ float rope_freq(const RopeArgs& a, int j) {
  float freq = exp2f(a.log2_rcp_theta * (2.f * j) / a.rotary_dim);
  if (a.freq_mode == 1) {
    const float smooth = fminf(1.f, fmaxf(0.f, freq * a.smooth_a + a.smooth_b));
    return (1.f - smooth) * (freq * a.rope_rcp_scale) + smooth * freq;
  }
  return freq * a.rope_rcp_scale;
}

__device__ __forceinline__ void rope_sincos(const RopeArgs& a, int pos, int j, float* s, float* c) {
  if (a.freq_mode == 2) {
    pos = pos < 0 ? 0 : (pos >= a.cache_rows ? a.cache_rows - 1 : pos);
    const float* row = a.cos_sin + (long long)pos * a.rotary_dim;
    *c = row[j];
    *s = row[a.rotary_dim / 2 + j];
  } else {
    sincosf(float(pos) * rope_freq(a, j), s, c);
  }
}

// The input and output rows of head h of `token`, where heads [0, Hq) are q's and the rest k's.
template <typename T>
__device__ __forceinline__ void head_rows(const RopeArgs& a, int token, int h, const T** src, T** dst) {
  const bool is_q = h < a.num_q_heads;
  const long long hh = is_q ? h : h - a.num_q_heads;
  *src = static_cast<const T*>(is_q ? a.q : a.k) + token * (is_q ? a.q_stride_n : a.k_stride_n) +
         hh * (is_q ? a.q_stride_h : a.k_stride_h);
  *dst = static_cast<T*>(is_q ? a.q_out : a.k_out) + token * (is_q ? a.qo_stride_n : a.ko_stride_n) +
         hh * (is_q ? a.qo_stride_h : a.ko_stride_h);
}

// INTERLEAVE: pairs (2j, 2j + 1), a unit holds VEC / 2 pairs.
// Otherwise (NeoX): element i pairs with i + rotary_dim / 2; a unit holds VEC elements of the first
// half and their VEC partners.
template <typename T, int VEC, bool INTERLEAVE>
__global__ void rope_kernel(RopeArgs a) {
  pdl_wait();
  pdl_launch_dependents();
  constexpr int NSC = INTERLEAVE ? VEC / 2 : VEC;
  const int token = blockIdx.x;
  const int half = a.rotary_dim / 2;
  const int units = INTERLEAVE ? a.rotary_dim / VEC : half / VEC;
  const int u = threadIdx.x;
  const int heads = a.num_q_heads + a.num_k_heads;
  if (u < units) {
    const int pos = token_position(a, token);
    float sn[NSC], cs[NSC];
#pragma unroll
    for (int e = 0; e < NSC; ++e) {
      const int j = INTERLEAVE ? u * (VEC / 2) + e : u * VEC + e;
      rope_sincos(a, pos, j, &sn[e], &cs[e]);
    }
    for (int h = threadIdx.y; h < heads; h += blockDim.y) {
      const T* src;
      T* dst;
      head_rows(a, token, h, &src, &dst);
      if constexpr (INTERLEAVE) {
        Vec<T, VEC> x, o;
        x.load(src + u * VEC);
#pragma unroll
        for (int e = 0; e < VEC / 2; ++e) {
          const float x0 = x.f(2 * e), x1 = x.f(2 * e + 1);
          o.set(2 * e, x0 * cs[e] - x1 * sn[e]);
          o.set(2 * e + 1, x1 * cs[e] + x0 * sn[e]);
        }
        o.store(dst + u * VEC);
      } else {
        Vec<T, VEC> x0, x1, o0, o1;
        x0.load(src + u * VEC);
        x1.load(src + half + u * VEC);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          o0.set(e, x0.f(e) * cs[e] - x1.f(e) * sn[e]);
          o1.set(e, x1.f(e) * cs[e] + x0.f(e) * sn[e]);
        }
        o0.store(dst + u * VEC);
        o1.store(dst + half + u * VEC);
      }
    }
  }
  if (a.copy_pass_through && a.rotary_dim < a.head_dim) {
    // Dims past rotary_dim are copied unchanged, element by element (rare, and not on a hot path).
    const int rest = a.head_dim - a.rotary_dim;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    for (int w = tid; w < heads * rest; w += blockDim.x * blockDim.y) {
      const int h = w / rest, d = a.rotary_dim + w % rest;
      const T* src;
      T* dst;
      head_rows(a, token, h, &src, &dst);
      dst[d] = src[d];
    }
  }
}

}  // namespace fi
