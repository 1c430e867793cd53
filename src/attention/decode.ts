/**
 * Decode attention (one query token per request) over a paged KV cache, FlashInfer's
 * BatchDecodeWithPagedKVCacheWrapper: plan() once per step from host Int32Arrays (no device sync:
 * the tables go into a pinned buffer and one async copy), run() once per layer (no host sync, no
 * allocation unless outputs are omitted). LSE is base 2, as FlashInfer's.
 */
import { expectRank, expectShape, expectTensor } from "../runtime/check.ts";
import { Device } from "../runtime/device.ts";
import { DTYPE_CODE, type DType } from "../runtime/dtype.ts";
import { FlashInferError, invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { PinnedBuffer } from "../runtime/memory.ts";
import { Event, type StreamLike, streamHandle } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import { Workspace } from "../runtime/workspace.ts";
import { requireCompiledDecode } from "./compiled.ts";
import { checkPageTable, type KvCacheView, kvCacheView, type KvLayout, type PagedKvCache } from "./paged_kv_cache.ts";
import { ITEM_INTS, scheduleDecode } from "./scheduler.ts";
import { alibiSlopes, resolveVariant, type ResolvedVariant, type VariantOptions } from "./variants.ts";

/** Resident decode CTAs per SM (shared memory bound; see decode_smem_bytes in decode.cuh). */
export function decodeCtasPerSm(headDim: number): number {
  return headDim <= 128 ? 2 : 1;
}

export interface DecodeWrapperOptions {
  /** "NHD" (default) or "HND". */
  kvLayout?: KvLayout;
  /** Fixed, padded tables and grid so that a captured run() replays for any plan within the maxima. */
  useCudaGraph?: boolean;
  /** CUDA-graph mode: the largest batch a plan may have. */
  maxBatchSize?: number;
  /** CUDA-graph mode: the most pages (indptr[B]) a plan may reference. */
  maxPages?: number;
  /** SMs to schedule for (default: the current device's). */
  numSms?: number;
}

export interface DecodePlanOptions extends VariantOptions {
  /** q (and output) dtype: f16 (FlashInfer's default) or bf16. */
  qDtype?: DType;
  /** KV dtype: defaults to qDtype; e4m3 / e5m2 for fp8 KV (run takes kScale / vScale). */
  kvDtype?: DType;
  /** Split every request into chunks of this many tokens (rounded up to 64). */
  fixedSplitSize?: number;
  /** Never split a request's KV. */
  disableSplitKv?: boolean;
  /**
   * Check every page index on the host (default true): a bad one is a clear error at plan/run. With
   * false the O(pages) scan is skipped and the kernel reads a page outside the cache as zeros.
   */
  checkIndices?: boolean;
  stream?: StreamLike;
}

export interface DecodeRunOptions {
  out?: Tensor;
  /** [batch, numQoHeads] float32, base 2. */
  lse?: Tensor;
  /** Allocate and return the LSE when no lse tensor is given. */
  returnLse?: boolean;
  /** fp8 KV: K and V dequantization scales. */
  kScale?: number;
  vScale?: number;
  stream?: StreamLike;
}

interface Plan {
  batch: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  qDtype: DType;
  kvDtype: DType;
  variant: ResolvedVariant;
  gridItems: number;
  mergeRows: number;
  runMerge: boolean;
  maxIndex: number;
  layout: WorkspaceLayout;
  splitSize: number;
  numItems: number;
}

interface WorkspaceLayout {
  items: number;
  mergeTable: number;
  alibi: number;
  indices: number;
  intBytes: number;
  tmpO: number;
  tmpLse: number;
  total: number;
}

const align256 = (n: number) => Math.ceil(n / 256) * 256;

function layoutFor(itemCap: number, batchCap: number, pageCap: number, heads: number, headDim: number): WorkspaceLayout {
  const items = 0;
  const mergeTable = align256(items + itemCap * ITEM_INTS * 4);
  const alibi = align256(mergeTable + batchCap * 8);
  const indices = align256(alibi + heads * 4);
  const intBytes = align256(indices + Math.max(1, pageCap) * 4);
  const tmpO = intBytes;
  const tmpLse = align256(tmpO + itemCap * heads * headDim * 4);
  const total = align256(tmpLse + itemCap * heads * 4);
  return { items, mergeTable, alibi, indices, intBytes, tmpO, tmpLse, total };
}

const params = new ArrayBuffer(216); // fi_decode_params in cuda/include/flashinfer_ts.h
const pview = new DataView(params);
const pbytes = new Uint8Array(params);

function positiveInt(op: string, arg: string, v: unknown): asserts v is number {
  if (!Number.isInteger(v) || (v as number) < 1) invalid(op, arg, "a positive integer", v);
}

export class BatchDecodeWithPagedKvCache implements Disposable {
  readonly #workspace: Workspace;
  readonly kvLayout: KvLayout;
  readonly useCudaGraph: boolean;
  readonly maxBatchSize: number;
  readonly maxPages: number;
  readonly #numSms: number | undefined;
  #deviceSms: number | undefined;
  #plan: Plan | undefined;
  #pinned: [PinnedBuffer | undefined, PinnedBuffer | undefined] = [undefined, undefined];
  #events: [Event | undefined, Event | undefined] = [undefined, undefined];
  #flip = 0;
  #disposed = false;

  constructor(workspace: Workspace, options: DecodeWrapperOptions = {}) {
    const op = "create a decode wrapper";
    if (!(workspace instanceof Workspace)) invalid(op, "workspace", "a Workspace", workspace);
    const layout = options.kvLayout ?? "NHD";
    if (layout !== "NHD" && layout !== "HND") invalid(op, "kvLayout", `"NHD" or "HND"`, layout);
    this.#workspace = workspace;
    this.kvLayout = layout;
    this.useCudaGraph = options.useCudaGraph ?? false;
    this.maxBatchSize = options.maxBatchSize ?? 0;
    this.maxPages = options.maxPages ?? 0;
    if (this.useCudaGraph) {
      positiveInt(op, "maxBatchSize", options.maxBatchSize);
      positiveInt(op, "maxPages", options.maxPages);
    }
    if (options.numSms !== undefined) positiveInt(op, "numSms", options.numSms);
    this.#numSms = options.numSms;
  }

  /** Bytes of workspace the current plan uses. */
  get workspaceBytes(): number {
    return this.#plan?.layout.total ?? 0;
  }

  /** The last plan's split size in tokens (0: no request split) and work items, for inspection. */
  get schedule(): { splitSize: number; numItems: number } | undefined {
    return this.#plan && { splitSize: this.#plan.splitSize, numItems: this.#plan.numItems };
  }

  plan(
    indptr: Int32Array,
    indices: Int32Array,
    lastPageLen: Int32Array,
    numQoHeads: number,
    numKvHeads: number,
    headDim: number,
    pageSize: number,
    options: DecodePlanOptions = {},
  ): void {
    const op = "plan decode";
    this.#assertAlive(op);
    positiveInt(op, "numQoHeads", numQoHeads);
    positiveInt(op, "numKvHeads", numKvHeads);
    if (numQoHeads % numKvHeads !== 0) {
      invalid(op, "numQoHeads", "a multiple of 'numKvHeads'", `=${numQoHeads} and ${numKvHeads}`);
    }
    positiveInt(op, "headDim", headDim);
    positiveInt(op, "pageSize", pageSize);
    const qDtype = options.qDtype ?? "f16";
    const kvDtype = options.kvDtype ?? qDtype;
    if (qDtype !== "f16" && qDtype !== "bf16") invalid(op, "qDtype", "f16 or bf16", qDtype);
    if (!["f16", "bf16", "e4m3", "e5m2"].includes(kvDtype)) invalid(op, "kvDtype", "f16, bf16, e4m3 or e5m2", kvDtype);
    requireCompiledDecode(op, qDtype, kvDtype, headDim);
    const variant = resolveVariant(op, headDim, options);
    if (options.fixedSplitSize !== undefined) positiveInt(op, "fixedSplitSize", options.fixedSplitSize);
    const table = checkPageTable(op, indptr, indices, lastPageLen, pageSize, Infinity, undefined, options.checkIndices ?? true);
    const batch = table.batch;
    const pages = indptr[batch];
    if (this.useCudaGraph) {
      if (batch > this.maxBatchSize) invalid(op, "indptr", `of at most maxBatchSize ${this.maxBatchSize} requests`, `=${batch} requests`);
      if (pages > this.maxPages) invalid(op, "indices", `at most maxPages ${this.maxPages} pages (indptr[B])`, `=${pages} pages`);
    }

    const numSms = this.#numSms ?? (this.#deviceSms ??= Device.current().smCount);
    const group = numQoHeads / numKvHeads;
    const ctasPerItem = numKvHeads * Math.ceil(group / 16);
    const ctasPerSm = decodeCtasPerSm(headDim);
    const graphCap = Math.max(this.maxBatchSize, Math.floor((numSms * ctasPerSm) / ctasPerItem));

    // Lay out the workspace first (graph mode: from the maxima, so it never moves between plans).
    let layout: WorkspaceLayout;
    const sched0 = this.useCudaGraph ? undefined : scheduleDecode({
      seqLens: table.seqLens, pageBase: indptr, windowLeft: variant.windowLeft, ctasPerItem, numSms, ctasPerSm,
      fixedSplitSize: options.fixedSplitSize, disableSplitKv: options.disableSplitKv,
    });
    if (sched0) layout = layoutFor(sched0.numItems, batch, pages, numQoHeads, headDim);
    else layout = layoutFor(graphCap, this.maxBatchSize, this.maxPages, numQoHeads, headDim);
    this.#workspace.require(op, layout.total);

    // Pinned staging, double-buffered: wait only for the copy two plans ago before rewriting its buffer.
    const slot = this.#flip;
    this.#flip ^= 1;
    let pinned = this.#pinned[slot];
    if (!pinned || pinned.size < layout.intBytes) {
      this.#events[slot]?.synchronize();
      pinned?.dispose();
      pinned = this.#pinned[slot] = new PinnedBuffer(Math.max(layout.intBytes, 64 * 1024));
    } else {
      this.#events[slot]?.synchronize();
    }
    const buf = pinned.bytes.buffer;
    const off = pinned.bytes.byteOffset;
    const itemCap = (layout.mergeTable - layout.items) / (ITEM_INTS * 4);
    const itemsView = new Int32Array(buf, off + layout.items, itemCap * ITEM_INTS);
    const mergeView = new Int32Array(buf, off + layout.mergeTable, (layout.alibi - layout.mergeTable) / 4);
    const sched = sched0 ?? scheduleDecode({
      seqLens: table.seqLens, pageBase: indptr, windowLeft: variant.windowLeft, ctasPerItem, numSms, ctasPerSm,
      fixedSplitSize: options.fixedSplitSize, disableSplitKv: options.disableSplitKv,
    }, { items: itemsView, mergeTable: mergeView });
    if (sched.numItems > 65535) invalid(op, "indptr", "a plan of at most 65535 work items (requests and chunks)", `=${sched.numItems} items`);
    if (sched.numItems > itemCap) {
      invalid(op, "fixedSplitSize", `large enough that the work fits the CUDA-graph grid of ${itemCap} items`, options.fixedSplitSize);
    }
    if (sched.items !== itemsView) itemsView.set(sched.items.subarray(0, sched.numItems * ITEM_INTS));
    if (sched.mergeTable !== mergeView) mergeView.set(sched.mergeTable.subarray(0, 2 * batch));
    // Padding: items past the plan do nothing; merge rows past the batch merge nothing.
    for (let i = sched.numItems; i < itemCap; i++) itemsView[i * ITEM_INTS] = -1;
    mergeView.fill(0, 2 * batch);
    if (variant.posEncoding === 2) {
      new Float32Array(buf, off + layout.alibi, numQoHeads).set(alibiSlopes(numQoHeads));
    }
    new Int32Array(buf, off + layout.indices, pages).set(indices.subarray(0, pages));
    const stream = options.stream;
    pinned.copyToDevice(this.#workspace.ptr, layout.intBytes, stream);
    (this.#events[slot] ??= new Event()).record(stream);

    this.#plan = {
      batch, numQoHeads, numKvHeads, headDim, pageSize, qDtype, kvDtype, variant, layout,
      gridItems: this.useCudaGraph ? itemCap : sched.numItems,
      mergeRows: this.useCudaGraph ? this.maxBatchSize : batch,
      runMerge: this.useCudaGraph || sched.anySplit,
      maxIndex: table.maxIndex,
      splitSize: sched.splitSize,
      numItems: sched.numItems,
    };
  }

  /** Attention of q [batch, numQoHeads, headDim] over the planned pages of kvCache. */
  run(q: Tensor, kvCache: PagedKvCache, options: DecodeRunOptions & { returnLse: true }): { out: Tensor; lse: Tensor };
  run(q: Tensor, kvCache: PagedKvCache, options?: DecodeRunOptions): Tensor;
  run(q: Tensor, kvCache: PagedKvCache, options: DecodeRunOptions = {}): Tensor | { out: Tensor; lse: Tensor } {
    const op = "run decode";
    this.#assertAlive(op);
    const p = this.#plan;
    if (!p) throw new FlashInferError("INVALID_ARGUMENT", `Cannot ${op} as plan() was not called: plan the batch first`);
    expectTensor(op, "q", q, [p.qDtype]);
    expectShape(op, "q", q, [p.batch, p.numQoHeads, p.headDim]);
    expectQoLayout(op, "q", q);
    const view = kvCacheView(op, kvCache, this.kvLayout);
    checkCacheAgainstPlan(op, view, p);
    const { out, lse } = this.#outputs(op, q, options, p);
    launchDecode(op, q, view, out, lse, p, this.#workspace.ptr, options);
    return options.returnLse || options.lse ? { out, lse: lse! } : out;
  }

  #outputs(op: string, q: Tensor, o: DecodeRunOptions, p: Plan): { out: Tensor; lse: Tensor | undefined } {
    const out = o.out ?? Tensor.empty(q.shape, q.dtype);
    expectTensor(op, "out", out, [q.dtype]);
    expectShape(op, "out", out, q.shape);
    expectQoLayout(op, "out", out);
    let lse = o.lse;
    if (lse === undefined && o.returnLse) lse = Tensor.empty([p.batch, p.numQoHeads], "f32");
    if (lse !== undefined) {
      expectTensor(op, "lse", lse, ["f32"]);
      expectShape(op, "lse", lse, [p.batch, p.numQoHeads]);
      if (!lse.isContiguous()) invalid(op, "lse", "contiguous", `=strides ${show(lse.strides)}`);
    }
    return { out, lse };
  }

  #assertAlive(op: string): void {
    if (this.#disposed || this.#workspace.disposed) {
      throw new FlashInferError("DISPOSED", `Cannot ${op} as the decode wrapper or its workspace was disposed`);
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#events.forEach((e) => e?.synchronize());
    this.#pinned.forEach((b) => b?.dispose());
    this.#events.forEach((e) => e?.dispose());
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

function expectQoLayout(op: string, arg: string, t: Tensor): void {
  if (t.strides[2] !== 1 || t.strides[0] % 8 !== 0 || t.strides[1] % 8 !== 0 || t.ptr % 16n !== 0n) {
    invalid(op, arg, "contiguous in the head dim with 16-byte aligned heads", `=strides ${show(t.strides)}`);
  }
}

function checkCacheAgainstPlan(op: string, view: KvCacheView, p: Plan): void {
  const arg = "kvCache";
  if (view.dtype !== p.kvDtype) invalid(op, arg, `of the planned kv dtype ${p.kvDtype}`, view.dtype);
  if (view.pageSize !== p.pageSize) invalid(op, arg, `of the planned page size ${p.pageSize}`, `=page size ${view.pageSize}`);
  if (view.numKvHeads !== p.numKvHeads) invalid(op, arg, `of the planned ${p.numKvHeads} kv heads`, `=${view.numKvHeads} kv heads`);
  if (view.headDim !== p.headDim) invalid(op, arg, `of the planned head dim ${p.headDim}`, `=head dim ${view.headDim}`);
  if (p.maxIndex >= view.numPages) {
    invalid(op, "indices", `in [0, ${view.numPages}) (the cache's pages)`, `=an index ${p.maxIndex}`);
  }
}

function launchDecode(
  op: string,
  q: Tensor,
  view: KvCacheView,
  out: Tensor,
  lse: Tensor | undefined,
  p: Plan,
  ws: bigint,
  o: DecodeRunOptions,
): void {
  const fp8 = view.dtype === "e4m3" || view.dtype === "e5m2";
  const kScale = o.kScale ?? 1, vScale = o.vScale ?? 1;
  if (!Number.isFinite(kScale) || !Number.isFinite(vScale)) invalid(op, "kScale", "finite scales", `=${kScale}, ${vScale}`);
  if (!fp8 && (kScale !== 1 || vScale !== 1)) {
    // Allowed, as FlashInfer: the scales apply to any KV dtype.
  }
  const L = p.layout;
  const v = p.variant;
  const ptrs = [q.ptr, view.k, view.v, out.ptr, lse?.ptr ?? 0n, ws + BigInt(L.items), ws + BigInt(L.indices),
    v.posEncoding === 2 ? ws + BigInt(L.alibi) : 0n, ws + BigInt(L.tmpO), ws + BigInt(L.tmpLse), ws + BigInt(L.mergeTable)];
  ptrs.forEach((x, i) => pview.setBigUint64(i * 8, x, true));
  [q.strides[0], q.strides[1], out.strides[0], out.strides[1], view.stridePage, view.strideSlot, view.strideHead]
    .forEach((x, i) => pview.setBigInt64(88 + i * 8, BigInt(x), true));
  [p.gridItems, p.mergeRows, p.numQoHeads, p.numKvHeads, p.headDim, p.pageSize, DTYPE_CODE[p.qDtype],
    DTYPE_CODE[p.kvDtype], v.posEncoding === 1 ? 1 : 0, p.runMerge ? 1 : 0, view.numPages, 0]
    .forEach((x, i) => pview.setInt32(144 + i * 4, x, true));
  [v.smScale, v.logitsSoftCap, v.ropeRcpScale, v.ropeRcpTheta, kScale, vScale]
    .forEach((x, i) => pview.setFloat32(192 + i * 4, x, true));
  check(native().fi_batch_decode_run(pbytes, streamHandle(o.stream)), op);
}

export interface SingleDecodeOptions extends VariantOptions, DecodeRunOptions {
  /** k / v as [kvLen, Hkv, D] (NHD, default) or [Hkv, kvLen, D] (HND). */
  kvLayout?: KvLayout;
  /** Scratch for the split-KV partials; a shared one is allocated (and kept) when omitted. */
  workspace?: Workspace;
}

let sharedWorkspace: Workspace | undefined;
const singleWrappers = new WeakMap<Workspace, Map<KvLayout, BatchDecodeWithPagedKvCache>>();

/** Decode attention of one request: q [Hqo, D] over k, v [kvLen, Hkv, D] (NHD) or [Hkv, kvLen, D] (HND). */
export function singleDecodeWithKvCache(q: Tensor, k: Tensor, v: Tensor, options: SingleDecodeOptions & { returnLse: true }): { out: Tensor; lse: Tensor };
export function singleDecodeWithKvCache(q: Tensor, k: Tensor, v: Tensor, options?: SingleDecodeOptions): Tensor;
export function singleDecodeWithKvCache(q: Tensor, k: Tensor, v: Tensor, options: SingleDecodeOptions = {}): Tensor | { out: Tensor; lse: Tensor } {
  const op = "run single decode";
  const layout = options.kvLayout ?? "NHD";
  if (layout !== "NHD" && layout !== "HND") invalid(op, "kvLayout", `"NHD" or "HND"`, layout);
  expectTensor(op, "q", q, ["f16", "bf16"]);
  expectRank(op, "q", q, 2);
  expectTensor(op, "k", k);
  expectTensor(op, "v", v, [k.dtype]);
  expectRank(op, "k", k, 3);
  expectShape(op, "v", v, k.shape);
  const [hqo, d] = q.shape;
  const kvLen = layout === "NHD" ? k.shape[0] : k.shape[1];
  const hkv = layout === "NHD" ? k.shape[1] : k.shape[0];
  if (k.shape[2] !== d) invalid(op, "k", `of head dim ${d} like 'q'`, `=shape ${show(k.shape)}`);
  if (kvLen < 1) invalid(op, "k", "at least one token long", `=shape ${show(k.shape)}`);
  if (v.strides.some((s, i) => s !== k.strides[i])) invalid(op, "v", `of the strides of 'k' ${show(k.strides)}`, `=strides ${show(v.strides)}`);
  // The whole KV is one page of kvLen slots.
  const s = k.strides;
  const pageShape = layout === "NHD" ? [1, kvLen, hkv, d] : [1, hkv, kvLen, d];
  const pageStrides = [kvLen * Math.max(s[0], s[1]), s[0], s[1], s[2]];
  const kp = Tensor.fromPointer(k.ptr, pageShape, k.dtype, pageStrides);
  const vp = Tensor.fromPointer(v.ptr, pageShape, v.dtype, pageStrides);
  const ws = options.workspace ?? (sharedWorkspace ??= new Workspace(32 * 1024 * 1024));
  let byLayout = singleWrappers.get(ws);
  if (!byLayout) singleWrappers.set(ws, byLayout = new Map());
  let w = byLayout.get(layout);
  if (!w) byLayout.set(layout, w = new BatchDecodeWithPagedKvCache(ws, { kvLayout: layout }));
  w.plan(new Int32Array([0, 1]), new Int32Array([0]), new Int32Array([kvLen]), hqo, hkv, d, kvLen, {
    ...options, qDtype: q.dtype, kvDtype: k.dtype,
  });
  const q3 = Tensor.fromPointer(q.ptr, [1, hqo, d], q.dtype, [hqo * q.strides[0], q.strides[0], q.strides[1]]);
  const out = options.out ?? Tensor.empty([hqo, d], q.dtype);
  expectTensor(op, "out", out, [q.dtype]);
  expectShape(op, "out", out, [hqo, d]);
  const out3 = Tensor.fromPointer(out.ptr, [1, hqo, d], q.dtype, [hqo * out.strides[0], out.strides[0], out.strides[1]]);
  let lse = options.lse;
  if (lse === undefined && options.returnLse) lse = Tensor.empty([hqo], "f32");
  if (lse !== undefined) {
    expectTensor(op, "lse", lse, ["f32"]);
    expectShape(op, "lse", lse, [hqo]);
  }
  const lse2 = lse && Tensor.fromPointer(lse.ptr, [1, hqo], "f32");
  w.run(q3, [kp, vp], { out: out3, lse: lse2, kScale: options.kScale, vScale: options.vScale, stream: options.stream });
  return options.returnLse || options.lse ? { out, lse: lse! } : out;
}
