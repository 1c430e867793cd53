// FlashAttention-2-style prefill: one CTA of 4 warps owns TILE_Q query rows of one (request, qo head)
// and streams that request's K/V in BLOCK_N-row tiles through a double-buffered, XOR-swizzled shared
// memory pipeline (cp.async). S = Q K^T and O += P V run on mma.sync m16n8k16 with fp32 accumulate;
// the softmax is online, in registers, in base 2 (log2(e) folded into the scale).
// One kernel serves single, ragged and paged prefill: the differences are where a request's rows
// start (tables or none) and how a KV row's address is found (a page lookup or a stride).
// Cheap variants (causal, sliding window, custom mask, soft cap, ALiBi) are run-time flags that are
// uniform across the CTA; a KV tile that no mask touches takes the plain path.
#pragma once
#include <float.h>
#include <stdint.h>

#include <cuda_fp8.h>

#include "../attention/mma.cuh"
#include "../vec.cuh"

namespace fi::prefill {

using namespace fi::attn;  // the tensor-core and cp.async building blocks shared with decode

struct PrefillArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // [rows, num_qo_heads] or null
  // Batch tables (null for a single request): qo_indptr/kv_indptr [batch + 1], kv_lens [batch],
  // work [num_work][2] = (request, q tile). Paged: kv_indptr indexes kv_indices (page ids).
  const int* qo_indptr;
  const int* kv_indptr;
  const int* kv_indices;
  const int* kv_lens;
  const int* work;
  // Hopper kernel: [0] items taken past the first wave, [1] CTAs done; zero between runs (the last
  // CTA resets them). Null: items round-robin.
  int* queue;
  // Packed custom mask (bit i * kv_len + j of request b at byte mask_indptr[b], little-endian bits).
  const uint8_t* mask;
  const int* mask_indptr;
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h;
  // KV row j of a request lives at base + row_id(j) * stride_page + slot(j) * stride_n + head * stride_h:
  // paged: row_id = kv_indices[kv_indptr[b] + j / page_size], slot = j % page_size; ragged: row_id =
  // kv_indptr[b] + j, slot = 0 (stride_page is then the token stride).
  int64_t k_stride_page, k_stride_n, k_stride_h;
  int64_t v_stride_page, v_stride_n, v_stride_h;
  int qo_len, kv_len;  // the single request's lengths when there are no tables
  int num_qo_heads, group, page_size;
  // GQA packing: a tile's rows are (token, head) pairs, pack = 1 << pack_shift heads of one KV head
  // per token (pack divides group); head pack cta.y() starts at head cta.y() * pack.
  int pack_shift;
  int page_shift;  // log2(page_size) when it is a power of two, else -1
  int num_pages;   // paged: pages of the cache (ids outside [0, num_pages) read as zeros)
  int paged, causal, use_alibi, window_left;
  int alibi_n;        // 2^floor(log2(num_qo_heads))
  int use_rope;       // rotate q and k in shared memory (Llama RoPE, pairs i and i + DQK / 2)
  float rope_rcp_scale, rope_log2_rcp_theta;
  float scale_log2;   // sm_scale * log2(e)
  float soft_cap;     // > 0: logits = cap * tanh(logits / cap)
  float cap_pre;      // sm_scale / cap
  float cap_post;     // cap * log2(e)
  float v_scale;      // fp8 V: the output is multiplied by it (k_scale is folded into sm_scale)
};

template <typename KT>
constexpr bool kIsFp8 = sizeof(KT) == 1;
template <typename A, typename B>
constexpr bool kSame = false;
template <typename A>
constexpr bool kSame<A, A> = true;

// 16 fp8 values (one 16-byte chunk) -> 16 T values (two 16-byte chunks), exactly.
template <typename T, typename KT>
__device__ __forceinline__ void fp8x16_to(const uint8_t* src, T* dst0, T* dst1) {
  constexpr __nv_fp8_interpretation_t kind = kSame<KT, __nv_fp8_e5m2> ? __NV_E5M2 : __NV_E4M3;
  const uint4 raw = *reinterpret_cast<const uint4*>(src);
  const uint16_t* pairs = reinterpret_cast<const uint16_t*>(&raw);
  uint32_t out[8];
#pragma unroll
  for (int i = 0; i < 8; i++) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(pairs[i], kind);
    if constexpr (kSame<T, __half>) {
      out[i] = uint32_t(h.x) | (uint32_t(h.y) << 16);
    } else {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
      out[i] = pack2<T>(f.x, f.y);
    }
  }
  *reinterpret_cast<uint4*>(dst0) = make_uint4(out[0], out[1], out[2], out[3]);
  *reinterpret_cast<uint4*>(dst1) = make_uint4(out[4], out[5], out[6], out[7]);
}

constexpr float kLog2e = 1.4426950408889634f;


// Pairwise (tree) max / sum of one row half (elements 2h, 2h + 1 of each n8 block): short
// dependency chains, since only two warps per scheduler hide latency.
template <int NB>
__device__ __forceinline__ float tree_max(const float (*s)[4], int h) {
  float v[NB];
#pragma unroll
  for (int j = 0; j < NB; j++) v[j] = fmaxf(s[j][2 * h], s[j][2 * h + 1]);
#pragma unroll
  for (int w = 1; w < NB; w *= 2)
#pragma unroll
    for (int j = 0; j + w < NB; j += 2 * w) v[j] = fmaxf(v[j], v[j + w]);
  return v[0];
}
template <int NB>
__device__ __forceinline__ float tree_sum(const float (*s)[4], int h) {
  float v[NB];
#pragma unroll
  for (int j = 0; j < NB; j++) v[j] = s[j][2 * h] + s[j][2 * h + 1];
#pragma unroll
  for (int w = 1; w < NB; w *= 2)
#pragma unroll
    for (int j = 0; j + w < NB; j += 2 * w) v[j] += v[j + w];
  return v[0];
}

// Fused RoPE: rotates `rows` rows of a [rows][D] swizzled shared tile in place, row r at position
// pos0 + (r >> row_shift), with FlashInfer's frequencies rcp_scale * rcp_theta^(2i / D) and NeoX pairs (i, i + D/2).
// Kept out of line so the rarely used path does not cost the main loop registers.
template <typename T, int D>
__device__ __noinline__ void rope_tile(T* tile, int rows, int pos0, int row_shift, float rcp_scale,
                                       float log2_rcp_theta) {
  constexpr int HALF = D / 2;
  for (int id = threadIdx.x; id < rows * HALF; id += blockDim.x) {
    const int r = id / HALF, i = id % HALF;
    const float freq = rcp_scale * exp2f(log2_rcp_theta * (2.f * i / D));
    float sn, cs;
    sincosf(float(pos0 + (r >> row_shift)) * freq, &sn, &cs);
    T* p1 = tile + swz<D>(r, i >> 3) + (i & 7);
    T* p2 = tile + swz<D>(r, (i + HALF) >> 3) + (i & 7);
    const float x1 = to_float(*p1), x2 = to_float(*p2);
    *p1 = from_float<T>(x1 * cs - x2 * sn);
    *p2 = from_float<T>(x2 * cs + x1 * sn);
  }
}

template <typename T, int DQK, int DVO, int MMA_Q, int BLOCK_N, typename KT = T>
struct PrefillConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kTileQ = 16 * MMA_Q * kWarps;
  static constexpr int kStages = 2;
  // fp8 KV: the copies land in fp8 staging stages and are widened into one 16-bit K/V tile.
  static constexpr int kTStages = kIsFp8<KT> ? 1 : kStages;
  static constexpr int kSmemElems = kTileQ * DQK + kTStages * BLOCK_N * (DQK + DVO);
  static constexpr int kStagingBytes = kIsFp8<KT> ? kStages * BLOCK_N * (DQK + DVO) : 0;
  static constexpr int kSmemBytes = kSmemElems * int(sizeof(T)) + kStagingBytes;
};

// ROPE: fused RoPE compiled in (a compile-time variant: its out-of-line call costs the main loop).
// KT: the KV storage type (T, or fp8 e4m3 / e5m2 widened to T in shared memory).
// One CTA's work: cta.x() / cta.y() = (work entry or query tile, head pack) of a grid cta.width() wide. The kernel
// below runs one per CTA; the BatchAttention kernel (batch_attention.cuh) runs many in a loop.
template <typename T, int DQK, int DVO, int MMA_Q, int BLOCK_N, bool ROPE, typename KT = T, typename Cta = GridCta>
__device__ __forceinline__ void prefill_cta(const PrefillArgs a, const Cta cta = {}) {
  using Cfg = PrefillConfig<T, DQK, DVO, MMA_Q, BLOCK_N, KT>;
  constexpr bool FP8 = kIsFp8<KT>;
  static_assert(!(FP8 && ROPE), "fused RoPE is not compiled for fp8 KV");
  constexpr int TQ = Cfg::kTileQ, STAGES = Cfg::kStages;
  constexpr int CQK = DQK / 8, CVO = DVO / 8;  // 16-byte chunks per row
  constexpr int NB = BLOCK_N / 8;              // n8 blocks of S
  constexpr int ND = DVO / 8;                  // n8 blocks of O
  extern __shared__ __align__(128) uint8_t smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + TQ * DQK;
  T* sV = sK + Cfg::kTStages * BLOCK_N * DQK;
  // fp8 staging: [STAGES][BLOCK_N][DQK] K bytes, then [STAGES][BLOCK_N][DVO] V bytes (unswizzled).
  uint8_t* fK = smem_raw + Cfg::kSmemElems * sizeof(T);
  uint8_t* fV = fK + STAGES * BLOCK_N * DQK;
  // Element offsets of the K and V rows of tiles t % 3 (-1 past the end), computed two tiles ahead
  // by one thread per row, so issuing a tile's copies needs no division or dependent global load.
  __shared__ int64_t s_koff[3][BLOCK_N], s_voff[3][BLOCK_N];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int pack_shift = a.pack_shift, pack = 1 << pack_shift;
  const int head0 = cta.y() * pack, kv_head = head0 / a.group;
  const int TT = TQ >> pack_shift;  // tokens per tile

  int req = 0, tile = cta.x();
  if (a.work != nullptr) {
    req = a.work[2 * cta.x()];
    tile = a.work[2 * cta.x() + 1];
  } else if (a.causal) {
    tile = cta.width() - 1 - cta.x();  // the heaviest tiles first
  }
  int qo_start = 0, qo_len = a.qo_len, kv_start = 0, kv_len = a.kv_len;
  if (a.qo_indptr != nullptr) {
    qo_start = a.qo_indptr[req];
    qo_len = a.qo_indptr[req + 1] - qo_start;
    kv_start = a.kv_indptr[req];
    kv_len = a.kv_lens[req];
  }
  const int q0 = tile * TT;  // in tokens
  if (q0 >= qo_len) return;
  const int q_rows = min(TT, qo_len - q0);  // tokens; valid rows are r < q_rows * pack
  const int delta = kv_len - qo_len;  // bottom-right alignment: row i sees keys j <= i + delta

  // The KV range any row of this tile may see.
  int kv_end = kv_len;
  if (a.causal) kv_end = min(kv_len, q0 + q_rows - 1 + delta + 1);
  int kv_begin = 0;
  if (a.window_left >= 0) kv_begin = max(0, q0 + delta - a.window_left);
  kv_begin = kv_begin / BLOCK_N * BLOCK_N;
  const int num_tiles = kv_end > kv_begin ? (kv_end - kv_begin + BLOCK_N - 1) / BLOCK_N : 0;

  const T* q_base = static_cast<const T*>(a.q) + (int64_t)(qo_start + q0) * a.q_stride_n +
                    (int64_t)head0 * a.q_stride_h;
  const KT* k_base = static_cast<const KT*>(a.k) + (int64_t)kv_head * a.k_stride_h;
  const KT* v_base = static_cast<const KT*>(a.v) + (int64_t)kv_head * a.v_stride_h;

  // ---- Q tile -> shared memory (rows past the request are zero) ----
  for (int id = tid; id < TQ * CQK; id += Cfg::kThreads) {
    const int r = id / CQK, c = id % CQK;
    const bool ok = (r >> pack_shift) < q_rows;
    const T* src = ok ? q_base + (int64_t)(r >> pack_shift) * a.q_stride_n + (int64_t)(r & (pack - 1)) * a.q_stride_h + c * 8
                      : q_base;
    cp_async_16(smem_addr(sQ + swz<DQK>(r, c)), src, ok);
  }

  const bool paged = a.paged != 0;
  // The page id (paged) or token row (ragged) of this thread's row of tile t; -1 past the end.
  auto fetch_row = [&](int t) -> int {
    const int kv = kv_begin + t * BLOCK_N + tid;
    if (tid >= BLOCK_N || t >= num_tiles || kv >= kv_len) return -1;
    if (!paged) return kv_start + kv;
    const int page = a.page_shift >= 0 ? kv >> a.page_shift : kv / a.page_size;
    const int id = __ldg(a.kv_indices + kv_start + page);
    return unsigned(id) < unsigned(a.num_pages) ? id : -1;  // a page outside the cache reads as zeros
  };
  auto store_offsets = [&](int t, int row) {
    if (tid >= BLOCK_N) return;
    int64_t ko = -1, vo = -1;
    if (row >= 0) {
      const int kv = kv_begin + t * BLOCK_N + tid;
      const int64_t slot = !paged ? 0 : a.page_shift >= 0 ? (kv & (a.page_size - 1)) : kv % a.page_size;
      ko = (int64_t)row * a.k_stride_page + slot * a.k_stride_n;
      vo = (int64_t)row * a.v_stride_page + slot * a.v_stride_n;
    }
    s_koff[t % 3][tid] = ko;
    s_voff[t % 3][tid] = vo;
  };
  store_offsets(0, fetch_row(0));
  store_offsets(1, fetch_row(1));
  __syncthreads();

  // Issues the loads of KV tile `t` into stage `t % STAGES`.
  auto load_kv = [&](int t) {
    if constexpr (FP8) {
      constexpr int FQK = DQK / 16, FVO = DVO / 16;  // 16-byte chunks of fp8 rows
      uint8_t* dk = fK + (t % STAGES) * BLOCK_N * DQK;
      uint8_t* dv = fV + (t % STAGES) * BLOCK_N * DVO;
      const int64_t* koff = s_koff[t % 3];
      const int64_t* voff = s_voff[t % 3];
      for (int id = tid; id < BLOCK_N * FQK; id += Cfg::kThreads) {
        const int r = id / FQK, c = id % FQK;
        const int64_t ko = koff[r];
        cp_async_16(smem_addr(dk + r * DQK + c * 16), ko >= 0 ? k_base + ko + c * 16 : k_base, ko >= 0);
      }
      for (int id = tid; id < BLOCK_N * FVO; id += Cfg::kThreads) {
        const int r = id / FVO, c = id % FVO;
        const int64_t vo = voff[r];
        cp_async_16(smem_addr(dv + r * DVO + c * 16), vo >= 0 ? v_base + vo + c * 16 : v_base, vo >= 0);
      }
      return;
    }
    T* dk = sK + (t % STAGES) * BLOCK_N * DQK;
    T* dv = sV + (t % STAGES) * BLOCK_N * DVO;
    constexpr int CMAX = CQK > CVO ? CQK : CVO;
    // Each thread copies 16-byte column chunk `c` of rows r0, r0 + ROWS_PER_PASS, ...
    constexpr int ROWS_PER_PASS = Cfg::kThreads / CMAX;
    constexpr int PASSES = (BLOCK_N + ROWS_PER_PASS - 1) / ROWS_PER_PASS;
    const int c = tid % CMAX, r0 = tid / CMAX;
    if (r0 >= ROWS_PER_PASS) return;
    const int64_t* koff = s_koff[t % 3];
    const int64_t* voff = s_voff[t % 3];
#pragma unroll
    for (int i = 0; i < PASSES; i++) {
      const int r = r0 + i * ROWS_PER_PASS;
      if (BLOCK_N % ROWS_PER_PASS != 0 && r >= BLOCK_N) break;
      const int64_t ko = koff[r], vo = voff[r];
      if (c < CQK) cp_async_16(smem_addr(dk + swz<DQK>(r, c)), ko >= 0 ? k_base + ko + c * 8 : k_base, ko >= 0);
      if (c < CVO) cp_async_16(smem_addr(dv + swz<DVO>(r, c)), vo >= 0 ? v_base + vo + c * 8 : v_base, vo >= 0);
    }
  };

  if (num_tiles > 0) load_kv(0);
  cp_async_commit();  // group 0: Q and the first KV tile

  float o[MMA_Q][ND][4];
  float m[MMA_Q][2], d[MMA_Q][2];
#pragma unroll
  for (int mq = 0; mq < MMA_Q; mq++) {
#pragma unroll
    for (int j = 0; j < ND; j++) o[mq][j][0] = o[mq][j][1] = o[mq][j][2] = o[mq][j][3] = 0.f;
    m[mq][0] = m[mq][1] = -INFINITY;
    d[mq][0] = d[mq][1] = 0.f;
  }

  const int warp_row = warp * 16 * MMA_Q;
  const bool plain = a.soft_cap <= 0.f && !a.use_alibi;
  // Every row this thread holds (lane/4 + multiples of 8) has the same head: pack <= 8.
  const int head = head0 + ((lane >> 2) & (pack - 1));
  const float slope =
      a.use_alibi ? (head < a.alibi_n ? exp2f(-8.f * (head + 1) / a.alibi_n)
                                      : exp2f(-4.f * (2 * (head - a.alibi_n) + 1) / a.alibi_n)) *
                        kLog2e
                  : 0.f;
  int64_t mask_base = 0;  // in bits
  if (a.mask != nullptr && a.mask_indptr != nullptr) mask_base = (int64_t)a.mask_indptr[req] * 8;
  const int last_row = q0 + q_rows - 1;

  // ldmatrix addresses: the swizzle XORs a chunk index with row & 7, which is lane & 7 for every
  // fragment this lane loads, so within each group of 8 chunks (128 bytes) only kk % 4 changes the
  // lane's offset; groups and row blocks are compile-time immediates. 12 registers, not ~80.
  static_assert(DQK % 64 == 0 && DVO % 64 == 0, "rows must span whole 8-chunk swizzle groups");
  constexpr int ES = int(sizeof(T));
  uint32_t q_lane[4], k_lane[4], v_lane[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    q_lane[i] = ((warp_row + (lane & 15)) * DQK + (((i * 2 + (lane >> 4)) ^ (lane & 7)) << 3)) * ES;
    k_lane[i] = (((lane & 7) + ((lane >> 4) << 3)) * DQK + (((i * 2 + ((lane >> 3) & 1)) ^ (lane & 7)) << 3)) * ES;
    v_lane[i] = (((lane & 7) + (((lane >> 3) & 1) << 3)) * DVO + (((i * 2 + (lane >> 4)) ^ (lane & 7)) << 3)) * ES;
  }
  const uint32_t sQ_addr = smem_addr(sQ), sK_addr = smem_addr(sK), sV_addr = smem_addr(sV);

  for (int t = 0; t < num_tiles; t++) {
    if (t + 1 < num_tiles) load_kv(t + 1);
    cp_async_commit();
    const int next_row = fetch_row(t + 2);  // a page id load lands while this tile computes
    cp_async_wait<1>();
    __syncthreads();
    if constexpr (FP8) {  // widen this tile's fp8 K/V into the 16-bit tile
      const uint8_t* gk = fK + (t % STAGES) * BLOCK_N * DQK;
      const uint8_t* gv = fV + (t % STAGES) * BLOCK_N * DVO;
      for (int id = tid; id < BLOCK_N * (DQK / 16); id += Cfg::kThreads) {
        const int r = id / (DQK / 16), c = id % (DQK / 16);
        fp8x16_to<T, KT>(gk + r * DQK + c * 16, sK + swz<DQK>(r, 2 * c), sK + swz<DQK>(r, 2 * c + 1));
      }
      for (int id = tid; id < BLOCK_N * (DVO / 16); id += Cfg::kThreads) {
        const int r = id / (DVO / 16), c = id % (DVO / 16);
        fp8x16_to<T, KT>(gv + r * DVO + c * 16, sV + swz<DVO>(r, 2 * c), sV + swz<DVO>(r, 2 * c + 1));
      }
      __syncthreads();
    }
    if (ROPE) {
      if (t == 0) rope_tile<T, DQK>(sQ, TQ, q0 + delta, pack_shift, a.rope_rcp_scale, a.rope_log2_rcp_theta);
      rope_tile<T, DQK>(reinterpret_cast<T*>(smem_raw) + TQ * DQK + (t % STAGES) * BLOCK_N * DQK, BLOCK_N,
                        kv_begin + t * BLOCK_N, 0, a.rope_rcp_scale, a.rope_log2_rcp_theta);
      __syncthreads();
    }

    const uint32_t tK = sK_addr + (t % Cfg::kTStages) * BLOCK_N * DQK * ES;
    const uint32_t tV = sV_addr + (t % Cfg::kTStages) * BLOCK_N * DVO * ES;
    const int k0 = kv_begin + t * BLOCK_N;

    // ---- S = Q K^T ----
    float s[MMA_Q][NB][4];
#pragma unroll
    for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
      for (int j = 0; j < NB; j++) s[mq][j][0] = s[mq][j][1] = s[mq][j][2] = s[mq][j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DQK / 16; kk++) {
      uint32_t qa[MMA_Q][4];
#pragma unroll
      for (int mq = 0; mq < MMA_Q; mq++)
        ldmatrix_x4(qa[mq], sQ_addr + q_lane[kk % 4] + (kk / 4) * 128 + mq * 16 * DQK * ES);
#pragma unroll
      for (int nn = 0; nn < BLOCK_N / 16; nn++) {
        uint32_t kb[4];
        ldmatrix_x4(kb, tK + k_lane[kk % 4] + (kk / 4) * 128 + nn * 16 * DQK * ES);
#pragma unroll
        for (int mq = 0; mq < MMA_Q; mq++) {
          mma_16816<T>(s[mq][2 * nn], qa[mq], kb);
          mma_16816<T>(s[mq][2 * nn + 1], qa[mq], kb + 2);
        }
      }
    }

    // ---- logits ----
    // Plain tiles stay raw: the scale is folded into the exponent's FMA (mul). Other tiles are
    // transformed here into the log2 domain (mul = 1) with variants and masks applied.
    const bool simple_mask = a.window_left < 0 && a.mask == nullptr;
    const bool full = k0 + BLOCK_N <= kv_len && (!a.causal || k0 + BLOCK_N - 1 <= q0 + delta) &&
                      (a.window_left < 0 || k0 >= last_row + delta - a.window_left) && a.mask == nullptr;
    float mul = a.scale_log2;
    if (plain && !full && simple_mask) {
      // Causal / length bounds only: one key limit per row, one compare per element; the logits
      // stay raw (the scale is still folded into the exponent).
#pragma unroll
      for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int qi = q0 + ((warp_row + mq * 16 + (lane >> 2) + 8 * h) >> pack_shift);
          int lim = kv_len - 1;  // the last key this row sees
          if (a.causal) lim = min(lim, qi + delta);
          if (qi >= qo_len) lim = -1;
          lim -= k0 + (lane & 3) * 2;
#pragma unroll
          for (int j = 0; j < NB; j++) {
            if (j * 8 > lim) s[mq][j][2 * h] = -INFINITY;
            if (j * 8 + 1 > lim) s[mq][j][2 * h + 1] = -INFINITY;
          }
        }
    } else if (!(plain && full)) {
      mul = 1.f;
#pragma unroll
      for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
        for (int j = 0; j < NB; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int qi = q0 + ((warp_row + mq * 16 + (lane >> 2) + 8 * (e >> 1)) >> pack_shift);
            const int kj = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
            const int qpos = qi + delta;
            float x = s[mq][j][e];
            if (a.soft_cap > 0.f) x = a.cap_post * tanhf(x * a.cap_pre);
            else x *= a.scale_log2;
            if (a.use_alibi) x += slope * float(kj - qpos);
            bool keep = kj < kv_len && qi < qo_len;
            if (a.causal) keep = keep && kj <= qpos;
            if (a.window_left >= 0) keep = keep && kj >= qpos - a.window_left;
            if (a.mask != nullptr && keep) {
              const int64_t bit = mask_base + (int64_t)qi * kv_len + kj;
              keep = (a.mask[bit >> 3] >> (bit & 7)) & 1;
            }
            s[mq][j][e] = keep ? x : -INFINITY;
          }
    }

    // ---- online softmax (each thread holds rows lane/4 and lane/4 + 8 of each m16 tile) ----
    float corr[MMA_Q][2];
#pragma unroll
    for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float mx = tree_max<NB>(s[mq], h);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(m[mq][h], mx * mul);  // (mul > 0 keeps the maximum the maximum)
        const float base = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet stays 0
        corr[mq][h] = ex2(m[mq][h] - base);
        m[mq][h] = mx;
        d[mq][h] *= corr[mq][h];
#pragma unroll
        for (int j = 0; j < NB; j++) {
          s[mq][j][2 * h] = ex2(fmaf(s[mq][j][2 * h], mul, -base));
          s[mq][j][2 * h + 1] = ex2(fmaf(s[mq][j][2 * h + 1], mul, -base));
        }
        d[mq][h] += tree_sum<NB>(s[mq], h);
      }
    // Rescale O by the change of each row's maximum.
    {  // always: measured no slower than skipping when no row's maximum moved
#pragma unroll
      for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
        for (int j = 0; j < ND; j++) {
          o[mq][j][0] *= corr[mq][0];
          o[mq][j][1] *= corr[mq][0];
          o[mq][j][2] *= corr[mq][1];
          o[mq][j][3] *= corr[mq][1];
        }
    }

    // ---- O += P V ----
#pragma unroll
    for (int kk = 0; kk < BLOCK_N / 16; kk++) {
      uint32_t pa[MMA_Q][4];
#pragma unroll
      for (int mq = 0; mq < MMA_Q; mq++) {
        pa[mq][0] = pack2<T>(s[mq][2 * kk][0], s[mq][2 * kk][1]);
        pa[mq][1] = pack2<T>(s[mq][2 * kk][2], s[mq][2 * kk][3]);
        pa[mq][2] = pack2<T>(s[mq][2 * kk + 1][0], s[mq][2 * kk + 1][1]);
        pa[mq][3] = pack2<T>(s[mq][2 * kk + 1][2], s[mq][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dn = 0; dn < DVO / 16; dn++) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, tV + v_lane[dn % 4] + (dn / 4) * 128 + kk * 16 * DVO * ES);
#pragma unroll
        for (int mq = 0; mq < MMA_Q; mq++) {
          mma_16816<T>(o[mq][2 * dn], pa[mq], vb);
          mma_16816<T>(o[mq][2 * dn + 1], pa[mq], vb + 2);
        }
      }
    }
    store_offsets(t + 2, next_row);
    __syncthreads();  // this stage's buffers are free for the tile after next
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with sQ: it becomes the output staging tile

  // ---- normalize O into shared memory, then store 16-byte chunks (and LSE in base 2) ----
  T* sO = sQ;  // [TQ][DVO], swizzled
#pragma unroll
  for (int mq = 0; mq < MMA_Q; mq++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float sum = d[mq][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.f ? (FP8 ? a.v_scale : 1.f) / sum : 0.f;
      const int r = warp_row + mq * 16 + (lane >> 2) + 8 * h;
#pragma unroll
      for (int j = 0; j < ND; j++) {
        const int col = j * 8 + (lane & 3) * 2;
        *reinterpret_cast<uint32_t*>(sO + swz<DVO>(r, col >> 3) + (col & 7)) =
            pack2<T>(o[mq][j][2 * h] * inv, o[mq][j][2 * h + 1] * inv);
      }
      if (a.lse != nullptr && (lane & 3) == 0 && (r >> pack_shift) < q_rows)
        a.lse[(int64_t)(qo_start + q0 + (r >> pack_shift)) * a.num_qo_heads + head0 + (r & (pack - 1))] =
            sum > 0.f ? m[mq][h] + log2f(sum) : -INFINITY;
    }
  __syncthreads();
  T* o_base = static_cast<T*>(a.o) + (int64_t)(qo_start + q0) * a.o_stride_n + (int64_t)head0 * a.o_stride_h;
  for (int id = tid; id < (q_rows << pack_shift) * CVO; id += Cfg::kThreads) {
    const int r = id / CVO, c = id % CVO;
    *reinterpret_cast<uint4*>(o_base + (int64_t)(r >> pack_shift) * a.o_stride_n +
                              (int64_t)(r & (pack - 1)) * a.o_stride_h + c * 8) =
        *reinterpret_cast<const uint4*>(sO + swz<DVO>(r, c));
  }
}

// MIN_BLOCKS: CTAs per SM to fit (caps registers at 65536 / (128 * MIN_BLOCKS)).
template <typename T, int DQK, int DVO, int MMA_Q, int BLOCK_N, bool ROPE, typename KT = T, int MIN_BLOCKS = 2>
__global__ void __launch_bounds__(128, MIN_BLOCKS) prefill_kernel(const __grid_constant__ PrefillArgs a) {
  prefill_cta<T, DQK, DVO, MMA_Q, BLOCK_N, ROPE, KT>(a);
}

}  // namespace fi::prefill
