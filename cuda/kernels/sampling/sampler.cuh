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
//     the stats pass, so the search never reads the row. Cluster CTAs exchange partials only by
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
#include <cooperative_groups.h>
#include <stdint.h>

#include "../../include/flashinfer_ts.h"
#include "philox.cuh"
#include "reduce.cuh"

namespace fi {
namespace sampling {

constexpr int kThreads = 512;  // 128 registers a thread: the pivot pass keeps 28 accumulators
constexpr int kPivots = 8;
constexpr int kMaxRounds = 40;
constexpr int kUnroll = 4;  // vectors in flight per thread per step

enum SamplerOp { kOpSample = 0, kOpRenorm = 1, kOpMask = 2, kOpSoftmax = 3 };
enum FilterBits { kTopK = 1, kTopP = 2, kMinP = 4, kTopKFirst = 8 };

constexpr int kBins = 256;  // histogram rounds split the bracket into this many key ranges

// A histogram round's bins. Masses are fixed point (w / hi * 2^24, so integer sums: exact in any order) in two 32-bit words:
// a 64-bit shared atomicAdd is a compare-and-swap spin loop (ATOMS.CAST.SPIN.64) that serializes
// on hot bins, while 32-bit ATOMS.ADD is native; the low word's returned value gives the carry.
struct HistSmem {
  uint4 bin[kBins];    // this CTA's: count, mass low word, mass high word, unused
  uint4 stage[kBins];  // cluster: [peer][kBins / CL] the peers' bins of the range this CTA totals
  unsigned tot_cnt[kBins];  // the cluster's totals
  unsigned long long tot_mass[kBins];
  float res[5];  // the scan's verdict: bin, count and mass above it, count and mass with it
};

struct SamplerSmem {
  ReduceSmem red;
  HistSmem hist;
  int warp_n[32];  // entries each warp compacted into its own segment of the list
  int gather_n;    // rank 0: entries the cluster pushed into its flat region (see gather_to_lead)
  float br_w[32];  // rank 0: a pending bracket's weights and indices, pushed by the cluster
  int br_i[32];
};

// Everything one CTA knows about its row.
template <int VEC>
struct RowCtx {
  const float* row;  // input row
  int64_t v0, v1;    // this CTA's vectors [v0, v1)
  int d;
  bool logits;
  bool raw_logits;  // single-pass logits race: weights are x / T themselves
  float max_x, inv_t;  // logits: weight = exp((x - max_x) * inv_t)
  float* list_w;
  int* list_i;
  int list_cap;
  int seg_cap;  // list entries per warp
  bool compacted;
  // A small upper set is finished on the cluster's rank 0 alone (no more cluster barriers): every
  // CTA pushes its entries above lo into rank 0's flat region [flat_off, flat_off + gather_cap)
  // of the list, the other CTAs leave, and rank 0 runs the remaining rounds and the draw.
  bool can_gather, gathered;
  int flat_off, flat_n, gather_cap;
  // The last search may stop at a bracket (lo, p_hi] of at most 32 weights: the race then enters
  // what lies above p_hi in every CTA, pushes the bracket to rank 0, and rank 0 places the
  // threshold inside it exactly (one warp, in a fixed order) and races what it admits.
  bool can_resolve, pending;
  float p_hi, p_chi, p_shi, p_k, p_lim;
  bool p_use_k, p_use_p;
  int global_passes, rounds;
  __device__ __forceinline__ void mark(int slot) const;
};

// debug_trace: the lead thread's checkpoints (null when not asked for), kept out of registers.
__shared__ int32_t* trace_row;
__shared__ long long trace_t0;

template <int VEC>
__device__ __forceinline__ void RowCtx<VEC>::mark(int slot) const {
  if (trace_row && threadIdx.x == 0) trace_row[slot] = int32_t(clock64() - trace_t0);
}

template <int VEC>
__device__ __forceinline__ float weight(const RowCtx<VEC>& c, float x) {
  return c.logits ? __expf((x - c.max_x) * c.inv_t) : x;
}

template <int CL>
__device__ __forceinline__ int cluster_rank() {
  if constexpr (CL == 1) return 0;
  else return int(cooperative_groups::this_cluster().block_rank());
}

constexpr int kPadIndex = -(1 << 30);

struct NoHook {
  __device__ __forceinline__ void operator()() const {}
};

// Calls f(x[VEC], first_index) for every vector of this CTA's slice, with the same trip count in
// every thread (missing vectors come filled with `pad`), so f may use warp collectives. before()
// runs at the start of every iteration (kUnroll vectors a thread), also in every thread.
template <int VEC, typename F, typename Before = NoHook>
__device__ __forceinline__ void for_each_vector(const RowCtx<VEC>& c, float pad, F&& f, Before&& before = Before()) {
  const int64_t n = c.v1 - c.v0;
  const int64_t step = int64_t(kThreads) * kUnroll;
  const int64_t iters = (n + step - 1) / step;
  for (int64_t it = 0; it < iters; ++it) {
    before();
    float x[kUnroll][VEC];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = c.v0 + it * step + u * kThreads + threadIdx.x;
      if (v < c.v1) {
        if constexpr (VEC == 4) {
          const float4 q = __ldg(reinterpret_cast<const float4*>(c.row) + v);
          x[u][0] = q.x, x[u][1] = q.y, x[u][2] = q.z, x[u][3] = q.w;
        } else {
#pragma unroll
          for (int j = 0; j < VEC; ++j) x[u][j] = __ldg(c.row + v * VEC + j);
        }
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j) x[u][j] = pad;
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t v = c.v0 + it * step + u * kThreads + threadIdx.x;
      f(x[u], v < c.v1 ? int(v * VEC) : kPadIndex);  // pads may lie in a peer CTA's slice: never write them
    }
  }
}

// Calls f(x, index) for every element of this CTA's slice (same trip count in every thread).
template <int VEC, typename F>
__device__ __forceinline__ void for_each_global(const RowCtx<VEC>& c, float pad, F&& f) {
  for_each_vector(c, pad, [&](const float (&x)[VEC], int first) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) f(x[j], first + j);
  });
}

// A warp's part of the list: its own segment, or (gathered) its chunk of the flat region.
template <int VEC>
__device__ __forceinline__ int seg_begin(const RowCtx<VEC>& c, int warp) {
  return c.gathered ? c.flat_off + warp * ((c.flat_n + 15) / 16) : warp * c.seg_cap;
}
template <int VEC>
__device__ __forceinline__ int seg_count(const RowCtx<VEC>& c, const SamplerSmem& sm, int warp) {
  if (c.gathered) {
    const int chunk = (c.flat_n + 15) / 16;
    return max(0, min(chunk, c.flat_n - warp * chunk));
  }
  return min(sm.warp_n[warp], c.seg_cap);
}

// Calls f(w, index) for every compacted weight of this CTA: each warp reads its own part.
template <int VEC, typename F>
__device__ __forceinline__ void for_each_listed(const RowCtx<VEC>& c, const SamplerSmem& sm, F&& f) {
  static_assert(kThreads / 32 == 16, "flat chunks are per warp of 16");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = seg_count(c, sm, warp), b0 = seg_begin(c, warp);
  const float* w = c.list_w + b0;
  const int* ix = c.list_i + b0;
  for (int i = lane; i < n; i += 32) f(w[i], ix[i]);
}

// Visits weights: from the compacted list when there is one, else from the row.
template <int VEC, typename F>
__device__ __forceinline__ void for_each_weight(RowCtx<VEC>& c, SamplerSmem& sm, F&& f) {
  if (c.compacted) {
    for_each_listed(c, sm, f);
  } else {
    ++c.global_passes;
    for_each_global(c, c.logits ? -INFINITY : 0.f, [&](float x, int i) { f(weight(c, x), i); });
  }
}

struct Threshold {
  float lo;  // the admissible set is {w > lo}
  float C;   // its size
  float S;   // its mass
};

constexpr float kMassScale = 16777216.f;  // 2^24: a weight's rounding error is float's own

// One histogram round on the compacted list, for a bracket (lo, hi] with lo >= 0. The bins are
// ranges of the float's bit pattern (monotone in the value for w >= 0), 2^shift keys wide, so a
// round cuts the key range by kBins whatever the bracket's shape (any bracket resolves in <= 4
// rounds). Counts and fixed-point masses are integers, so the totals do not depend on the order of
// the atomics (deterministic). Every CTA of the cluster scans the same totals and so takes the same
// decision. Returns true when the threshold is found (the bin holds one element or one key).
template <int CL, int VEC, typename TooBig>
__device__ bool hist_round(RowCtx<VEC>& c, SamplerSmem& sm, TooBig&& too_big, float& lo, float& c_lo,
                           float& s_lo, float& hi, float& c_hi, float& s_hi) {
  HistSmem& h = sm.hist;
  const uint32_t base = (lo > 0.f ? __float_as_uint(lo) : 0u) + 1u, top = __float_as_uint(hi);
  const uint32_t range = top - base;  // keys base..top
  int shift = 0;
  while ((range >> shift) >= uint32_t(kBins)) ++shift;
  for (int i = threadIdx.x; i < kBins; i += kThreads) h.bin[i] = make_uint4(0u, 0u, 0u, 0u);
  __syncthreads();
  for_each_listed(c, sm, [&](float w, int) {
    if (w > lo && w <= hi) {
      const int b = int((__float_as_uint(w) - base) >> shift);
      const unsigned q = __float2uint_rn(__fdiv_rn(w, hi) * kMassScale);  // <= 2^24
      atomicAdd(&h.bin[b].x, 1u);
      const unsigned old = atomicAdd(&h.bin[b].y, q);
      if (old + q < old) atomicAdd(&h.bin[b].z, 1u);  // the low word wrapped
    }
  });
  // The cluster's totals by pushes, never by loads (a load from a peer's shared memory costs far
  // more than a store): CTA r totals bins [r * kBins / CL, (r + 1) * kBins / CL). Every CTA stores
  // its bins of that range into r's stage, a barrier, r sums them in peer order and stores the
  // totals into every CTA, a barrier. No buffer is rewritten before its readers have passed the
  // barrier that follows their reads, so nothing is double-buffered.
  __syncthreads();
  if (CL > 1 && !c.gathered) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    constexpr int kOwn = kBins / CL;
    const int me = int(cluster.block_rank());
    if (threadIdx.x < kBins) {
      const int i = threadIdx.x;
      *cluster.map_shared_rank(&h.stage[me * kOwn + i % kOwn], i / kOwn) = h.bin[i];
    }
    cluster.sync();
    // thread t: bin me * kOwn + t % kOwn for peer t / kOwn (kOwn * CL == kBins threads)
    unsigned n = 0u;
    unsigned long long m = 0ull;
    const int j = threadIdx.x % kOwn;
#pragma unroll
    for (int q = 0; q < CL; ++q) {
      const uint4 v = h.stage[q * kOwn + j];
      n += v.x, m += (static_cast<unsigned long long>(v.z) << 32) | v.y;
    }
    if (threadIdx.x < kBins) {
      const int dest = threadIdx.x / kOwn, b = me * kOwn + j;
      *cluster.map_shared_rank(&h.tot_cnt[b], dest) = n;
      *cluster.map_shared_rank(&h.tot_mass[b], dest) = m;
    }
    cluster.sync();
  } else {
    for (int i = threadIdx.x; i < kBins; i += kThreads) {
      const uint4 v = h.bin[i];
      h.tot_cnt[i] = v.x, h.tot_mass[i] = (static_cast<unsigned long long>(v.z) << 32) | v.y;
    }
    __syncthreads();
  }
  // Warp 0 finds the highest bin whose upper set (with the bin) still keeps too much; lane l owns
  // bins [l * per, (l + 1) * per). too_big is monotone, so the bins that keep too much are a prefix.
  if (threadIdx.x < 32) {
    constexpr int per = kBins / 32;
    const int lane = threadIdx.x;
    unsigned n = 0u;
    unsigned long long m = 0ull;
#pragma unroll
    for (int j = 0; j < per; ++j) n += h.tot_cnt[lane * per + j], m += h.tot_mass[lane * per + j];
    // suffix sums over the lanes: what the lanes above this one hold
    unsigned sn = n;
    unsigned long long sm64 = m;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned n2 = __shfl_down_sync(0xffffffffu, sn, o);
      const unsigned long long m2 = __shfl_down_sync(0xffffffffu, sm64, o);
      if (lane + o < 32) sn += n2, sm64 += m2;
    }
    unsigned n_above = sn - n;
    unsigned long long m_above = sm64 - m;
    const double unit = double(hi) / double(kMassScale);
    int found = -1;
    float ca = 0.f, sa = 0.f, ci = 0.f, si = 0.f;
    for (int j = per - 1; j >= 0; --j) {
      const int b = lane * per + j;
      const unsigned n_in = n_above + h.tot_cnt[b];
      const unsigned long long m_in = m_above + h.tot_mass[b];
      const float C = c_hi + float(n_in), S = s_hi + float(double(m_in) * unit);
      if (too_big(C, S)) {
        found = b;
        ca = c_hi + float(n_above), sa = s_hi + float(double(m_above) * unit), ci = C, si = S;
        break;
      }
      n_above = n_in, m_above = m_in;
    }
    const unsigned hits = __ballot_sync(0xffffffffu, found >= 0);
    if (hits == 0u) {
      // Rounding kept every bin below the limit, though the bracket as a whole keeps too much: take
      // the lowest non-empty bin with the bracket's own count and mass.
      const unsigned nonempty = __ballot_sync(0xffffffffu, n > 0u);
      if (lane == 0) {
        int b = 0;
        if (nonempty) {
          const int l = __ffs(nonempty) - 1;
          b = l * per;
          while (b < (l + 1) * per - 1 && h.tot_cnt[b] == 0u) ++b;
        }
        h.res[0] = float(b);
        h.res[1] = c_lo - float(h.tot_cnt[b]), h.res[2] = s_lo - float(double(h.tot_mass[b]) * unit);
        h.res[3] = c_lo, h.res[4] = s_lo;
      }
    } else if (lane == 31 - __clz(hits)) {
      h.res[0] = float(found), h.res[1] = ca, h.res[2] = sa, h.res[3] = ci, h.res[4] = si;
    }
  }
  __syncthreads();
  const int b = int(h.res[0]);
  const float ca = h.res[1], sa = h.res[2], ci = h.res[3], si = h.res[4];
  __syncthreads();  // res is rewritten by the next round
  const uint32_t first = base + (uint32_t(b) << shift);
  const uint32_t last = min(top, first + ((1u << shift) - 1u));
  lo = __uint_as_float(first - 1u), c_lo = ci, s_lo = si;
  hi = __uint_as_float(last), c_hi = ca, s_hi = sa;
  return shift == 0 || ci - ca <= 1.f;
}

// Pushes every listed weight above lo into rank 0's flat region (stores and one atomic a warp into
// rank 0: no peer loads), then one cluster barrier. The caller guarantees the cluster holds at most
// gather_cap of them. The region's order depends on the atomics, which changes nothing: histogram
// rounds count integers and the race does not depend on the order.
template <int CL, int VEC>
__device__ void gather_to_lead(RowCtx<VEC>& c, SamplerSmem& sm, float lo) {
  if constexpr (CL > 1) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = seg_count(c, sm, warp), b0 = seg_begin(c, warp);
    int keep = 0;
    for (int i = lane; i < n; i += 32) keep += c.list_w[b0 + i] > lo ? 1 : 0;
    keep = __reduce_add_sync(0xffffffffu, keep);
    int pos = 0;
    if (lane == 0 && keep > 0) pos = atomicAdd(cluster.map_shared_rank(&sm.gather_n, 0), keep);
    pos = __shfl_sync(0xffffffffu, pos, 0);
    float* dst_w = cluster.map_shared_rank(c.list_w, 0) + c.flat_off;
    int* dst_i = cluster.map_shared_rank(c.list_i, 0) + c.flat_off;
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      const float w = i < n ? c.list_w[b0 + i] : 0.f;
      const bool k = i < n && w > lo;
      const unsigned m = __ballot_sync(0xffffffffu, k);
      const int p = pos + __popc(m & ((1u << lane) - 1u));
      if (k && p < c.gather_cap) dst_w[p] = w, dst_i[p] = c.list_i[b0 + i];
      pos += __popc(m);
    }
    cluster.sync();  // release / acquire: rank 0 sees every push and the count
    c.flat_n = min(sm.gather_n, c.gather_cap);  // meaningful on rank 0 only
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
    // Few enough weights above lo for one CTA: rank 0 finishes alone, the others leave.
    if (CL > 1 && c.can_gather && !c.gathered && c_lo <= fminf(float(c.gather_cap), 1024.f)) {
      gather_to_lead<CL>(c, sm, lo);
      if (cluster_rank<CL>() != 0) return {lo, c_lo, s_lo};
    }
    if (CL > 1 && c.can_resolve && !c.gathered && c.compacted && c_lo - c_hi <= 32.f) {
      c.pending = true;
      c.p_hi = hi, c.p_chi = c_hi, c.p_shi = s_hi;
      c.p_k = k, c.p_lim = plim, c.p_use_k = use_k, c.p_use_p = use_p;
      return {lo, c_lo, s_lo};
    }
    ++c.rounds;
    // The bracket's weights are in shared memory: histogram rounds, except for a first round over
    // (0, max] (the list was filled by the stats pass), which the pivots split with no atomics.
    // Gathered, every round is a histogram round (a pivot round reduces over the cluster).
    if (c.compacted && (lo > 0.f || round > 0 || c.gathered)) {
      const bool done = hist_round<CL>(c, sm, too_big, lo, c_lo, s_lo, hi, c_hi, s_hi);
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
    if (c.compacted) {  // a pivot round over the list: only the count below
      my_n = sm.warp_n[warp];
    } else {
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

// -log(u) for u in (0, 1): the fast log where it is accurate, a series where u is near 1 (there
// -log(u) is small and the fast log's absolute error would dominate it). Relative error < 1e-5.
__device__ __forceinline__ float exp_noise(uint32_t r) {
  const float u = to_unit(r);
  const float om = 1.f - u;  // exact on the 24-bit grid
  if (om < 0.0625f) return om * (1.f + om * (0.5f + om * (0.33333334f + om * (0.25f + om * 0.2f))));
  return -__logf(u);
}

// Maps a float onto an unsigned key with the same order (negative scores included).
__device__ __forceinline__ uint32_t order_key(float s) {
  const uint32_t u = __float_as_uint(s);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The race score of weight w against exponential noise e: w / e. For logits in the single-pass
// path, w is the scaled logit and the score is its Gumbel form x / T - log(e).
template <int VEC>
__device__ __forceinline__ float score_of(const RowCtx<VEC>& c, float w, float e) {
  return c.raw_logits ? w - __logf(e) : __fdividef(w, e);
}

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
  c.compacted = false;
  c.can_gather = c.gathered = false;
  c.can_resolve = c.pending = false;
  c.flat_off = c.flat_n = c.gather_cap = 0;
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
    c.gather_cap = c.list_cap - c.flat_off;
    c.can_gather = CL > 1 && p.op == kOpSample && c.gather_cap > 0;
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
  if (c.logits) {
    float m = -INFINITY, s = 0.f, n = 0.f, badf = 0.f;
    for_each_global(c, -INFINITY, [&](float x, int i) {
      if (list_in_stats) stats_append(x, i, x > -INFINITY);  // pads are -inf
      if (x != x || x == INFINITY) badf = 1.f;
      else if (x > -INFINITY) {
        n += 1.f;
        if (x > m) s = s * __expf((m - x) * c.inv_t) + 1.f, m = x;
        else s += __expf((x - m) * c.inv_t);
      }
    });
    float a[2] = {m, badf};
    row_reduce<CL, 0, 0, 2>(a, sm.red);
    const float M = a[0];
    float b2[2] = {M > -INFINITY && m > -INFINITY ? s * __expf((m - M) * c.inv_t) : 0.f, n};
    row_reduce<CL, 2, 0, 0>(b2, sm.red);
    c.max_x = M;
    max_w = 1.f, total = b2[0], positives = b2[1], bad = a[1] > 0.f;
  } else {
    float acc[4] = {0.f, 0.f, 0.f, 0.f};  // sum, count | max, bad
    for_each_global(c, 0.f, [&](float x, int i) {
      if (list_in_stats) stats_append(x, i, x > 0.f);  // pads are 0
      if (!(x >= 0.f) || x == INFINITY) acc[3] = 1.f;
      else acc[0] += x, acc[1] += x > 0.f ? 1.f : 0.f, acc[2] = fmaxf(acc[2], x);
    });
    row_reduce<CL, 2, 0, 2>(acc, sm.red);
    total = acc[0], positives = acc[1], max_w = acc[2], bad = acc[3] > 0.f;
  }
  if (list_in_stats) {
    if (s_lane == 0) sm.warp_n[s_warp] = s_n;
    if (c.logits) {  // the list holds logits: turn them into weights now that the max is known
      __syncwarp();
      float* w = c.list_w + s_warp * c.seg_cap;
      for (int i = s_lane; i < s_n; i += 32) w[i] = weight(c, w[i]);
    }
    __syncwarp();
    c.compacted = true;
  }
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
  Threshold th{0.f, positives, total};
  if (filter & (kTopK | kTopP)) {
    const bool use_k = filter & kTopK, use_p = (filter & kTopP) && rp.p < 1.f;  // p = 1 keeps every token
    // top-k first: the top-k set, then top-p within it. One call site: the search is a lot of code.
    const bool k_first = use_k && use_p && (filter & kTopKFirst);
#pragma unroll 1
    for (int phase = k_first ? 0 : 1; phase < 2; ++phase) {
      c.can_resolve = CL > 1 && p.op == kOpSample && phase == 1;
      th = search<CL>(c, sm, use_k, rp.k, use_p && phase == 1, rp.p * th.S, th.lo, th.C, th.S, max_w);
      if (c.gathered && rank != 0) return;  // rank 0 finishes the row
    }
  }
  c.mark(12);
  const float lo = th.lo;
  const float min_keep = (filter & kMinP) ? rp.min_p * max_w : 0.f;
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
  const RngKey key = make_key(seed, offset, uint32_t(b));
  unsigned long long best = 0;
  auto enter = [&](float w, uint32_t r, int idx) {
    const float e = exp_noise(r);
    const unsigned long long packed =
        (static_cast<unsigned long long>(order_key(score_of(c, w, e))) << 32) | (0xFFFFFFFFu - uint32_t(idx));
    best = packed > best ? packed : best;
  };
  if (c.compacted) {
    // Move each warp's admissible entries to the front of its segment (the list is not read after
    // the draw), so the Philox calls run on full warps instead of on a few lanes of every step.
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = seg_count(c, sm, warp), b0 = seg_begin(c, warp);
    float* w_seg = c.list_w + b0;
    int* i_seg = c.list_i + b0;
    int n2 = 0;
    const float race_lo = c.pending ? c.p_hi : lo;  // pending: the bracket goes to rank 0
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      const float w = i < n ? w_seg[i] : 0.f;
      const int ix = i < n ? i_seg[i] : 0;
      if constexpr (CL > 1) {
        if (c.pending) {
          const bool br = i < n && w > lo && w <= c.p_hi;
          const unsigned mb = __ballot_sync(0xffffffffu, br);
          if (mb) {
            cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
            int base = 0;
            if (lane == 0) base = atomicAdd(cluster.map_shared_rank(&sm.gather_n, 0), __popc(mb));
            base = __shfl_sync(0xffffffffu, base, 0);
            const int q = base + __popc(mb & ((1u << lane) - 1u));
            if (br && q < 32) {
              *cluster.map_shared_rank(&sm.br_w[q], 0) = w;
              *cluster.map_shared_rank(&sm.br_i[q], 0) = ix;
            }
          }
        }
      }
      const bool k = i < n && w > race_lo && admissible(w);
      const unsigned m = __ballot_sync(0xffffffffu, k);
      __syncwarp();
      if (k) {
        const int pos = n2 + __popc(m & ((1u << lane) - 1u));
        w_seg[pos] = w, i_seg[pos] = ix;
      }
      n2 += __popc(m);
    }
    __syncwarp();
    for (int i = lane; i < n2; i += 32) {
      const float w = w_seg[i];
      const int idx = i_seg[i];
      enter(w, pick(philox_group(key, uint32_t(idx) >> 2, kElementNoise), idx & 3), idx);
    }
  } else {
    ++c.global_passes;
    race_global(c, key, admissible, enter);
  }
  c.mark(13);
  best = c.gathered ? row_max_u64_to_lead<1>(best, sm.red) : row_max_u64_to_lead<CL>(best, sm.red);
  if (c.pending) {
    if (rank != 0) return;
    if (threadIdx.x < 32) {
      // Rank 0, one warp: order the bracket (descending, ties by index), add it up in that order
      // from above p_hi, and admit down to the first weight whose upper set keeps enough.
      const int lane = threadIdx.x, n = min(sm.gather_n, 32);
      const float w = lane < n ? sm.br_w[lane] : -1.f;
      const int ix = lane < n ? sm.br_i[lane] : 0;
      int r = 0;
      for (int j = 0; j < n; ++j) {
        const float wj = __shfl_sync(0xffffffffu, w, j);
        const int ij = __shfl_sync(0xffffffffu, ix, j);
        r += (wj > w || (wj == w && ij < ix)) ? 1 : 0;
      }
      float C = c.p_chi, S = c.p_shi, thr = -1.f;  // thr < 0: admit the whole bracket
      for (int q = 0; q < n; ++q) {
        const unsigned at = __ballot_sync(0xffffffffu, lane < n && r == q);
        const float v = __shfl_sync(0xffffffffu, w, __ffs(at) - 1);
        C += 1.f, S += v;
        if (thr < 0.f && ((c.p_use_k && C >= c.p_k) || (c.p_use_p && S >= c.p_lim))) thr = v;
      }
      unsigned long long mine = 0;
      if (lane < n && w >= thr && admissible(w)) {
        const float e = exp_noise(pick(philox_group(key, uint32_t(ix) >> 2, kElementNoise), ix & 3));
        mine = (static_cast<unsigned long long>(order_key(score_of(c, w, e))) << 32) | (0xFFFFFFFFu - uint32_t(ix));
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long u = __shfl_xor_sync(0xffffffffu, mine, o);
        mine = u > mine ? u : mine;
      }
      best = mine > best ? mine : best;
    }
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
