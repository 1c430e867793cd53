/**
 * Decode attention (one query token per request) over a paged KV cache, FlashInfer's
 * BatchDecodeWithPagedKVCacheWrapper: plan() once per step from host Int32Arrays (no device sync:
 * the tables go into a pinned buffer and one async copy), run() once per layer (no host sync, no
 * allocation unless outputs are omitted). LSE is base 2, as FlashInfer's.
 *
 * Decisions (where FlashInfer leaves room):
 * - logits = smScale * kScale * q.k; soft cap (cap * tanh(x / cap)) applies to that, then ALiBi adds
 *   slope * (kvPos - qPos); qPos = kvLen - 1. ROPE_LLAMA rotates q at qPos and each key at its
 *   position (NeoX pairs i, i + D/2). windowLeft w keeps keys kvPos >= qPos - w (the scheduler simply
 *   starts each request's range there).
 * - fp8 KV is computed on fp16 tensor cores whatever the q dtype (q is converted once per CTA);
 *   vScale scales the output.
 * - A request with no pages gets a zero output and LSE -inf.
 * - The workspace holds the plan's tables and the split-KV partials: runs of one wrapper must be
 *   ordered on one stream (as every layer of a step is), not concurrent on several. */
import { expectRank, expectShape, expectTensor } from "../runtime/check.ts";
import { Device } from "../runtime/device.ts";
import { type DType, DTYPE_CODE } from "../runtime/dtype.ts";
import { FlashInferError, invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { PinnedBuffer } from "../runtime/memory.ts";
import { Event, streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import { tableCursor, Workspace } from "../runtime/workspace.ts";
import { requireCompiledDecode } from "./compiled.ts";
import {
  checkPageTable,
  expectIndicesIn,
  type KvCacheView,
  kvCacheView,
  type KvLayout,
  type PagedKvCache,
} from "./paged_kv_cache.ts";
import { canStageIndices, stageIndices } from "./index_scan.ts";
import {
  decodeLanes,
  ITEM_INTS,
  type Schedule,
  scheduleDecode,
  scheduleDecodeLanes,
  waveBalanceChunks,
} from "./scheduler.ts";
import { alibiSlopes, type ResolvedVariant, resolveVariant, type VariantOptions } from "./variants.ts";

/**
 * Resident decode CTAs per SM (shared memory and register bound; see decode_smem_bytes and
 * decode_min_ctas in decode.cuh): fp8 KV at head dim 128 fits 3.
 */
export function decodeCtasPerSm(headDim: number, kvDtype?: DType): number {
  if (headDim === 128 && (kvDtype === "e4m3" || kvDtype === "e5m2")) return 3;
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
   * Run a persistent grid (a resident row of CTAs per lane, each looping over its lane's items, with
   * the batch's tiles cut evenly over the lanes) instead of one CTA row per item. Default: on for fp8
   * KV at head dim 128 when the batch fills the GPU, outside CUDA-graph mode (where it is never used).
   */
  persistent?: boolean;
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
  /** Persistent grid rows (0: one row per item). */
  numLanes: number;
}

interface WorkspaceLayout {
  items: number;
  counters: number;
  alibi: number;
  indices: number;
  intBytes: number;
  tmpO: number;
  tmpLse: number;
  total: number;
}

interface StagingViews {
  layout: WorkspaceLayout;
  heads: number;
  items: Int32Array;
  counters: Int32Array;
  alibi: Float32Array;
  indices: Int32Array;
}

function sameLayout(a: WorkspaceLayout, b: WorkspaceLayout): boolean {
  return a.items === b.items && a.counters === b.counters && a.alibi === b.alibi && a.indices === b.indices &&
    a.intBytes === b.intBytes;
}

function layoutFor(
  itemCap: number,
  batchCap: number,
  pageCap: number,
  heads: number,
  headDim: number,
  ctasPerItem: number,
): WorkspaceLayout {
  const tables = tableCursor(256), take = tables.take;
  const items = take(itemCap * ITEM_INTS * 4);
  const counters = take(batchCap * ctasPerItem * 4);
  const alibi = take(heads * 4);
  const indices = take(Math.max(1, pageCap) * 4);
  const intBytes = tables.end;
  const tmpO = take(itemCap * heads * headDim * 4);
  const tmpLse = take(itemCap * heads * 4);
  const total = tables.end;
  return { items, counters, alibi, indices, intBytes, tmpO, tmpLse, total };
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
  #seqLens: Int32Array | undefined;
  #mergeTable = new Int32Array(0); // the scheduler's scratch, reused so that plan does not allocate
  #plan: Plan | undefined;
  #pinned: [PinnedBuffer | undefined, PinnedBuffer | undefined] = [undefined, undefined];
  #events: [Event | undefined, Event | undefined] = [undefined, undefined];
  #flip = 0;
  #disposed = false;
  #views: [StagingViews | undefined, StagingViews | undefined] = [undefined, undefined];

  /** Typed views of a pinned staging buffer for a layout, kept while the layout does not change. */
  #viewsFor(slot: number, pinned: PinnedBuffer, layout: WorkspaceLayout, heads: number): StagingViews {
    const cached = this.#views[slot];
    if (cached && cached.layout === layout) return cached;
    if (cached && sameLayout(cached.layout, layout) && cached.heads === heads) return (cached.layout = layout, cached);
    const buf = pinned.bytes.buffer, off = pinned.bytes.byteOffset;
    const v: StagingViews = {
      layout,
      heads,
      items: new Int32Array(buf, off + layout.items, (layout.counters - layout.items) / 4),
      counters: new Int32Array(buf, off + layout.counters, (layout.alibi - layout.counters) / 4),
      alibi: new Float32Array(buf, off + layout.alibi, heads),
      indices: new Int32Array(buf, off + layout.indices, (layout.intBytes - layout.indices) / 4),
    };
    this.#views[slot] = v;
    return v;
  }

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
  get schedule(): { splitSize: number; numItems: number; numLanes: number } | undefined {
    return this.#plan &&
      { splitSize: this.#plan.splitSize, numItems: this.#plan.numItems, numLanes: this.#plan.numLanes };
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
    const nb = indptr.length - 1;
    if (!this.#seqLens || this.#seqLens.length !== nb) this.#seqLens = new Int32Array(Math.max(0, nb));
    // Large page tables are checked as they are copied into the staging buffer (one native pass, below):
    // a bad id is still refused before anything is uploaded or launched.
    const checkIndices = options.checkIndices ?? true;
    const checkWhileStaging = checkIndices && indices instanceof Int32Array && canStageIndices(indices.length);
    const table = checkPageTable(
      op,
      indptr,
      indices,
      lastPageLen,
      pageSize,
      Infinity,
      this.#seqLens,
      checkIndices && !checkWhileStaging,
    );
    const batch = table.batch;
    const pages = indptr[batch];
    if (this.useCudaGraph) {
      if (batch > this.maxBatchSize) {
        invalid(op, "indptr", `of at most maxBatchSize ${this.maxBatchSize} requests`, `=${batch} requests`);
      }
      if (pages > this.maxPages) {
        invalid(op, "indices", `at most maxPages ${this.maxPages} pages (indptr[B])`, `=${pages} pages`);
      }
    }

    const numSms = this.#numSms ?? (this.#deviceSms ??= Device.current().smCount);
    const group = numQoHeads / numKvHeads;
    const ctasPerItem = numKvHeads * Math.ceil(group / 16);
    const ctasPerSm = decodeCtasPerSm(headDim, kvDtype);
    const graphCap = Math.max(this.maxBatchSize, Math.floor((numSms * ctasPerSm) / ctasPerItem));

    // Lay out the workspace first, sized by the most items a plan can make (graph mode: from the maxima,
    // so it never moves between plans), then schedule straight into the pinned staging buffer.
    const input = {
      seqLens: table.seqLens,
      pageBase: indptr,
      windowLeft: variant.windowLeft,
      ctasPerItem,
      numSms,
      ctasPerSm,
      fixedSplitSize: options.fixedSplitSize,
      disableSplitKv: options.disableSplitKv,
      // A captured grid has a fixed item count: no wave balancing there.
      balanceWaves: !this.useCudaGraph,
    };
    let fixed: Schedule | undefined;
    let layout: WorkspaceLayout;
    const lanes = decodeLanes(numSms, ctasPerSm, ctasPerItem);
    const persistent = !this.useCudaGraph && options.fixedSplitSize === undefined && !options.disableSplitKv &&
      (options.persistent ?? (ctasPerSm === 3 && batch * ctasPerItem >= numSms));
    if (persistent) {
      // Each lane boundary adds at most one item; the lane starts follow the items.
      const laneItems = Math.ceil((lanes + 1) / ITEM_INTS);
      layout = layoutFor(batch + lanes + laneItems, batch, pages, numQoHeads, headDim, ctasPerItem);
    } else if (this.useCudaGraph) {
      layout = layoutFor(graphCap, this.maxBatchSize, this.maxPages, numQoHeads, headDim, ctasPerItem);
    } else if (options.fixedSplitSize !== undefined) {
      fixed = scheduleDecode(input); // rare: the item count is known only after splitting
      layout = layoutFor(fixed.numItems, batch, pages, numQoHeads, headDim, ctasPerItem);
    } else {
      // A split for wave balance makes at most `chunks` items a request.
      const chunks = options.disableSplitKv ? 1 : waveBalanceChunks(batch, ctasPerItem, numSms, ctasPerSm);
      layout = layoutFor(
        Math.max(batch * chunks, Math.floor((numSms * ctasPerSm) / ctasPerItem)),
        batch,
        pages,
        numQoHeads,
        headDim,
        ctasPerItem,
      );
    }
    this.#workspace.require(op, layout.total);

    // Pinned staging, double-buffered: wait only for the copy two plans ago before rewriting its buffer.
    const slot = this.#flip;
    this.#flip ^= 1;
    this.#events[slot]?.synchronize();
    let pinned = this.#pinned[slot];
    if (!pinned || pinned.size < layout.intBytes) {
      pinned?.dispose();
      pinned = this.#pinned[slot] = new PinnedBuffer(Math.max(layout.intBytes, 256 * 1024));
      this.#views[slot] = undefined;
    }
    const views = this.#viewsFor(slot, pinned, layout, numQoHeads);
    let maxIndex = table.maxIndex;
    if (checkWhileStaging) {
      const scan = stageIndices(indices, pages, views.indices);
      expectIndicesIn(op, indices, pages, Infinity, scan);
      maxIndex = scan.max;
    } else {
      views.indices.set(pages === indices.length ? indices : indices.subarray(0, pages));
    }
    const itemCap = views.items.length / ITEM_INTS;
    if (this.#mergeTable.length < 2 * batch) this.#mergeTable = new Int32Array(2 * batch);
    const laneSched = persistent
      ? scheduleDecodeLanes(input, lanes, {
        items: views.items,
        mergeTable: this.#mergeTable,
        laneStarts: views.items.subarray(views.items.length - (lanes + 1)),
      })
      : undefined;
    const sched = laneSched ?? fixed ?? scheduleDecode(input, { items: views.items, mergeTable: this.#mergeTable });
    if (sched.numItems > 65535) {
      invalid(op, "indptr", "a plan of at most 65535 work items (requests and chunks)", `=${sched.numItems} items`);
    }
    if (sched.numItems > itemCap) {
      invalid(
        op,
        "fixedSplitSize",
        `large enough that the work fits the CUDA-graph grid of ${itemCap} items`,
        options.fixedSplitSize,
      );
    }
    if (sched.items !== views.items) views.items.set(sched.items.subarray(0, sched.numItems * ITEM_INTS));
    if (laneSched) views.items.copyWithin(sched.numItems * ITEM_INTS, views.items.length - (lanes + 1));
    // Split requests count their finished chunks here; every run leaves them at zero again.
    views.counters.fill(0);
    // Padding (CUDA-graph grid): items past the plan do nothing.
    if (this.useCudaGraph) { for (let i = sched.numItems; i < itemCap; i++) views.items[i * ITEM_INTS] = -1; }
    if (variant.posEncoding === 2) views.alibi.set(alibiSlopes(numQoHeads));
    const stream = options.stream;
    // Only the bytes this plan wrote travel: up to the end of its indices.
    pinned.copyToDevice(this.#workspace.ptr, layout.indices + pages * 4, stream);
    (this.#events[slot] ??= new Event({ timing: false })).record(stream);

    this.#plan = {
      batch,
      numQoHeads,
      numKvHeads,
      headDim,
      pageSize,
      qDtype,
      kvDtype,
      variant,
      layout,
      gridItems: this.useCudaGraph ? itemCap : sched.numItems,
      mergeRows: 0,
      runMerge: false,
      maxIndex,
      splitSize: sched.splitSize,
      numItems: sched.numItems,
      numLanes: laneSched?.numLanes ?? 0,
    };
  }

  /** Attention of q [batch, numQoHeads, headDim] over the planned pages of kvCache. */
  run(q: Tensor, kvCache: PagedKvCache, options: DecodeRunOptions & { returnLse: true }): { out: Tensor; lse: Tensor };
  run(q: Tensor, kvCache: PagedKvCache, options?: DecodeRunOptions): Tensor;
  run(q: Tensor, kvCache: PagedKvCache, options: DecodeRunOptions = {}): Tensor | { out: Tensor; lse: Tensor } {
    const op = "run decode";
    this.#assertAlive(op);
    const p = this.#plan;
    if (!p) {
      throw new FlashInferError("INVALID_ARGUMENT", `Cannot ${op} as plan() was not called: plan the batch first`);
    }
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

/** q / out of 16-bit rows: the head dim contiguous, rows and heads on 16 bytes (the kernels copy 16-byte chunks). */
export function expectQoLayout(op: string, arg: string, t: Tensor): void {
  if (t.strides[2] !== 1 || t.strides[0] % 8 !== 0 || t.strides[1] % 8 !== 0 || t.ptr % 16n !== 0n) {
    invalid(op, arg, "contiguous in the head dim with 16-byte aligned heads", `=strides ${show(t.strides)}`);
  }
}

function checkCacheAgainstPlan(op: string, view: KvCacheView, p: Plan): void {
  const arg = "kvCache";
  if (view.dtype !== p.kvDtype) invalid(op, arg, `of the planned kv dtype ${p.kvDtype}`, view.dtype);
  if (view.pageSize !== p.pageSize) {
    invalid(op, arg, `of the planned page size ${p.pageSize}`, `=page size ${view.pageSize}`);
  }
  if (view.numKvHeads !== p.numKvHeads) {
    invalid(op, arg, `of the planned ${p.numKvHeads} kv heads`, `=${view.numKvHeads} kv heads`);
  }
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
  if (!Number.isFinite(kScale) || !Number.isFinite(vScale)) {
    invalid(op, "kScale", "finite scales", `=${kScale}, ${vScale}`);
  }
  if (!fp8 && (kScale !== 1 || vScale !== 1)) {
    // Allowed, as FlashInfer: the scales apply to any KV dtype.
  }
  const L = p.layout;
  const v = p.variant;
  const bytes = decodeParams({
    q,
    out,
    lse,
    view,
    items: ws + BigInt(L.items),
    indices: ws + BigInt(L.indices),
    alibi: v.posEncoding === 2 ? ws + BigInt(L.alibi) : 0n,
    tmpO: ws + BigInt(L.tmpO),
    tmpLse: ws + BigInt(L.tmpLse),
    counters: ws + BigInt(L.counters),
    numItems: p.gridItems,
    numLanes: p.numLanes,
    numQoHeads: p.numQoHeads,
    numKvHeads: p.numKvHeads,
    headDim: p.headDim,
    pageSize: p.pageSize,
    qDtype: p.qDtype,
    kvDtype: p.kvDtype,
    variant: v,
    kScale,
    vScale,
  });
  check(native().fi_batch_decode_run(bytes, streamHandle(o.stream)), op);
}

/** What fi_decode_params holds (device addresses as bigint). */
export interface DecodeParamFields {
  q: Tensor;
  out: Tensor;
  lse: Tensor | undefined;
  view: KvCacheView;
  items: bigint;
  indices: bigint;
  alibi: bigint;
  tmpO: bigint;
  tmpLse: bigint;
  counters: bigint;
  numItems: number;
  /** Persistent grid rows; 0 (default): one row per item. */
  numLanes?: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  qDtype: DType;
  kvDtype: DType;
  variant: ResolvedVariant;
  kScale: number;
  vScale: number;
}

/** Writes fi_decode_params into a module-level buffer (valid until the next call) and returns it. */
export function decodeParams(f: DecodeParamFields): Uint8Array {
  const { q, out, view, variant: v } = f;
  const ptrs = [
    q.ptr,
    view.k,
    view.v,
    out.ptr,
    f.lse?.ptr ?? 0n,
    f.items,
    f.indices,
    f.alibi,
    f.tmpO,
    f.tmpLse,
    f.counters,
  ];
  ptrs.forEach((x, i) => pview.setBigUint64(i * 8, x, true));
  [q.strides[0], q.strides[1], out.strides[0], out.strides[1], view.stridePage, view.strideSlot, view.strideHead]
    .forEach((x, i) => pview.setBigInt64(88 + i * 8, BigInt(x), true));
  [
    f.numItems,
    0, // merge_rows (reserved)
    f.numQoHeads,
    f.numKvHeads,
    f.headDim,
    f.pageSize,
    DTYPE_CODE[f.qDtype],
    DTYPE_CODE[f.kvDtype],
    v.posEncoding === 1 ? 1 : 0,
    0, // run_merge (reserved)
    view.numPages,
    f.numLanes ?? 0,
  ]
    .forEach((x, i) => pview.setInt32(144 + i * 4, x, true));
  [v.smScale, v.logitsSoftCap, v.ropeRcpScale, v.ropeRcpTheta, f.kScale, f.vScale]
    .forEach((x, i) => pview.setFloat32(192 + i * 4, x, true));
  return pbytes;
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
export function singleDecodeWithKvCache(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SingleDecodeOptions & { returnLse: true },
): { out: Tensor; lse: Tensor };
export function singleDecodeWithKvCache(q: Tensor, k: Tensor, v: Tensor, options?: SingleDecodeOptions): Tensor;
export function singleDecodeWithKvCache(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SingleDecodeOptions = {},
): Tensor | { out: Tensor; lse: Tensor } {
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
  if (v.strides.some((s, i) => s !== k.strides[i])) {
    invalid(op, "v", `of the strides of 'k' ${show(k.strides)}`, `=strides ${show(v.strides)}`);
  }
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
    ...options,
    qDtype: q.dtype,
    kvDtype: k.dtype,
  });
  const q3 = Tensor.fromPointer(q.ptr, [1, hqo, d], q.dtype, [hqo * q.strides[0], q.strides[0], q.strides[1]]);
  const out = options.out ?? Tensor.empty([hqo, d], q.dtype);
  expectTensor(op, "out", out, [q.dtype]);
  expectShape(op, "out", out, [hqo, d]);
  const out3 = Tensor.fromPointer(out.ptr, [1, hqo, d], q.dtype, [
    hqo * out.strides[0],
    out.strides[0],
    out.strides[1],
  ]);
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
