/**
 * The ahead-of-time (AOT) compiled attention configurations: THE one list. cuda/src/decode.cu
 * instantiates exactly this cross product; anything else gets an UNSUPPORTED error naming the
 * configuration (until the JIT path exists).
 */
import type { DType } from "../runtime/dtype.ts";
import { FlashInferError } from "../runtime/errors.ts";

export const DECODE_COMPILED = {
  /** q and output dtypes. */
  qDtypes: ["f16", "bf16"] as readonly DType[],
  /** KV dtypes: the q dtype itself, or fp8 (with kScale / vScale). */
  kvDtypes: (q: DType): readonly DType[] => [q, "e4m3", "e5m2"],
  headDims: [64, 128, 256] as readonly number[],
  /** Page sizes and group sizes are run-time values: any page size >= 1, any Hqo % Hkv == 0. */
} as const;

/** Throws UNSUPPORTED unless (q dtype, kv dtype, head dim) was compiled. */
export function requireCompiledDecode(op: string, qDtype: DType, kvDtype: DType, headDim: number): void {
  const ok = DECODE_COMPILED.qDtypes.includes(qDtype) && DECODE_COMPILED.kvDtypes(qDtype).includes(kvDtype) &&
    DECODE_COMPILED.headDims.includes(headDim);
  if (!ok) {
    throw new FlashInferError(
      "UNSUPPORTED",
      `Cannot ${op} as the configuration (q ${qDtype}, kv ${kvDtype}, head dim ${headDim}) is not in the compiled set ` +
        `(q f16/bf16; kv the q dtype, e4m3 or e5m2; head dim 64, 128 or 256; see src/attention/compiled.ts)`,
    );
  }
}

/** BatchAttention's fused prefill + decode launch (cuda/src/batch_attention.cu); others use the prefill kernel. */
export const BATCH_ATTENTION_FUSED = {
  dtypes: ["f16", "bf16"] as readonly DType[],
  headDims: [64, 128] as readonly number[],
} as const;
