// flashinfer-ts C ABI: the one contract between the TypeScript half and the CUDA half.
//
// Rules (see DESIGN.md):
// - Every entry point returns int32_t: 0 (FI_OK) or an error code; fi_last_error() copies the
//   message of the last error on this thread into a caller's buffer.
// - Device pointers, streams and opaque handles cross as uint64_t. Host arrays cross as pointers to
//   caller-owned memory (a TypedArray on the TypeScript side). No C string is read through a pointer.
// - Nothing on a run path allocates device memory or synchronizes the host.
#ifndef FLASHINFER_TS_H_
#define FLASHINFER_TS_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FI_API __declspec(dllexport)
#else
#define FI_API __attribute__((visibility("default")))
#endif

// Bumped whenever a signature or a meaning in this header changes; src/runtime/abi.ts holds the twin.
#define FI_ABI_VERSION 3

enum fi_status {
  FI_OK = 0,
  FI_ERR_INVALID_ARGUMENT = 1,  // a check the TypeScript side should have made first
  FI_ERR_CUDA = 2,              // a CUDA runtime call failed; the message names it
  FI_ERR_UNSUPPORTED = 3,       // a configuration outside the compiled set
  FI_ERR_NO_DEVICE = 4,         // no CUDA device or driver
};

// Dtype codes, shared with src/runtime/dtype.ts.
enum fi_dtype {
  FI_F32 = 0,
  FI_F16 = 1,
  FI_BF16 = 2,
  FI_E4M3 = 3,
  FI_E5M2 = 4,
  FI_I32 = 5,
  FI_I64 = 6,
  FI_U8 = 7,
};

// ---- library ---------------------------------------------------------------------------------
FI_API int32_t fi_abi_version(void);  // returns FI_ABI_VERSION (the one entry that returns no status)
// Copies the build's source hash (hex, NUL-terminated, truncated to n) into buf.
FI_API int32_t fi_source_hash(uint8_t* buf, size_t n);
// Copies the last error message of this thread (NUL-terminated, truncated to n) into buf.
FI_API int32_t fi_last_error(uint8_t* buf, size_t n);

// ---- device ----------------------------------------------------------------------------------
FI_API int32_t fi_device_count(int32_t* out);
FI_API int32_t fi_device_get(int32_t* out);
FI_API int32_t fi_device_set(int32_t device);
// out[0..7]: sm count, cc major, cc minor, total memory bytes, L2 bytes, max opt-in shared memory
// per block, memory bus width bits, memory clock kHz. name: NUL-terminated, truncated to n.
FI_API int32_t fi_device_props(int32_t device, int64_t* out, uint8_t* name, size_t n);
FI_API int32_t fi_device_mem_info(int64_t* out /* [2] free, total */);
FI_API int32_t fi_device_synchronize(void);

// ---- memory ----------------------------------------------------------------------------------
FI_API int32_t fi_malloc(uint64_t bytes, uint64_t* out_ptr);
FI_API int32_t fi_free(uint64_t ptr);
FI_API int32_t fi_host_alloc(uint64_t bytes, uint64_t* out_ptr);  // pinned host memory
FI_API int32_t fi_host_free(uint64_t ptr);
// Copies between host memory owned by the caller and the device, ordered on stream. host_to_device
// returns once the source may be reused; device_to_host returns once the data is in dst.
FI_API int32_t fi_copy_h2d(uint64_t dst, const uint8_t* src, uint64_t bytes, uint64_t stream);
FI_API int32_t fi_copy_d2h(uint8_t* dst, uint64_t src, uint64_t bytes, uint64_t stream);
// Asynchronous copies between device (or pinned host) addresses.
FI_API int32_t fi_copy_async(uint64_t dst, uint64_t src, uint64_t bytes, uint64_t stream);
// Strided 2-D copy: rows of width_bytes, pitches in bytes (for copying strided views).
FI_API int32_t fi_copy_2d_async(uint64_t dst, uint64_t dst_pitch, uint64_t src, uint64_t src_pitch,
                                uint64_t width_bytes, uint64_t rows, uint64_t stream);
FI_API int32_t fi_memset_async(uint64_t dst, int32_t byte_value, uint64_t bytes, uint64_t stream);

// ---- streams, events, graphs -------------------------------------------------------------------
FI_API int32_t fi_stream_create(uint64_t* out);
FI_API int32_t fi_stream_destroy(uint64_t stream);
FI_API int32_t fi_stream_synchronize(uint64_t stream);
FI_API int32_t fi_stream_query(uint64_t stream, int32_t* out_done);
// timing 0: an event for ordering only (cudaEventDisableTiming: recording it costs about 0.4 us of host
// time against 2.4 us with timing, measured on the H100 machine).
FI_API int32_t fi_event_create(int32_t timing, uint64_t* out);
FI_API int32_t fi_event_destroy(uint64_t event);
FI_API int32_t fi_event_record(uint64_t event, uint64_t stream);
FI_API int32_t fi_event_synchronize(uint64_t event);
FI_API int32_t fi_event_elapsed_ms(uint64_t start, uint64_t end, float* out_ms);
FI_API int32_t fi_graph_begin_capture(uint64_t stream);
// Ends the capture and instantiates it; out_exec is the executable graph.
FI_API int32_t fi_graph_end_capture(uint64_t stream, uint64_t* out_exec);
FI_API int32_t fi_graph_launch(uint64_t exec, uint64_t stream);
FI_API int32_t fi_graph_destroy(uint64_t exec);

// ---- ops: norms ------------------------------------------------------------------------------
// Rows of `hidden` elements; row strides in elements; x and out may alias. dtype: FI_F16 or FI_BF16.
// kind: 0 rmsnorm (x * w), 1 gemma rmsnorm (x * (1 + w)).
FI_API int32_t fi_rmsnorm(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride,
                          uint64_t weight, int32_t rows, int32_t hidden, float eps, int32_t kind,
                          int32_t dtype, uint64_t stream);
// residual += x; x = norm(residual) * w (or * (1 + w) for kind 1), both in place.
FI_API int32_t fi_fused_add_rmsnorm(uint64_t x, int64_t x_stride, uint64_t residual,
                                    int64_t residual_stride, uint64_t weight, int32_t rows,
                                    int32_t hidden, float eps, int32_t kind, int32_t dtype,
                                    uint64_t stream);
// out = (x - mean) / sqrt(var + eps) * gamma + beta; gamma/beta of weight_dtype (FI_F32 or dtype).
FI_API int32_t fi_layernorm(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride,
                            uint64_t gamma, uint64_t beta, int32_t rows, int32_t hidden, float eps,
                            int32_t dtype, int32_t weight_dtype, uint64_t stream);

// ---- ops: activations ------------------------------------------------------------------------
// out[r, i] = act(x[r, i]) * x[r, d + i] for i < d. kind: 0 silu, 1 gelu (erf), 2 gelu tanh.
FI_API int32_t fi_act_and_mul(uint64_t out, int64_t out_stride, uint64_t x, int64_t x_stride,
                              int32_t rows, int32_t d, int32_t kind, int32_t dtype, uint64_t stream);

// ---- ops: rotary embedding -------------------------------------------------------------------
// One launch rotates q [nnz, Hq, D] and k [nnz, Hk, D] (last dim contiguous) into q_out / k_out
// (which may alias q / k). Positions come from exactly one source:
//   pos_mode 0: indptr [batch + 1] int32 and offsets [batch] int32 (pos = offsets[b] + i - indptr[b])
//   pos_mode 1: pos_ids [nnz] of pos_dtype (FI_I32 or FI_I64)
// freq_mode 0: standard (rope_scale, rope_theta); 1: Llama 3.1 (adds low/high freq factors and the
// old context length); 2: cos_sin_cache [max_pos, rotary_dim] float32, cos half then sin half.
// strides in elements: [0] q token, [1] q head, [2] k token, [3] k head, and the same four for outputs.
// cache_rows: rows of cos_sin_cache; device-side positions are clamped into [0, cache_rows) so a bad
// position reads a wrong row rather than out of bounds. Layout: 200 bytes, no implicit padding.
typedef struct fi_rope_params {
  uint64_t q, k, q_out, k_out;
  uint64_t indptr, offsets, pos_ids, cos_sin_cache;
  int64_t strides[8];
  int32_t nnz, batch, num_q_heads, num_k_heads, head_dim, rotary_dim;
  int32_t interleave, pos_mode, pos_dtype, freq_mode, dtype, cache_rows;
  float rope_scale, rope_theta, low_freq_factor, high_freq_factor, old_context_len, pad2_;
} fi_rope_params;
// params: one fi_rope_params, passed as bytes so both runtimes hand over a plain buffer.
FI_API int32_t fi_apply_rope(const uint8_t* params, uint64_t stream);

// ---- attention: batch decode over a paged KV cache ------------------------------------------------
// One call runs the decode kernel over the planned work items; split requests are merged in the same
// kernel (counters: [requests][kv heads x head groups] int32, zero between runs; plan zeroes them).
// Tables (items, indices, counters, alibi) live in the workspace, written by plan. merge_rows and
// run_merge are reserved (0). num_lanes > 0: a persistent grid of num_lanes rows of CTAs, row l running
// items lane_starts[l] .. lane_starts[l + 1] - 1 in turn, where lane_starts [num_lanes + 1] int32 follow
// the num_items items; 0: one row of CTAs per item.
// q [batch, Hqo, D]; k/v: page p, slot s, head h at p * kv_stride_page + s * kv_stride_slot +
// h * kv_stride_head (elements); out like q; lse [batch, Hqo] float32 (0: not written).
// q_dtype FI_F16/FI_BF16 (out has it too); kv_dtype q_dtype, FI_E4M3 or FI_E5M2. num_pages: pages of the
// cache; a page index outside [0, num_pages) reads as zeros (never out of bounds). Layout: 216 bytes.
typedef struct fi_decode_params {
  uint64_t q, k, v, out, lse;
  uint64_t items, indices, alibi, tmp_o, tmp_lse, counters;
  int64_t q_stride_b, q_stride_h, o_stride_b, o_stride_h;
  int64_t kv_stride_page, kv_stride_slot, kv_stride_head;
  int32_t num_items, merge_rows, num_qo_heads, num_kv_heads, head_dim, page_size;
  int32_t q_dtype, kv_dtype, rope, run_merge, num_pages, num_lanes;
  float sm_scale, logits_soft_cap, rope_rcp_scale, rope_rcp_theta, k_scale, v_scale;
} fi_decode_params;
FI_API int32_t fi_batch_decode_run(const uint8_t* params, uint64_t stream);

// ---- attention: merging states (base-2 LSE) -------------------------------------------------------
// mode 0: v [rows, num_states, heads, D] (dtype), s [rows, num_states, heads] f32 -> vo [rows, heads, D],
//         so [rows, heads] (so may be 0).
// mode 1: pairwise: (v, s) and (vb, sb) [rows, heads, D] / [rows, heads] -> (vo, so), which may alias
//         (v, s); mask [rows] uint8 or 0: rows with mask 0 keep v. All contiguous.
FI_API int32_t fi_merge_states(int32_t mode, uint64_t v, uint64_t s, uint64_t vb, uint64_t sb, uint64_t vo,
                               uint64_t so, uint64_t mask, int32_t rows, int32_t num_states, int32_t heads,
                               int32_t head_dim, int32_t dtype, uint64_t stream);

// ---- attention: paged KV cache ops -----------------------------------------------------------------
// Appends key/value [nnz, Hkv, D] (strides in elements, last dim contiguous) to the cache at
// (batch_indices[i], positions[i]) through indptr/indices. Cache addressing as in fi_decode_params.
FI_API int32_t fi_append_paged_kv_cache(uint64_t key, uint64_t value, int64_t key_stride_n, int64_t key_stride_h,
                                        int64_t value_stride_n, int64_t value_stride_h, uint64_t k_cache,
                                        uint64_t v_cache, int64_t stride_page, int64_t stride_slot,
                                        int64_t stride_head, uint64_t batch_indices, uint64_t positions,
                                        uint64_t indices, uint64_t indptr, int32_t nnz, int32_t num_kv_heads,
                                        int32_t head_dim, int32_t elem_bytes, int32_t page_size,
                                        int32_t num_pages, uint64_t stream);
FI_API int32_t fi_get_batch_indices_positions(uint64_t append_indptr, uint64_t seq_lens, uint64_t batch_indices,
                                              uint64_t positions, int32_t batch, uint64_t stream);
FI_API int32_t fi_get_seq_lens(uint64_t indptr, uint64_t last_page_len, uint64_t seq_lens, int32_t batch,
                               int32_t page_size, uint64_t stream);
// Host only (no GPU, no CUDA call): the largest of a[0, n) compared unsigned, so that any negative id
// reads as 2^31 or more; out[0] = -1 when n is 0. With dst (else null), a[0, n) is copied there in the
// same pass. Plans check their page ids with it while staging them for upload (host_scan.cpp).
FI_API int32_t fi_host_index_max(const int32_t* a, int64_t n, int32_t* dst, int64_t* out);

// ---- attention: prefill (single, ragged, paged) ----------------------------------------------
// One launch computes O = softmax(Q K^T * sm_scale [+ variants]) V for every (request, q tile, qo head).
// Tables (device int32, null for a single request): qo_indptr / kv_indptr [batch + 1], kv_lens
// [batch], work [num_work][2] = (request, q tile of tile_q tokens). Paged: kv_indptr indexes
// kv_indices (page ids); key j of request b is at k + page * k_stride_page + (j % page_size) *
// k_stride_n + head * k_stride_h with page = kv_indices[kv_indptr[b] + j / page_size]. Ragged and
// single: at k + (kv_indptr[b] + j) * k_stride_page + head * k_stride_h (k_stride_n unused). V alike.
// mask: packed custom mask bits (request b's starts at byte mask_indptr[b]; bit i * kv_len + j).
// lse [rows, num_qo_heads] float32 (base 2) or 0. Strides in elements; o rows 16-byte aligned.
// Layout: 256 bytes.
typedef struct fi_prefill_params {
  uint64_t q, k, v, o, lse;
  uint64_t qo_indptr, kv_indptr, kv_indices, kv_lens, work, mask, mask_indptr;
  int64_t q_stride_n, q_stride_h, o_stride_n, o_stride_h;
  int64_t k_stride_page, k_stride_n, k_stride_h, v_stride_page, v_stride_n, v_stride_h;
  int32_t num_work, qo_len, kv_len, num_qo_heads, num_kv_heads, head_dim_qk, head_dim_vo, page_size;
  int32_t paged, causal, window_left, pos_encoding, dtype, tile_q;  // pos_encoding: 0 none, 1 RoPE, 2 ALiBi
  float sm_scale, logits_soft_cap;
  float rope_rcp_scale, rope_rcp_theta;  // RoPE (Llama, NeoX pairing i, i + D/2): q at kv_len - qo_len + i, k at j
  int32_t kv_dtype;  // dtype, or FI_E4M3 / FI_E5M2 (fp8 KV; k's scale folded into sm_scale by the caller)
  float v_scale;     // fp8 KV: output multiplied by it
  uint64_t queue;    // 2 int32 in device memory, zero before the first run (runs leave them zero): the
                     // Hopper kernel's item counter; 0: items round-robin
} fi_prefill_params;
FI_API int32_t fi_prefill_run(const uint8_t* params, uint64_t stream);
// The query rows per CTA of a compiled (head_dim_qk, head_dim_vo, dtype); 0 when not compiled.
FI_API int32_t fi_prefill_tile_q(int32_t head_dim_qk, int32_t head_dim_vo, int32_t dtype);
// GQA packing: a tile's rows are (token, head) pairs of 2^shift heads sharing a KV head, so a tile
// covers rows >> shift tokens (tile_q in fi_prefill_params). shift: the largest with 2^shift | group, <= 3.
FI_API int32_t fi_prefill_head_pack_shift(int32_t group);
// 1 when fp8 (e4m3 / e5m2) KV is compiled for these head dims (with fp16 or bf16 q), else 0.
FI_API int32_t fi_prefill_fp8_compiled(int32_t head_dim_qk, int32_t head_dim_vo);

// ---- sampling ---------------------------------------------------------------------------------
// One entry runs softmax, the sorting-free samplers, renormalization and top-k masking over rows of
// f32 probabilities or logits (see cuda/kernels/sampling/sampler.cuh). All fields are 8 bytes wide
// (232 bytes, no padding); src/sampling/params.ts writes them. Device pointers may be 0 = absent.
typedef struct fi_sampling_params {
  uint64_t input;            // [rows_in, d] f32, row stride in_stride (elements)
  uint64_t output;           // op 0: i32 [batch]; ops 1-3: f32 [batch, d], row stride out_stride
  uint64_t valid;            // u8 [batch]: 1 when the row had a finite, non-empty admissible set
  uint64_t indices;          // [batch] of indices_dtype: input row of each output row (checked)
  uint64_t top_k_arr;        // i32 [batch]
  uint64_t top_p_arr;        // f32 [batch]
  uint64_t min_p_arr;        // f32 [batch]
  uint64_t temperature_arr;  // f32 [batch] (logits only)
  uint64_t seed_ptr;         // u64 [1] read on the device instead of seed
  uint64_t offset_ptr;       // u64 [1] read on the device instead of offset, then += offset_step
  uint64_t debug_rounds;     // i32 [batch, 2]: global passes over the row, pivot rounds
  int64_t in_stride, out_stride;
  int64_t batch, d, rows_in;
  int64_t op;                // 0 sample, 1 renorm, 2 mask logits, 3 softmax
  int64_t filter;            // bits: 1 top-k, 2 top-p, 4 min-p, 8 top-k applied first
  int64_t input_logits;      // 1: weights are exp((x - max) / T)
  int64_t indices_dtype;     // FI_I32 or FI_I64
  int64_t top_k;
  double top_p, min_p, temperature;
  uint64_t seed, offset;
  int64_t offset_step;
  int64_t list_cap;          // set by the library
  int64_t cluster;           // CTAs per row: 0 automatic, or 1, 2, 4, 8, 16 (16: 8 where a GPC cannot hold it)
  uint64_t debug_trace;      // i32 [batch, 16]: SM cycles since the row's start at checkpoints (diagnostic)
} fi_sampling_params;
// params: one fi_sampling_params as bytes.
FI_API int32_t fi_sampling_run(uint8_t* params, uint64_t stream);

// Chain speculative sampling (FlashInfer's semantics): draft_probs [batch, n, d] f32, draft_ids
// [batch, n] i32, target_probs [batch, n + 1, d] f32; writes out_ids [batch, n + 1] i32 (-1 after
// the first rejection's replacement), adds to accepted [batch] and emitted [batch] i32.
FI_API int32_t fi_chain_speculative_sampling(uint64_t draft_probs, uint64_t draft_ids, uint64_t target_probs,
                                             uint64_t out_ids, uint64_t accepted, uint64_t emitted,
                                             int32_t batch, int32_t n, int32_t d, uint64_t seed,
                                             uint64_t offset, uint64_t seed_ptr, uint64_t offset_ptr,
                                             uint64_t offset_step, uint64_t stream);

// ---- attention: BatchAttention (prefill and decode requests in one persistent launch) -----------
// prefill: one fi_prefill_params (paged) over the batch's prefill requests (its work table lists
// only their tiles); decode: one fi_decode_params whose items' request field is the q row of a
// one-token request (q, out and lse are shared with the prefill block). queue: 264 int32 in device
// memory, 16-byte aligned: [3] prefill work entries, [4] decode items, [5] how many CTAs ([6] = 0:
// counted per SM arrival) or SMs ([6] = 1) start on the prefill queue (the rest start on decode; each
// drains the other queue after its own); [0..2] and [8..263] zero before the first run (every run
// leaves them at zero). The counts are read on the device, so a captured launch replays later plans.
// Page ids outside [0, decode num_pages) read as zeros in both parts. Compiled for head dims 64 and
// 128 (qk = vo), fp16 / bf16 q and KV, without fused RoPE or ALiBi (src/attention/compiled.ts).
FI_API int32_t fi_batch_attention_run(const uint8_t* prefill_params, const uint8_t* decode_params, uint64_t queue,
                                      uint64_t stream);
// The CTAs one launch keeps resident (SMs x CTAs per SM), or minus a status (0 when not compiled).
FI_API int32_t fi_batch_attention_ctas(int32_t head_dim, int32_t dtype);
// The split form: the Hopper prefill kernel on at most prefill_ctas SMs (a high-priority side stream,
// forked from and joined back into `stream`) beside the plain decode kernel over the same decode
// items; both blocks as for fi_batch_attention_run. Two launches: a captured run replays its own plan.
// A prefill_ctas that is a multiple of 8 launches in clusters of 8 CTAs (packed onto fewer GPCs).
FI_API int32_t fi_batch_attention_run_split(const uint8_t* prefill_params, const uint8_t* decode_params,
                                            int32_t prefill_ctas, uint64_t stream);
// The SMs the split form can spread over, 0 where it does not apply (no sm_90 device or not compiled).
FI_API int32_t fi_batch_attention_split_sms(int32_t head_dim, int32_t dtype);

// ---- attention: prefill kernel choice ---------------------------------------------------------
// fi_prefill_run picks the Hopper (wgmma) kernel where it applies (sm_90, q and kv both fp16 or bf16,
// head dim 64 or 128, no RoPE / ALiBi / custom mask), else the FA2 (mma.sync) kernel.
// mode: 0 that choice (default), 1 FA2 always, 2 Hopper or an UNSUPPORTED error. Process-wide.
FI_API int32_t fi_prefill_set_kernel(int32_t mode);
// The kernel of the last fi_prefill_run launch in this process: 1 FA2, 2 Hopper, 0 none yet.
FI_API int32_t fi_prefill_last_kernel(void);

#ifdef __cplusplus
}
#endif

#endif  // FLASHINFER_TS_H_
