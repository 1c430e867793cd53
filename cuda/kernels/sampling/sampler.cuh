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
  // count, and the sums of the significands' high (>> 12) and low 12 bits: no word can wrap (at
  // most 2^17 weights a bin, 2^12 each), so the atomics need no returned value (fire and forget).
  // After a cluster exchange, the cluster's totals in the same form; the scan reads these.
  uint4 bin[kBins];
  // A CTA's own bins while its atomics run, one array a field: consecutive bins in consecutive
  // banks (in bin[], 16-byte records, a bin's word shares its bank with 7 others: 8-way conflicts).
  unsigned own_n[kBins], own_hi[kBins], own_lo[kBins];
  float own_w[kThreads / 32];  // total_pending: each warp's sum of weights
  uint4 stage[kBins];  // cluster: [peer][kBins / CL] the peers' bins of the range this CTA totals
  double wsum_m[kBins / 32];  // the scan: each warp's total mass and count
  unsigned wsum_n[kBins / 32];
  float res[5];  // the scan's verdict: bin, count and mass above it, count and mass with it
};

struct SamplerSmem {
  ReduceSmem red;
  HistSmem hist;
  int warp_n[32];  // entries each warp compacted into its own segment of the list
  int gather_n;    // entries this CTA pushed into its region of rank 0's flat region (see gather_to_lead)
  int region_n[16];  // rank 0: how many entries each CTA pushed into its region
  unsigned long long above[16];  // rank 0: each CTA's race winner above the gathered bracket
  int small_n;  // finish_small: the bracket's entries
  float small_w[32];
  int small_i[32];
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
  // The stats pass filled the list (every positive weight of the slice, in warp segments; a refill
  // by the same pass fits). For logits it holds the raw logits until the first round or
  // make_weights turns them into weights.
  bool list_full, list_raw;
  // The list may hold only the weights above sq_floor (a first round squeezed it; 0: all of them),
  // and prebinned says the first round's bins were totalled with the statistics already.
  float sq_floor;
  bool prebinned;
  // Logits whose first search needs no mass (top-k, or top-k first): the stats pass skipped the
  // row's total, and the first round's squeeze adds it up (exchanged in the bins' spare words).
  bool total_pending;
  // A small upper set is finished on the cluster's rank 0 alone (no more cluster barriers): every
  // CTA pushes its entries of a bracket (lo, hi] into its own region of rank 0's flat region of the
  // list (region r at flat_off + r * region_cap), races what lies above hi itself (final search
  // only) and pushes its winner; the other CTAs leave, and rank 0 runs the remaining rounds and the
  // draw on the regions.
  bool can_gather, can_bracket, gathered;
  int flat_off, region_cap;
  RngKey key;      // the draw's Philox key (the race above a gathered bracket runs inside the search)
  float min_keep;  // min-p's bound on admissible weights (0 without min-p)
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

// A warp's part of the list: its own segment, or (gathered, on rank 0) a share of one CTA's region
// of the flat region: warp w reads region w % CL, part w / CL of 16 / CL.
template <int CL, int VEC>
__device__ __forceinline__ void warp_part(const RowCtx<VEC>& c, const SamplerSmem& sm, int warp, int& begin,
                                          int& count) {
  if (CL > 1 && c.gathered) {
    constexpr int parts = (kThreads / 32) / (CL > 1 ? CL : 1);
    const int r = warp % CL, part = warp / CL, n = min(sm.region_n[r], c.region_cap);
    const int chunk = (n + parts - 1) / parts;
    begin = c.flat_off + r * c.region_cap + part * chunk;
    count = max(0, min(chunk, n - part * chunk));
  } else {
    begin = warp * c.seg_cap;
    count = min(sm.warp_n[warp], c.seg_cap);
  }
}

// Calls f(w, index) for every compacted weight of this CTA: each warp reads its own part.
template <int CL, int VEC, typename F>
__device__ __forceinline__ void for_each_listed(const RowCtx<VEC>& c, const SamplerSmem& sm, F&& f) {
  static_assert(kThreads / 32 == 16, "regions are shared by 16 warps");
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int b0, n;
  warp_part<CL>(c, sm, warp, b0, n);
  const float* w = c.list_w + b0;
  const int* ix = c.list_i + b0;
  for (int i = lane; i < n; i += 32) f(w[i], ix[i]);
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

// Turns the raw logits the stats pass listed into weights (each warp its own segment).
template <int VEC>
__device__ __forceinline__ void make_weights(RowCtx<VEC>& c, const SamplerSmem& sm) {
  if (!c.list_raw) return;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = min(sm.warp_n[warp], c.seg_cap);
  float* w = c.list_w + warp * c.seg_cap;
  for (int i = lane; i < n; i += 32) w[i] = weight(c, w[i]);
  __syncwarp();
  c.list_raw = false;
}

// Lists every positive weight of the slice again (after a first round kept only those above its
// floor and the threshold turned out to lie below it). A plain loop (rare, and inlined at several
// sites): a warp appends at most 32 * VEC a step, ceil(slice / kThreads) steps, within its segment.
template <int VEC>
__device__ void refill_list(RowCtx<VEC>& c, SamplerSmem& sm) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  int n = 0;
  const int64_t iters = (c.v1 - c.v0 + kThreads - 1) / kThreads;
#pragma unroll 1
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t v = c.v0 + it * kThreads + threadIdx.x;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      const float x = v < c.v1 ? __ldg(c.row + v * VEC + j) : (c.logits ? -INFINITY : 0.f);
      const bool keep = c.logits ? x > -INFINITY : x > 0.f;
      const unsigned mask = __ballot_sync(0xffffffffu, keep);
      if (keep) {
        const int pos = warp * c.seg_cap + n + __popc(mask & ((1u << lane) - 1u));
        c.list_w[pos] = weight(c, x);
        c.list_i[pos] = int(v * VEC + j);
      }
      n += __popc(mask);
    }
  }
  if (lane == 0) sm.warp_n[warp] = n;
  __syncthreads();
  c.list_raw = false;
  c.sq_floor = 0.f;
}

// The list as a reader of the weights above lo needs it (segments, not a gathered region): every
// weight above lo listed, and weights rather than raw logits.
template <int VEC>
__device__ __forceinline__ void list_ready(RowCtx<VEC>& c, SamplerSmem& sm, float lo) {
  if (c.gathered) return;
  if (lo < c.sq_floor) refill_list(c, sm);
  else make_weights(c, sm);
}

struct Threshold {
  float lo;  // the admissible set is {w > lo}
  float C;   // its size
  float S;   // its mass
};

// The value of one unit of a bin's mass: a bin lies in one binade (exponent e), where a weight is
// its 24-bit significand times 2^(e - 150) (e = 0, subnormal: 2^-149, no implicit bit).
__device__ __forceinline__ double bin_unit(uint32_t key) {
  const int e = max(int(key >> 23), 1);
  return __hiloint2double((e - 150 + 1023) << 20, 0);
}

__device__ __forceinline__ void zero_own_bins(HistSmem& h) {
  for (int i = threadIdx.x; i < kBins; i += kThreads) h.own_n[i] = h.own_hi[i] = h.own_lo[i] = 0u;
  if (threadIdx.x < kThreads / 32) h.own_w[threadIdx.x] = 0.f;
}

// A CTA's own bin i in bin[]'s form (its spare word: warp i's weight sum, total_pending).
__device__ __forceinline__ uint4 own_bin(const HistSmem& h, int i) {
  return make_uint4(h.own_n[i], h.own_hi[i], h.own_lo[i], i < kThreads / 32 ? __float_as_uint(h.own_w[i]) : 0u);
}

// One histogram round on the compacted list, for a bracket (lo, hi] with lo >= 0. The bins are
// ranges of the float's bit pattern (monotone in the value for w >= 0), 2^shift keys wide and
// aligned to multiples of 2^shift (shift <= 23: a bin lies in one binade), so a round cuts the key
// range by kBins whatever the bracket's shape. Counts and masses are integers (a bin's mass is the
// sum of its weights' significands, exact), so the totals do not depend on the order of the
// atomics (deterministic). Every CTA of the cluster scans the same totals and so takes the same
// decision. Returns true when the threshold is found (the bin holds one element or one key).
// A floor in (lo, hi) bins (floor, hi] only (the first round: fine bins under the row's max, the
// weights below the floor are left out of the atomics); when the threshold lies below the floor
// the bracket becomes (lo, floor].
template <int CL, int VEC, typename TooBig>
__device__ bool hist_round(RowCtx<VEC>& c, SamplerSmem& sm, TooBig&& too_big, float floor_w, float& lo, float& c_lo,
                           float& s_lo, float& hi, float& c_hi, float& s_hi) {
  HistSmem& h = sm.hist;
  const float bot = fmaxf(lo, floor_w);
  const uint32_t base0 = (bot > 0.f ? __float_as_uint(bot) : 0u) + 1u, top = __float_as_uint(hi);
  // The smallest shift that leaves fewer than kBins bins: at least the span's top bit less 7 (for
  // any smaller one, (top >> s) - (base0 >> s) >= (top - base0) >> s >= 256), then at most a step.
  int shift = top > base0 ? max(0, 31 - __clz(top - base0) - 7) : 0;
  while ((top >> shift) - (base0 >> shift) >= uint32_t(kBins)) ++shift;
  const uint32_t base = base0 >> shift;  // bin b holds the keys with key >> shift == base + b
  // The first round's bins may already hold the cluster's totals (stats_and_fine_bins).
  const bool pre = c.prebinned && !c.gathered && bot > lo;
  c.prebinned = false;
  const bool fine = bot > lo && !c.gathered;  // diagnostic marks: first round 5-7, others 8-10
  if (!pre) {
  zero_own_bins(h);
  __syncthreads();
  auto count = [&](float w) {
    const uint32_t key = __float_as_uint(w);
    const int b = int((key >> shift) - base);
    const unsigned q = (key & 0x7FFFFFu) | (key >= 0x800000u ? 0x800000u : 0u);  // the significand
    atomicAdd(&h.own_n[b], 1u);
    atomicAdd(&h.own_hi[b], q >> 12);
    atomicAdd(&h.own_lo[b], q & 0xFFFu);
  };
  // The first round over a full list also squeezes it: each warp keeps only the weights above the
  // floor (a quarter of them on softmax(3 randn)), so later passes over the list are shorter; the
  // rare threshold below the floor lists the slice again (refill_list). Logits become weights here.
  const bool squeeze = fine && c.list_full;
  if (squeeze) {
    if (bot < c.sq_floor) refill_list(c, sm);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n = min(sm.warp_n[warp], c.seg_cap);
    float* w_seg = c.list_w + warp * c.seg_cap;
    int* i_seg = c.list_i + warp * c.seg_cap;
    int kept = 0;
    float wsum = 0.f;  // total_pending: this lane's weights
    for (int i0 = 0; i0 < n; i0 += 32) {
      const int i = i0 + lane;
      float w = i < n ? w_seg[i] : 0.f;
      const int ix = i < n ? i_seg[i] : 0;
      if (c.list_raw && i < n) w = weight(c, w);
      wsum += w;
      const bool k = i < n && w > bot;  // kept (those above hi too: the draw needs them)
      if (k && w <= hi) count(w);
      const unsigned m = __ballot_sync(0xffffffffu, k);
      __syncwarp();
      if (k) {  // positions at or below the lane's own: already read by the warp
        const int q = kept + __popc(m & ((1u << lane) - 1u));
        w_seg[q] = w, i_seg[q] = ix;
      }
      kept += __popc(m);
    }
    if (lane == 0) sm.warp_n[warp] = kept;
    if (c.total_pending) {  // the warp's total into its bin's spare word (the bins were zeroed)
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) wsum += __shfl_xor_sync(0xffffffffu, wsum, o);
      if (lane == 0) h.own_w[warp] = wsum;
    }
    c.list_raw = false;
    c.sq_floor = bot;
  } else {
    list_ready(c, sm, bot);
    for_each_listed<CL>(c, sm, [&](float w, int) {
      if (w > bot && w <= hi) count(w);
    });
  }
  if (CL > 1) c.mark(fine ? 5 : 8);
  // The cluster's totals by pushes, never by loads (a load from a peer's shared memory costs far
  // more than a store): CTA r totals bins [r * kBins / CL, (r + 1) * kBins / CL). Every CTA stores
  // its bins of that range into r's stage, a barrier, r sums them in peer order and stores the
  // totals into every CTA, a barrier. No buffer is rewritten before its readers have passed the
  // barrier that follows their reads, so nothing is double-buffered.
  __syncthreads();
  const bool exchanged = CL > 1 && !c.gathered;
  if (!exchanged && threadIdx.x < kBins) h.bin[threadIdx.x] = own_bin(h, threadIdx.x);  // read by its own thread next
  if (exchanged) {
    cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
    constexpr int kOwn = kBins / CL;
    const int me = int(cluster.block_rank());
    if (threadIdx.x < kBins) {
      const int i = threadIdx.x;
      *cluster.map_shared_rank(&h.stage[me * kOwn + i % kOwn], i / kOwn) = own_bin(h, i);
    }
    cluster.sync();
    // thread t: bin me * kOwn + t % kOwn for peer t / kOwn (kOwn * CL == kBins threads); the
    // totals replace every CTA's bins (no CTA reads its own after the barrier above)
    uint4 tot = make_uint4(0u, 0u, 0u, 0u);
    const int j = threadIdx.x % kOwn;
#pragma unroll
    for (int q = 0; q < CL; ++q) {
      const uint4 v = h.stage[q * kOwn + j];
      tot.x += v.x, tot.y += v.y, tot.z += v.z;
      tot.w = __float_as_uint(__uint_as_float(tot.w) + __uint_as_float(v.w));  // total_pending's sums
    }
    if (threadIdx.x < kBins) *cluster.map_shared_rank(&h.bin[me * kOwn + j], threadIdx.x / kOwn) = tot;
    cluster.sync();
  }
  if (CL > 1) c.mark(fine ? 6 : 9);
  if (c.total_pending) {  // the row's total: the warps' sums in a fixed order (the same in every CTA)
    float t = 0.f;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) t += exchanged ? __uint_as_float(h.bin[w].w) : h.own_w[w];
    s_lo = t;
    c.total_pending = false;
  }
  }  // !pre
  auto cnt = [&](int b) { return h.bin[b].x; };
  auto mass = [&](int b) { return (static_cast<unsigned long long>(h.bin[b].y) << 12) + h.bin[b].z; };
  // The scan, one bin a thread (8 warps): the highest bin whose upper set (with the bin) still keeps
  // too much. too_big is monotone, so the bins that keep too much are a prefix. Masses in double,
  // each bin times its unit (exact), added in a fixed order: suffix sums inside each warp, then each
  // warp adds the totals of the warps above it, from the top. A bin's "above" is exactly the next
  // bin's "with" (the next lane's sum, or for lane 31 the carry, formed like the next warp's lane 0
  // sum), so exactly one thread claims when any bin keeps too much.
  static_assert(kBins <= kThreads && kBins % 32 == 0, "one bin a thread");
  constexpr int kScanWarps = kBins / 32;
  const int sb = threadIdx.x, s_lane = sb & 31, s_warp = sb >> 5;
  unsigned sn = 0u;
  double sm64 = 0.0;
  if (sb < kBins) {
    const uint4 v = h.bin[sb];
    sn = v.x;
    sm64 = (double(v.y) * 4096.0 + double(v.z)) * bin_unit((base + uint32_t(sb)) << shift);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const unsigned n2 = __shfl_down_sync(0xffffffffu, sn, o);
      const double m2 = __shfl_down_sync(0xffffffffu, sm64, o);
      if (s_lane + o < 32) sn += n2, sm64 += m2;
    }
    if (s_lane == 0) h.wsum_n[s_warp] = sn, h.wsum_m[s_warp] = sm64;
  }
  __syncthreads();
  if (CL > 1) c.mark(4);  // diagnostic: the scan's loads and warp sums
  if (sb < kBins) {
    unsigned cn = 0u;  // the warps above this one
    double cm = 0.0;
#pragma unroll
    for (int q = kScanWarps - 1; q > 0; --q) {
      if (q > s_warp) cn += h.wsum_n[q], cm = h.wsum_m[q] + cm;
    }
    const unsigned n_in = sn + cn;
    const double m_in = sm64 + cm;
    const unsigned n_up = __shfl_down_sync(0xffffffffu, n_in, 1);
    const double m_up = __shfl_down_sync(0xffffffffu, m_in, 1);
    const unsigned n_ab = s_lane == 31 ? cn : n_up;
    const double m_ab = s_lane == 31 ? cm : m_up;
    const float ci = c_hi + float(n_in), si = s_hi + float(m_in);
    const float ca = c_hi + float(n_ab), sa = s_hi + float(m_ab);
    const bool t_in = too_big(ci, si);
    if (t_in && (sb == kBins - 1 || !too_big(ca, sa))) {
      h.res[0] = float(sb), h.res[1] = ca, h.res[2] = sa, h.res[3] = ci, h.res[4] = si;
    } else if (sb == 0 && !t_in) {  // no bin keeps too much (thread 0 holds the whole bracket's sums)
      if (bot > lo && c_lo - ci >= 1.f) {
        // The threshold lies below the floor: the bracket becomes (lo, floor].
        h.res[0] = -1.f, h.res[1] = ci, h.res[2] = si;
      } else {
        // Rounding kept every bin below the limit, though the bracket as a whole keeps too much:
        // take the lowest non-empty bin with the bracket's own count and mass.
        int b = 0;
#pragma unroll 1
        for (int q = 0; q < kBins; ++q) {
          if (cnt(q) != 0u) {
            b = q;
            break;
          }
        }
        h.res[0] = float(b);
        h.res[1] = c_lo - float(cnt(b)), h.res[2] = s_lo - float(double(mass(b)) * bin_unit((base + uint32_t(b)) << shift));
        h.res[3] = c_lo, h.res[4] = s_lo;
      }
    }
  }
  __syncthreads();
  const int b = int(h.res[0]);
  const float ca = h.res[1], sa = h.res[2], ci = h.res[3], si = h.res[4];
  __syncthreads();  // res is rewritten by the next round
  if (CL > 1) c.mark(fine ? 7 : 10);
  if (b < 0) {
    hi = bot, c_hi = ca, s_hi = sa;  // the list is refilled by its next reader (list_ready)
    return false;
  }
  const uint32_t first = (base + uint32_t(b)) << shift;
  const uint32_t last = min(top, first + ((1u << shift) - 1u));
  lo = __uint_as_float(max(first, base0) - 1u), c_lo = ci, s_lo = si;
  hi = __uint_as_float(last), c_hi = ca, s_hi = sa;
  return shift == 0 || ci - ca <= 1.f;
}

// Statistics and the first round's bins in one cluster exchange (probabilities in a full list):
// each CTA bins its list in fine bins under its OWN max (16 a binade, 16 binades, absolute bin
// a = key >> 19) and squeezes it to them; the cluster's max G bounds every CTA's, so the global
// window [G - 255, G] lies inside the union of the CTAs' windows. The bins go to their owner by
// a mod 256 with a attached, the statistics' partials (sum, count | max, bad, own top bin) to every
// peer; after one barrier each owner keeps the records whose a lies in the global window and
// writes the totals into every CTA's bins; after a second barrier the search's first round only
// scans (prebinned). acc: the block's sum, count, max, bad in; the row's out.
template <int CL, int VEC>
__device__ void stats_and_fine_bins(RowCtx<VEC>& c, SamplerSmem& sm, float (&acc)[4]) {
  if constexpr (CL > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    HistSmem& h = sm.hist;
    constexpr int kOwn = kBins / CL;
    const int me = int(cluster.block_rank()), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint32_t L = acc[2] > 0.f ? __float_as_uint(acc[2]) >> 19 : 0u;
    zero_own_bins(h);
    __syncthreads();
    if (L >= 256u) {
      const uint32_t base = L - 255u;
      const float bot = __uint_as_float((base << 19) - 1u);
      const int n = min(sm.warp_n[warp], c.seg_cap);
      float* w_seg = c.list_w + warp * c.seg_cap;
      int* i_seg = c.list_i + warp * c.seg_cap;
      int kept = 0;
      for (int i0 = 0; i0 < n; i0 += 32) {
        const int i = i0 + lane;
        const float w = i < n ? w_seg[i] : 0.f;
        const int ix = i < n ? i_seg[i] : 0;
        const bool k = i < n && w > bot;
        if (k) {
          const uint32_t key = __float_as_uint(w);
          const int b = int((key >> 19) - base);
          const unsigned q = (key & 0x7FFFFFu) | (key >= 0x800000u ? 0x800000u : 0u);
          atomicAdd(&h.own_n[b], 1u);
          atomicAdd(&h.own_hi[b], q >> 12);
          atomicAdd(&h.own_lo[b], q & 0xFFFu);
        }
        const unsigned m = __ballot_sync(0xffffffffu, k);
        __syncwarp();
        if (k) {
          const int q = kept + __popc(m & ((1u << lane) - 1u));
          w_seg[q] = w, i_seg[q] = ix;
        }
        kept += __popc(m);
      }
      if (lane == 0) sm.warp_n[warp] = kept;
    }
    c.mark(5);
    __syncthreads();
    const int ph = sm.red.phase;
    if (threadIdx.x < 5 * CL) {
      const int slot = threadIdx.x % 5;
      const float v = slot == 0 ? acc[0] : slot == 1 ? acc[1] : slot == 2 ? acc[2] : slot == 3 ? acc[3] : float(L);
      *cluster.map_shared_rank(&sm.red.peer[ph][me][slot], threadIdx.x / 5) = v;
    }
    if (threadIdx.x < kBins) {
      const uint32_t i = threadIdx.x;
      uint4 v = make_uint4(0u, 0u, 0u, 0xFFFFFFFFu);  // no bins: matches no window
      uint32_t r = i;
      if (L >= 256u) v = own_bin(h, i), v.w = L - 255u + i, r = v.w & 255u;
      *cluster.map_shared_rank(&h.stage[me * kOwn + int(r) % kOwn], int(r) / kOwn) = v;
    }
    cluster.sync();
    if (threadIdx.x < 32) {  // the same partials in the same order in every CTA: the same totals
      float v[5];
#pragma unroll
      for (int q = 0; q < 5; ++q) v[q] = lane < CL ? sm.red.peer[ph][lane][q] : 0.f;  // all >= 0
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
        for (int q = 0; q < 5; ++q) {
          const float u = __shfl_xor_sync(0xffffffffu, v[q], o);
          v[q] = q < 2 ? v[q] + u : fmaxf(v[q], u);
        }
      }
      if (lane == 0) {
#pragma unroll
        for (int q = 0; q < 5; ++q) sm.red.res[q] = v[q];
      }
    }
    __syncthreads();
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[q] = sm.red.res[q];
    const uint32_t G = uint32_t(sm.red.res[4]);
    if (G >= 256u) {
      const int j = threadIdx.x % kOwn;
      const uint32_t r = uint32_t(me * kOwn + j), ag = G - ((G - r) & 255u);
      uint4 tot = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
      for (int q = 0; q < CL; ++q) {
        const uint4 v = h.stage[q * kOwn + j];
        if (v.w == ag) tot.x += v.x, tot.y += v.y, tot.z += v.z;
      }
      if (threadIdx.x < kBins) *cluster.map_shared_rank(&h.bin[ag - (G - 255u)], threadIdx.x / kOwn) = tot;
    }
    if (threadIdx.x == 0) sm.red.phase ^= 1;  // every thread read ph before the barrier above
    cluster.sync();
    c.prebinned = G >= 256u;
    c.sq_floor = G >= 256u ? __uint_as_float(((G - 255u) << 19) - 1u) : 0.f;
  }
}

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
