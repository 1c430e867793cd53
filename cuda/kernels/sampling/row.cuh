// The sampler's building blocks (sampler.cuh has the algorithm): its constants and shared-memory layouts,
// a row's context (RowCtx), loops over a row's vectors or over its compacted list, and the list itself.
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

}  // namespace sampling
}  // namespace fi
