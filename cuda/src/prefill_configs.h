// THE list of prefill configurations compiled ahead of time (the AOT default set; DESIGN.md).
// Each entry: X(head_dim_qk, head_dim_vo, mma_q, block_n), instantiated for fp16 and bf16.
// The query tile is 64 * mma_q rows. src/attention/prefill_configs.ts mirrors this list for the
// TypeScript-side error; test/prefill_test.ts checks that the two agree.
#pragma once
#define FI_PREFILL_CONFIGS(X) \
  X(64, 64, 2, 64)            \
  X(128, 128, 2, 64)          \
  X(256, 256, 1, 32)          \
  X(192, 128, 2, 32)

// fp8 (e4m3 / e5m2) KV with fp16 or bf16 q: X(head_dim_qk, head_dim_vo, mma_q, block_n), no fused RoPE.
#define FI_PREFILL_FP8_CONFIGS(X) X(128, 128, 2, 64)
