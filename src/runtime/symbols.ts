/**
 * The one symbol table of the C ABI (cuda/include/flashinfer_ts.h), in Deno's dlopen format.
 * `toBunSymbols` turns it into bun:ffi's. Device pointers, streams and handles are u64 (a bigint in
 * both runtimes); host arrays are "buffer" (a TypedArray). Every entry returns an i32 status.
 */

export type NativeType = "i32" | "u32" | "i64" | "u64" | "usize" | "f32" | "f64" | "buffer" | "void";

export interface SymbolSpec {
  readonly parameters: readonly NativeType[];
  readonly result: NativeType;
  /** Deno only: run on a worker thread and return a Promise. Bun skips these entries. */
  readonly nonblocking?: boolean;
  /** The C symbol, when the key is an alias (e.g. a nonblocking twin). */
  readonly name?: string;
}

export const symbols = {
  // ---- library ----
  fi_abi_version: { parameters: [], result: "i32" },
  fi_source_hash: { parameters: ["buffer", /* uint8_t* buf */ "usize" /* size_t n */], result: "i32" },
  fi_last_error: { parameters: ["buffer", /* uint8_t* buf */ "usize" /* size_t n */], result: "i32" },

  // ---- device ----
  fi_device_count: { parameters: ["buffer" /* int32_t* out [1] */], result: "i32" },
  fi_device_get: { parameters: ["buffer" /* int32_t* out [1] */], result: "i32" },
  fi_device_set: { parameters: ["i32" /* int32_t device */], result: "i32" },
  fi_device_props: {
    parameters: [
      "i32", // int32_t device
      "buffer", // int64_t* out [8]: sm count, cc major, cc minor, memory, L2, smem optin, bus bits, mem kHz
      "buffer", // uint8_t* name
      "usize", // size_t n
    ],
    result: "i32",
  },
  fi_device_mem_info: { parameters: ["buffer" /* int64_t* out [2] free, total */], result: "i32" },
  fi_device_synchronize: { parameters: [], result: "i32" },

  // ---- memory ----
  fi_malloc: { parameters: ["u64", /* uint64_t bytes */ "buffer" /* uint64_t* out_ptr [1] */], result: "i32" },
  fi_free: { parameters: ["u64" /* device ptr */], result: "i32" },
  fi_host_alloc: { parameters: ["u64", /* uint64_t bytes */ "buffer" /* uint64_t* out_ptr [1] */], result: "i32" },
  fi_host_free: { parameters: ["u64" /* pinned host ptr */], result: "i32" },
  fi_copy_h2d: {
    parameters: ["u64", /* device dst */ "buffer", /* const uint8_t* src */ "u64", /* bytes */ "u64" /* stream */],
    result: "i32",
  },
  fi_copy_d2h: {
    parameters: ["buffer", /* uint8_t* dst */ "u64", /* device src */ "u64", /* bytes */ "u64" /* stream */],
    result: "i32",
  },
  fi_copy_async: {
    parameters: ["u64", /* dst */ "u64", /* src */ "u64", /* bytes */ "u64" /* stream */],
    result: "i32",
  },
  fi_copy_2d_async: {
    parameters: [
      "u64", // dst
      "u64", // dst_pitch bytes
      "u64", // src
      "u64", // src_pitch bytes
      "u64", // width_bytes
      "u64", // rows
      "u64", // stream
    ],
    result: "i32",
  },
  fi_memset_async: {
    parameters: ["u64", /* dst */ "i32", /* byte value */ "u64", /* bytes */ "u64" /* stream */],
    result: "i32",
  },

  // ---- streams, events, graphs ----
  fi_stream_create: { parameters: ["buffer" /* uint64_t* out [1] */], result: "i32" },
  fi_stream_destroy: { parameters: ["u64" /* stream */], result: "i32" },
  fi_stream_synchronize: { parameters: ["u64" /* stream */], result: "i32" },
  fi_stream_synchronize_nonblocking: {
    name: "fi_stream_synchronize",
    parameters: ["u64" /* stream */],
    result: "i32",
    nonblocking: true,
  },
  fi_stream_query: { parameters: ["u64", /* stream */ "buffer" /* int32_t* out_done [1] */], result: "i32" },
  fi_event_create: { parameters: ["i32", /* int32_t timing */ "buffer" /* uint64_t* out [1] */], result: "i32" },
  fi_event_destroy: { parameters: ["u64" /* event */], result: "i32" },
  fi_event_record: { parameters: ["u64", /* event */ "u64" /* stream */], result: "i32" },
  fi_event_synchronize: { parameters: ["u64" /* event */], result: "i32" },
  fi_event_elapsed_ms: {
    parameters: ["u64", /* start event */ "u64", /* end event */ "buffer" /* float* out_ms [1] */],
    result: "i32",
  },
  fi_graph_begin_capture: { parameters: ["u64" /* stream */], result: "i32" },
  fi_graph_end_capture: { parameters: ["u64", /* stream */ "buffer" /* uint64_t* out_exec [1] */], result: "i32" },
  fi_graph_launch: { parameters: ["u64", /* graph exec */ "u64" /* stream */], result: "i32" },
  fi_graph_destroy: { parameters: ["u64" /* graph exec */], result: "i32" },

  // ---- ops: norms ----
  fi_rmsnorm: {
    parameters: [
      "u64", // out [rows, hidden]
      "i64", // out row stride (elements)
      "u64", // x [rows, hidden]
      "i64", // x row stride (elements)
      "u64", // weight [hidden]
      "i32", // rows
      "i32", // hidden
      "f32", // eps
      "i32", // kind: 0 rmsnorm, 1 gemma
      "i32", // dtype code
      "u64", // stream
    ],
    result: "i32",
  },
  fi_fused_add_rmsnorm: {
    parameters: [
      "u64", // x [rows, hidden], in/out
      "i64", // x row stride
      "u64", // residual [rows, hidden], in/out
      "i64", // residual row stride
      "u64", // weight [hidden]
      "i32", // rows
      "i32", // hidden
      "f32", // eps
      "i32", // kind: 0 rmsnorm, 1 gemma
      "i32", // dtype code
      "u64", // stream
    ],
    result: "i32",
  },
  fi_layernorm: {
    parameters: [
      "u64", // out [rows, hidden]
      "i64", // out row stride
      "u64", // x [rows, hidden]
      "i64", // x row stride
      "u64", // gamma [hidden]
      "u64", // beta [hidden]
      "i32", // rows
      "i32", // hidden
      "f32", // eps
      "i32", // dtype code of x and out
      "i32", // dtype code of gamma and beta
      "u64", // stream
    ],
    result: "i32",
  },

  // ---- ops: activations ----
  fi_act_and_mul: {
    parameters: [
      "u64", // out [rows, d]
      "i64", // out row stride
      "u64", // x [rows, 2d]
      "i64", // x row stride
      "i32", // rows
      "i32", // d
      "i32", // kind: 0 silu, 1 gelu, 2 gelu tanh
      "i32", // dtype code
      "u64", // stream
    ],
    result: "i32",
  },

  // ---- ops: rotary embedding ----
  fi_apply_rope: {
    parameters: ["buffer", /* const fi_rope_params* (src/ops/rope.ts writes it) */ "u64" /* stream */],
    result: "i32",
  },

  // ---- attention: batch decode, merge states, paged KV cache ----
  fi_batch_decode_run: {
    parameters: ["buffer", /* const fi_decode_params* (src/attention/decode.ts writes it) */ "u64" /* stream */],
    result: "i32",
  },
  fi_merge_states: {
    parameters: [
      "i32", // int32_t mode: 0 many states per row, 1 pairwise
      "u64", // v: [rows, num_states, heads, D] (mode 0) or [rows, heads, D] (mode 1)
      "u64", // s: float32 lse, [rows, num_states, heads] or [rows, heads]
      "u64", // vb: [rows, heads, D] (mode 1)
      "u64", // sb: [rows, heads] float32 (mode 1)
      "u64", // vo: [rows, heads, D]
      "u64", // so: [rows, heads] float32, or 0
      "u64", // mask: [rows] uint8, or 0
      "i32", // int32_t rows
      "i32", // int32_t num_states
      "i32", // int32_t heads
      "i32", // int32_t head_dim
      "i32", // int32_t dtype code (f16, bf16)
      "u64", // stream
    ],
    result: "i32",
  },
  fi_append_paged_kv_cache: {
    parameters: [
      "u64", // key [nnz, Hkv, D]
      "u64", // value [nnz, Hkv, D]
      "i64", // key stride n (elements)
      "i64", // key stride h
      "i64", // value stride n
      "i64", // value stride h
      "u64", // k_cache
      "u64", // v_cache
      "i64", // stride page (elements)
      "i64", // stride slot
      "i64", // stride head
      "u64", // batch_indices [nnz] int32
      "u64", // positions [nnz] int32
      "u64", // indices int32
      "u64", // indptr [batch + 1] int32
      "i32", // nnz
      "i32", // num_kv_heads
      "i32", // head_dim
      "i32", // elem_bytes
      "i32", // page_size
      "i32", // num_pages
      "u64", // stream
    ],
    result: "i32",
  },
  fi_get_batch_indices_positions: {
    parameters: [
      "u64", // append_indptr [batch + 1] int32
      "u64", // seq_lens [batch] int32
      "u64", // batch_indices [nnz] int32 (out)
      "u64", // positions [nnz] int32 (out)
      "i32", // batch
      "u64", // stream
    ],
    result: "i32",
  },
  fi_host_index_max: {
    parameters: [
      "buffer", // const int32_t* a [n]
      "i64", // int64_t n
      "buffer", // int32_t* dst [n] or null: a copy made in the same pass
      "buffer", // int64_t* out [1]
    ],
    result: "i32",
  },
  fi_get_seq_lens: {
    parameters: [
      "u64", // indptr [batch + 1] int32
      "u64", // last_page_len [batch] int32
      "u64", // seq_lens [batch] int32 (out)
      "i32", // batch
      "i32", // page_size
      "u64", // stream
    ],
    result: "i32",
  },

  // ---- attention: prefill ----
  fi_prefill_run: {
    parameters: [
      "buffer", /* const fi_prefill_params* (src/attention/prefill_launch.ts writes it) */
      "u64", /* stream */
    ],
    result: "i32",
  },
  fi_prefill_tile_q: {
    parameters: [
      "i32", // head_dim_qk
      "i32", // head_dim_vo
      "i32", // dtype code
    ],
    result: "i32", // query rows per CTA, 0 when not compiled
  },
  fi_prefill_head_pack_shift: {
    parameters: ["i32" /* group = num_qo_heads / num_kv_heads */],
    result: "i32", // log2 of the heads packed per tile
  },
  fi_prefill_fp8_compiled: {
    parameters: ["i32", /* head_dim_qk */ "i32" /* head_dim_vo */],
    result: "i32", // 1 when fp8 KV is compiled for these head dims
  },
  // ---- sampling ----
  fi_sampling_run: {
    parameters: ["buffer", /* fi_sampling_params* (src/sampling/params.ts writes it) */ "u64" /* stream */],
    result: "i32",
  },
  fi_chain_speculative_sampling: {
    parameters: [
      "u64", // draft_probs [batch, n, d] f32
      "u64", // draft_ids [batch, n] i32
      "u64", // target_probs [batch, n + 1, d] f32
      "u64", // out_ids [batch, n + 1] i32
      "u64", // accepted [batch] i32 (added to)
      "u64", // emitted [batch] i32 (added to)
      "i32", // batch
      "i32", // n (speculative tokens)
      "i32", // d (vocabulary)
      "u64", // seed
      "u64", // offset
      "u64", // seed_ptr: u64 [1] on the device, or 0
      "u64", // offset_ptr: u64 [1] on the device, or 0
      "u64", // offset_step added to *offset_ptr after the launch
      "u64", // stream
    ],
    result: "i32",
  },
  // ---- attention: BatchAttention (fused prefill + decode) ----
  fi_batch_attention_run: {
    parameters: [
      "buffer", // const fi_prefill_params* (src/attention/batch_attention.ts writes it)
      "buffer", // const fi_decode_params*
      "u64", // queue: int32[264] in device memory
      "u64", // stream
    ],
    result: "i32",
  },
  fi_batch_attention_ctas: {
    parameters: ["i32", /* head_dim */ "i32" /* dtype code */],
    result: "i32", // resident CTAs of one launch, or minus a status (0: not compiled)
  },
  fi_batch_attention_run_split: {
    parameters: [
      "buffer", // const fi_prefill_params*
      "buffer", // const fi_decode_params*
      "i32", // prefill_ctas: SMs for the prefill half
      "u64", // stream
    ],
    result: "i32",
  },
  fi_batch_attention_split_sms: {
    parameters: ["i32", /* head_dim */ "i32" /* dtype code */],
    result: "i32", // SMs of the device when the split form applies, else 0
  },
  // ---- attention: prefill kernel choice ----
  fi_prefill_set_kernel: {
    parameters: ["i32" /* mode: 0 auto (Hopper where it applies), 1 FA2, 2 Hopper or UNSUPPORTED */],
    result: "i32",
  },
  fi_prefill_last_kernel: {
    parameters: [],
    result: "i32", // the last launch's kernel: 1 FA2, 2 Hopper, 0 none yet
  },
} as const satisfies Record<string, SymbolSpec>;

export type Symbols = typeof symbols;

const BUN_TYPES: Record<NativeType, string> = {
  i32: "i32",
  u32: "u32",
  i64: "i64",
  u64: "u64",
  usize: "u64",
  f32: "f32",
  f64: "f64",
  buffer: "ptr",
  void: "void",
};

/** bun:ffi's format of a Deno-format table: nonblocking twins dropped, "buffer" as "ptr". */
export function toBunSymbols(
  table: Record<string, SymbolSpec>,
): Record<string, { args: string[]; returns: string }> {
  const out: Record<string, { args: string[]; returns: string }> = {};
  for (const [key, spec] of Object.entries(table)) {
    if (spec.nonblocking) continue;
    out[spec.name ?? key] = { args: spec.parameters.map((t) => BUN_TYPES[t]), returns: BUN_TYPES[spec.result] };
  }
  return out;
}
