/**
 * Sorting-free sampling (FlashInfer's semantics) over rows of f32 probabilities or logits.
 *
 * The kernels never sort the vocabulary: a pivot search over the probabilities finds the admissible
 * set of top-k / top-p / min-p, and the token is drawn by an exponential race seeded by
 * Philox-4x32-10(seed, offset, row, token), so the same seed and offset always give the same tokens
 * (every path is deterministic; `deterministic` is accepted for FlashInfer compatibility).
 *
 * Semantics, per output row with weights w (the probabilities, or exp(logits / T)):
 * - top-k keeps tokens with fewer than k strictly larger weights (ties at the k-th are all kept);
 * - top-p keeps tokens whose strictly larger weights sum to less than p times the row's total;
 * - min-p keeps tokens with w >= minP * max(w);
 * - "joint" keeps what both top-k and top-p keep; "top_k_first" applies top-p to the top-k set
 *   renormalized (FlashInfer's default for topKTopP*).
 * Rows with NaN, a negative or infinite probability, or no admissible token get token 0 and
 * `valid` 0; a device `indices` entry out of range does the same without reading anything.
 * Per-row parameters (`Tensor`s or host arrays) are indexed by output row.
 * Tokens depend only on (input, parameters, seed, offset), never on the batch size or on how many
 * CTAs share a row; plain sampling from probabilities draws per group of 16 tokens when the rows are
 * 16-byte aligned, so the same seed can give a different (equally distributed) token on unaligned rows.
 */
import { expectShape, expectTensor, rows } from "../runtime/check.ts";
import { DTYPE_CODE } from "../runtime/dtype.ts";
import { invalid } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import { encodeSamplingParams, Filter, SamplingOp, type SamplingParams } from "./params.ts";

/** A per-row parameter: one number for every row, a host array (checked) or a device tensor. */
export type RowParam = number | ArrayLike<number> | Tensor;
/** A seed or offset: a host number, or a device tensor of one u64 read by the kernel (graph replay). */
export type RandomState = number | bigint | Tensor;
export type FilterApplyOrder = "top_k_first" | "joint";

export interface SamplingOptions {
  /** indices[i] is the input row that output row i samples from (host array or i32/i64 tensor). */
  indices?: ArrayLike<number> | Tensor;
  /** Accepted for FlashInfer compatibility: every path here is deterministic. */
  deterministic?: boolean;
  /** Philox seed; random per call when omitted. */
  seed?: RandomState;
  /** Philox offset; 0 when omitted. A tensor offset is advanced by `offsetStep` after the launch. */
  offset?: RandomState;
  /** Added to a device `offset` after each launch (default 1), so graph replays draw fresh tokens. */
  offsetStep?: number;
  /** Where to write the tokens: i32 [batch]. */
  out?: Tensor;
  /** Written when given: u8 [batch], 1 for rows that had a finite, non-empty admissible set. */
  valid?: Tensor;
  /** Test hook: i32 [batch, 2] receives the passes over the row and the pivot rounds taken. */
  debugRounds?: Tensor;
  /**
   * Diagnostic hook: i32 [batch, 16] receives the row's SM cycles at checkpoints: 0 setup, then the stats
   * pass (before its exchange), 1 stats, 2-11 rounds 1-10, 12 search, 13 race, 14 reduce, 15 end; with
   * a cluster, also 4 a scan's lane sums, 5-7 the first round's binning, exchange and scan, 8-10 a
   * later round's, 11 the gather to rank 0 (later marks overwrite earlier ones; 0 = not reached).
   */
  debugTrace?: Tensor;
  /** CTAs per row (1, 2, 4, 8 or 16; 16 falls back to 8 where a GPC cannot hold it); chosen from the batch size when omitted. */
  ctasPerRow?: number;
  stream?: StreamLike;
}

export interface TopKTopPOptions extends SamplingOptions {
  /** "top_k_first" (default, as FlashInfer) or "joint". */
  filterApplyOrder?: FilterApplyOrder;
}

export interface LogitsSamplingOptions extends TopKTopPOptions {
  /** Softmax temperature applied to the logits first (scalar or per row); default 1. */
  temperature?: RowParam;
}

/** Host arrays to copy to the device once every argument has been checked (no native call before). */
interface Uploads {
  temps: Tensor[];
  pending: (() => void)[];
}

function newUploads(): Uploads {
  return { temps: [], pending: [] };
}

function flush(up: Uploads): void {
  for (const f of up.pending) f();
  up.pending.length = 0;
}

function isArrayLike(v: unknown): v is ArrayLike<number> {
  return typeof v === "object" && v !== null && typeof (v as ArrayLike<number>).length === "number" &&
    !(v instanceof Tensor);
}

/** The [batch, d] input as rows, f32, last dimension contiguous. */
function inputRows(op: string, arg: string, t: unknown): { rows: number; d: number; stride: number; t: Tensor } {
  expectTensor(op, arg, t, ["f32"]);
  if (t.rank !== 2) invalid(op, arg, "2-dimensional [batch, vocab]", `=shape [${t.shape.join(", ")}]`);
  const r = rows(op, arg, t);
  if (r.cols < 1) invalid(op, arg, "at least 1 wide in its vocabulary dimension", r.cols);
  if (r.rows < 1) invalid(op, arg, "at least 1 row", r.rows);
  return { rows: r.rows, d: r.cols, stride: r.stride, t };
}

function indicesOf(
  op: string,
  options: SamplingOptions,
  rowsIn: number,
  up: Uploads,
): { batch?: number; ptr?: bigint; dtype: number } {
  const ix = options.indices;
  if (ix === undefined) return { dtype: DTYPE_CODE.i32 };
  if (ix instanceof Tensor) {
    expectTensor(op, "indices", ix, ["i32", "i64"]);
    if (ix.rank !== 1 || !ix.isContiguous()) {
      invalid(op, "indices", "a contiguous 1-dimensional tensor", `=shape [${ix.shape.join(", ")}]`);
    }
    return { batch: ix.shape[0], ptr: ix.ptr, dtype: DTYPE_CODE[ix.dtype] };
  }
  if (!isArrayLike(ix)) invalid(op, "indices", "a host array or an i32/i64 tensor", ix);
  const host = new Int32Array(ix.length);
  for (let i = 0; i < ix.length; i++) {
    const v = ix[i];
    if (!Number.isInteger(v) || v < 0 || v >= rowsIn) invalid(op, `indices[${i}]`, `an integer in [0, ${rowsIn})`, v);
    host[i] = v;
  }
  const r: { batch?: number; ptr?: bigint; dtype: number } = { batch: host.length, dtype: DTYPE_CODE.i32 };
  up.pending.push(() => {
    const t = Tensor.fromRaw(host, [host.length], "i32");
    up.temps.push(t);
    r.ptr = t.ptr;
  });
  return r;
}

type ParamKind = "k" | "p" | "minP" | "temperature";
const PARAM_RULES: Record<ParamKind, { dtype: "i32" | "f32"; ok: (v: number) => boolean; expectation: string }> = {
  k: { dtype: "i32", ok: (v) => Number.isInteger(v) && v >= 1 && v <= 0x7fffffff, expectation: "an integer >= 1" },
  p: { dtype: "f32", ok: (v) => v > 0 && v <= 1, expectation: "in (0, 1]" },
  minP: { dtype: "f32", ok: (v) => v >= 0 && v <= 1, expectation: "in [0, 1]" },
  temperature: { dtype: "f32", ok: (v) => v > 0 && Number.isFinite(v), expectation: "a positive finite number" },
};

/** A scalar (returned as `value`) or a per-row device array (returned as `ptr`). */
function rowParam(
  op: string,
  arg: string,
  kind: ParamKind,
  v: unknown,
  batch: number,
  up: Uploads,
): { value: number; ptr?: bigint } {
  const rule = PARAM_RULES[kind];
  if (typeof v === "number") {
    if (!rule.ok(v)) invalid(op, arg, rule.expectation, v);
    return { value: v };
  }
  if (v instanceof Tensor) {
    expectTensor(op, arg, v, [rule.dtype]);
    expectShape(op, arg, v, [batch]);
    if (!v.isContiguous()) invalid(op, arg, "contiguous", "=a strided view");
    return { value: kind === "k" ? 1 : 1, ptr: v.ptr };
  }
  if (!isArrayLike(v)) invalid(op, arg, `a number, a host array or a ${rule.dtype} tensor`, v);
  if (v.length !== batch) invalid(op, arg, `of length ${batch} (one per output row)`, `=${v.length}`);
  for (let i = 0; i < v.length; i++) if (!rule.ok(v[i])) invalid(op, `${arg}[${i}]`, rule.expectation, v[i]);
  const host = Array.from(v);
  const r: { value: number; ptr?: bigint } = { value: 1 };
  up.pending.push(() => {
    const t = rule.dtype === "i32"
      ? Tensor.fromRaw(Int32Array.from(host), [batch], "i32")
      : Tensor.fromArray(host, [batch], "f32");
    up.temps.push(t);
    r.ptr = t.ptr;
  });
  return r;
}

function randomState(
  op: string,
  arg: string,
  v: RandomState | undefined,
  fallback: () => bigint,
): { value: bigint; ptr?: bigint } {
  if (v === undefined) return { value: fallback() };
  if (typeof v === "bigint") {
    if (v < 0n || v >= 1n << 64n) invalid(op, arg, "in [0, 2^64)", v);
    return { value: v };
  }
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) invalid(op, arg, "a non-negative safe integer", v);
    return { value: BigInt(v) };
  }
  if (v instanceof Tensor) {
    expectTensor(op, arg, v, ["i64"]);
    if (v.numel !== 1) invalid(op, arg, "a tensor of one element", `=shape [${v.shape.join(", ")}]`);
    return { value: 0n, ptr: v.ptr };
  }
  return invalid(op, arg, "a number, a bigint or an i64 tensor of one element", v);
}

const randomSeed = () =>
  BigInt(Math.floor(Math.random() * 2 ** 32)) << 20n ^ BigInt(Math.floor(Math.random() * 2 ** 32));

function checkOutput(op: string, arg: string, t: unknown, shape: number[], dtype: "i32" | "u8" | "f32"): void {
  if (t === undefined) return;
  expectTensor(op, arg, t, [dtype]);
  expectShape(op, arg, t, shape);
  if (!t.isContiguous()) invalid(op, arg, "contiguous", "=a strided view");
}

function outputTensor(
  op: string,
  arg: string,
  t: Tensor | undefined,
  shape: number[],
  dtype: "i32" | "u8" | "f32",
): Tensor {
  checkOutput(op, arg, t, shape, dtype);
  return t ?? Tensor.empty(shape, dtype);
}

export interface Filters {
  topK?: RowParam;
  topP?: RowParam;
  minP?: RowParam;
  order?: FilterApplyOrder;
}

/** Validates and launches one sampling kernel. Exported for the LogitsPipe; not part of the API. */
export function runSampler(
  op: string,
  input: unknown,
  logits: boolean,
  filters: Filters,
  options: LogitsSamplingOptions,
): Tensor {
  const x = inputRows(op, logits ? "logits" : "probs", input);
  const up = newUploads();
  try {
    if (options.deterministic !== undefined && typeof options.deterministic !== "boolean") {
      invalid(op, "deterministic", "a boolean", options.deterministic);
    }
    const ix = indicesOf(op, options, x.rows, up);
    const batch = ix.batch ?? x.rows;
    let filter = 0;
    const k = filters.topK === undefined
      ? { value: 1 }
      : (filter |= Filter.topK, rowParam(op, "topK", "k", filters.topK, batch, up));
    const p = filters.topP === undefined
      ? { value: 1 }
      : (filter |= Filter.topP, rowParam(op, "topP", "p", filters.topP, batch, up));
    const m = filters.minP === undefined
      ? { value: 0 }
      : (filter |= Filter.minP, rowParam(op, "minP", "minP", filters.minP, batch, up));
    const order = filters.order ?? "top_k_first";
    if (order !== "top_k_first" && order !== "joint") {
      invalid(op, "filterApplyOrder", '"top_k_first" or "joint"', order);
    }
    if (order === "top_k_first") filter |= Filter.topKFirst;
    if (!(filter & (Filter.topK | Filter.topP | Filter.minP))) filter = 0;
    const t = logits && options.temperature !== undefined
      ? rowParam(op, "temperature", "temperature", options.temperature, batch, up)
      : { value: 1 };
    const seed = randomState(op, "seed", options.seed, randomSeed);
    const offset = randomState(op, "offset", options.offset, () => 0n);
    const step = options.offsetStep ?? 1;
    if (!Number.isSafeInteger(step) || step < 0) invalid(op, "offsetStep", "a non-negative integer", step);
    const cluster = options.ctasPerRow ?? 0;
    if (![0, 1, 2, 4, 8, 16].includes(cluster)) invalid(op, "ctasPerRow", "1, 2, 4, 8 or 16", cluster);
    checkOutput(op, "out", options.out, [batch], "i32");
    checkOutput(op, "valid", options.valid, [batch], "u8");
    checkOutput(op, "debugRounds", options.debugRounds, [batch, 2], "i32");
    checkOutput(op, "debugTrace", options.debugTrace, [batch, 16], "i32");
    flush(up);
    const out = outputTensor(op, "out", options.out, [batch], "i32");
    const valid = options.valid, dbg = options.debugRounds;
    launch(op, {
      input: x.t.ptr,
      output: out.ptr,
      valid: valid?.ptr,
      indices: ix.ptr,
      topKArr: k.ptr,
      topPArr: p.ptr,
      minPArr: m.ptr,
      temperatureArr: t.ptr,
      seedPtr: seed.ptr,
      offsetPtr: offset.ptr,
      debugRounds: dbg?.ptr,
      debugTrace: options.debugTrace?.ptr,
      inStride: x.stride,
      outStride: 0,
      batch,
      d: x.d,
      rowsIn: x.rows,
      op: SamplingOp.sample,
      filter,
      inputLogits: logits,
      indicesDtype: ix.dtype,
      topK: k.value,
      topP: p.value,
      minP: m.value,
      temperature: t.value,
      seed: seed.value,
      offset: offset.value,
      offsetStep: offset.ptr === undefined ? 0n : BigInt(step),
      cluster,
    }, options.stream);
    return out;
  } finally {
    up.temps.forEach((t) => t.dispose());
  }
}

function launch(op: string, p: SamplingParams, stream: StreamLike): void {
  check(native().fi_sampling_run(encodeSamplingParams(p), streamHandle(stream)), op);
}

/** Draws one token per row from probabilities (rows need not be normalized). */
export function samplingFromProbs(probs: Tensor, options: SamplingOptions = {}): Tensor {
  return runSampler("samplingFromProbs", probs, false, {}, options);
}

/** Draws one token per row from logits by the Gumbel-max trick (no softmax pass). */
export function samplingFromLogits(logits: Tensor, options: SamplingOptions = {}): Tensor {
  return runSampler("samplingFromLogits", logits, true, {}, options);
}

export function topKSamplingFromProbs(probs: Tensor, topK: RowParam, options: SamplingOptions = {}): Tensor {
  return runSampler("topKSamplingFromProbs", probs, false, { topK }, options);
}

export function topPSamplingFromProbs(probs: Tensor, topP: RowParam, options: SamplingOptions = {}): Tensor {
  return runSampler("topPSamplingFromProbs", probs, false, { topP }, options);
}

export function minPSamplingFromProbs(probs: Tensor, minP: RowParam, options: SamplingOptions = {}): Tensor {
  return runSampler("minPSamplingFromProbs", probs, false, { minP }, options);
}

export function topKTopPSamplingFromProbs(
  probs: Tensor,
  topK: RowParam,
  topP: RowParam,
  options: TopKTopPOptions = {},
): Tensor {
  return runSampler(
    "topKTopPSamplingFromProbs",
    probs,
    false,
    { topK, topP, order: options.filterApplyOrder },
    options,
  );
}

/** softmax(logits / temperature), then top-k and top-p, fused in one kernel. */
export function topKTopPSamplingFromLogits(
  logits: Tensor,
  topK: RowParam,
  topP: RowParam,
  options: LogitsSamplingOptions = {},
): Tensor {
  return runSampler(
    "topKTopPSamplingFromLogits",
    logits,
    true,
    { topK, topP, order: options.filterApplyOrder },
    options,
  );
}

export interface RowOpOptions {
  /** Where to write: f32 of the input's shape. May be the input itself. */
  out?: Tensor;
  /** Written when given: u8 [rows], 0 for rows with NaN, negative or infinite entries or no mass. */
  valid?: Tensor;
  debugRounds?: Tensor;
  ctasPerRow?: number;
  stream?: StreamLike;
}

/** Validates and launches a row-to-row op (renorm, mask, softmax). */
export function runRowOp(
  op: string,
  arg: string,
  input: unknown,
  kind: number,
  logits: boolean,
  filter: number,
  param: { kind: ParamKind; arg: string; value: unknown } | undefined,
  options: RowOpOptions & { temperature?: RowParam },
): Tensor {
  const x = inputRows(op, arg, input);
  const up = newUploads();
  try {
    const q = param ? rowParam(op, param.arg, param.kind, param.value, x.rows, up) : { value: 1 };
    const t = options.temperature !== undefined
      ? rowParam(op, "temperature", "temperature", options.temperature, x.rows, up)
      : { value: 1 };
    const cluster = options.ctasPerRow ?? 0;
    if (![0, 1, 2, 4, 8, 16].includes(cluster)) invalid(op, "ctasPerRow", "1, 2, 4, 8 or 16", cluster);
    if (options.out !== undefined) {
      expectTensor(op, "out", options.out, ["f32"]);
      expectShape(op, "out", options.out, x.t.shape);
      rows(op, "out", options.out);
    }
    checkOutput(op, "valid", options.valid, [x.rows], "u8");
    checkOutput(op, "debugRounds", options.debugRounds, [x.rows, 2], "i32");
    flush(up);
    const out = options.out ?? Tensor.empty([x.rows, x.d], "f32");
    const o = rows(op, "out", out);
    const valid = options.valid, dbg = options.debugRounds;
    const isK = param?.kind === "k";
    launch(op, {
      input: x.t.ptr,
      output: out.ptr,
      valid: valid?.ptr,
      topKArr: isK ? q.ptr : undefined,
      topPArr: isK ? undefined : q.ptr,
      temperatureArr: t.ptr,
      debugRounds: dbg?.ptr,
      inStride: x.stride,
      outStride: o.stride,
      batch: x.rows,
      d: x.d,
      rowsIn: x.rows,
      op: kind,
      filter,
      inputLogits: logits,
      indicesDtype: DTYPE_CODE.i32,
      topK: isK ? q.value : 1,
      topP: isK ? 1 : q.value,
      minP: 0,
      temperature: t.value,
      seed: 0n,
      offset: 0n,
      offsetStep: 0n,
      cluster,
    }, options.stream);
    return out;
  } finally {
    up.temps.forEach((t) => t.dispose());
  }
}

export interface SoftmaxOptions extends RowOpOptions {
  /** Divides the logits first: a scalar or one per row. Default 1. */
  temperature?: RowParam;
}

/** softmax(logits / temperature) over each row, in f32. */
export function softmax(logits: Tensor, options: SoftmaxOptions = {}): Tensor {
  return runRowOp("softmax", "logits", logits, SamplingOp.softmax, true, 0, undefined, options);
}

/** Keeps the top-k probabilities of each row (ties at the k-th kept), renormalized; others 0. */
export function topKRenormProbs(probs: Tensor, topK: RowParam, options: RowOpOptions = {}): Tensor {
  return runRowOp("topKRenormProbs", "probs", probs, SamplingOp.renorm, false, Filter.topK, {
    kind: "k",
    arg: "topK",
    value: topK,
  }, options);
}

/** Keeps the top-p nucleus of each row, renormalized; others 0. */
export function topPRenormProbs(probs: Tensor, topP: RowParam, options: RowOpOptions = {}): Tensor {
  return runRowOp("topPRenormProbs", "probs", probs, SamplingOp.renorm, false, Filter.topP, {
    kind: "p",
    arg: "topP",
    value: topP,
  }, options);
}

/** Keeps the top-k logits of each row and sets the rest to -inf. */
export function topKMaskLogits(logits: Tensor, topK: RowParam, options: RowOpOptions = {}): Tensor {
  return runRowOp("topKMaskLogits", "logits", logits, SamplingOp.mask, true, Filter.topK, {
    kind: "k",
    arg: "topK",
    value: topK,
  }, options);
}

export interface ChainSpeculativeOptions {
  seed?: RandomState;
  offset?: RandomState;
  offsetStep?: number;
  /** i32 [batch], added to (FlashInfer's output_accepted_token_num); zeros when omitted. */
  acceptedTokenNum?: Tensor;
  /** i32 [batch], added to (FlashInfer's output_emitted_draft_token_num); zeros when omitted. */
  emittedDraftTokenNum?: Tensor;
  out?: Tensor;
  deterministic?: boolean;
  stream?: StreamLike;
}

export interface ChainSpeculativeResult {
  /** i32 [batch, n + 1]: accepted drafts, then the replacement or bonus token, then -1. */
  outputTokenIds: Tensor;
  acceptedTokenNum: Tensor;
  emittedDraftTokenNum: Tensor;
}

/** Chain speculative sampling with FlashInfer's semantics. */
export function chainSpeculativeSampling(
  draftProbs: Tensor,
  draftTokenIds: Tensor,
  targetProbs: Tensor,
  options: ChainSpeculativeOptions = {},
): ChainSpeculativeResult {
  const op = "chainSpeculativeSampling";
  expectTensor(op, "draftProbs", draftProbs, ["f32"]);
  expectTensor(op, "draftTokenIds", draftTokenIds, ["i32"]);
  expectTensor(op, "targetProbs", targetProbs, ["f32"]);
  if (draftProbs.rank !== 3) {
    invalid(op, "draftProbs", "3-dimensional [batch, n, vocab]", `=shape [${draftProbs.shape.join(", ")}]`);
  }
  const [batch, n, d] = draftProbs.shape;
  if (d < 1) invalid(op, "draftProbs", "at least 1 wide in its vocabulary dimension", d);
  expectShape(op, "draftTokenIds", draftTokenIds, [batch, n]);
  expectShape(op, "targetProbs", targetProbs, [batch, n + 1, d]);
  for (
    const [name, t] of [["draftProbs", draftProbs], ["draftTokenIds", draftTokenIds], [
      "targetProbs",
      targetProbs,
    ]] as const
  ) {
    if (!t.isContiguous()) invalid(op, name, "contiguous", "=a strided view");
  }
  const seed = randomState(op, "seed", options.seed, randomSeed);
  const offset = randomState(op, "offset", options.offset, () => 0n);
  const step = options.offsetStep ?? 1;
  if (!Number.isSafeInteger(step) || step < 0) invalid(op, "offsetStep", "a non-negative integer", step);
  checkOutput(op, "out", options.out, [batch, n + 1], "i32");
  checkOutput(op, "acceptedTokenNum", options.acceptedTokenNum, [batch], "i32");
  checkOutput(op, "emittedDraftTokenNum", options.emittedDraftTokenNum, [batch], "i32");
  const out = outputTensor(op, "out", options.out, [batch, n + 1], "i32");
  const counter = (arg: string, t: Tensor | undefined) => {
    if (t !== undefined) return outputTensor(op, arg, t, [batch], "i32");
    return Tensor.empty([batch], "i32").fillBytes(0, options.stream);
  };
  const accepted = counter("acceptedTokenNum", options.acceptedTokenNum);
  const emitted = counter("emittedDraftTokenNum", options.emittedDraftTokenNum);
  check(
    native().fi_chain_speculative_sampling(
      draftProbs.ptr,
      draftTokenIds.ptr,
      targetProbs.ptr,
      out.ptr,
      accepted.ptr,
      emitted.ptr,
      batch,
      n,
      d,
      seed.value,
      offset.value,
      seed.ptr ?? 0n,
      offset.ptr ?? 0n,
      offset.ptr === undefined ? 0n : BigInt(step),
      streamHandle(options.stream),
    ),
    op,
  );
  return { outputTokenIds: out, acceptedTokenNum: accepted, emittedDraftTokenNum: emitted };
}
