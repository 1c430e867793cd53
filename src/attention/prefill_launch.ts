/**
 * Shared pieces of single / ragged / paged prefill: tensor checks for q, KV and outputs, and the one
 * native launch (fi_prefill_run with an fi_prefill_params block, cuda/include/flashinfer_ts.h).
 */
import { expectRank, expectShape, expectTensor } from "../runtime/check.ts";
import { type DType, DTYPE_BYTES, DTYPE_CODE } from "../runtime/dtype.ts";
import { FlashInferError, invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { env } from "../runtime/platform.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import type { KvLayout, ResolvedVariant, VariantOptions } from "./variants.ts";
import { resolveVariant } from "./variants.ts";

/** The outputs of a prefill: out [tokens, numQoHeads, headDimVo] and, when asked, lse [tokens, numQoHeads] (base 2). */
export interface PrefillResult {
  out: Tensor;
  lse?: Tensor;
}

export interface PrefillOutputOptions {
  /** Output [tokens, numQoHeads, headDimVo], allocated when omitted (pass it for CUDA graphs). */
  out?: Tensor;
  /** Also return the log-sum-exp of each row (base 2, as FlashInfer). */
  returnLse?: boolean;
  /** LSE output [tokens, numQoHeads] float32, allocated when omitted and returnLse is set. */
  lse?: Tensor;
  /** fp8 KV: the dequantization scales of K (folded into smScale) and V (applied to the output). Default 1. */
  kScale?: number;
  vScale?: number;
  stream?: StreamLike;
}

/** The fp8 scales of a run, checked (1 for 16-bit KV). */
export function kvScales(op: string, o: PrefillOutputOptions): { kScale: number; vScale: number } {
  const kScale = o.kScale ?? 1, vScale = o.vScale ?? 1;
  if (!(typeof kScale === "number" && Number.isFinite(kScale) && kScale > 0)) {
    invalid(op, "kScale", "a positive number", kScale);
  }
  if (!(typeof vScale === "number" && Number.isFinite(vScale) && vScale > 0)) {
    invalid(op, "vScale", "a positive number", vScale);
  }
  return { kScale, vScale };
}

/** Resolves the variant options (every one of them is fused: RoPE, ALiBi, soft cap, window). */
export function prefillVariant(op: string, headDim: number, o: VariantOptions, kvDtype: DType): ResolvedVariant {
  const v = resolveVariant(op, headDim, o);
  if (v.posEncoding === 1 && DTYPE_BYTES[kvDtype] === 1) {
    throw new FlashInferError(
      "UNSUPPORTED",
      `Cannot ${op} as fused RoPE (posEncodingMode ROPE_LLAMA) is not compiled for fp8 KV (${kvDtype})`,
    );
  }
  return v;
}

/** Checks a [rows, heads, dim] operand whose rows and heads may be strided; returns its strides. */
export function expectRows(
  op: string,
  arg: string,
  t: Tensor,
  shape: readonly number[],
  dtype: DType,
): { sn: number; sh: number } {
  expectTensor(op, arg, t, [dtype]);
  expectShape(op, arg, t, shape);
  expectAligned(op, arg, t, [t.strides[0], t.strides[1]]);
  return { sn: t.strides[0], sh: t.strides[1] };
}

/** Last dimension contiguous and every row start on 16 bytes: the kernel copies 16-byte chunks. */
export function expectAligned(op: string, arg: string, t: Tensor, strides: readonly number[]): void {
  if (t.strides[t.rank - 1] !== 1) invalid(op, arg, "contiguous in its last dimension", `=strides ${show(t.strides)}`);
  const vec = 16 / DTYPE_BYTES[t.dtype];
  if (t.numel > 0 && (t.ptr % 16n !== 0n || strides.some((s) => s % vec !== 0))) {
    invalid(op, arg, `16-byte aligned with strides that are multiples of ${vec}`, `=strides ${show(t.strides)}`);
  }
}

/** The KV strides of a single/ragged k or v: NHD [tokens, Hkv, D] or HND [Hkv, tokens, D]. */
export function kvStrides(
  op: string,
  arg: string,
  t: Tensor,
  layout: KvLayout,
  tokens: number | undefined,
  heads: number,
  dim: number,
  dtype: DType,
) {
  expectTensor(op, arg, t, [dtype]);
  expectRank(op, arg, t, 3);
  const tokenDim = layout === "NHD" ? 0 : 1, headDim = 1 - tokenDim;
  const n = tokens ?? t.shape[tokenDim];
  const shape = layout === "NHD" ? [n, heads, dim] : [heads, n, dim];
  expectShape(op, arg, t, shape);
  expectAligned(op, arg, t, [t.strides[0], t.strides[1]]);
  return { tokens: n, sn: t.strides[tokenDim], sh: t.strides[headDim] };
}

export function outputs(
  op: string,
  o: PrefillOutputOptions,
  rows: number,
  heads: number,
  dimVo: number,
  dtype: DType,
): PrefillResult {
  const out = o.out ?? Tensor.empty([rows, heads, dimVo], dtype);
  expectTensor(op, "out", out, [dtype]);
  expectShape(op, "out", out, [rows, heads, dimVo]);
  expectAligned(op, "out", out, [out.strides[0], out.strides[1]]);
  let lse: Tensor | undefined;
  if (o.returnLse || o.lse) {
    lse = o.lse ?? Tensor.empty([rows, heads], "f32");
    expectTensor(op, "lse", lse, ["f32"]);
    expectShape(op, "lse", lse, [rows, heads]);
    if (!lse.isContiguous()) invalid(op, "lse", "contiguous", `=strides ${show(lse.strides)}`);
  }
  return { out, lse };
}

export interface KvStrides {
  page: number;
  n: number;
  h: number;
}

/** Everything fi_prefill_params holds; pointers 0n when absent. */
export interface LaunchParams {
  q: bigint;
  k: bigint;
  v: bigint;
  o: bigint;
  lse: bigint;
  qoIndptr: bigint;
  kvIndptr: bigint;
  kvIndices: bigint;
  kvLens: bigint;
  work: bigint;
  /** 2 zeroed int32 in device memory for the Hopper kernel's item counter; 0n: round-robin. */
  queue: bigint;
  mask: bigint;
  maskIndptr: bigint;
  qStrideN: number;
  qStrideH: number;
  oStrideN: number;
  oStrideH: number;
  /** K strides: page (paged) or token (ragged/single), slot in page (paged), head. */
  kStrides: KvStrides;
  vStrides: KvStrides;
  numWork: number;
  qoLen: number;
  kvLen: number;
  numQoHeads: number;
  numKvHeads: number;
  headDimQk: number;
  headDimVo: number;
  pageSize: number;
  paged: boolean;
  causal: boolean;
  dtype: DType;
  kvDtype: DType;
  tileQ: number;
  variant: ResolvedVariant;
  kScale: number;
  vScale: number;
}

/**
 * Which prefill kernel serves fp16/bf16 launches: "auto" (default) takes the Hopper (wgmma) kernel on
 * sm_90 for head dim 64 / 128 (qk = vo) without RoPE, ALiBi or a custom mask, else the FA2 kernel;
 * "fa2" always the FA2 kernel; "hopper" the Hopper kernel or an UNSUPPORTED error where it does not
 * apply. The default comes from the environment variable FLASHINFER_TS_PREFILL_KERNEL.
 */
export type PrefillKernel = "auto" | "fa2" | "hopper";
const KERNEL_MODES: Record<PrefillKernel, number> = { auto: 0, fa2: 1, hopper: 2 };
let requestedKernel: PrefillKernel | undefined;
let sentMode = -1;
let envKernel: string | undefined | null = null; // null: not read yet (read once, at the first launch)

/** Chooses the prefill kernel for this process (see PrefillKernel); undefined: back to the environment's. */
export function setPrefillKernel(kernel: PrefillKernel | undefined): void {
  if (kernel !== undefined && !(kernel in KERNEL_MODES)) {
    invalid("set the prefill kernel", "kernel", '"auto", "fa2" or "hopper"', kernel);
  }
  requestedKernel = kernel;
}

/** The kernel of this process's last prefill launch ("none" before the first). */
export function lastPrefillKernel(): "fa2" | "hopper" | "none" {
  const k = native().fi_prefill_last_kernel();
  return k === 1 ? "fa2" : k === 2 ? "hopper" : "none";
}

function kernelMode(op: string): number {
  let kernel = requestedKernel;
  if (kernel === undefined) {
    if (envKernel === null) envKernel = env("FLASHINFER_TS_PREFILL_KERNEL");
    const fromEnv = envKernel;
    if (fromEnv !== undefined && fromEnv !== "" && !(fromEnv in KERNEL_MODES)) {
      invalid(op, "FLASHINFER_TS_PREFILL_KERNEL", '"auto", "fa2" or "hopper"', fromEnv);
    }
    kernel = (fromEnv || "auto") as PrefillKernel;
  }
  return KERNEL_MODES[kernel];
}

const paramBuffer = new ArrayBuffer(264);
const view = new DataView(paramBuffer);
const paramBytes = new Uint8Array(paramBuffer);

/** Writes fi_prefill_params into a module-level buffer (valid until the next call) and returns it. */
export function prefillParams(p: LaunchParams): Uint8Array {
  const ptrs = [p.q, p.k, p.v, p.o, p.lse, p.qoIndptr, p.kvIndptr, p.kvIndices, p.kvLens, p.work, p.mask, p.maskIndptr];
  ptrs.forEach((x, i) => view.setBigUint64(i * 8, x, true));
  [
    p.qStrideN,
    p.qStrideH,
    p.oStrideN,
    p.oStrideH,
    p.kStrides.page,
    p.kStrides.n,
    p.kStrides.h,
    p.vStrides.page,
    p.vStrides.n,
    p.vStrides.h,
  ]
    .forEach((s, i) => view.setBigInt64(96 + i * 8, BigInt(s), true));
  const v = p.variant;
  const ints = [
    p.numWork,
    p.qoLen,
    p.kvLen,
    p.numQoHeads,
    p.numKvHeads,
    p.headDimQk,
    p.headDimVo,
    p.pageSize,
    p.paged ? 1 : 0,
    p.causal ? 1 : 0,
    v.windowLeft,
    v.posEncoding,
    DTYPE_CODE[p.dtype],
    p.tileQ,
  ];
  ints.forEach((x, i) => view.setInt32(176 + i * 4, x, true));
  view.setFloat32(232, v.smScale * p.kScale, true);
  view.setFloat32(236, v.logitsSoftCap, true);
  view.setFloat32(240, v.ropeRcpScale, true);
  view.setFloat32(244, v.ropeRcpTheta, true);
  view.setInt32(248, DTYPE_CODE[p.kvDtype], true);
  view.setFloat32(252, p.vScale, true);
  view.setBigUint64(256, p.queue, true);
  return paramBytes;
}

export function launchPrefill(op: string, p: LaunchParams, stream: StreamLike): void {
  const bytes = prefillParams(p);
  const mode = kernelMode(op);
  if (mode !== sentMode) {
    check(native().fi_prefill_set_kernel(mode), op);
    sentMode = mode;
  }
  check(native().fi_prefill_run(bytes, streamHandle(stream)), op);
}
