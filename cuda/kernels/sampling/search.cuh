// The threshold search (sampler.cuh has the algorithm): rounds until the bracket is one value or small
// enough to place exactly, with the gather of a cluster's crossing bin to its rank 0.
#pragma once
#include "histogram.cuh"

namespace fi {
namespace sampling {

// Places the threshold exactly inside a bracket (lo, hi] of at most 32 weights that one CTA holds
// (alone, or rank 0 after a gather): one warp orders them (descending, ties by index), adds them up
// in that order (a fixed shuffle scan: deterministic) from above hi, and stops at the first weight
// whose upper set keeps too much; its ties are admitted with it.
template <int CL, int VEC, typename TooBig>
__device__ Threshold finish_small(RowCtx<VEC>& c, SamplerSmem& sm, TooBig&& too_big, float lo, float c_lo, float s_lo,
                                  float hi, float c_hi, float s_hi) {
  list_ready(c, sm, lo);
  if (threadIdx.x == 0) sm.small_n = 0;
  __syncthreads();
  for_each_listed<CL>(c, sm, [&](float w, int idx) {
    if (w > lo && w <= hi) {
      const int q = atomicAdd(&sm.small_n, 1);
      if (q < 32) sm.small_w[q] = w, sm.small_i[q] = idx;
    }
  });
  __syncthreads();
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x, n = min(sm.small_n, 32);
    const float w = lane < n ? sm.small_w[lane] : -1.f;
    const int ix = lane < n ? sm.small_i[lane] : 0;
    int r = 0;
    for (int j = 0; j < n; ++j) {
      const float wj = __shfl_sync(0xffffffffu, w, j);
      const int ij = __shfl_sync(0xffffffffu, ix, j);
      r += (wj > w || (wj == w && ij < ix)) ? 1 : 0;
    }
    __syncwarp();
    if (lane < n) sm.small_w[r] = w;  // in rank order
    __syncwarp();
    const float v = lane < n ? sm.small_w[lane] : 0.f;
    float sum = v;  // inclusive prefix over the rank order
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const float u = __shfl_up_sync(0xffffffffu, sum, o);
      if (lane >= o) sum += u;
    }
    const float C = c_hi + float(lane + 1), S = s_hi + sum;
    const unsigned hit = __ballot_sync(0xffffffffu, lane < n && too_big(C, S));
    // the first weight that keeps too much (none: rounding; the lowest, with the bracket's totals)
    const int f = hit ? __ffs(hit) - 1 : n - 1;
    const float t = __shfl_sync(0xffffffffu, v, max(f, 0));
    // its ties follow it in the rank order: the upper set runs to the last of them
    const unsigned same = __ballot_sync(0xffffffffu, lane < n && v == t);
    const int last = 31 - __clz(same | 1u);
    const float cl = __shfl_sync(0xffffffffu, C, last), sl = __shfl_sync(0xffffffffu, S, last);
    if (lane == 0) {
      sm.hist.res[0] = n > 0 ? __uint_as_float(__float_as_uint(t) - 1u) : lo;
      sm.hist.res[1] = hit && n > 0 ? cl : c_lo;
      sm.hist.res[2] = hit && n > 0 ? sl : s_lo;
    }
  }
  __syncthreads();
  const Threshold th{sm.hist.res[0], sm.hist.res[1], sm.hist.res[2]};
  __syncthreads();  // res is rewritten by a later round
  return th;
}

// Enters weight w of token idx in the race held in best (an exact sample: see the file's comment).
template <int VEC>
__device__ __forceinline__ void race_entry(const RowCtx<VEC>& c, float w, int idx, unsigned long long& best) {
  const float e = exp_noise(pick(philox_group(c.key, uint32_t(idx) >> 2, kElementNoise), idx & 3));
  const unsigned long long packed =
      (static_cast<unsigned long long>(order_key(score_of(c, w, e))) << 32) | (0xFFFFFFFFu - uint32_t(idx));
  best = packed > best ? packed : best;
}

// Hands the rest of the row to the cluster's rank 0: every CTA pushes its listed weights in
// (lo, hi] into its own region of rank 0's flat region (stores only; positions from a CTA-local
// counter), enters those above hi in the race (only when the search is final: the threshold then
// lies at or below hi) and pushes its winner and count, then one cluster barrier. The caller
// guarantees the cluster holds at most region_cap weights in (lo, hi]. The regions' order depends
// on the atomics, which changes nothing: histogram rounds count integers and the race does not
// depend on the order.
template <int CL, int VEC>
__device__ void gather_to_lead(RowCtx<VEC>& c, SamplerSmem& sm, float lo, float hi) {
  if constexpr (CL > 1) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    list_ready(c, sm, lo);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, me = int(cluster.block_rank());
    int b0, n;
    warp_part<CL>(c, sm, warp, b0, n);
    float* w_seg = c.list_w + b0;
    int* i_seg = c.list_i + b0;
    const int dst = c.flat_off + me * c.region_cap;
    float* dst_w = cluster.map_shared_rank(c.list_w, 0) + dst;
    int* dst_i = cluster.map_shared_rank(c.list_i, 0) + dst;
    int n2 = 0;  // entries above hi, moved to the front of the segment (it is not read again)
    auto one = [&](int i, float w, int ix) {
      const bool k = i < n && w > lo && w <= hi;
      const unsigned m = __ballot_sync(0xffffffffu, k);
      if (m) {  // rare: positions from the CTA's counter
        int pos = 0;
        if (lane == 0) pos = atomicAdd(&sm.gather_n, __popc(m));
        pos = __shfl_sync(0xffffffffu, pos, 0) + __popc(m & ((1u << lane) - 1u));
        if (k && pos < c.region_cap) dst_w[pos] = w, dst_i[pos] = ix;
      }
      const bool a = i < n && w > hi && w >= c.min_keep;
      const unsigned ma = __ballot_sync(0xffffffffu, a);
      if (a) {
        const int q = n2 + __popc(ma & ((1u << lane) - 1u));
        w_seg[q] = w, i_seg[q] = ix;
      }
      n2 += __popc(ma);
    };
    for (int i0 = 0; i0 < n; i0 += 64) {  // two chunks in flight
      const int ia = i0 + lane, ib = ia + 32;
      const float wa = ia < n ? w_seg[ia] : 0.f, wb = ib < n ? w_seg[ib] : 0.f;
      const int xa = ia < n ? i_seg[ia] : 0, xb = ib < n ? i_seg[ib] : 0;
      __syncwarp();  // both chunks read before any lane moves an entry down
      one(ia, wa, xa);
      one(ib, wb, xb);
    }
    __syncwarp();
    unsigned long long best = 0;
    for (int i = lane; i < n2; i += 32) race_entry(c, w_seg[i], i_seg[i], best);
    best = block_max_u64(best, sm.red);  // its barrier also completes gather_n
    if (threadIdx.x == 0) {
      *cluster.map_shared_rank(&sm.above[me], 0) = best;
      *cluster.map_shared_rank(&sm.region_n[me], 0) = sm.gather_n;
    }
    cluster.sync();  // release / acquire: rank 0 sees every push
    c.gathered = true;
  }
}

// The pivot search. g(C, S) says a threshold whose upper set has size C and mass S keeps too much;
// g is monotone, true at `lo` on entry and false at the row's max.
template <int CL, int VEC>
__device__ Threshold search(RowCtx<VEC>& c, SamplerSmem& sm, bool use_k, float k, bool use_p, float plim,
                            float lo, float c_lo, float s_lo, float hi) {
  auto too_big = [&](float C, float S) { return (use_k && C >= k) || (use_p && S >= plim); };
  if (!too_big(c_lo, s_lo)) return {lo, c_lo, s_lo};
  float c_hi = 0.f, s_hi = 0.f;  // size and mass above hi
  for (int round = 0; round < kMaxRounds; ++round) {
    // Few enough weights above lo, or in the bracket, for one CTA: rank 0 finishes alone, the
    // others leave (a bracket only in the final search: the CTAs race what lies above it first).
    if (CL > 1 && c.can_gather && !c.gathered) {
      const float limit = float(c.region_cap);
      const bool all = c_lo <= fminf(limit, 1024.f);
      if (all || (c.can_bracket && c_lo - c_hi <= limit)) {
        gather_to_lead<CL>(c, sm, lo, all ? INFINITY : hi);
        c.mark(11);
        if (cluster_rank<CL>() != 0) return {lo, c_lo, s_lo};
      }
    }
    // A bracket of at most 32 weights in one CTA: placed exactly, no more rounds.
    if (c.compacted && (CL == 1 || c.gathered) && c_lo - c_hi <= 32.f) {
      const Threshold th = finish_small<CL>(c, sm, too_big, lo, c_lo, s_lo, hi, c_hi, s_hi);
      c.mark(2 + min(c.rounds, 9));
      return th;
    }
    ++c.rounds;
    // The bracket's weights are in shared memory: histogram rounds. The first one over (0, max]
    // (the list was filled by the stats pass) has fine bins over the 16 binades under the max
    // (16 a binade, aligned) and leaves the weights below them out.
    if (c.compacted) {
      float floor_w = 0.f;
      if (lo <= 0.f && __float_as_uint(hi) >= (256u << 19)) floor_w = __uint_as_float((((__float_as_uint(hi) >> 19) - 255u) << 19) - 1u);
      const bool done = hist_round<CL>(c, sm, too_big, floor_w, lo, c_lo, s_lo, hi, c_hi, s_hi);
      c.mark(2 + min(c.rounds - 1, 9));
      if (done) return {lo, c_lo, s_lo};
      if (!(lo < hi)) break;
      continue;
    }
    float t[kPivots];
    const bool wide = lo <= 0.f || hi > 4.f * lo;
    if (wide) {
      const float s = lo > 0.f ? fminf(2.f, __log2f(hi / lo) / (kPivots + 1)) : 2.f;
#pragma unroll
      for (int j = 0; j < kPivots; ++j) t[j] = hi * exp2f(-s * float(kPivots - j));
    } else {
#pragma unroll
      for (int j = 0; j < kPivots; ++j) t[j] = lo + (hi - lo) * float(j + 1) / float(kPivots + 1);
    }
    // Compact the weights above lo into shared memory once they fit. Before that, speculate: keep
    // those above the second pivot (14 binades below hi in a wide bracket); a warp whose segment
    // could fill in the coming iteration raises its own level to the next pivot first (dropping,
    // and counting, what falls below), so the list always holds every weight above the cluster's
    // highest level. It is used when the new lo lands at or above that level, which saves a pass.
    // c_lo counts the whole cluster's weights above lo; each CTA holds its own slice's.
    const bool compact_now = !c.compacted && c_lo <= 0.75f * float(c.list_cap) * CL;  // slack: warps fill unevenly
    const bool speculate = !c.compacted && !compact_now;
    float append_lo = compact_now ? lo : t[1];
    int level = 1;  // speculating: append_lo is t[level] (warp-uniform)
    int my_n = 0;  // this warp's entries (the same in every lane)
    // acc: counts[kPivots], sums[kPivots], count_in, sum_in | min_in | max_in, overflow (this lane
    // saw its warp's segment full; reduced with the rest so every CTA of a cluster agrees), level
    float acc[2 * kPivots + 6];
#pragma unroll
    for (int j = 0; j < 2 * kPivots + 2; ++j) acc[j] = 0.f;
    acc[2 * kPivots + 2] = INFINITY;
    acc[2 * kPivots + 3] = -INFINITY;
    acc[2 * kPivots + 4] = 0.f;
    auto count_in = [&](float w) {  // w in (lo, hi]
      acc[2 * kPivots] += 1.f;
      acc[2 * kPivots + 1] += w;
      acc[2 * kPivots + 2] = fminf(acc[2 * kPivots + 2], w);
      acc[2 * kPivots + 3] = fmaxf(acc[2 * kPivots + 3], w);
    };
    auto count_pivots = [&](float w) {
      if (w > t[0]) {  // pivots ascend: below the first, none is passed
#pragma unroll
        for (int j = 0; j < kPivots; ++j) {
          const bool gt = w > t[j];
          acc[j] += gt ? 1.f : 0.f;
          acc[kPivots + j] += gt ? w : 0.f;
        }
      }
    };
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* seg_w = c.list_w + warp * c.seg_cap;
    int* seg_i = c.list_i + warp * c.seg_cap;
    // Before each iteration (at most 32 * VEC * kUnroll appends a warp): raise the level until they
    // fit. The dropped entries lie in (t[level - 1], t[level]]: they pass exactly the pivots below
    // the new level, so they are counted in bulk.
    auto make_room = [&]() {
      constexpr int kBurst = 32 * VEC * kUnroll;
      while (speculate && my_n + kBurst > c.seg_cap && level < kPivots - 1) {
        ++level;
        float nl = t[0];
#pragma unroll
        for (int j = 1; j < kPivots; ++j) nl = j == level ? t[j] : nl;
        float e_n = 0.f, e_s = 0.f, e_min = INFINITY, e_max = -INFINITY;
        int n2 = 0;
        for (int i0 = 0; i0 < my_n; i0 += 32) {
          const int i = i0 + lane;
          const bool in = i < my_n;
          const float w2 = in ? seg_w[i] : 0.f;
          const int i2 = in ? seg_i[i] : 0;
          const bool k2 = in && w2 > nl;
          const unsigned m2 = __ballot_sync(0xffffffffu, k2);
          __syncwarp();  // every lane has read its entry before any is overwritten
          if (k2) {
            const int pos = n2 + __popc(m2 & ((1u << lane) - 1u));
            seg_w[pos] = w2;
            seg_i[pos] = i2;
          } else if (in && w2 > lo && w2 <= hi) {
            e_n += 1.f, e_s += w2, e_min = fminf(e_min, w2), e_max = fmaxf(e_max, w2);
          }
          n2 += __popc(m2);
        }
        __syncwarp();
        acc[2 * kPivots] += e_n, acc[2 * kPivots + 1] += e_s;
        acc[2 * kPivots + 2] = fminf(acc[2 * kPivots + 2], e_min);
        acc[2 * kPivots + 3] = fmaxf(acc[2 * kPivots + 3], e_max);
#pragma unroll
        for (int j = 0; j < kPivots - 1; ++j) {
          if (j < level) acc[j] += e_n, acc[kPivots + j] += e_s;
        }
        my_n = n2, append_lo = nl;
      }
    };
    // The pass over the row counts only what it does not store: a weight at or below append_lo
    // passes no pivot (compacting) or only those below the level (speculating). The stored weights
    // are counted after the pass from the warp's own segment: far fewer instructions than eight
    // pivot tests on every weight of the row. A weight that found its segment full is counted here.
    auto element = [&](float x, int idx) {
      const float w = weight(c, x);
      bool stored = false;
      // warp-aggregated append into the warp's own segment
      const bool keep = w > append_lo;
      const unsigned mask = __ballot_sync(0xffffffffu, keep);
      if (keep) {
        const int pos = my_n + __popc(mask & ((1u << lane) - 1u));
        if (pos < c.seg_cap) {
          seg_w[pos] = w;
          seg_i[pos] = idx;
          stored = true;
        } else {
          acc[2 * kPivots + 4] = 1.f;
        }
      }
      my_n += __popc(mask);
      if (!stored && w > lo && w <= hi) {
        count_in(w);
        if (!speculate || w > append_lo) {
          count_pivots(w);
        } else if (w > t[0]) {  // w <= t[level]: passes only pivots below the level
          if (level == 1) acc[0] += 1.f, acc[kPivots] += w;
          else count_pivots(w);
        }
      }
    };
    {
      ++c.global_passes;
      for_each_vector(
          c, c.logits ? -INFINITY : 0.f,
          [&](const float (&x)[VEC], int first) {
#pragma unroll
            for (int j = 0; j < VEC; ++j) element(x[j], first + j);
          },
          make_room);
    }
    {
      __syncwarp();  // the segment was written by the warp's other lanes
      const int n = min(my_n, c.seg_cap);
      for (int i = lane; i < n; i += 32) {
        const float w = seg_w[i];
        if (w > lo && w <= hi) count_in(w), count_pivots(w);
      }
      if (lane == 0) sm.warp_n[warp] = my_n;
    }
    acc[2 * kPivots + 5] = append_lo;
    row_reduce<CL, 2 * kPivots + 2, 1, 3>(acc, sm.red);  // its barriers also publish warp_n
    append_lo = acc[2 * kPivots + 5];  // the cluster's highest level
    c.mark(2 + min(c.rounds - 1, 9));
    const bool listed = acc[2 * kPivots + 4] == 0.f;  // the list holds every weight above append_lo
    if (compact_now) c.compacted = listed;
    const float cnt_in = acc[2 * kPivots], min_in = acc[2 * kPivots + 2], max_in = acc[2 * kPivots + 3];
    if (cnt_in <= 1.f || min_in >= max_in) {  // one value left in the bracket: it is the threshold
      if (speculate && listed && lo >= append_lo) c.compacted = true;
      return {lo, c_lo, s_lo};
    }
    // The new bracket: the highest pivot still keeping too much, the lowest keeping few enough
    // (unrolled selects: no dynamic indexing, so t and acc stay in registers).
    float nlo = lo, nc_lo = c_lo, ns_lo = s_lo;
    float nhi = hi, nc_hi = c_hi, ns_hi = s_hi;
#pragma unroll
    for (int j = 0; j < kPivots; ++j) {
      if (too_big(c_hi + acc[j], s_hi + acc[kPivots + j])) nlo = t[j], nc_lo = c_hi + acc[j], ns_lo = s_hi + acc[kPivots + j];
    }
#pragma unroll
    for (int j = kPivots - 1; j >= 0; --j) {
      if (!too_big(c_hi + acc[j], s_hi + acc[kPivots + j])) nhi = t[j], nc_hi = c_hi + acc[j], ns_hi = s_hi + acc[kPivots + j];
    }
    // Snap the bracket onto the values it holds (no row value lies in the trimmed parts).
    if (nhi > max_in) nhi = max_in;
    if (nlo < min_in) nlo = nextafterf(min_in, 0.f);
    if (speculate && listed && nlo >= append_lo) c.compacted = true;
    lo = nlo, c_lo = nc_lo, s_lo = ns_lo, hi = nhi, c_hi = nc_hi, s_hi = ns_hi;
    if (!(lo < hi)) break;
  }
  return {lo, c_lo, s_lo};
}

}  // namespace sampling
}  // namespace fi
