// Hopper (sm_90a) prefill: FlashAttention-3 structure on wgmma, for fp16/bf16 q = kv and head dim
// 64 or 128 (qk = vo). A CTA owns the same 128-row query tile as the FA2 kernel (prefill.cuh: same
// work table, same GQA packing of (token, head) rows), with three warpgroups:
//  - a producer (warps 0-3, few registers) copies Q (double-buffered) and K/V tiles of BLOCK_N = 128
//    keys into a ring of stages with cp.async, each row from its own address (ragged and paged
//    alike); the copies arrive on the stage's full mbarrier when they land (full / empty barriers
//    per stage, K and V separately), so the producer waits only for free stages;
//  - two consumers (warps 4-11) each own 64 query rows: S = Q K^T is a wgmma with Q and K in shared
//    memory; P goes to registers as 16-bit and O += P V is a wgmma with P as the register operand
//    and V read MN-major. Within a consumer, tile t's S = Q K^T is issued before tile t-1's P V, so
//    the softmax of tile t runs while the tensor cores do P V (FA3's intra-warpgroup overlap).
// Masks: causal, kv length, sliding window; soft cap. ALiBi, custom masks, RoPE and fp8 KV stay
// on the FA2 kernel. Softmax in base 2 with the scale folded into the exponent, as in prefill.cuh.
#pragma once
#include "hopper_ops.cuh"
#include "prefill.cuh"

namespace fi::hopper {

using fi::prefill::PrefillArgs;
using namespace fi::attn;

// QB: query tile buffers (2: the next item's Q loads while this one computes; 1-3% faster on the
// H100 than 1 Q buffer with a third K/V stage, measured with an earlier producer).
template <int D, int QB>
struct HopperConfig {
  static constexpr int kBlockN = 128;
  static constexpr int kQBuffers = QB;
  // hd128: 32 KB per Q buffer, 64 KB per K/V stage: 1 Q + 3 stages or 2 Q + 2 stages in 227 KB.
  static constexpr int kStages = D == 128 && QB == 2 ? 2 : 3;
  static constexpr int kTileQ = 128;  // rows: two consumer warpgroups of 64
  static constexpr int kThreads = 384;
  // Register budgets (setmaxnreg): 128 * producer + 256 * consumer must not exceed the 168 * 384 the
  // launch allocated. hd128's consumers need every register they can get; hd64's fit in 232.
  static constexpr int kProducerRegs = D == 128 ? 24 : 40;
  static constexpr int kConsumerRegs = D == 128 ? 240 : 232;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= 168 * 384, "over the register file");
  static constexpr int kQBytes = kTileQ * D * 2;
  static constexpr int kKVBytes = kBlockN * D * 2;  // one K or V stage
  // + 1024: the tiles are aligned up to 1024 bytes (the swizzle atom) at run time.
  static constexpr int kSmemBytes = QB * kQBytes + 2 * kStages * kKVBytes + 1024;
  static_assert(kSmemBytes <= 227 * 1024, "over the sm_90 shared memory per block");
};

// Barriers: q_full[2], q_empty[2], k_full[S], v_full[S], k_empty[S], v_empty[S].
template <int S>
struct Bars {
  static constexpr int kCount = 4 + 4 * S;
  uint32_t base;
  __device__ uint32_t q_full(int b) const { return base + 8 * b; }
  __device__ uint32_t q_empty(int b) const { return base + 8 * (2 + b); }
  __device__ uint32_t k_full(int s) const { return base + 8 * (4 + s); }
  __device__ uint32_t v_full(int s) const { return base + 8 * (4 + S + s); }
  __device__ uint32_t k_empty(int s) const { return base + 8 * (4 + 2 * S + s); }
  __device__ uint32_t v_empty(int s) const { return base + 8 * (4 + 3 * S + s); }
};

// One work item: a query tile of one (request, head group) and the key range it sees.
struct Item {
  int qo_start, qo_len, kv_start, kv_len, q0, q_rows, head0, kv_head, kv_begin, num_tiles;
};

// Item i of the launch: items go head-group-major (the work table's tiles, heaviest first, for head
// group 0, then group 1, ...), so the CTAs running at one time share KV heads and hit in L2.
template <int BN, int TQ>
__device__ __forceinline__ Item item_of(const PrefillArgs& a, int i, int head_groups, int tiles) {
  Item it;
  const int y = i / tiles, x = i - y * tiles;
  const int pack = 1 << a.pack_shift;
  int req = 0, tile = x;
  if (a.work != nullptr) {
    req = a.work[2 * x];
    tile = a.work[2 * x + 1];
  } else if (a.causal) {
    tile = tiles - 1 - x;  // the heaviest tiles first
  }
  it.qo_start = 0, it.qo_len = a.qo_len, it.kv_start = 0, it.kv_len = a.kv_len;
  if (a.qo_indptr != nullptr) {
    it.qo_start = a.qo_indptr[req];
    it.qo_len = a.qo_indptr[req + 1] - it.qo_start;
    it.kv_start = a.kv_indptr[req];
    it.kv_len = a.kv_lens[req];
  }
  const int TT = TQ >> a.pack_shift;  // tokens per tile
  it.q0 = tile * TT;
  it.q_rows = min(TT, it.qo_len - it.q0);  // <= 0: an empty tile
  it.head0 = y * pack;
  it.kv_head = it.head0 / a.group;
  const int delta = it.kv_len - it.qo_len;  // bottom-right alignment: row i sees keys j <= i + delta
  int kv_end = it.kv_len;
  if (a.causal) kv_end = min(it.kv_len, it.q0 + it.q_rows - 1 + delta + 1);
  int kv_begin = 0;
  if (a.window_left >= 0) kv_begin = max(0, it.q0 + delta - a.window_left);
  it.kv_begin = kv_begin / BN * BN;
  it.num_tiles = it.q_rows > 0 && kv_end > it.kv_begin ? (kv_end - it.kv_begin + BN - 1) / BN : 0;
  return it;
}

// Persistent: gridDim.x CTAs (at most one per SM) take `items` = tiles x head groups. The first is
// blockIdx.x; the next comes from a device counter (a.queue, greedy: the CTA that finishes first
// takes the next, heaviest-first item), or blockIdx.x + gridDim.x, ... without one. Round-robin
// leaves CTAs with 1.8x the mean work when the grid is near the tile count (items come in sawtooth
// heavy-to-light runs, one per head group). The producer hands each item's index to the consumers
// in a shared slot per Q buffer. The producer runs ahead into the next item (its Q as soon as the
// consumers' last Q K^T of the current one is done), so loads hide under the previous epilogue.
// The two consumers take turns issuing their wgmmas (named barriers 3 and 4), so one's softmax runs
// under the other's matrix products (FA3's inter-warpgroup "ping-pong").
template <typename T, int D, int QB>
__global__ void __launch_bounds__(384, 1)
    prefill_hopper_kernel(const __grid_constant__ PrefillArgs a, int tiles, int head_groups) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using Cfg = HopperConfig<D, QB>;
  constexpr int BN = Cfg::kBlockN, S = Cfg::kStages, TQ = Cfg::kTileQ;
  constexpr bool PINGPONG = true;
  constexpr int C = D / 8;  // 16-byte chunks per row
  constexpr bool BF16 = !__is_same(T, __half);
  static_assert(BN == 128 && S >= 2, "the producer maps two key rows per lane pair");
  extern __shared__ uint8_t smem_raw[];
  __shared__ __align__(8) uint64_t bars_mem[Bars<S>::kCount];
  __shared__ int item_slot[QB];  // the item of each Q buffer's current use (>= items: stop)
  static_assert(QB >= 2, "a slot is rewritten only after every producer thread has read it (two hand-overs later)");
  const uint32_t base = (smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = base, sK = sQ + QB * Cfg::kQBytes, sV = sK + S * Cfg::kKVBytes;
  const Bars<S> bars{smem_addr(bars_mem)};
  const int items = tiles * head_groups;

  const int tid = threadIdx.x, lane = tid & 31;
  const int pack_shift = a.pack_shift, pack = 1 << pack_shift;

  if (tid == 0) {
    for (int b = 0; b < 2; b++) {
      mbar_init(bars.q_full(b), 129);  // the producer threads' copies + thread 0 after writing item_slot
      mbar_init(bars.q_empty(b), 8);  // one arrival per consumer warp
    }
    for (int s = 0; s < S; s++) {
      mbar_init(bars.k_full(s), 128);
      mbar_init(bars.v_full(s), 128);
      mbar_init(bars.k_empty(s), 8);
      mbar_init(bars.v_empty(s), 8);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (tid < 128) {
    // ======================= producer =======================
    regs_dec<Cfg::kProducerRegs>();
    const int warp = tid >> 5;
    const bool paged = a.paged != 0;
    int g = 0;       // K/V tiles issued so far (all items): stage g % S, its use g / S
    int q_uses = 0;  // items handed over so far
    // Completes Q buffer qb's full barrier: thread 0's arrival after writing item_slot, and every
    // producer thread's once its Q copies (if any) have landed.
    auto hand_over = [&](int qb) {
      if (tid == 0) mbar_arrive(bars.q_full(qb));
      cp_async_arrive(bars.q_full(qb));
    };
    for (int i_static = blockIdx.x;; i_static += gridDim.x) {
      // The next item, once the consumers are done with this Q buffer's previous one.
      const int qb = q_uses % QB, q_use = q_uses / QB;
      if (q_use > 0) mbar_wait(bars.q_empty(qb), (q_use - 1) & 1);
      q_uses++;
      if (tid == 0) {
        int next = i_static;
        // Taken when the producer gets here (about two K/V stages before the consumers finish the
        // previous item), not earlier: an item taken at the start of the previous one would be
        // handed out in start order, which is round-robin again (measured: 1x4096 302 -> 334 us).
        if (a.queue != nullptr && q_use + qb > 0) next = gridDim.x + atomicAdd(a.queue, 1);
        item_slot[qb] = next;
      }
      named_sync(1, 128);
      const int i = item_slot[qb];
      if (i >= items) {  // tell the consumers to stop
        hand_over(qb);
        break;
      }
      const Item it = item_of<BN, TQ>(a, i, head_groups, tiles);
      if (it.num_tiles == 0) {  // the consumers write zeros (or nothing) without reading anything
        hand_over(qb);
        continue;
      }
      // Q (rows past the request are zero).
      const T* q_base = static_cast<const T*>(a.q) + (int64_t)(it.qo_start + it.q0) * a.q_stride_n +
                        (int64_t)it.head0 * a.q_stride_h;
      for (int id = tid; id < TQ * C; id += 128) {
        const int r = id / C, c = id % C;
        const bool ok = (r >> pack_shift) < it.q_rows;
        const T* src = ok ? q_base + (int64_t)(r >> pack_shift) * a.q_stride_n +
                                (int64_t)(r & (pack - 1)) * a.q_stride_h + c * 8
                          : q_base;
        cp_async_16(sQ + qb * Cfg::kQBytes + tile_off(r, c, TQ), src, ok);
      }
      hand_over(qb);
      const T* k_base = static_cast<const T*>(a.k) + (int64_t)it.kv_head * a.k_stride_h;
      const T* v_base = static_cast<const T*>(a.v) + (int64_t)it.kv_head * a.v_stride_h;
      // Lane pairs share a key row: each lane copies every other 16-byte chunk (a pair reads whole
      // 32-byte sectors) of rows r0 and r0 + 16 of the tile; chunk offsets are compile-time.
      const int half = lane & 1, r0 = warp * 32 + (lane >> 1);
      auto copy_tile = [&](uint32_t dst, const T* src, const int (&row)[2], const int (&slot)[2], int64_t s_page,
                           int64_t s_n) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int r = r0 + 16 * h;
          const bool ok = row[h] >= 0;
          const char* from = reinterpret_cast<const char*>(ok ? src + (int64_t)row[h] * s_page + (int64_t)slot[h] * s_n : src) +
                             half * 16;
          const uint32_t to = dst + r * 128, x = uint32_t(half ^ (r & 7)) << 4;
#pragma unroll
          for (int k = 0; k < C / 2; k++)
            cp_async_16(to + ((2 * k) >> 3) * BN * 128 + ((((2 * k) & 7) << 4) ^ x), from + 32 * k, ok);
        }
      };
      // Each tile is handed over by the copies themselves: every producer thread's arrival on the
      // stage's full barrier fires when its copies have landed, so the producer only ever waits
      // for a stage to be freed (the Q K^T, or the P V, of the tile S back).
      for (int t = 0; t < it.num_tiles; t++, g++) {
        const int s = g % S, use = g / S;
        // Where this lane's two key rows live: page id and slot (paged) or token row; -1 past the end.
        int row[2], slot[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int kv = it.kv_begin + t * BN + r0 + 16 * h;
          row[h] = -1;
          slot[h] = 0;
          if (kv < it.kv_len) {
            if (!paged) {
              row[h] = it.kv_start + kv;
            } else {
              const int page = a.page_shift >= 0 ? kv >> a.page_shift : kv / a.page_size;
              slot[h] = kv - page * a.page_size;
              row[h] = __ldg(a.kv_indices + it.kv_start + page);
            }
          }
        }
        if (use > 0) mbar_wait(bars.k_empty(s), (use - 1) & 1);
        copy_tile(sK + s * Cfg::kKVBytes, k_base, row, slot, a.k_stride_page, a.k_stride_n);
        cp_async_arrive(bars.k_full(s));
        if (use > 0) mbar_wait(bars.v_empty(s), (use - 1) & 1);
        copy_tile(sV + s * Cfg::kKVBytes, v_base, row, slot, a.v_stride_page, a.v_stride_n);
        cp_async_arrive(bars.v_full(s));
      }
    }
    cp_async_wait_all();  // nothing in flight when the thread exits
    if (tid == 0 && a.queue != nullptr) {
      // The last CTA to stop taking items resets the counter for the next run (graph replays too).
      __threadfence();
      if (atomicAdd(a.queue + 1, 1) == int(gridDim.x) - 1) {
        a.queue[0] = 0;
        a.queue[1] = 0;
      }
    }
    return;
  }

  // ======================= consumers =======================
  regs_inc<Cfg::kConsumerRegs>();
  const int wg = (tid >> 7) - 1;  // 0 or 1: query rows wg * 64 ...
  const int cw = (tid >> 5) & 3;  // warp within the warpgroup
  const int warp_row = wg * 64 + cw * 16;
  constexpr int NB = BN / 8;  // n8 blocks of S
  constexpr int ND = D / 8;   // n8 blocks of O

  float o[D / 2];
  float m[2], d[2];
  float s[BN / 2];
  uint32_t p[BN / 16][4];

  const uint64_t q_desc0 = make_desc(sQ + wg * 64 * 128, 16, 1024);
  uint64_t q_desc = q_desc0;
  const uint64_t k_desc = make_desc(sK, 16, 1024);
  const uint64_t v_desc = make_desc(sV, BN * 128, 1024);
  const bool plain = a.soft_cap <= 0.f;

  auto issue_qk = [&](int st) {
    pin(s);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t qo = ((kk / 4) * TQ * 128 + (kk % 4) * 32) >> 4;
      const uint32_t ko = (st * Cfg::kKVBytes + (kk / 4) * BN * 128 + (kk % 4) * 32) >> 4;
      wgmma_ss_n128<BF16>(s, q_desc + qo, k_desc + ko, kk > 0);
    }
    wgmma_commit();
  };
  auto issue_pv = [&](int st) {
    pin(o);
    pin(p);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      const uint32_t vo = (st * Cfg::kKVBytes + kk * 16 * 128) >> 4;
      if constexpr (D == 128) wgmma_rs_n128<BF16>(o, p[kk], v_desc + vo, 1);
      else wgmma_rs_n64<BF16>(o, p[kk], v_desc + vo, 1);
    }
    wgmma_commit();
  };
  auto to_p = [&]() {
#pragma unroll
    for (int kk = 0; kk < BN / 16; kk++) {
      p[kk][0] = pack2<T>(s[8 * kk + 0], s[8 * kk + 1]);
      p[kk][1] = pack2<T>(s[8 * kk + 2], s[8 * kk + 3]);
      p[kk][2] = pack2<T>(s[8 * kk + 4], s[8 * kk + 5]);
      p[kk][3] = pack2<T>(s[8 * kk + 6], s[8 * kk + 7]);
    }
  };
  // Turn b of warpgroup w: sync on barrier 3 + w (its 128 threads + the other's 128 arrivals).
  auto turn_begin = [&]() {
    if constexpr (PINGPONG) named_sync(3 + wg, 256);
  };
  auto turn_end = [&]() {
    if constexpr (PINGPONG) named_arrive(3 + (wg ^ 1), 256);
  };
  if (PINGPONG && wg == 1) named_arrive(3, 256);  // warpgroup 0 goes first

  int g = 0;       // K/V tiles consumed so far (all items), as the producer counts them
  int q_uses = 0;  // items handed over so far
  for (;;) {
    const int qb = q_uses % QB, q_use = q_uses / QB;
    mbar_wait(bars.q_full(qb), q_use & 1);
    q_uses++;
    const int i = item_slot[qb];
    __syncwarp();  // every lane has read the slot before lane 0 may free it
    if (i >= items) break;
    const Item it = item_of<BN, TQ>(a, i, head_groups, tiles);
    if (it.num_tiles == 0 && lane == 0) mbar_arrive(bars.q_empty(qb));  // Q unused: free the buffer now
    if (it.q_rows <= 0) continue;
    const int q0 = it.q0, qo_len = it.qo_len, kv_len = it.kv_len, kv_begin = it.kv_begin;
    const int delta = kv_len - qo_len;
    const int last_row = q0 + it.q_rows - 1;
#pragma unroll
    for (int j = 0; j < D / 2; j++) o[j] = 0.f;
    m[0] = m[1] = -INFINITY;
    d[0] = d[1] = 0.f;

    // Masks tile t's logits and runs the online softmax on them: s becomes P (unnormalized), m
    // and d move on, corr is the factor the rows of O must take.
    auto softmax = [&](int t, float (&corr)[2]) {
      const int k0 = kv_begin + t * BN;
      const bool full = k0 + BN <= kv_len && (!a.causal || k0 + BN - 1 <= q0 + delta) &&
                        (a.window_left < 0 || k0 >= last_row + delta - a.window_left);
      float mul = a.scale_log2;  // plain tiles keep raw logits: the scale is folded into the exponent
      if (plain && !full && a.window_left < 0) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const int qi = q0 + ((warp_row + (lane >> 2) + 8 * h) >> pack_shift);
          int lim = kv_len - 1;
          if (a.causal) lim = min(lim, qi + delta);
          if (qi >= qo_len) lim = -1;
          lim -= k0 + (lane & 3) * 2;
#pragma unroll
          for (int j = 0; j < NB; j++) {
            if (j * 8 > lim) s[4 * j + 2 * h] = -INFINITY;
            if (j * 8 + 1 > lim) s[4 * j + 2 * h + 1] = -INFINITY;
          }
        }
      } else if (!(plain && full)) {
        mul = 1.f;
#pragma unroll
        for (int j = 0; j < NB; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int qi = q0 + ((warp_row + (lane >> 2) + 8 * (e >> 1)) >> pack_shift);
            const int kj = k0 + j * 8 + (lane & 3) * 2 + (e & 1);
            const int qpos = qi + delta;
            float x = s[4 * j + e];
            if (a.soft_cap > 0.f) x = a.cap_post * tanhf(x * a.cap_pre);
            else x *= a.scale_log2;
            bool keep = kj < kv_len && qi < qo_len;
            if (a.causal) keep = keep && kj <= qpos;
            if (a.window_left >= 0) keep = keep && kj >= qpos - a.window_left;
            s[4 * j + e] = keep ? x : -INFINITY;
          }
      }
      // Rows lane/4 (h = 0) and lane/4 + 8 (h = 1) of the warp's 16.
#pragma unroll
      for (int h = 0; h < 2; h++) {
        float mx = fi::prefill::tree_max<NB>(reinterpret_cast<const float(*)[4]>(s), h);
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        mx = fmaxf(m[h], mx * mul);
        const float base_m = mx == -INFINITY ? 0.f : mx;  // a row with nothing visible yet stays 0
        corr[h] = ex2(m[h] - base_m);
        m[h] = mx;
        d[h] *= corr[h];
#pragma unroll
        for (int j = 0; j < NB; j++) {
          s[4 * j + 2 * h] = ex2(fmaf(s[4 * j + 2 * h], mul, -base_m));
          s[4 * j + 2 * h + 1] = ex2(fmaf(s[4 * j + 2 * h + 1], mul, -base_m));
        }
        d[h] += fi::prefill::tree_sum<NB>(reinterpret_cast<const float(*)[4]>(s), h);
      }
    };

    // No branch between a wgmma's issue and its wait, so ptxas sees that no register is touched
    // while in flight (else it serializes the wgmmas).
    const int n = it.num_tiles;
    if (n > 0) {
      fence_proxy_async();  // cp.async (generic proxy) wrote what wgmma (async proxy) reads
      q_desc = q_desc0 + ((qb * Cfg::kQBytes) >> 4);
      float corr[2];
      mbar_wait(bars.k_full(g % S), (g / S) & 1);
      fence_proxy_async();
      turn_begin();
      issue_qk(g % S);
      turn_end();
      wgmma_wait<0>();
      pin(s);
      if (lane == 0) {
        mbar_arrive(bars.k_empty(g % S));
        if (n == 1) mbar_arrive(bars.q_empty(qb));
      }
      softmax(0, corr);  // O is still 0: no rescale
      to_p();
      for (int t = 1; t < n; t++) {
        const int st = (g + t) % S, pt = (g + t - 1) % S;
        mbar_wait(bars.k_full(st), ((g + t) / S) & 1);
        mbar_wait(bars.v_full(pt), ((g + t - 1) / S) & 1);
        fence_proxy_async();
        turn_begin();
        issue_qk(st);
        issue_pv(pt);
        turn_end();
        wgmma_wait<1>();  // S(t) is done; P V (t - 1) runs on under the softmax
        pin(s);
        if (lane == 0) {
          mbar_arrive(bars.k_empty(st));
          if (t == n - 1) mbar_arrive(bars.q_empty(qb));  // the producer may load this buffer again
        }
        softmax(t, corr);
        wgmma_wait<0>();  // P V (t - 1) is done: O may be rescaled, P rewritten, V(t - 1) freed
        pin(o);
        pin(p);
        if (lane == 0) mbar_arrive(bars.v_empty(pt));
#pragma unroll
        for (int j = 0; j < ND; j++) {
          o[4 * j + 0] *= corr[0];
          o[4 * j + 1] *= corr[0];
          o[4 * j + 2] *= corr[1];
          o[4 * j + 3] *= corr[1];
        }
        to_p();
      }
      const int lt = (g + n - 1) % S;
      mbar_wait(bars.v_full(lt), ((g + n - 1) / S) & 1);
      fence_proxy_async();
      turn_begin();
      issue_pv(lt);
      turn_end();
      wgmma_wait<0>();
      pin(o);
      if (lane == 0) mbar_arrive(bars.v_empty(lt));
      g += n;
    }

    // ---- epilogue: normalize and store O straight from registers (4-byte pairs), and the LSE ----
    T* o_base = static_cast<T*>(a.o) + (int64_t)(it.qo_start + q0) * a.o_stride_n + (int64_t)it.head0 * a.o_stride_h;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      float sum = d[h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int r = warp_row + (lane >> 2) + 8 * h;
      if ((r >> pack_shift) >= it.q_rows) continue;
      T* row = o_base + (int64_t)(r >> pack_shift) * a.o_stride_n + (int64_t)(r & (pack - 1)) * a.o_stride_h;
#pragma unroll
      for (int j = 0; j < ND; j++)
        *reinterpret_cast<uint32_t*>(row + j * 8 + (lane & 3) * 2) =
            pack2<T>(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
      if (a.lse != nullptr && (lane & 3) == 0)
        a.lse[(int64_t)(it.qo_start + q0 + (r >> pack_shift)) * a.num_qo_heads + it.head0 + (r & (pack - 1))] =
            sum > 0.f ? m[h] + log2f(sum) : -INFINITY;
    }
  }
  if (PINGPONG && wg == 0) named_sync(3, 256);  // takes warpgroup 1's last hand-over: barriers end clean
#endif
}

}  // namespace fi::hopper
