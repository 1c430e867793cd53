// Row-wide reductions for the samplers: a row is read by one CTA or by a cluster of CL CTAs, so
// every reduction is warp shuffles, then the block's warps through shared memory, then (CL > 1)
// the cluster's blocks through distributed shared memory. Every thread gets the result.
#pragma once
#include <cooperative_groups.h>
#include <stdint.h>

namespace fi {
namespace sampling {

constexpr int kMaxSlots = 24;  // floats one reduction may combine

constexpr int kMaxCluster = 16;

struct ReduceSmem {
  float warp[32][kMaxSlots];
  float part[kMaxSlots];  // this block's partials
  float peer[2][kMaxCluster][kMaxSlots];  // the cluster's partials, pushed by each block (double-buffered)
  float res[kMaxSlots];
  unsigned long long warp64[32];
  unsigned long long part64[2];
  unsigned long long res64;
  unsigned long long lead64[kMaxCluster];  // rank 0: every CTA's partial of the final reduction
  int phase;
};

enum Op { kSum, kMin, kMax };

__device__ __forceinline__ float combine(Op op, float a, float b) {
  return op == kSum ? a + b : op == kMin ? fminf(a, b) : fmaxf(a, b);
}

// Stores this block's n partials (sm.part) into every cluster peer's sm.peer[ph][this rank] (stores:
// a load from a peer costs far more), then one cluster barrier: afterwards every block holds all
// partials locally. Every thread of the block takes part.
template <int CL>
__device__ __forceinline__ void push_partials(ReduceSmem& sm, int ph, int n) {
  static_assert(CL <= kMaxCluster, "peer holds kMaxCluster partials");
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  __syncthreads();  // part is complete
  const int me = int(cluster.block_rank());
  for (int t = threadIdx.x; t < n * CL; t += blockDim.x) {
    *cluster.map_shared_rank(&sm.peer[ph][me][t % n], t / n) = sm.part[t % n];
  }
  cluster.sync();
}

// Slots [0, NS) are summed, [NS, NS + NMIN) take the minimum, the rest the maximum.
template <int NS, int NMIN, int NMAX>
__device__ __forceinline__ Op slot_op(int i) {
  return i < NS ? kSum : i < NS + NMIN ? kMin : kMax;
}

template <int CL, int NS, int NMIN, int NMAX>
__device__ __forceinline__ void row_reduce(float (&v)[NS + NMIN + NMAX], ReduceSmem& sm) {
  constexpr int N = NS + NMIN + NMAX;
  static_assert(N <= kMaxSlots, "too many slots");
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const Op op = slot_op<NS, NMIN, NMAX>(i);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v[i] = combine(op, v[i], __shfl_xor_sync(0xffffffffu, v[i], o));
  }
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < N; ++i) sm.warp[warp][i] = v[i];
  }
  __syncthreads();
  // Warp i combines slot i over the block's warps (lanes in parallel), then over the cluster's blocks.
  for (int i = warp; i < N; i += warps) {
    const Op op = slot_op<NS, NMIN, NMAX>(i);
    const float id = op == kSum ? 0.f : op == kMin ? INFINITY : -INFINITY;
    float a = lane < warps ? sm.warp[lane][i] : id;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a = combine(op, a, __shfl_xor_sync(0xffffffffu, a, o));
    if constexpr (CL == 1) {
      if (lane == 0) sm.res[i] = a;
    } else {
      if (lane == 0) sm.part[i] = a;
    }
  }
  if constexpr (CL > 1) {
    // Every block's partials pushed to every block, then combined locally in rank order. A peer rewrites
    // this phase's buffer only two reductions later, after a barrier this block reaches after its reads.
    const int ph = sm.phase;
    push_partials<CL>(sm, ph, N);
    for (int i = warp; i < N; i += warps) {
      const Op op = slot_op<NS, NMIN, NMAX>(i);
      const float id = op == kSum ? 0.f : op == kMin ? INFINITY : -INFINITY;
      float a = lane < CL ? sm.peer[ph][lane][i] : id;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) a = combine(op, a, __shfl_xor_sync(0xffffffffu, a, o));
      if (lane == 0) sm.res[i] = a;
    }
    __syncthreads();
    if (threadIdx.x == 0) sm.phase ^= 1;
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < N; ++i) v[i] = sm.res[i];
}

// Softmax statistics of a row in one exchange: every thread holds (m, s) with s = sum of
// exp((x - m) * inv_t) over its logits, plus a count n and a flag bad. Pairs combine by rescaling to
// the larger m; every step is symmetric (a + b == b + a), so all lanes and CTAs agree exactly.
// Returns the row's max in m, its sum relative to that max in s, the total count and the flag.
template <int CL>
__device__ __forceinline__ void row_reduce_softmax(float& m, float& s, float& n, float& bad, float inv_t,
                                                   ReduceSmem& sm) {
  auto pair = [&](float m2, float s2) {
    const float M = fmaxf(m, m2);
    s = (m > -INFINITY ? s * __expf((m - M) * inv_t) : 0.f) + (m2 > -INFINITY ? s2 * __expf((m2 - M) * inv_t) : 0.f);
    m = M;
  };
  auto butterfly = [&]() {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
      pair(m2, s2);
      n += __shfl_xor_sync(0xffffffffu, n, o);
      bad = fmaxf(bad, __shfl_xor_sync(0xffffffffu, bad, o));
    }
  };
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  butterfly();
  if (lane == 0) sm.warp[warp][0] = m, sm.warp[warp][1] = s, sm.warp[warp][2] = n, sm.warp[warp][3] = bad;
  __syncthreads();
  if (warp == 0) {
    const bool in = lane < warps;
    m = in ? sm.warp[lane][0] : -INFINITY, s = in ? sm.warp[lane][1] : 0.f;
    n = in ? sm.warp[lane][2] : 0.f, bad = in ? sm.warp[lane][3] : 0.f;
    butterfly();
    if (lane == 0) {
      float* out = CL == 1 ? sm.res : sm.part;
      out[0] = m, out[1] = s, out[2] = n, out[3] = bad;
    }
  }
  if constexpr (CL > 1) {
    const int ph = sm.phase;
    push_partials<CL>(sm, ph, 4);
    if (warp == 0) {
      const bool in = lane < CL;
      m = in ? sm.peer[ph][lane][0] : -INFINITY, s = in ? sm.peer[ph][lane][1] : 0.f;
      n = in ? sm.peer[ph][lane][2] : 0.f, bad = in ? sm.peer[ph][lane][3] : 0.f;
      butterfly();
      if (lane == 0) sm.res[0] = m, sm.res[1] = s, sm.res[2] = n, sm.res[3] = bad;
    }
    __syncthreads();
    if (threadIdx.x == 0) sm.phase ^= 1;
  }
  __syncthreads();
  m = sm.res[0], s = sm.res[1], n = sm.res[2], bad = sm.res[3];
}

// The block's maximum of v, in thread 0 only (the other threads get 0; all pass one __syncthreads).
__device__ __forceinline__ unsigned long long block_max_u64(unsigned long long v, ReduceSmem& sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long u = __shfl_xor_sync(0xffffffffu, v, o);
    v = u > v ? u : v;
  }
  if (lane == 0) sm.warp64[warp] = v;
  __syncthreads();
  unsigned long long a = 0;
  if (warp == 0) {  // the warps' partials in parallel, not a chain of loads on one thread
    a = lane < warps ? sm.warp64[lane] : 0ull;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const unsigned long long u = __shfl_xor_sync(0xffffffffu, a, o);
      a = u > a ? u : a;
    }
  }
  return threadIdx.x == 0 ? a : 0ull;
}

template <int CL>
__device__ __forceinline__ unsigned long long row_max_u64(unsigned long long v, ReduceSmem& sm) {
  const unsigned long long a = block_max_u64(v, sm);
  if (threadIdx.x == 0) {
    if constexpr (CL == 1) sm.res64 = a;
    else sm.part64[sm.phase] = a;
  }
  if constexpr (CL > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    if (threadIdx.x == 0) {
      unsigned long long a = 0;
      for (int q = 0; q < CL; ++q) {
        const unsigned long long u = *cluster.map_shared_rank(&sm.part64[sm.phase], q);
        a = u > a ? u : a;
      }
      sm.res64 = a;
      sm.phase ^= 1;
    }
  }
  __syncthreads();
  return sm.res64;
}

// The row's maximum, for thread 0 of the cluster's rank 0 only (other threads get their block's).
// Every CTA pushes its partial into rank 0's shared memory before one cluster barrier, so no CTA
// reads a peer afterwards: the CTAs may leave right after it, with no closing barrier.
template <int CL>
__device__ __forceinline__ unsigned long long row_max_u64_to_lead(unsigned long long v, ReduceSmem& sm) {
  static_assert(CL <= 16, "lead64 holds 16 partials");
  unsigned long long a = block_max_u64(v, sm);
  if constexpr (CL > 1) {
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    if (threadIdx.x == 0) *cluster.map_shared_rank(&sm.lead64[cluster.block_rank()], 0) = a;
    cluster.sync();  // release / acquire: rank 0 sees every push
    if (threadIdx.x == 0 && cluster.block_rank() == 0) {
      a = sm.lead64[0];
      for (int q = 1; q < CL; ++q) a = sm.lead64[q] > a ? sm.lead64[q] : a;
    }
  }
  return a;
}

}  // namespace sampling
}  // namespace fi
