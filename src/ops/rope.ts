/**
 * Rotary position embedding (FlashInfer's apply_rope family) over q [nnz, Hq, D] and k [nnz, Hk, D].
 * Positions come from indptr + offsets (token i of request b sits at offsets[b] + i - indptr[b]),
 * from per-token position ids, or index a precomputed cos/sin cache. NeoX style (the default) pairs
 * element i with i + rotaryDim / 2; `interleave` pairs 2j with 2j + 1. Dimensions past rotaryDim
 * pass through unchanged.
 */
import {
  expectFinite,
  expectPositive,
  expectRank,
  expectSameDtype,
  expectShape,
  expectTensor,
  vectorWidth,
} from "../runtime/check.ts";
import { type DType, DTYPE_CODE } from "../runtime/dtype.ts";
import { invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";

const HALF: readonly DType[] = ["f16", "bf16"];

export interface RopeOptions {
  /** Leading dimensions of each head to rotate (even, at most the head dim). Default: the head dim. */
  rotaryDim?: number;
  /** Pair (2j, 2j + 1) instead of NeoX's (i, i + rotaryDim / 2). Default false. */
  interleave?: boolean;
  /** Positions are divided by this (linear scaling). Default 1 (8 for Llama 3.1). */
  ropeScale?: number;
  /** The base of the frequencies. Default 1e4 (5e5 for Llama 3.1). */
  ropeTheta?: number;
  /** Outputs, allocated when omitted (ignored by the in-place variants). */
  qOut?: Tensor;
  kOut?: Tensor;
  stream?: StreamLike;
}

export interface Llama31RopeOptions extends RopeOptions {
  lowFreqFactor?: number;
  highFreqFactor?: number;
  oldContextLen?: number;
}

/** The rotated q and k (new tensors unless qOut / kOut were given). */
export interface RopeResult {
  q: Tensor;
  k: Tensor;
}

type Positions =
  | { mode: 0; indptr: Tensor; offsets: Tensor }
  | { mode: 1; posIds: Tensor }
  | { mode: 1; posIds: Tensor; cosSin: Tensor };

interface Frequencies {
  mode: 0 | 1 | 2;
  scale: number;
  theta: number;
  low: number;
  high: number;
  oldContextLen: number;
}

// fi_rope_params (cuda/include/flashinfer_ts.h), written through typed views at its field offsets.
const params = new ArrayBuffer(200);
const paramBytes = new Uint8Array(params);
const paramPtrs = new BigUint64Array(params, 0, 8);
const paramStrides = new BigInt64Array(params, 64, 8);
const paramInts = new Int32Array(params, 128, 12);
const paramFloats = new Float32Array(params, 176, 6);

/** Checks q/k as [nnz, H, D] (or [nnz, H * headSize] when headSize is given) and returns 3-D shapes. */
function heads(
  op: string,
  arg: string,
  t: Tensor,
  headSize?: number,
): { heads: number; dim: number; sn: number; sh: number } {
  expectTensor(op, arg, t, HALF);
  if (headSize !== undefined && t.rank === 2) {
    if (t.shape[1] % headSize !== 0) {
      invalid(op, arg, `a multiple of headSize ${headSize} wide`, `=shape ${show(t.shape)}`);
    }
    if (t.strides[1] !== 1) invalid(op, arg, "contiguous in its last dimension", `=strides ${show(t.strides)}`);
    return { heads: t.shape[1] / headSize, dim: headSize, sn: t.strides[0], sh: headSize };
  }
  expectRank(op, arg, t, 3);
  if (t.strides[2] !== 1 && t.shape[2] > 1) {
    invalid(op, arg, "contiguous in its last dimension", `=strides ${show(t.strides)}`);
  }
  return { heads: t.shape[1], dim: t.shape[2], sn: t.strides[0], sh: t.strides[1] };
}

function launch(
  op: string,
  q: Tensor,
  k: Tensor,
  inplace: boolean,
  pos: Positions,
  freq: Frequencies,
  options: RopeOptions,
  headSize?: number,
): RopeResult {
  const qs = heads(op, "q", q, headSize);
  const ks = heads(op, "k", k, headSize);
  expectSameDtype(op, "k", k, q, "q");
  const nnz = q.shape[0];
  if (k.shape[0] !== nnz) invalid(op, "k", `of ${nnz} tokens like 'q'`, `=shape ${show(k.shape)}`);
  if (ks.dim !== qs.dim) invalid(op, "k", `of head dim ${qs.dim} like 'q'`, `=shape ${show(k.shape)}`);
  const rotaryDim = pos.mode === 1 && "cosSin" in pos ? pos.cosSin.shape[1] : options.rotaryDim ?? qs.dim;
  if (!Number.isInteger(rotaryDim) || rotaryDim <= 0 || rotaryDim % 2 !== 0 || rotaryDim > qs.dim) {
    invalid(op, "rotaryDim", `an even integer in [2, ${qs.dim}]`, rotaryDim);
  }
  const interleave = options.interleave ?? false;

  let batch = 0, posDtype = DTYPE_CODE.i32, cacheRows = 0;
  let indptr = 0n, offsets = 0n, posIds = 0n, cosSin = 0n;
  if (pos.mode === 0) {
    expectTensor(op, "indptr", pos.indptr, ["i32"]);
    expectTensor(op, "offsets", pos.offsets, ["i32"]);
    expectRank(op, "indptr", pos.indptr, 1);
    batch = pos.indptr.shape[0] - 1;
    if (batch < 1) invalid(op, "indptr", "of length batch + 1 >= 2", `=shape ${show(pos.indptr.shape)}`);
    expectShape(op, "offsets", pos.offsets, [batch]);
    indptr = pos.indptr.ptr;
    offsets = pos.offsets.ptr;
  } else {
    expectTensor(op, "positions", pos.posIds, ["i32", "i64"]);
    expectShape(op, "positions", pos.posIds, [nnz]);
    posDtype = DTYPE_CODE[pos.posIds.dtype];
    posIds = pos.posIds.ptr;
    if ("cosSin" in pos) {
      expectTensor(op, "cosSinCache", pos.cosSin, ["f32"]);
      expectRank(op, "cosSinCache", pos.cosSin, 2);
      if (!pos.cosSin.isContiguous()) invalid(op, "cosSinCache", "contiguous", `=strides ${show(pos.cosSin.strides)}`);
      cacheRows = pos.cosSin.shape[0];
      if (cacheRows < 1) invalid(op, "cosSinCache", "at least one row", `=shape ${show(pos.cosSin.shape)}`);
      cosSin = pos.cosSin.ptr;
    }
  }
  if (freq.mode !== 2) {
    expectPositive(op, "ropeScale", freq.scale);
    expectPositive(op, "ropeTheta", freq.theta);
    if (freq.mode === 1) {
      expectPositive(op, "lowFreqFactor", freq.low);
      expectPositive(op, "highFreqFactor", freq.high);
      expectFinite(op, "oldContextLen", freq.oldContextLen, 1);
      if (freq.high <= freq.low) invalid(op, "highFreqFactor", `greater than lowFreqFactor (${freq.low})`, freq.high);
    }
  }

  let qOut = q, kOut = k;
  if (!inplace) {
    qOut = options.qOut ?? Tensor.empty(q.shape, q.dtype);
    kOut = options.kOut ?? Tensor.empty(k.shape, k.dtype);
    expectTensor(op, "qOut", qOut);
    expectTensor(op, "kOut", kOut);
    expectSameDtype(op, "qOut", qOut, q, "q");
    expectSameDtype(op, "kOut", kOut, k, "k");
    expectShape(op, "qOut", qOut, q.shape);
    expectShape(op, "kOut", kOut, k.shape);
  }
  const qo = heads(op, "qOut", qOut, headSize), ko = heads(op, "kOut", kOut, headSize);
  const strides = [qs.sn, qs.sh, ks.sn, ks.sh, qo.sn, qo.sh, ko.sn, ko.sh];
  const ptrs = [q.ptr, k.ptr, qOut.ptr, kOut.ptr];
  if (interleave && vectorWidth(2, ptrs, [rotaryDim, ...strides]) < 2) {
    invalid(op, "q", "4-byte aligned with even strides for interleaved rotation", `=strides ${show(strides)}`);
  }

  paramPtrs.set([ptrs[0], ptrs[1], ptrs[2], ptrs[3], indptr, offsets, posIds, cosSin]);
  for (let i = 0; i < 8; i++) paramStrides[i] = BigInt(strides[i]);
  paramInts.set([
    nnz,
    batch,
    qs.heads,
    ks.heads,
    qs.dim,
    rotaryDim,
    interleave ? 1 : 0,
    pos.mode,
    posDtype,
    freq.mode,
    DTYPE_CODE[q.dtype],
    cacheRows,
  ]);
  paramFloats.set([freq.scale, freq.theta, freq.low, freq.high, freq.oldContextLen, 0]);
  check(native().fi_apply_rope(paramBytes, streamHandle(options.stream)), op);
  return { q: qOut, k: kOut };
}

function standard(o: RopeOptions): Frequencies {
  return { mode: 0, scale: o.ropeScale ?? 1, theta: o.ropeTheta ?? 1e4, low: 1, high: 4, oldContextLen: 8192 };
}

function llama31(o: Llama31RopeOptions): Frequencies {
  return {
    mode: 1,
    scale: o.ropeScale ?? 8,
    theta: o.ropeTheta ?? 5e5,
    low: o.lowFreqFactor ?? 1,
    high: o.highFreqFactor ?? 4,
    oldContextLen: o.oldContextLen ?? 8192,
  };
}

/** RoPE with positions from indptr [batch + 1] and offsets [batch] (i32 device tensors). */
export function applyRope(
  q: Tensor,
  k: Tensor,
  indptr: Tensor,
  offsets: Tensor,
  options: RopeOptions = {},
): RopeResult {
  return launch("applyRope", q, k, false, { mode: 0, indptr, offsets }, standard(options), options);
}
export function applyRopeInplace(
  q: Tensor,
  k: Tensor,
  indptr: Tensor,
  offsets: Tensor,
  options: RopeOptions = {},
): void {
  launch("applyRopeInplace", q, k, true, { mode: 0, indptr, offsets }, standard(options), options);
}
/** RoPE with one position id per token (i32 or i64 [nnz]). */
export function applyRopePosIds(q: Tensor, k: Tensor, posIds: Tensor, options: RopeOptions = {}): RopeResult {
  return launch("applyRopePosIds", q, k, false, { mode: 1, posIds }, standard(options), options);
}
export function applyRopePosIdsInplace(q: Tensor, k: Tensor, posIds: Tensor, options: RopeOptions = {}): void {
  launch("applyRopePosIdsInplace", q, k, true, { mode: 1, posIds }, standard(options), options);
}
/** Llama 3.1's RoPE (frequency smoothing; defaults scale 8, theta 5e5, factors 1 and 4, context 8192). */
export function applyLlama31Rope(
  q: Tensor,
  k: Tensor,
  indptr: Tensor,
  offsets: Tensor,
  options: Llama31RopeOptions = {},
): RopeResult {
  return launch("applyLlama31Rope", q, k, false, { mode: 0, indptr, offsets }, llama31(options), options);
}
export function applyLlama31RopeInplace(
  q: Tensor,
  k: Tensor,
  indptr: Tensor,
  offsets: Tensor,
  options: Llama31RopeOptions = {},
): void {
  launch("applyLlama31RopeInplace", q, k, true, { mode: 0, indptr, offsets }, llama31(options), options);
}
export function applyLlama31RopePosIds(
  q: Tensor,
  k: Tensor,
  posIds: Tensor,
  options: Llama31RopeOptions = {},
): RopeResult {
  return launch("applyLlama31RopePosIds", q, k, false, { mode: 1, posIds }, llama31(options), options);
}
export function applyLlama31RopePosIdsInplace(
  q: Tensor,
  k: Tensor,
  posIds: Tensor,
  options: Llama31RopeOptions = {},
): void {
  launch("applyLlama31RopePosIdsInplace", q, k, true, { mode: 1, posIds }, llama31(options), options);
}

export interface CosSinCacheOptions {
  /** NeoX pairing (i, i + rotaryDim / 2) when true (the default); interleaved when false. */
  isNeox?: boolean;
  queryOut?: Tensor;
  keyOut?: Tensor;
  stream?: StreamLike;
}

const CACHE_FREQ: Frequencies = { mode: 2, scale: 1, theta: 1, low: 1, high: 4, oldContextLen: 1 };

/**
 * vLLM-style RoPE from a cos/sin cache [maxPos, rotaryDim] (f32, cos half then sin half), with
 * positions [nnz] (i32 or i64). query and key are [nnz, H * headSize] or [nnz, H, headSize].
 * Positions outside the cache are clamped to its first or last row.
 */
export function applyRopeWithCosSinCache(
  positions: Tensor,
  query: Tensor,
  key: Tensor,
  headSize: number,
  cosSinCache: Tensor,
  options: CosSinCacheOptions = {},
): { query: Tensor; key: Tensor } {
  const op = "applyRopeWithCosSinCache";
  if (!Number.isInteger(headSize) || headSize <= 0) invalid(op, "headSize", "a positive integer", headSize);
  const r = launch(op, query, key, false, { mode: 1, posIds: positions, cosSin: cosSinCache }, CACHE_FREQ, {
    interleave: !(options.isNeox ?? true),
    qOut: options.queryOut,
    kOut: options.keyOut,
    stream: options.stream,
  }, headSize);
  return { query: r.q, key: r.k };
}

export function applyRopeWithCosSinCacheInplace(
  positions: Tensor,
  query: Tensor,
  key: Tensor,
  headSize: number,
  cosSinCache: Tensor,
  options: Omit<CosSinCacheOptions, "queryOut" | "keyOut"> = {},
): void {
  const op = "applyRopeWithCosSinCacheInplace";
  if (!Number.isInteger(headSize) || headSize <= 0) invalid(op, "headSize", "a positive integer", headSize);
  launch(op, query, key, true, { mode: 1, posIds: positions, cosSin: cosSinCache }, CACHE_FREQ, {
    interleave: !(options.isNeox ?? true),
    stream: options.stream,
  }, headSize);
}
