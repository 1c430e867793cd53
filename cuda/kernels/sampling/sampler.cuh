// Sorting-free filtered sampling, renormalization, masking and softmax: one kernel template.
//
// A row (one CTA, or a cluster of CL CTAs that each own a contiguous slice) is never sorted:
//  1. a stats pass finds the row's max, total mass, positive count and any NaN;
//  2. the admissible set of top-k / top-p / their combinations is {w > lo} for a threshold found by
//     a pivot search: each round is ONE pass over the row that counts and sums the weights above
//     kPivots pivots placed in the bracket (lo, hi] around the threshold (log-spaced while the
//     bracket is wide), keeps the bracket's own min and max to snap onto real values, and stops
//     when the bracket holds a single distinct value. Once the weights above `lo` fit in shared
//     memory they are compacted there during a round, and later rounds and the draw read only them;
//     rounds on that list are histogram rounds (kBins bins of the bracket's float keys, integer
//     counts and masses), which resolve a bracket of two binades in about two rounds. A round over
//     the row tests the pivots only on the weights it does not store; the stored ones are counted
//     afterwards from shared memory (the row pass was bound by instructions, not bytes). A slice
//     small enough for the list (a small batch, its rows split over a cluster) is compacted by
//     the stats pass, so the search never reads the row: its first round has fine bins (16 a binade
//     over the 16 binades under the max; for probabilities on a cluster they travel with the
//     statistics' exchange) and squeezes the list to them; then the cluster's rank 0 takes over
//     (the others push it the crossing bin's weights and race what lies above it), and a bracket of
//     at most 32 weights is placed exactly by one warp. Cluster CTAs exchange partials only by
//     stores into their peers' shared memory (loads from a peer cost far more);
//  3. the draw is an exponential race: argmax over admissible i of w_i / E_i with E_i = -log U_i and
//     U_i from Philox(seed, offset, row, i). That is an exact sample of w restricted to the set,
//     needs no normalizer and no scan, and gives the same token whatever order the elements are
//     visited in (global row or compacted list), so the result is deterministic for a seed.
// Weights are the probabilities themselves, or exp((x - max) / T) for logits, so every filter works
// on unnormalized weights (top-p compares against p times the row's total).
// Plain sampling skips 1-2: one pass does the NaN check and the race (on 16-byte aligned probability
// rows, a race among groups of 16 tokens then an inverse-CDF pick inside the winner: one Philox call
// per 16 tokens). 512 threads a CTA: the pivot pass keeps ~110 registers a thread with no spills.
#pragma once
#include "search.cuh"

namespace fi {
namespace sampling {

// One pass over the row entering every admissible element in the race; Philox once per 4 elements.
template <int VEC, typename Admit, typename Enter>
__device__ __forceinline__ void race_global(const RowCtx<VEC>& c, const RngKey& key, Admit&& admissible,
                                            Enter&& enter) {
  for_each_vector(c, c.logits ? -INFINITY : 0.f, [&](const float (&x)[VEC], int first) {
    float w[VEC];
    bool any = false;
#pragma unroll
    for (int j = 0; j < VEC; ++j) w[j] = c.raw_logits ? x[j] * c.inv_t : weight(c, x[j]), any |= admissible(w[j]);
    if (!any) return;
    if constexpr (VEC == 4) {
      const U32x4 r = philox_group(key, uint32_t(first) >> 2, kElementNoise);
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (admissible(w[j])) enter(w[j], pick(r, j), first + j);
    } else {
#pragma unroll
      for (int j = 0; j < VEC; ++j)
        if (admissible(w[j]))
          enter(w[j], pick(philox_group(key, uint32_t(first + j) >> 2, kElementNoise), (first + j) & 3), first + j);
    }
  });
}

// Plain sampling from probabilities in two stages that need one random draw per 16 elements: an
// exponential race among groups of 16 consecutive tokens weighted by their sums, and inside the
// winning group an inverse-CDF pick. P(token) = W_g / Z * w / W_g = w / Z. Groups never straddle
// CTA slices (slices are whole groups), so the token does not depend on how the row is split.
template <int VEC>
__device__ __forceinline__ void group_race(const RowCtx<VEC>& c, const RngKey& key, float& bad,
                                           unsigned long long& best) {
  const int64_t g0 = c.v0 / 4, g1 = (c.v1 + 3) / 4;
  for (int64_t g = g0 + threadIdx.x; g < g1; g += kThreads) {
    float x[16];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t v = g * 4 + q;
      float4 f = make_float4(0.f, 0.f, 0.f, 0.f);
      if (v < c.v1) f = __ldg(reinterpret_cast<const float4*>(c.row) + v);
      x[4 * q] = f.x, x[4 * q + 1] = f.y, x[4 * q + 2] = f.z, x[4 * q + 3] = f.w;
    }
    float total = 0.f;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if (!(x[j] >= 0.f) || x[j] == INFINITY) bad = 1.f;
      else total += x[j];
    }
    if (!(total > 0.f) || total == INFINITY) continue;
    const U32x4 r = philox_group(key, uint32_t(g), kGroupNoise);
    const uint32_t k = order_key(__fdividef(total, exp_noise(r.x)));
    if (k < uint32_t(best >> 32)) continue;
    const float target = to_unit(r.y) * total;
    float cum = 0.f;
    int pick = -1, last = 0;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      if (x[j] > 0.f) {
        last = j;
        cum += x[j];
        if (pick < 0 && cum > target) pick = j;
      }
    }
    if (pick < 0) pick = last;
    const unsigned long long packed =
        (static_cast<unsigned long long>(k) << 32) | (0xFFFFFFFFu - uint32_t(g * 16 + pick));
    best = packed > best ? packed : best;
  }
}

struct RowParams {
  float k, p, min_p, inv_t;
};

template <typename T>
__device__ __forceinline__ T load_param(uint64_t arr, int64_t b, T fallback) {
  return arr ? reinterpret_cast<const T*>(arr)[b] : fallback;
}


template <int CL>
__device__ __forceinline__ void cluster_done() {
  if constexpr (CL > 1) cooperative_groups::this_cluster().sync();  // keep shared memory alive for peers
}

template <int VEC, int CL>
__global__ void __launch_bounds__(kThreads) sampler_kernel(const fi_sampling_params p) {
  extern __shared__ __align__(16) uint8_t smem_raw[];
  const long long t_start = clock64();
  SamplerSmem& sm = *reinterpret_cast<SamplerSmem*>(smem_raw);
  const int rank = cluster_rank<CL>();
  const int64_t b = blockIdx.x / CL;
  const int d = int(p.d);
  const bool lead = rank == 0 && threadIdx.x == 0;
  if (threadIdx.x == 0) sm.red.phase = 0, sm.gather_n = 0;  // read by peers only after a cluster barrier

  // ---- which input row; an index out of range marks the row invalid and reads nothing
  int64_t in_row = b;
  if (p.indices) {
    in_row = p.indices_dtype == FI_I64 ? reinterpret_cast<const int64_t*>(p.indices)[b]
                                       : int64_t(reinterpret_cast<const int32_t*>(p.indices)[b]);
  }
  auto finish_invalid = [&]() {
    if (p.op == kOpSample) {
      if (lead) reinterpret_cast<int32_t*>(p.output)[b] = 0;
    } else {
      float* out = reinterpret_cast<float*>(p.output) + b * p.out_stride;
      const float fill = p.op == kOpMask ? -INFINITY : 0.f;
      const int per = (d + CL - 1) / CL;
      for (int i = rank * per + threadIdx.x; i < min(d, (rank + 1) * per); i += kThreads) out[i] = fill;
    }
    if (lead && p.valid) reinterpret_cast<uint8_t*>(p.valid)[b] = 0;
  };
  if (in_row < 0 || in_row >= p.rows_in) {
    finish_invalid();
    return;  // no cluster exchange has happened: every CTA of the cluster leaves here together
  }

  // ---- per-row parameters, clamped so a bad device value cannot misbehave
  RowParams rp;
  rp.k = float(max(load_param<int32_t>(p.top_k_arr, b, int32_t(p.top_k)), 1));
  float tp = load_param<float>(p.top_p_arr, b, float(p.top_p));
  rp.p = tp > 0.f ? fminf(tp, 1.f) : 1e-30f;  // NaN or <= 0: only the top token
  float mp = load_param<float>(p.min_p_arr, b, float(p.min_p));
  rp.min_p = mp > 0.f ? fminf(mp, 1.f) : 0.f;
  float temp = load_param<float>(p.temperature_arr, b, float(p.temperature));
  rp.inv_t = 1.f / (temp == temp ? fmaxf(temp, 1e-6f) : 1.f);
  const uint64_t seed = p.seed_ptr ? *reinterpret_cast<const uint64_t*>(p.seed_ptr) : p.seed;
  const uint64_t offset = p.offset_ptr ? *reinterpret_cast<const uint64_t*>(p.offset_ptr) : p.offset;

  RowCtx<VEC> c;
  c.row = reinterpret_cast<const float*>(p.input) + in_row * p.in_stride;
  c.d = d;
  const int64_t nvec = d / VEC, per = ((nvec + CL - 1) / CL + 3) / 4 * 4;  // whole groups of 4 vectors
  c.v0 = min(nvec, per * rank);
  c.v1 = min(nvec, per * (rank + 1));
  c.logits = p.input_logits != 0;
  c.raw_logits = false;
  c.max_x = 0.f;
  c.inv_t = rp.inv_t;
  c.list_w = reinterpret_cast<float*>(smem_raw + sizeof(SamplerSmem));
  c.list_i = reinterpret_cast<int*>(c.list_w + p.list_cap);
  c.list_cap = int(p.list_cap);
  c.seg_cap = c.list_cap / (kThreads / 32);
  c.compacted = c.list_full = c.list_raw = c.prebinned = c.total_pending = false;
  c.sq_floor = 0.f;
  c.can_gather = c.can_bracket = c.gathered = false;
  c.flat_off = c.region_cap = 0;
  c.key = make_key(seed, offset, uint32_t(b));
  c.min_keep = 0.f;  // set once the max is known
  c.global_passes = 1;
  c.rounds = 0;
  if (threadIdx.x == 0) {
    trace_row = lead && p.debug_trace ? reinterpret_cast<int32_t*>(p.debug_trace) + 16 * b : nullptr;
    trace_t0 = t_start;
  }
  __syncthreads();
  c.mark(0);

  // ---- plain sampling: one pass does the race and the NaN check together
  if (p.op == kOpSample && p.filter == 0) {
    const RngKey key = make_key(seed, offset, uint32_t(b));
    c.raw_logits = c.logits;
    unsigned long long best = 0;
    float badf[1] = {0.f};
    auto enter = [&](float w, uint32_t r, int idx) {
      const float e = exp_noise(r);
      const unsigned long long packed =
          (static_cast<unsigned long long>(order_key(score_of(c, w, e))) << 32) | (0xFFFFFFFFu - uint32_t(idx));
      best = packed > best ? packed : best;
    };
    auto admit = [&](float w) {
      if (w != w || w == INFINITY || (!c.logits && w < 0.f)) badf[0] = 1.f;
      return c.logits ? w > -INFINITY && w < INFINITY : w > 0.f && w < INFINITY;
    };
    if (VEC == 4 && !c.logits) group_race(c, key, badf[0], best);
    else race_global(c, key, admit, enter);
    c.mark(13);
    row_reduce<CL, 0, 0, 1>(badf, sm.red);
    best = row_max_u64_to_lead<CL>(best, sm.red);
    c.mark(14);
    if (lead) {
      const bool found = best != 0 && badf[0] == 0.f;
      reinterpret_cast<int32_t*>(p.output)[b] = found ? int32_t(0xFFFFFFFFu - uint32_t(best)) : 0;
      if (p.valid) reinterpret_cast<uint8_t*>(p.valid)[b] = found ? 1 : 0;
      if (p.debug_rounds) {
        reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b] = 1;
        reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b + 1] = 0;
      }
    }
    c.mark(15);
    return;  // no closing cluster barrier: nothing reads a peer's shared memory after the last one
  }

  // ---- stats: max, total weight, positive count, NaN / negative / +inf
  // With top-k or top-p, a slice small enough for the list (every warp's share fits its segment:
  // small batches, where the row is split over a cluster) is compacted by this pass itself, so the
  // search never reads the row again and its first round splits the list.
  // From the full slice's size, so every CTA of the cluster takes the same decision (the last slice
  // may be shorter).
  const int64_t slice_iters = (per + int64_t(kThreads) * kUnroll - 1) / (int64_t(kThreads) * kUnroll);
  const bool list_in_stats =
      (p.filter & (kTopK | kTopP)) && p.op != kOpSoftmax && slice_iters * 32 * VEC * kUnroll <= c.seg_cap;
  if (list_in_stats) {
    // Segments need only one pass's appends; the rest of the list is rank 0's flat region.
    c.seg_cap = int(slice_iters) * 32 * VEC * kUnroll;
    c.flat_off = c.seg_cap * (kThreads / 32);
    c.region_cap = (c.list_cap - c.flat_off) / CL;
    c.can_gather = CL > 1 && p.op == kOpSample && c.region_cap >= 64;
  }
  const int s_warp = threadIdx.x >> 5, s_lane = threadIdx.x & 31;
  int s_n = 0;  // this warp's entries
  auto stats_append = [&](float x, int i, bool keep) {
    const unsigned mask = __ballot_sync(0xffffffffu, keep);
    if (keep) {
      const int pos = s_warp * c.seg_cap + s_n + __popc(mask & ((1u << s_lane) - 1u));
      c.list_w[pos] = x;
      c.list_i[pos] = i;
    }
    s_n += __popc(mask);
  };
  float max_w, total, positives;
  bool bad;
  // Probabilities split over a cluster with the list in the stats pass: the statistics travel with
  // the first round's bins (stats_and_fine_bins), one exchange fewer.
  const bool merged = CL > 1 && list_in_stats && !c.logits && p.op == kOpSample;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};  // probabilities: sum, count | max, bad
  // Logits whose first search counts only (top-k alone, or top-k first) and whose slice is listed
  // here: no exponentials in this pass and a plain exchange; the first round adds the total up.
  const bool use_p0 = (p.filter & kTopP) && rp.p < 1.f;
  const bool defer_total = c.logits && list_in_stats && p.op == kOpSample && (p.filter & kTopK) &&
                           (!use_p0 || (p.filter & kTopKFirst));
  if (c.logits) {
    float m = -INFINITY, s = 0.f, n = 0.f, badf = 0.f;
    // per vector: its max first, one rescale, then independent exponentials (no chain through m)
    for_each_vector(c, -INFINITY, [&](const float (&x)[VEC], int first) {
      float mv = m;
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        if (list_in_stats) stats_append(x[j], first + j, x[j] > -INFINITY);  // pads are -inf
        const bool ok = x[j] > -INFINITY && x[j] < INFINITY;
        if (!ok && x[j] != -INFINITY) badf = 1.f;  // NaN or +inf
        if (ok) n += 1.f, mv = fmaxf(mv, x[j]);
      }
      if (defer_total) {
        m = mv;
        return;
      }
      if (mv > m) s *= __expf((m - mv) * c.inv_t), m = mv;  // m = -inf: s is 0
#pragma unroll
      for (int j = 0; j < VEC; ++j)
        if (x[j] > -INFINITY && x[j] < INFINITY) s += __expf((x[j] - m) * c.inv_t);
    });
    c.mark(0);  // diagnostic: the slice's pass, before the exchange
    if (defer_total) {
      acc[1] = n, acc[2] = m, acc[3] = badf;  // the same reduction as probabilities' (no new code)
      row_reduce<CL, 2, 0, 2>(acc, sm.red);
      m = acc[2], s = 1.f, n = acc[1], badf = acc[3];  // s: a placeholder (>= 1 with any finite logit)
    } else {
      row_reduce_softmax<CL>(m, s, n, badf, c.inv_t, sm.red);
    }
    c.max_x = m;
    max_w = 1.f, total = s, positives = n, bad = badf > 0.f;
  } else {
    for_each_global(c, 0.f, [&](float x, int i) {
      if (list_in_stats) stats_append(x, i, x > 0.f);  // pads are 0
      if (!(x >= 0.f) || x == INFINITY) acc[3] = 1.f;
      else acc[0] += x, acc[1] += x > 0.f ? 1.f : 0.f, acc[2] = fmaxf(acc[2], x);
    });
    c.mark(0);  // diagnostic: the slice's pass, before the exchange
    if (merged) row_reduce<1, 2, 0, 2>(acc, sm.red);  // the block's; the cluster's below
    else row_reduce<CL, 2, 0, 2>(acc, sm.red);
  }
  if (list_in_stats) {
    if (s_lane == 0) sm.warp_n[s_warp] = s_n;
    __syncwarp();
    c.compacted = c.list_full = true;
    c.list_raw = c.logits;  // weights once the first round or make_weights has run
  }
  if (defer_total) {
    // The first search starts with a squeezing round when more weights count than a first gather
    // takes (1024, or a bracket's region) and k of them are too many (search's own test). Otherwise
    // (rare) the total now, from the listed logits.
    if (positives > fmaxf(1024.f, float(c.region_cap)) && positives >= rp.k && !bad) {
      c.total_pending = true;
    } else {
      const int n = min(s_n, c.seg_cap);
      float t[4] = {0.f, 0.f, 0.f, 0.f};
      for (int i = s_lane; i < n; i += 32) t[0] += weight(c, c.list_w[s_warp * c.seg_cap + i]);
      row_reduce<CL, 2, 0, 2>(t, sm.red);
      total = t[0];
    }
  }
  if (merged) stats_and_fine_bins<CL>(c, sm, acc);
  if (!c.logits) total = acc[0], positives = acc[1], max_w = acc[2], bad = acc[3] > 0.f;
  c.mark(1);
  if (bad || !(total > 0.f) || total == INFINITY) {
    finish_invalid();
    cluster_done<CL>();
    return;
  }

  // ---- softmax: write and leave
  if (p.op == kOpSoftmax) {
    float* out = reinterpret_cast<float*>(p.output) + b * p.out_stride;
    const float inv = 1.f / total;
    for_each_global(c, -INFINITY, [&](float x, int i) {
      if (i >= 0) out[i] = weight(c, x) * inv;
    });
    if (lead && p.valid) reinterpret_cast<uint8_t*>(p.valid)[b] = 1;
    cluster_done<CL>();
    return;
  }

  // ---- the admissible set: {w > lo} and, with min-p, {w >= min_p * max}
  const int filter = int(p.filter);
  c.min_keep = (filter & kMinP) ? rp.min_p * max_w : 0.f;
  Threshold th{0.f, positives, total};
  if (filter & (kTopK | kTopP)) {
    const bool use_k = filter & kTopK, use_p = (filter & kTopP) && rp.p < 1.f;  // p = 1 keeps every token
    // top-k first: the top-k set, then top-p within it. One call site: the search is a lot of code.
    const bool k_first = use_k && use_p && (filter & kTopKFirst);
#pragma unroll 1
    for (int phase = k_first ? 0 : 1; phase < 2; ++phase) {
      c.can_bracket = phase == 1;
      th = search<CL>(c, sm, use_k, rp.k, use_p && phase == 1, rp.p * th.S, th.lo, th.C, th.S, max_w);
      if (c.gathered && rank != 0) return;  // rank 0 finishes the row
    }
  }
  c.mark(12);
  const float lo = th.lo, min_keep = c.min_keep;
  auto admissible = [&](float w) { return w > lo && w >= min_keep && w > 0.f; };

  if (p.op == kOpRenorm || p.op == kOpMask) {
    float* out = reinterpret_cast<float*>(p.output) + b * p.out_stride;
    const float inv = 1.f / th.S;
    ++c.global_passes;
    for_each_global(c, 0.f, [&](float x, int i) {
      if (i < 0) return;
      const float w = weight(c, x);
      if (p.op == kOpRenorm) out[i] = admissible(w) ? w * inv : 0.f;
      else out[i] = admissible(w) ? x : -INFINITY;
    });
    if (lead && p.valid) reinterpret_cast<uint8_t*>(p.valid)[b] = 1;
    if (lead && p.debug_rounds) {
      reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b] = c.global_passes;
      reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b + 1] = c.rounds;
    }
    cluster_done<CL>();
    return;
  }

  // ---- the draw: an exponential race among admissible weights
  unsigned long long best = 0;
  if (c.compacted) {
    list_ready(c, sm, lo);
    // Move each warp's admissible entries to the front of its part of the list (the list is not
    // read after the draw), so the Philox calls run on full warps instead of on a few lanes of every step.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int b0, n;
    warp_part<CL>(c, sm, warp, b0, n);
    float* w_seg = c.list_w + b0;
    int* i_seg = c.list_i + b0;
    int n2 = 0;
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      const float w = i < n ? w_seg[i] : 0.f;
      const int ix = i < n ? i_seg[i] : 0;
      const bool k = i < n && admissible(w);
      const unsigned m = __ballot_sync(0xffffffffu, k);
      __syncwarp();
      if (k) {
        const int pos = n2 + __popc(m & ((1u << lane) - 1u));
        w_seg[pos] = w, i_seg[pos] = ix;
      }
      n2 += __popc(m);
    }
    __syncwarp();
    for (int i = lane; i < n2; i += 32) race_entry(c, w_seg[i], i_seg[i], best);
  } else {
    ++c.global_passes;
    race_global(c, c.key, admissible, [&](float w, uint32_t r, int idx) {
      const float e = exp_noise(r);
      const unsigned long long packed =
          (static_cast<unsigned long long>(order_key(score_of(c, w, e))) << 32) | (0xFFFFFFFFu - uint32_t(idx));
      best = packed > best ? packed : best;
    });
  }
  c.mark(13);
  if (c.gathered) {
    // rank 0 alone: its part, and every CTA's winner above the gathered bracket (0 when none)
    best = row_max_u64_to_lead<1>(best, sm.red);
    if (threadIdx.x < 32) {
      unsigned long long a = threadIdx.x < CL ? sm.above[threadIdx.x] : 0ull;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long u = __shfl_xor_sync(0xffffffffu, a, o);
        a = u > a ? u : a;
      }
      best = a > best ? a : best;
    }
  } else {
    best = row_max_u64_to_lead<CL>(best, sm.red);
  }
  c.mark(14);
  if (lead) {
    const bool found = best != 0;
    reinterpret_cast<int32_t*>(p.output)[b] = found ? int32_t(0xFFFFFFFFu - uint32_t(best)) : 0;
    if (p.valid) reinterpret_cast<uint8_t*>(p.valid)[b] = found ? 1 : 0;
    if (p.debug_rounds) {
      reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b] = c.global_passes;
      reinterpret_cast<int32_t*>(p.debug_rounds)[2 * b + 1] = c.rounds;
    }
  }
  c.mark(15);  // no closing cluster barrier: nothing reads a peer's shared memory after the last one
}

// Moves a device-side offset on after a launch, so a replayed CUDA graph draws fresh numbers.
__global__ void advance_offset_kernel(uint64_t* offset, uint64_t step) { *offset += step; }

}  // namespace sampling
}  // namespace fi
