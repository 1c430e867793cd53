// Batch decode over a paged KV cache: one CTA per (kv head, group of up to 16 q heads, work item).
// A work item is one request's KV range [kv_start, kv_end) (a whole request or one chunk of a split
// one), planned on the host (src/attention/scheduler.ts). The CTA streams the range in tiles of 64
// tokens through a multi-stage cp.async pipeline into shared memory, so every KV byte is read once for
// the whole GQA group; each of 4 warps takes 16 tokens of a tile and runs Q*K^T and P*V on tensor
// cores (mma m16n8k16, query heads as the 16 rows). Warps keep their own online-softmax state and
// are merged at the end. Output: straight into out/lse, or (split request) into float partials; the
// last chunk of a request to finish combines them by their LSE (an atomic counter per request).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include <cuda/std/type_traits>

#include "../vec.cuh"
#include "mma.cuh"
#include "state.cuh"

namespace fi::attn {

// Work item: 8 int32 (two int4 loads). request < 0 marks padding (CUDA-graph mode).
// [request, kv_start, kv_end, partial_row (-1: write out directly), seq_len, page_base, chunks of the
//  request, its first partial row]
constexpr int kItemInts = 8;

struct DecodeArgs {
  const void* q;
  const void* k;
  const void* v;
  void* out;
  float* lse;  // may be null
  const int* items;
  const int* indices;
  const float* alibi;  // [num_qo_heads] or null
  float* tmp_o;        // [partial rows, num_qo_heads, D]
  float* tmp_lse;      // [partial rows, num_qo_heads]
  int* counters;       // [requests][grid width]: finished chunks of a split request, zero between runs
  int64_t q_sb, q_sh, o_sb, o_sh;
  int64_t kv_sp, kv_ss, kv_sh;  // page, slot (token) and head strides of k and v, in elements
  int num_qo_heads, group, head_groups, page_size, page_shift, num_pages;
  float qk_scale;  // sm_scale * k_scale
  float soft_cap;  // 0: off
  float v_scale;
  int rope;  // 1: rotate q (at seq_len - 1) and k (at its position), NeoX pairs (i, i + D/2)
  float rope_rcp_scale, rope_log2_rcp_theta;
  const int* lane_starts;  // persistent grid: [lanes + 1], row l of CTAs runs items lane_starts[l] ..; else null
};

constexpr int kDecodeTile = 64;
constexpr int kDecodeThreads = 128;

template <int D, bool FP8>
constexpr int decode_stages() {
  return FP8 ? 4 : (D == 64 ? 4 : (D == 128 ? 3 : 2));
}

template <typename T, typename TKV, int D>
constexpr int decode_smem_bytes() {
  constexpr bool FP8 = sizeof(TKV) == 1;
  constexpr int stage = kDecodeTile * D * int(sizeof(TKV));
  constexpr int pipe = 16 * D * 2 + 2 * decode_stages<D, FP8>() * stage;
  constexpr int merge = 16 * D * 2 + 4 * 16 * (D + (FP8 ? 4 : 0)) * 4 + 2 * 4 * 16 * 4;
  return pipe > merge ? pipe : merge;
}

// ---- fp8 KV: fragments straight from the raw fp8 tile, converted in registers ----
// The K tile's dims and the V tile's tokens/dims are read in permuted orders so that each thread's mma
// fragment bytes are contiguous in shared memory (one 16-byte load covers 4 k-steps):
// - Q K^T sums over the head dim, so any permutation of it is fine when q uses the same one: k-step kk,
//   thread quad c, fragment element e (0,1: b0; 2,3: b1) is dim fp8_qk_dim(kk, c) + e.
// - P V: B fragment column n (= lane / 4) of output block jb is dim fp8_pv_dim(jb, n), so a thread reads
//   D/8 consecutive bytes of each of its 4 token rows; the outputs are un-permuted in the final merge.
template <int D>
__device__ __forceinline__ int fp8_qk_dim(int kk, int c) {
  return 16 * (c + 4 * (kk >> 2)) + 4 * (kk & 3);
}
template <int D>
__device__ __forceinline__ int fp8_pv_dim(int jb, int n) {
  return D == 64 ? 8 * n + jb : 128 * (jb >> 4) + 16 * n + (jb & 15);
}
// 16-byte chunk swizzles of the raw fp8 rows, chosen so the fragment loads below are bank-conflict free
// (K: a quad reads chunks c + 4j of rows g, g + 1; V: rows 2c, 2c + 2, .. at chunk n).
template <int D>
__device__ __forceinline__ int fp8_k_chunk(int row, int chunk) {
  return D >= 128 ? chunk ^ ((row & 1) << 2) : chunk;
}
template <int D>
__device__ __forceinline__ int fp8_v_chunk(int row, int chunk) {
  return chunk ^ (((row >> 1) & (D >= 128 ? 3 : 1)) << 1);
}

// Four fp8 values (one word) to two f16x2: bytes (0, 1) -> lo, (2, 3) -> hi; one cvt per pair.
template <typename TKV>
__device__ __forceinline__ void fp8x4_to_half2x2(uint32_t w, uint32_t& lo, uint32_t& hi) {
  if constexpr (__is_same(TKV, __nv_fp8_e4m3)) {
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
  } else {
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e5m2x2 %0, l;\n cvt.rn.f16x2.e5m2x2 %1, h;\n}\n"
        : "=r"(lo), "=r"(hi)
        : "r"(w));
  }
}

// O[jb .. jb+3] += P V for 4 output blocks from one word of each of the thread's 4 V rows (tokens 2c,
// 2c + 1, 2c + 8, 2c + 9): byte i of each word is block jb + i. Pairs of rows interleave by byte
// permutes into the (k, k + 1) pairs the B fragment holds.
template <typename TKV>
__device__ __forceinline__ void fp8_pv4(float (*o)[4], const uint32_t* pa, uint32_t w0, uint32_t w1, uint32_t w2,
                                        uint32_t w3) {
  uint32_t b0[4], b1[4];
  fp8x4_to_half2x2<TKV>(__byte_perm(w0, w1, 0x5140), b0[0], b0[1]);
  fp8x4_to_half2x2<TKV>(__byte_perm(w0, w1, 0x7362), b0[2], b0[3]);
  fp8x4_to_half2x2<TKV>(__byte_perm(w2, w3, 0x5140), b1[0], b1[1]);
  fp8x4_to_half2x2<TKV>(__byte_perm(w2, w3, 0x7362), b1[2], b1[3]);
#pragma unroll
  for (int i = 0; i < 4; i++) mma_16816<__half>(o[i], pa, b0[i], b1[i]);
}

// Rotates one f16x2 of K (dims i, i + 1 of the lower half) with its partner (dims i + D/2, i + D/2 + 1).
__device__ __forceinline__ void rope_half2_pair(uint32_t& lo, uint32_t& hi, int i, float pos, float rcp_scale,
                                                float log2_rcp_theta, int d) {
  const float2 x1 = __half22float2(*reinterpret_cast<const __half2*>(&lo));
  const float2 x2 = __half22float2(*reinterpret_cast<const __half2*>(&hi));
  float s0, c0, s1, c1;
  sincosf(pos * (rcp_scale * exp2f(log2_rcp_theta * float(2 * i) / float(d))), &s0, &c0);
  sincosf(pos * (rcp_scale * exp2f(log2_rcp_theta * float(2 * (i + 1)) / float(d))), &s1, &c1);
  lo = pack2<__half>(x1.x * c0 - x2.x * s0, x1.y * c1 - x2.y * s1);
  hi = pack2<__half>(x2.x * c0 + x1.x * s0, x2.y * c1 + x1.y * s1);
}

// Rotates the 8 elements of chunk c (dims 8c..8c+7) with their partners in chunk c + D/16 at `pos`.
template <typename T, int D>
__device__ __forceinline__ void rope_chunk_pair(T* row, int c, float pos, const DecodeArgs& a, int r) {
  T* lo = row + swz<D>(r, c) - r * D;
  T* hi = row + swz<D>(r, c + D / 16) - r * D;
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int i = c * 8 + j;
    const float freq = a.rope_rcp_scale * exp2f(a.rope_log2_rcp_theta * float(2 * i) / float(D));
    float sn, cs;
    sincosf(pos * freq, &sn, &cs);
    const float x1 = float(lo[j]), x2 = float(hi[j]);
    lo[j] = T(x1 * cs - x2 * sn);
    hi[j] = T(x2 * cs + x1 * sn);
  }
}

// cp_async_16 with a 256-byte L2 fetch: an fp8 NHD row is 128 bytes between the other heads' rows, so
// the fetch brings the neighbouring head's row into L2 for its CTA (DRAM reads 256-byte runs, as bf16's).
__device__ __forceinline__ void cp_async_16_l2_256(void* dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(bytes));
}

// fp8 KV at D = 128 keeps 3 CTAs an SM (168 registers, 70 KB of shared memory each).
template <typename TKV, int D>
constexpr int decode_min_ctas() {
  return sizeof(TKV) == 1 && D == 128 ? 3 : 0;  // 0: no directive (bf16/f16 build as before)
}

// One CTA's work: cta.x() / cta.y() = (kv head x head group, work item) of a grid cta.width() wide. The kernel below
// runs one per CTA; the BatchAttention kernel (batch_attention.cuh) runs many in a persistent loop.
// fp8: the warps' outputs are stored to the merge scratch at column dim ^ key(dim) (a permutation within
// each aligned float4), so the 32 lanes of a scattered store hit 32 banks; readers undo it per float4.
template <int D>
__device__ __forceinline__ int fp8_merge_key(int dim) {
  return (dim >> (D == 64 ? 4 : 5)) & 3;
}
__device__ __forceinline__ float4 unswizzle4(float4 x, int key) {
  if (key & 1) x = make_float4(x.y, x.x, x.w, x.z);
  if (key & 2) x = make_float4(x.z, x.w, x.x, x.y);
  return x;
}

// PDL: 16-bit KV waits and triggers right after its first page ids. fp8 KV waits there too but triggers
// only when `last` (the CTA's last item) leaves its main loop: triggering at once made the lanes at B128
// L8k 763 -> 848 us (twice); late, the next launch overlaps this one's merge tail only.
template <typename T, typename TKV, int D, typename Cta = GridCta>
__device__ __forceinline__ void decode_cta(const DecodeArgs& a, const Cta cta = {}, bool last = true) {
  constexpr bool FP8 = sizeof(TKV) == 1;
  // Tensor-core type: the q dtype, or fp16 for fp8 KV (fp8 -> fp16 is one cvt per pair; q is
  // converted once per CTA; P in [0, 1] and fp32 accumulators keep the result at q's precision).
  using TC = typename cuda::std::conditional<FP8, __half, T>::type;
  constexpr int TILE = kDecodeTile, NW = 4;
  constexpr int STAGES = decode_stages<D, FP8>();
  constexpr int ROW_BYTES = D * int(sizeof(TKV));
  constexpr int CH = ROW_BYTES / 16;  // 16-byte chunks in one KV row
  // Each warp copies exactly the 16 rows of a tile it computes on, so warps synchronize only with
  // themselves (__syncwarp) inside the loop: 4 independent pipelines, no CTA barrier per tile.
  constexpr int RSTEP = 32 / CH;  // rows one pass of a warp covers
  constexpr int RPT = 16 / RSTEP;  // rows each lane copies per tile
  constexpr int STAGE_BYTES = TILE * ROW_BYTES;
  static_assert(32 % CH == 0 && RPT >= 1, "tile shape");

  extern __shared__ __align__(128) uint8_t smem[];
  TC* sq = reinterpret_cast<TC*>(smem);
  uint8_t* sk = smem + 16 * D * 2;
  uint8_t* sv = sk + STAGES * STAGE_BYTES;

  // x: kv head (x head group), fastest, so the CTAs of one item run together and read
  // neighbouring bytes of the same pages (NHD rows interleave heads); y: the work item.
  const int4 it0 = reinterpret_cast<const int4*>(a.items)[cta.y() * 2];
  const int4 it1 = reinterpret_cast<const int4*>(a.items)[cta.y() * 2 + 1];
  const int req = it0.x;
  if (req < 0) return;
  const int kv_start = it0.y, kv_end = it0.z, partial_row = it0.w, seq_len = it1.x, page_base = it1.y;
  const int kvh = cta.x() / a.head_groups, hg = cta.x() % a.head_groups;
  const int qh0 = kvh * a.group + hg * 16;
  const int rows = min(16, a.group - hg * 16);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const float q_pos = float(seq_len - 1);

  // ---- q: [16][D] swizzled, rows past the group zero; rotated in place for ROPE_LLAMA ----
  auto load_q = [&]() {
    const T* q = static_cast<const T*>(a.q) + int64_t(req) * a.q_sb;
    for (int idx = tid; idx < 16 * (D / 8); idx += kDecodeThreads) {
      const int r = idx / (D / 8), c = idx % (D / 8);
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < rows) val = *reinterpret_cast<const uint4*>(q + int64_t(qh0 + r) * a.q_sh + c * 8);
      if constexpr (!__is_same(T, TC)) {
        const T* x = reinterpret_cast<const T*>(&val);
        uint32_t* y = reinterpret_cast<uint32_t*>(&val);
#pragma unroll
        for (int i = 0; i < 4; i++) y[i] = pack2<TC>(float(x[2 * i]), float(x[2 * i + 1]));
      }
      *reinterpret_cast<uint4*>(sq + swz<D>(r, c)) = val;
    }
    if (a.rope) {
      __syncthreads();
      for (int idx = tid; idx < 16 * (D / 16); idx += kDecodeThreads) {
        const int r = idx / (D / 16), c = idx % (D / 16);
        rope_chunk_pair<TC, D>(sq + r * D, c, q_pos, a, r);
      }
    }
  };

  // ---- the copy pipeline ----
  const int ntiles = (kv_end - kv_start + TILE - 1) / TILE;
  const int lc = lane % CH, lr0 = warp * 16 + lane / CH;
  const int shift = a.page_shift;  // page size 2^shift, or -1: divide
  const TKV* kbase = static_cast<const TKV*>(a.k) + int64_t(kvh) * a.kv_sh;
  const TKV* vbase = static_cast<const TKV*>(a.v) + int64_t(kvh) * a.kv_sh;
  // Page ids of this thread's rows in the next tile to issue, loaded one tile ahead and first read when that
  // tile is issued (checked at once, a third of the 16-bit kernel's stall samples sat on that load). A page
  // outside the cache (possible only when the host skipped its check) reads as zeros; -1: past the range.
  int pages[RPT];
  auto in_cache = [&](int id) { return unsigned(id) < unsigned(a.num_pages); };
  // Pages of 16 tokens or more and a start on a 16-token boundary: a warp's 16 rows of a tile lie in one
  // page, so one page id and one base address serve all of the thread's rows (pages[0]); the general path
  // loads an id and forms a 64-bit address per row (bf16 B256 L1k: 366 -> 355 us).
  const bool warp_page = shift >= 4 && (kv_start & 15) == 0;
  const int64_t lane_row_off = int64_t(lane / CH) * a.kv_ss, row_step = int64_t(RSTEP) * a.kv_ss;
  auto fetch_pages = [&](int t) {
    if (warp_page) {
      const int pos0 = kv_start + t * TILE + warp * 16;
      pages[0] = pos0 < kv_end ? __ldg(a.indices + page_base + (pos0 >> shift)) : -1;
      return;
    }
#pragma unroll
    for (int i = 0; i < RPT; i++) {
      const int pos = kv_start + t * TILE + lr0 + i * RSTEP;
      const int page = shift >= 0 ? pos >> shift : pos / a.page_size;
      pages[i] = pos < kv_end ? __ldg(a.indices + page_base + page) : -1;
    }
  };
  auto issue = [&](int t, int stage) {
    const int pos0 = kv_start + t * TILE + warp * 16;
    const int64_t base = warp_page && in_cache(pages[0])
                             ? int64_t(pages[0]) * a.kv_sp + int64_t(pos0 & ((1 << shift) - 1)) * a.kv_ss + lane_row_off
                             : 0;
#pragma unroll
    for (int i = 0; i < RPT; i++) {
      const int r = lr0 + i * RSTEP;
      const int pos = kv_start + t * TILE + r;
      bool valid;
      int64_t off;
      if (warp_page) {
        valid = pos < kv_end && in_cache(pages[0]);
        off = valid ? base + i * row_step : 0;
      } else {
        valid = pos < kv_end && in_cache(pages[i]);
        const int slot = shift >= 0 ? pos & ((1 << shift) - 1) : pos % a.page_size;
        off = valid ? int64_t(pages[i]) * a.kv_sp + int64_t(slot) * a.kv_ss : 0;
      }
      const int kdst = FP8 ? r * ROW_BYTES + fp8_k_chunk<D>(r, lc) * 16 : swz<D>(r, lc) * 2;
      const int vdst = FP8 ? r * ROW_BYTES + fp8_v_chunk<D>(r, lc) * 16 : kdst;
      if constexpr (FP8) {
        cp_async_16_l2_256(sk + stage * STAGE_BYTES + kdst, reinterpret_cast<const uint8_t*>(kbase + off) + lc * 16,
                           valid);
        cp_async_16_l2_256(sv + stage * STAGE_BYTES + vdst, reinterpret_cast<const uint8_t*>(vbase + off) + lc * 16,
                           valid);
      } else {
        cp_async_16(sk + stage * STAGE_BYTES + kdst, reinterpret_cast<const uint8_t*>(kbase + off) + lc * 16, valid);
        cp_async_16(sv + stage * STAGE_BYTES + vdst, reinterpret_cast<const uint8_t*>(vbase + off) + lc * 16, valid);
      }
    }
  };

  fetch_pages(0);
  if constexpr (!FP8) {
    // 16-bit KV kernels are launched with programmatic dependent launch: up to here only the plan's
    // tables were read (uploaded before the previous kernel started); q and the KV may be the previous
    // kernel's output, so wait for it. The next kernel may be scheduled from now on.
    pdl_wait();
    pdl_launch_dependents();
    load_q();
  } else {
    pdl_wait();  // fp8: triggers its dependents after the main loop (below)
  }
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < ntiles) {
      issue(s, s);
      fetch_pages(s + 1);
    }
    cp_async_commit();
  }
  // fp8 tiles are short-lived (half the bytes): q is loaded after their first loads are in flight, so
  // the two latencies overlap instead of adding up at the start of every CTA.
  if constexpr (FP8) load_q();

  float o[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, d[2] = {0.f, 0.f};
  float slope[2] = {0.f, 0.f};
  if (a.alibi) {
    const int r0 = lane / 4;
    slope[0] = r0 < rows ? a.alibi[qh0 + r0] : 0.f;
    slope[1] = r0 + 8 < rows ? a.alibi[qh0 + r0 + 8] : 0.f;
  }

  __syncthreads();  // q is in shared memory
  const int wrow = warp * 16;
  const bool plain_logits = a.soft_cap <= 0.f && !a.alibi;
  const float qk_log2 = a.qk_scale * kLog2e;
  // Head dims up to 128 keep q's tensor-core fragments in registers for the whole loop.
  constexpr bool QREG = D <= 128;
  uint32_t qfrag[QREG ? D / 16 : 1][4];
  const int g = lane >> 2, quad = lane & 3;
  // fp8: q's fragments in the permuted dim order of the K fragments (fp8_qk_dim).
  auto fp8_q_frag = [&](int kk, uint32_t* qa) {
    const int dim = fp8_qk_dim<D>(kk, quad);
    const uint2 lo = *reinterpret_cast<const uint2*>(sq + swz<D>(g, dim >> 3) + (dim & 7));
    const uint2 hi = *reinterpret_cast<const uint2*>(sq + swz<D>(g + 8, dim >> 3) + (dim & 7));
    qa[0] = lo.x, qa[1] = hi.x, qa[2] = lo.y, qa[3] = hi.y;
  };
  if constexpr (QREG) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      if constexpr (FP8) {
        fp8_q_frag(kk, qfrag[kk]);
      } else {
        ldmatrix_x4(qfrag[kk], sq + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, kk * 2 + (lane >> 4)));
      }
    }
  }
  for (int t = 0; t < ntiles; t++) {
    const int next = t + STAGES - 1;
    if (next < ntiles) {
      issue(next, next % STAGES);
      fetch_pages(next + 1);
    }
    cp_async_commit();
    cp_async_wait<STAGES - 1>();
    __syncwarp();

    const int stage = t % STAGES;
    const int tile_pos = kv_start + t * TILE;
    // S = Q K^T for this warp's 16 tokens: rows = q heads, columns = tokens.
    float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    if constexpr (FP8) {
      // Each quad's K bytes of rows g and g + 8 are 16-byte chunks quad + 4j (j < D/64): chunk j covers
      // k-steps 4j .. 4j+3. Chunks j and j + NJ/2 hold RoPE partner dims (d, d + D/2), so they are
      // converted together; for D = 64 the partner is in lane ^ 2.
      constexpr int NJ = D / 64, G = NJ > 1 ? 2 : 1, HALF = NJ > 1 ? NJ / 2 : 1;
      const uint8_t* kt = sk + stage * STAGE_BYTES;
#pragma unroll
      for (int nb = 0; nb < 2; nb++) {
        const int r = wrow + nb * 8 + g;
        const float pos = float(tile_pos + r);
#pragma unroll
        for (int jp = 0; jp < HALF; jp++) {
          uint32_t kh[G][8];
#pragma unroll
          for (int gi = 0; gi < G; gi++) {
            const int chunk = quad + 4 * (jp + gi * HALF);
            const uint4 raw = *reinterpret_cast<const uint4*>(kt + r * ROW_BYTES + fp8_k_chunk<D>(r, chunk) * 16);
            fp8x4_to_half2x2<TKV>(raw.x, kh[gi][0], kh[gi][1]);
            fp8x4_to_half2x2<TKV>(raw.y, kh[gi][2], kh[gi][3]);
            fp8x4_to_half2x2<TKV>(raw.z, kh[gi][4], kh[gi][5]);
            fp8x4_to_half2x2<TKV>(raw.w, kh[gi][6], kh[gi][7]);
          }
          if (a.rope) {
#pragma unroll
            for (int k = 0; k < 8; k++) {
              if constexpr (G == 2) {
                rope_half2_pair(kh[0][k], kh[1][k], 16 * (quad + 4 * jp) + 2 * k, pos, a.rope_rcp_scale,
                                a.rope_log2_rcp_theta, D);
              } else {
                const uint32_t mine = kh[0][k], other = __shfl_xor_sync(0xffffffffu, mine, 2);
                const bool low = quad < 2;
                uint32_t lo = low ? mine : other, hi = low ? other : mine;
                rope_half2_pair(lo, hi, 16 * (quad & 1) + 2 * k, pos, a.rope_rcp_scale, a.rope_log2_rcp_theta, D);
                kh[0][k] = low ? lo : hi;
              }
            }
          }
#pragma unroll
          for (int gi = 0; gi < G; gi++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
              const int kk = 4 * (jp + gi * HALF) + i;
              uint32_t qtmp[4];
              const uint32_t* qa = qtmp;
              if constexpr (QREG) {
                qa = qfrag[kk];
              } else {
                fp8_q_frag(kk, qtmp);
              }
              mma_16816<__half>(s[nb], qa, kh[gi][2 * i], kh[gi][2 * i + 1]);
            }
          }
        }
      }
    } else {
      TC* ks = reinterpret_cast<TC*>(sk + stage * STAGE_BYTES);
      if (a.rope) {
        for (int idx = lane; idx < 16 * (D / 16); idx += 32) {
          const int r = wrow + idx / (D / 16), c = idx % (D / 16);
          rope_chunk_pair<TC, D>(ks + r * D, c, float(tile_pos + r), a, r);
        }
        __syncwarp();
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        uint32_t kb[4];
        uint32_t qtmp[4];
        uint32_t* qa = qtmp;
        if constexpr (QREG) {
          qa = qfrag[kk];
        } else {
          ldmatrix_x4(qtmp, sq + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, kk * 2 + (lane >> 4)));
        }
        ldmatrix_x4(kb, ks + swz<D>(wrow + (lane & 7) + (lane >> 4) * 8, kk * 2 + ((lane >> 3) & 1)));
        mma_16816<TC>(s[0], qa, kb[0], kb[1]);
        mma_16816<TC>(s[1], qa, kb[2], kb[3]);
      }
    }

    // Logits (scale, soft cap, ALiBi), masking, and the online softmax update. A whole tile without soft
    // cap or ALiBi takes one multiply a logit (fp8 B256 L1k: 209 -> 199 us).
    if (plain_logits && tile_pos + TILE <= kv_end) {
#pragma unroll
      for (int n = 0; n < 2; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) s[n][e] *= qk_log2;
      }
    } else {
#pragma unroll
      for (int n = 0; n < 2; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int pos = tile_pos + wrow + n * 8 + (lane & 3) * 2 + (e & 1);
          float x = s[n][e] * a.qk_scale;
          if (a.soft_cap > 0.f) x = a.soft_cap * tanhf(x / a.soft_cap);
          x += slope[e >> 1] * (float(pos) - q_pos);
          s[n][e] = pos < kv_end ? x * kLog2e : -INFINITY;
        }
      }
    }
    float scale[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      scale[r] = exp2f(m[r] - m_use);
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < 2; n++) {
        s[n][2 * r] = exp2f(s[n][2 * r] - m_use);
        s[n][2 * r + 1] = exp2f(s[n][2 * r + 1] - m_use);
        sum += s[n][2 * r] + s[n][2 * r + 1];
      }
      d[r] = d[r] * scale[r] + sum;
    }
    // Rescale only when some row's max moved (rare after the first tiles); the test is warp-uniform.
    if (__any_sync(0xffffffffu, scale[0] != 1.f || scale[1] != 1.f)) {
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        o[j][0] *= scale[0], o[j][1] *= scale[0], o[j][2] *= scale[1], o[j][3] *= scale[1];
      }
    }

    // O += P V: P (16 heads x 16 tokens) from registers, V (16 tokens x D) by transposed ldmatrix.
    uint32_t pa[4] = {pack2<TC>(s[0][0], s[0][1]), pack2<TC>(s[0][2], s[0][3]), pack2<TC>(s[1][0], s[1][1]),
                      pack2<TC>(s[1][2], s[1][3])};
    if constexpr (FP8) {
      // This thread's V rows (tokens 2c, 2c + 1, 2c + 8, 2c + 9 of the warp's 16) at dims fp8_pv_dim(., g).
      const uint8_t* vt = sv + stage * STAGE_BYTES;
      const int r0 = wrow + 2 * quad;
      const int rr[4] = {r0, r0 + 1, r0 + 8, r0 + 9};
      if constexpr (D == 64) {
        uint2 w[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
          w[k] = *reinterpret_cast<const uint2*>(vt + rr[k] * ROW_BYTES + fp8_v_chunk<D>(rr[k], g >> 1) * 16 +
                                                 (g & 1) * 8);
        }
        fp8_pv4<TKV>(o, pa, w[0].x, w[1].x, w[2].x, w[3].x);
        fp8_pv4<TKV>(o + 4, pa, w[0].y, w[1].y, w[2].y, w[3].y);
      } else {
#pragma unroll
        for (int jv = 0; jv < D / 128; jv++) {
          uint4 w[4];
#pragma unroll
          for (int k = 0; k < 4; k++) {
            w[k] = *reinterpret_cast<const uint4*>(vt + rr[k] * ROW_BYTES + fp8_v_chunk<D>(rr[k], g + 8 * jv) * 16);
          }
          fp8_pv4<TKV>(o + 16 * jv, pa, w[0].x, w[1].x, w[2].x, w[3].x);
          fp8_pv4<TKV>(o + 16 * jv + 4, pa, w[0].y, w[1].y, w[2].y, w[3].y);
          fp8_pv4<TKV>(o + 16 * jv + 8, pa, w[0].z, w[1].z, w[2].z, w[3].z);
          fp8_pv4<TKV>(o + 16 * jv + 12, pa, w[0].w, w[1].w, w[2].w, w[3].w);
        }
      }
    } else {
      TC* vs = reinterpret_cast<TC*>(sv + stage * STAGE_BYTES);
#pragma unroll
      for (int j = 0; j < D / 16; j++) {
        uint32_t vb[4];
        ldmatrix_x4_trans(vb, vs + swz<D>(wrow + (lane & 7) + ((lane >> 3) & 1) * 8, 2 * j + (lane >> 4)));
        mma_16816<TC>(o[2 * j], pa, vb[0], vb[1]);
        mma_16816<TC>(o[2 * j + 1], pa, vb[2], vb[3]);
      }
    }
    __syncwarp();  // this warp's rows of the stage are refilled next iteration
  }
  cp_async_wait<0>();
  if constexpr (FP8) {
    if (last) pdl_launch_dependents();
  }
  __syncthreads();

  // ---- merge the 4 warps' states through shared memory (the pipeline buffers are free now) ----
#pragma unroll
  for (int r = 0; r < 2; r++) {
    d[r] += __shfl_xor_sync(0xffffffffu, d[r], 1);
    d[r] += __shfl_xor_sync(0xffffffffu, d[r], 2);
  }
  constexpr int SO = FP8 ? D + 4 : D;  // fp8: padded rows, its scattered stores hit 4 banks, not 1
  float* so = reinterpret_cast<float*>(smem + 16 * D * 2);  // [NW][16][SO]
  float* sm = so + NW * 16 * SO;                            // [NW][16]
  float* sd = sm + NW * 16;                                 // [NW][16]
  {
    const int r0 = lane >> 2, c0 = (lane & 3) * 2;
    if constexpr (FP8) {
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
#pragma unroll
        for (int e = 0; e < 2; e++) {
          int dim = fp8_pv_dim<D>(j, c0 + e);
          dim ^= fp8_merge_key<D>(dim);
          so[(warp * 16 + r0) * SO + dim] = o[j][e];
          so[(warp * 16 + r0 + 8) * SO + dim] = o[j][2 + e];
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < D / 8; j++) {
        *reinterpret_cast<float2*>(so + (warp * 16 + r0) * D + j * 8 + c0) = make_float2(o[j][0], o[j][1]);
        *reinterpret_cast<float2*>(so + (warp * 16 + r0 + 8) * D + j * 8 + c0) = make_float2(o[j][2], o[j][3]);
      }
    }
    if ((lane & 3) == 0) {
      sm[warp * 16 + r0] = m[0], sd[warp * 16 + r0] = d[0];
      sm[warp * 16 + r0 + 8] = m[1], sd[warp * 16 + r0 + 8] = d[1];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < rows * (D / 4); idx += kDecodeThreads) {
    const int r = idx / (D / 4), c = (idx % (D / 4)) * 4;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; w++) mx = fmaxf(mx, sm[w * 16 + r]);
    float dsum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < NW; w++) {
        const float f = exp2f(sm[w * 16 + r] - mx);
        const float4 x = *reinterpret_cast<const float4*>(so + (w * 16 + r) * SO + c);
        dsum += sd[w * 16 + r] * f;
        acc.x += x.x * f, acc.y += x.y * f, acc.z += x.z * f, acc.w += x.w * f;
      }
    }
    if constexpr (FP8) acc = unswizzle4(acc, fp8_merge_key<D>(c));
    const float inv = dsum > 0.f ? a.v_scale / dsum : 0.f;
    acc.x *= inv, acc.y *= inv, acc.z *= inv, acc.w *= inv;
    const float lse = dsum > 0.f ? mx + __log2f(dsum) : -INFINITY;
    const int qh = qh0 + r;
    if (partial_row < 0) {
      T* out = static_cast<T*>(a.out) + int64_t(req) * a.o_sb + int64_t(qh) * a.o_sh + c;
      uint2 packed = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
      *reinterpret_cast<uint2*>(out) = packed;
      if (c == 0 && a.lse) a.lse[int64_t(req) * a.num_qo_heads + qh] = lse;
    } else {
      const int64_t row = int64_t(partial_row) * a.num_qo_heads + qh;
      *reinterpret_cast<float4*>(a.tmp_o + row * D + c) = acc;
      if (c == 0) a.tmp_lse[row] = lse;
    }
  }
  if (partial_row < 0) return;

  // ---- split request: the last of its chunks to finish merges all of them (no second kernel) ----
  // Counters are zero at the start of every run: plan zeroes them and the merging CTA resets its own.
  const int chunks = it1.z, first_row = it1.w;
  __shared__ int is_last;
  __threadfence();  // this CTA's partials are visible device-wide before it is counted
  __syncthreads();
  if (tid == 0) {
    int* counter = a.counters + int64_t(req) * cta.width() + cta.x();
    is_last = atomicAdd(counter, 1) == chunks - 1;
    if (is_last) *counter = 0;
  }
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  // Weights of every (row, chunk) in shared memory first: all LSE loads in flight at once, then one
  // warp per row reduces them, then each thread sums its 4 columns over the chunks.
  float* wts = reinterpret_cast<float*>(smem + 16 * D * 2);  // [rows][chunks] (merge scratch is free)
  const bool staged = 16 * (chunks + 1) * 4 + 16 * D * 2 <= decode_smem_bytes<T, TKV, D>();
  if (staged) {
    for (int idx = tid; idx < rows * chunks; idx += kDecodeThreads) {
      const int r = idx / chunks, j = idx % chunks;
      wts[idx] = __ldcg(a.tmp_lse + int64_t(first_row + j) * a.num_qo_heads + qh0 + r);
    }
    __syncthreads();
    float* row_lse = wts + rows * chunks;  // [rows]
    for (int r = warp; r < rows; r += NW) {
      float mx = -INFINITY;
      for (int j = lane; j < chunks; j += 32) mx = fmaxf(mx, wts[r * chunks + j]);
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      float sum = 0.f;
      for (int j = lane; j < chunks; j += 32) {
        const float e = mx == -INFINITY ? 0.f : exp2f(wts[r * chunks + j] - mx);
        wts[r * chunks + j] = e;
        sum += e;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
      __syncwarp();
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      for (int j = lane; j < chunks; j += 32) wts[r * chunks + j] *= inv;
      if (lane == 0) row_lse[r] = sum > 0.f ? mx + __log2f(sum) : -INFINITY;
    }
    __syncthreads();
    for (int idx = tid; idx < rows * (D / 4); idx += kDecodeThreads) {
      const int r = idx / (D / 4), c = (idx % (D / 4)) * 4, qh = qh0 + r;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
      for (int j = 0; j < chunks; j++) {
        const float w = wts[r * chunks + j];
        const float4 x = __ldcg(reinterpret_cast<const float4*>(a.tmp_o + (int64_t(first_row + j) * a.num_qo_heads + qh) * D + c));
        acc.x += x.x * w, acc.y += x.y * w, acc.z += x.z * w, acc.w += x.w * w;
      }
      T* out = static_cast<T*>(a.out) + int64_t(req) * a.o_sb + int64_t(qh) * a.o_sh + c;
      *reinterpret_cast<uint2*>(out) = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
      if (c == 0 && a.lse) a.lse[int64_t(req) * a.num_qo_heads + qh] = row_lse[r];
    }
    return;
  }
  for (int idx = tid; idx < rows * (D / 4); idx += kDecodeThreads) {
    const int r = idx / (D / 4), c = (idx % (D / 4)) * 4, qh = qh0 + r;
    float mx = -INFINITY;
    for (int j = 0; j < chunks; j++) mx = fmaxf(mx, __ldcg(a.tmp_lse + int64_t(first_row + j) * a.num_qo_heads + qh));
    float dsum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mx != -INFINITY) {
#pragma unroll 4
      for (int j = 0; j < chunks; j++) {
        const int64_t row = int64_t(first_row + j) * a.num_qo_heads + qh;
        const float f = exp2f(__ldcg(a.tmp_lse + row) - mx);
        const float4 x = __ldcg(reinterpret_cast<const float4*>(a.tmp_o + row * D + c));
        dsum += f;
        acc.x += x.x * f, acc.y += x.y * f, acc.z += x.z * f, acc.w += x.w * f;
      }
    }
    const float inv = dsum > 0.f ? 1.f / dsum : 0.f;
    T* out = static_cast<T*>(a.out) + int64_t(req) * a.o_sb + int64_t(qh) * a.o_sh + c;
    *reinterpret_cast<uint2*>(out) = make_uint2(pack2<T>(acc.x * inv, acc.y * inv), pack2<T>(acc.z * inv, acc.w * inv));
    if (c == 0 && a.lse) a.lse[int64_t(req) * a.num_qo_heads + qh] = dsum > 0.f ? mx + __log2f(dsum) : -INFINITY;
  }
}

template <typename T, typename TKV, int D>
__global__ void __launch_bounds__(kDecodeThreads, decode_min_ctas<TKV, D>())
    batch_decode_kernel(const __grid_constant__ DecodeArgs a) {
  decode_cta<T, TKV, D>(a);
}

// Persistent form: a grid of (CTAs an item) x lanes, sized to stay resident; row y runs the items of
// lane y one after the other (scheduleDecodeLanes in src/attention/scheduler.ts balances their tiles).
template <typename T, typename TKV, int D>
__global__ void __launch_bounds__(kDecodeThreads, decode_min_ctas<TKV, D>())
    batch_decode_lanes_kernel(const __grid_constant__ DecodeArgs a) {
  const int end = a.lane_starts[blockIdx.y + 1];
  for (int i = a.lane_starts[blockIdx.y]; i < end; i++) {
    decode_cta<T, TKV, D, VirtualCta>(a, VirtualCta{int(blockIdx.x), i, int(gridDim.x)}, i == end - 1);
    __syncthreads();  // the next item's loads reuse the shared memory this one merged in
  }
}

}  // namespace fi::attn
