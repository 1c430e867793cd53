// The threshold search's histogram rounds (sampler.cuh has the algorithm): bins of the bracket's float
// keys with exact integer masses, and the stats pass that fills the first round's fine bins.
#pragma once
#include "row.cuh"

namespace fi {
namespace sampling {

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

}  // namespace sampling
}  // namespace fi
