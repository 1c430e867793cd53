/**
 * The prefill configurations compiled ahead of time. This mirrors cuda/src/prefill_configs.h (THE
 * list; test/prefill_test.ts checks that the two agree through fi_prefill_tile_q). A configuration
 * outside it gets an UNSUPPORTED error that names it, until the JIT path exists.
 */
import type { DType } from "../runtime/dtype.ts";
import { FlashInferError } from "../runtime/errors.ts";

export interface PrefillConfig {
  headDimQk: number;
  headDimVo: number;
  /** Query rows per CTA; a tile covers tileQ / headPack(group) tokens (see headPack). */
  tileQ: number;
}

export const PREFILL_DTYPES: readonly DType[] = ["f16", "bf16"];

export const PREFILL_CONFIGS: readonly PrefillConfig[] = [
  { headDimQk: 64, headDimVo: 64, tileQ: 128 },
  { headDimQk: 128, headDimVo: 128, tileQ: 128 },
  { headDimQk: 256, headDimVo: 256, tileQ: 64 },
  { headDimQk: 192, headDimVo: 128, tileQ: 128 },
];

/** Head dims with fp8 (e4m3 / e5m2) KV compiled (q f16 or bf16); mirrors FI_PREFILL_FP8_CONFIGS. */
export const PREFILL_FP8_CONFIGS: readonly { headDimQk: number; headDimVo: number }[] = [{
  headDimQk: 128,
  headDimVo: 128,
}];
export const FP8_DTYPES: readonly DType[] = ["e4m3", "e5m2"];

function describe(c: { headDimQk: number; headDimVo: number }): string {
  return c.headDimQk === c.headDimVo ? `head dim ${c.headDimQk}` : `head dims ${c.headDimQk}/${c.headDimVo}`;
}

/** The compiled configuration for these head dims and dtypes, or an UNSUPPORTED error naming it. */
export function prefillConfig(
  op: string,
  headDimQk: number,
  headDimVo: number,
  qDtype: DType,
  kvDtype: DType = qDtype,
): PrefillConfig {
  const config = PREFILL_CONFIGS.find((c) => c.headDimQk === headDimQk && c.headDimVo === headDimVo);
  const fp8 = FP8_DTYPES.includes(kvDtype) &&
    PREFILL_FP8_CONFIGS.some((c) => c.headDimQk === headDimQk && c.headDimVo === headDimVo);
  const dtypeOk = PREFILL_DTYPES.includes(qDtype) && (kvDtype === qDtype || fp8);
  if (!config || !dtypeOk) {
    const set = PREFILL_CONFIGS.map(describe).join(", ");
    throw new FlashInferError(
      "UNSUPPORTED",
      `Cannot ${op} as the configuration (${describe({ headDimQk, headDimVo })}, q ${qDtype}, kv ${kvDtype}) is not ` +
        `compiled ahead of time: compiled are ${set}, each with q and kv both f16 or both bf16, and fp8 (e4m3, e5m2) kv ` +
        `with f16 or bf16 q for ${PREFILL_FP8_CONFIGS.map(describe).join(", ")}`,
    );
  }
  return config;
}

/**
 * GQA packing (mirrors fi_prefill_head_pack_shift): a tile's rows are (token, head) pairs of this many
 * query heads sharing one KV head: the largest power of two dividing the group size, at most 8.
 */
export function headPack(group: number): number {
  let pack = 1;
  while (pack < 8 && group % (pack * 2) === 0) pack *= 2;
  return pack;
}

/** Tokens per query tile for this configuration and GQA group size. */
export function tileTokens(config: PrefillConfig, numQoHeads: number, numKvHeads: number): number {
  return config.tileQ / headPack(numQoHeads / numKvHeads);
}
