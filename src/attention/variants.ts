/**
 * Types shared by every attention family (decode, prefill, BatchAttention), with FlashInfer's names.
 * Kernels receive these as integer codes; the codes below are part of the C ABI.
 */
import { invalid } from "../runtime/errors.ts";

/** Position encoding applied inside the attention kernel. */
export type PosEncodingMode = "NONE" | "ROPE_LLAMA" | "ALIBI";
export const POS_ENCODING_CODE: Readonly<Record<PosEncodingMode, number>> = { NONE: 0, ROPE_LLAMA: 1, ALIBI: 2 };

/** KV cache layouts: NHD = [pages, 2, pageSize, Hkv, D]; HND = [pages, 2, Hkv, pageSize, D]. */
export type KvLayout = "NHD" | "HND";
export const KV_LAYOUT_CODE: Readonly<Record<KvLayout, number>> = { NHD: 0, HND: 1 };

/** The options every attention variant shares (FlashInfer's defaults). */
export interface VariantOptions {
  posEncodingMode?: PosEncodingMode;
  /** Attend to at most the last windowLeft + 1 keys; -1 (the default) disables the window. */
  windowLeft?: number;
  /** logits = cap * tanh(logits / cap) when > 0; 0 (the default) disables it. */
  logitsSoftCap?: number;
  /** Defaults to 1 / sqrt(headDim). */
  smScale?: number;
  /** RoPE for ROPE_LLAMA: positions divided by ropeScale (default 1), base ropeTheta (default 1e4). */
  ropeScale?: number;
  ropeTheta?: number;
}

export interface ResolvedVariant {
  posEncoding: number;
  windowLeft: number;
  logitsSoftCap: number;
  smScale: number;
  ropeRcpScale: number;
  ropeRcpTheta: number;
}

/** Validates the shared options and fills in FlashInfer's defaults. */
export function resolveVariant(op: string, headDim: number, o: VariantOptions): ResolvedVariant {
  const mode = o.posEncodingMode ?? "NONE";
  if (!(mode in POS_ENCODING_CODE)) invalid(op, "posEncodingMode", "NONE, ROPE_LLAMA or ALIBI", mode);
  const windowLeft = o.windowLeft ?? -1;
  if (!Number.isInteger(windowLeft) || windowLeft < -1) invalid(op, "windowLeft", "an integer >= -1", windowLeft);
  const cap = o.logitsSoftCap ?? 0;
  if (typeof cap !== "number" || !Number.isFinite(cap) || cap < 0) {
    invalid(op, "logitsSoftCap", "a finite number >= 0", cap);
  }
  const smScale = o.smScale ?? 1 / Math.sqrt(headDim);
  if (typeof smScale !== "number" || !Number.isFinite(smScale) || smScale <= 0) {
    invalid(op, "smScale", "a positive number", smScale);
  }
  const ropeScale = o.ropeScale ?? 1, ropeTheta = o.ropeTheta ?? 1e4;
  if (!(ropeScale > 0) || !Number.isFinite(ropeScale)) invalid(op, "ropeScale", "a positive number", ropeScale);
  if (!(ropeTheta > 0) || !Number.isFinite(ropeTheta)) invalid(op, "ropeTheta", "a positive number", ropeTheta);
  return {
    posEncoding: POS_ENCODING_CODE[mode],
    windowLeft,
    logitsSoftCap: cap,
    smScale,
    ropeRcpScale: 1 / ropeScale,
    ropeRcpTheta: 1 / ropeTheta,
  };
}

/** ALiBi slopes for `numHeads` heads, as FlashInfer (and the ALiBi paper) define them. */
export function alibiSlopes(numHeads: number): Float64Array {
  const n = 2 ** Math.floor(Math.log2(numHeads));
  const m0 = 2 ** (-8 / n);
  const slopes = new Float64Array(numHeads);
  for (let h = 0; h < numHeads; h++) {
    slopes[h] = h < n ? m0 ** (h + 1) : (2 ** (-4 / n)) ** (2 * (h - n) + 1);
  }
  return slopes;
}
