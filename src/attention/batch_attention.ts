/**
 * BatchAttention: the unified API for a batch that mixes prefill and decode requests over a paged KV
 * cache, in one launch and CUDA-graph safe (plan uploads the tables; run only launches).
 *
 * The fused path (batches with one-token requests; head dims 64 / 128, fp16 / bf16 q and KV, no fused
 * RoPE or ALiBi) is one persistent kernel with two queues: the query tiles of the prefill requests
 * (heaviest first) and the split-KV work items of the one-token (decode) requests. By default half the
 * SMs start on each queue and turn to the other when their own runs dry, so the tensor-core-bound
 * prefill and the bandwidth-bound decode run at the same time (src/attention/batch_attention_plan.ts,
 * cuda/kernels/attention/batch_attention.cuh). Other batches run every request on the batch prefill
 * kernel in one launch.
 *
 * On an sm_90 GPU the default backend ("auto") runs such a batch in split form instead: the Hopper
 * prefill kernel on part of the SMs beside the decode kernel on the rest, two launches forked and
 * joined inside run() (faster: the Hopper kernel is about twice the fused kernel's prefill part). The
 * prefill's CTAs launch in clusters of SPLIT_CLUSTER, which packs them onto fewer GPCs.
 *
 * CUDA graphs: a captured run() replays its own plan. With backend "fused" it also replays any later
 * plan that fits the capacity of the largest plan so far: the queue sizes live in device memory and
 * the tables keep their addresses. Plan the largest batch first, then capture.
 */
import { expectShape, expectTensor } from "../runtime/check.ts";
import { Device } from "../runtime/device.ts";
import type { DType } from "../runtime/dtype.ts";
import { DTYPE_CODE } from "../runtime/dtype.ts";
import { FlashInferError, invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { PinnedBuffer } from "../runtime/memory.ts";
import { Event, streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import { tableCursor, Workspace } from "../runtime/workspace.ts";
import { planMixed, splitPrefillSms, splitSmsOfShare } from "./batch_attention_plan.ts";
import { BATCH_ATTENTION_FUSED } from "./compiled.ts";
import { decodeParams, expectQoLayout } from "./decode.ts";
import { expectPagesCover, kvCacheView, maxPageId } from "./paged_kv_cache.ts";
import { BatchPrefillWithPagedKvCache, expectHeads, expectIndptr } from "./prefill.ts";
import { prefillParams, type PrefillResult } from "./prefill_launch.ts";
import { ITEM_INTS } from "./scheduler.ts";
import { type KvLayout, type ResolvedVariant, resolveVariant, type VariantOptions } from "./variants.ts";

export interface BatchAttentionOptions {
  /**
   * "auto" (default): on an sm_90 GPU, a batch with one-token requests runs the Hopper prefill kernel
   * on part of the SMs beside the decode kernel on the rest (two launches, forked and joined inside
   * run(); a captured run replays its own plan). "fused": one persistent launch of both queues, whose
   * captured run replays any later plan that fits (see the class comment).
   */
  backend?: "auto" | "fused";
  /** Workspace for the plan's tables (allocated, 128 MiB, when omitted). */
  workspace?: Workspace;
  /** Layout of the cache pages: NHD [pages, pageSize, Hkv, D] (default) or HND [pages, Hkv, pageSize, D]. */
  kvLayout?: KvLayout;
}

export interface BatchAttentionPlanOptions extends VariantOptions {
  qDtype?: DType;
  kvDtype?: DType;
  /** Must equal qDtype. */
  oDtype?: DType;
  pageSize?: number;
  causal?: boolean;
  /**
   * Fused path: the fraction of the SMs ("partition") or of the resident CTAs ("mix") that start on
   * the prefill queue when the batch has both kinds of work (default 0.5; each CTA turns to the other
   * queue when its own runs dry). Split form: the fraction of the SMs the Hopper prefill takes, rounded
   * to whole clusters of SPLIT_CLUSTER (default: a rate model's choice, splitPrefillSms).
   */
  prefillShare?: number;
  /**
   * Fused path: "partition" (default) gives whole SMs to each queue, prefillShare of them to prefill;
   * "mix" puts one CTA of each kind on every SM (measured slower: the two kinds contend inside an SM).
   */
  placement?: "mix" | "partition";
  stream?: StreamLike;
}

interface FusedPlan {
  batch: number;
  nnzQo: number;
  numQoHeads: number;
  numKvHeads: number;
  headDim: number;
  pageSize: number;
  dtype: DType;
  causal: boolean;
  variant: ResolvedVariant;
  tileQ: number;
  numWork: number;
  numItems: number;
  maxPage: number;
  layout: Layout;
  /** SMs for the prefill half of the split form; 0: the fused launch. */
  splitSms: number;
}

/** Byte offsets in the workspace; capacities only grow, so addresses hold across plans that fit. */
interface Capacity {
  batch: number;
  work: number;
  pages: number;
  items: number;
  counters: number;
  partialRows: number;
  heads: number;
  headDim: number;
}
interface Layout {
  queue: number;
  prefillQueue: number;
  qoIndptr: number;
  kvIndptr: number;
  kvLens: number;
  work: number;
  kvIndices: number;
  items: number;
  counters: number;
  uploadEnd: number;
  tmpO: number;
  tmpLse: number;
  total: number;
}

/** int32s of the launch's queue state (kQueueInts in cuda/kernels/attention/batch_attention.cuh). */
const QUEUE_INTS = 8 + 256;

function layoutOf(c: Capacity): Layout {
  const tables = tableCursor(256), take = tables.take;
  const queue = take(4 * QUEUE_INTS);
  const prefillQueue = take(8); // the split form's Hopper prefill item counter
  const qoIndptr = take(4 * (c.batch + 1));
  const kvIndptr = take(4 * (c.batch + 1));
  const kvLens = take(4 * c.batch);
  const work = take(8 * c.work);
  const kvIndices = take(4 * Math.max(1, c.pages));
  const items = take(4 * ITEM_INTS * c.items);
  const counters = take(4 * c.counters);
  const uploadEnd = tables.end;
  const tmpO = take(4 * c.partialRows * c.heads * c.headDim);
  const tmpLse = take(4 * c.partialRows * c.heads);
  return {
    queue,
    prefillQueue,
    qoIndptr,
    kvIndptr,
    kvLens,
    work,
    kvIndices,
    items,
    counters,
    uploadEnd,
    tmpO,
    tmpLse,
    total: tables.end,
  };
}

export class BatchAttention implements Disposable {
  readonly #workspace: Workspace;
  readonly #ownsWorkspace: boolean;
  readonly #kvLayout: KvLayout;
  readonly #backend: "auto" | "fused";
  #prefill: BatchPrefillWithPagedKvCache | undefined;
  #prefillKvDtype: DType = "bf16";
  #fused: FusedPlan | undefined;
  #cap: Capacity | undefined;
  #pinned: PinnedBuffer | undefined;
  #uploaded: Event | undefined;
  #disposed = false;

  constructor(options: BatchAttentionOptions = {}) {
    const backend = options.backend ?? "auto";
    if (backend !== "auto" && backend !== "fused") {
      invalid("make a BatchAttention", "backend", `"auto" or "fused"`, backend);
    }
    this.#backend = backend;
    const layout = options.kvLayout ?? "NHD";
    if (layout !== "NHD" && layout !== "HND") invalid("make a BatchAttention", "kvLayout", `"NHD" or "HND"`, layout);
    this.#kvLayout = layout;
    this.#ownsWorkspace = options.workspace === undefined;
    this.#workspace = options.workspace ?? new Workspace();
  }

  /**
   * The planned path: "split" (Hopper prefill beside the decode kernel), "fused" (one persistent launch)
   * or "prefill" (every request on the prefill kernel).
   */
  get path(): "split" | "fused" | "prefill" | undefined {
    if (this.#fused) return this.#fused.splitSms > 0 ? "split" : "fused";
    return this.#prefill ? "prefill" : undefined;
  }

  /**
   * qoOffsets [batch + 1] (query rows of request b: qoOffsets[b]..qoOffsets[b + 1]), kvLens [batch],
   * kvBlockTable [batch, maxBlocks] flattened (request b's pages: the first ceil(kvLens[b] / pageSize)
   * entries of row b).
   */
  plan(
    qoOffsets: Int32Array,
    kvLens: Int32Array,
    kvBlockTable: Int32Array,
    numQoHeads: number,
    numKvHeads: number,
    headDimQk: number,
    headDimVo: number,
    options: BatchAttentionPlanOptions = {},
  ): void {
    const op = "plan BatchAttention";
    this.#assertAlive(op);
    if (!(qoOffsets instanceof Int32Array) || qoOffsets.length < 2) {
      invalid(op, "qoOffsets", "an Int32Array of batch + 1 >= 2 offsets", qoOffsets);
    }
    const batch = qoOffsets.length - 1;
    if (!(kvLens instanceof Int32Array) || kvLens.length !== batch) {
      invalid(op, "kvLens", `an Int32Array of batch = ${batch} lengths`, kvLens);
    }
    if (!(kvBlockTable instanceof Int32Array) || kvBlockTable.length % batch !== 0) {
      invalid(op, "kvBlockTable", `an Int32Array of batch (${batch}) x maxBlocks page ids`, kvBlockTable);
    }
    const pageSize = options.pageSize ?? 16;
    if (!Number.isInteger(pageSize) || pageSize < 1) invalid(op, "pageSize", "a positive integer", pageSize);
    const qDtype = options.qDtype ?? "bf16";
    if ((options.oDtype ?? qDtype) !== qDtype) invalid(op, "oDtype", `equal to qDtype (${qDtype})`, options.oDtype);
    const kvDtype = options.kvDtype ?? qDtype;
    const share = options.prefillShare ?? 0.5;
    if (typeof share !== "number" || !(share >= 0 && share <= 1)) invalid(op, "prefillShare", "in [0, 1]", share);
    const placement = options.placement ?? "partition";
    if (placement !== "mix" && placement !== "partition") {
      invalid(op, "placement", `"mix" or "partition"`, placement);
    }
    const maxBlocks = kvBlockTable.length / batch;
    const indptr = new Int32Array(batch + 1), last = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      const len = kvLens[b];
      if (!Number.isInteger(len) || len < 0) invalid(op, "kvLens", "non-negative", `=kvLens[${b}] = ${len}`);
      const pages = Math.ceil(len / pageSize);
      if (pages > maxBlocks) {
        invalid(op, "kvBlockTable", `at least ${pages} blocks per request (kvLens[${b}] = ${len})`, `=${maxBlocks}`);
      }
      indptr[b + 1] = indptr[b] + pages;
      last[b] = pages === 0 ? 0 : len - (pages - 1) * pageSize;
    }
    const indices = new Int32Array(indptr[batch]);
    for (let b = 0; b < batch; b++) {
      indices.set(kvBlockTable.subarray(b * maxBlocks, b * maxBlocks + indptr[b + 1] - indptr[b]), indptr[b]);
    }
    const variant = resolveVariant(op, headDimQk, options);
    // A batch with no one-token request runs faster on the plain prefill kernel (the fused kernel's
    // prefill part carries the decode part's registers).
    let decodes = 0;
    for (let b = 0; b < batch; b++) if (qoOffsets[b + 1] - qoOffsets[b] === 1) decodes++;
    // (Once fused, a batch without them stays fused: switching kernels would move the tables under a
    // captured run.)
    const fusable = (decodes > 0 || this.#cap !== undefined) && headDimQk === headDimVo && kvDtype === qDtype &&
      variant.posEncoding === 0 &&
      BATCH_ATTENTION_FUSED.dtypes.includes(qDtype) && BATCH_ATTENTION_FUSED.headDims.includes(headDimQk);
    if (!fusable) {
      this.#fused = undefined;
      this.#cap = undefined;
      this.#prefill ??= new BatchPrefillWithPagedKvCache(this.#workspace, this.#kvLayout);
      this.#prefillKvDtype = kvDtype;
      this.#prefill.plan(qoOffsets, indptr, indices, last, numQoHeads, numKvHeads, headDimQk, pageSize, {
        ...options,
        headDimVo,
        qDtype,
        kvDtype,
      });
      return;
    }
    this.#planFused(op, qoOffsets, kvLens, indptr, indices, numQoHeads, numKvHeads, headDimQk, pageSize, qDtype, {
      causal: options.causal ?? false,
      variant,
      share,
      shareGiven: options.prefillShare !== undefined,
      placement,
      stream: options.stream,
    });
  }

  #planFused(
    op: string,
    qo: Int32Array,
    kvLens: Int32Array,
    indptr: Int32Array,
    indices: Int32Array,
    numQoHeads: number,
    numKvHeads: number,
    headDim: number,
    pageSize: number,
    dtype: DType,
    o: {
      causal: boolean;
      variant: ResolvedVariant;
      share: number;
      shareGiven: boolean;
      placement: "mix" | "partition";
      stream?: StreamLike;
    },
  ): void {
    const batch = kvLens.length;
    expectHeads(op, numQoHeads, numKvHeads);
    expectIndptr(op, "qoOffsets", qo);
    if (o.causal) {
      for (let b = 0; b < batch; b++) {
        const n = qo[b + 1] - qo[b];
        if (kvLens[b] < n) {
          invalid(
            op,
            "kvLens",
            "at least each request's query count for a causal mask",
            `=request ${b} with ${n} queries and ${kvLens[b]} keys`,
          );
        }
      }
    }
    const maxPage = maxPageId(op, "kvBlockTable", indices, indices.length, (i) => `a page id ${indices[i]}`);
    const lib = native();
    const code = DTYPE_CODE[dtype];
    const tileRows = lib.fi_prefill_tile_q(headDim, headDim, code);
    const packShift = lib.fi_prefill_head_pack_shift(numQoHeads / numKvHeads);
    const resident = lib.fi_batch_attention_ctas(headDim, code);
    if (resident <= 0) check(resident === 0 ? 3 : -resident, op);
    const numSms = Device.current().smCount;
    const group = numQoHeads / numKvHeads;
    const m = planMixed({
      qoIndptr: qo,
      kvLens,
      pageIndptr: indptr,
      tileQ: tileRows >> packShift,
      causal: o.causal,
      windowLeft: o.variant.windowLeft,
      decodeCtasPerItem: numKvHeads * Math.ceil(group / 16),
      prefillCtasPerEntry: numQoHeads >> packShift,
      residentCtas: resident,
      numSms,
      prefillShare: o.share,
      placement: o.placement,
    });
    if (m.numItems > 2 ** 31 / 64) invalid(op, "qoOffsets", "fewer decode work items", m.numItems);

    // Reserve what any later plan of no more rows, requests and pages can need, so the tables keep their
    // addresses for a captured run: decode items (and partials) are at most one wave of CTAs or four
    // chunks a request (the wave balancing), prefill entries at most one tile a request more than the
    // rows make.
    const decodeCtasPerItem = numKvHeads * Math.ceil(group / 16);
    const rows = qo[batch];
    const itemBound = Math.max(m.numItems, Math.floor(resident / decodeCtasPerItem), 4 * batch);
    const need: Capacity = {
      batch,
      work: Math.max(m.numWork, Math.ceil(rows / (tileRows >> packShift)) + batch),
      pages: indices.length,
      items: itemBound,
      counters: rows * decodeCtasPerItem,
      partialRows: itemBound,
      heads: numQoHeads,
      headDim,
    };
    const cap = this.#cap;
    const fits = cap !== undefined && (Object.keys(need) as (keyof Capacity)[]).every((k) => need[k] <= cap[k]);
    if (!fits) {
      const grown = { ...need };
      if (cap) { for (const k of Object.keys(need) as (keyof Capacity)[]) grown[k] = Math.max(need[k], cap[k]); }
      this.#cap = grown;
    }
    const L = layoutOf(this.#cap!);
    this.#workspace.require(op, L.total);

    // Stage every table in pinned memory (the previous plan's copy may still read it), then one copy.
    this.#uploaded?.synchronize();
    if (!this.#pinned || this.#pinned.size < L.uploadEnd) {
      this.#pinned?.dispose();
      this.#pinned = new PinnedBuffer(Math.max(L.uploadEnd, 64 * 1024));
    }
    const bytes = this.#pinned.bytes;
    const i32 = (offset: number, n: number) => new Int32Array(bytes.buffer, bytes.byteOffset + offset, n);
    i32(L.queue, QUEUE_INTS).fill(0).set([0, 0, 0, m.numWork, m.numItems, m.prefillFirst, m.placement]);
    i32(L.prefillQueue, 2).fill(0);
    i32(L.qoIndptr, batch + 1).set(qo);
    i32(L.kvIndptr, batch + 1).set(indptr);
    i32(L.kvLens, batch).set(kvLens);
    i32(L.work, m.work.length).set(m.work);
    i32(L.kvIndices, indices.length).set(indices);
    i32(L.items, m.items.length).set(m.items);
    i32(L.counters, need.counters).fill(0); // split decodes count their chunks here; runs leave zeros
    this.#pinned.copyToDevice(this.#workspace.ptr, L.uploadEnd, o.stream);
    (this.#uploaded ??= new Event({ timing: false })).record(o.stream);

    // The split form where it applies (an sm_90 GPU): the Hopper prefill on the SMs the rate model gives
    // it (or prefillShare of them), the decode kernel on the rest.
    let splitSms = 0;
    const sms = this.#backend === "auto" ? lib.fi_batch_attention_split_sms(headDim, code) : 0;
    if (sms > 1) {
      let flops = 0, bytes = 0;
      for (let b = 0; b < batch; b++) {
        const n = qo[b + 1] - qo[b], kv = kvLens[b];
        if (n === 1) bytes += kv * numKvHeads * headDim * 2 * 2;
        else flops += 4 * numQoHeads * headDim * (o.causal ? n * kv - (n * (n - 1)) / 2 : n * kv);
      }
      splitSms = o.shareGiven ? splitSmsOfShare(o.share, sms) : splitPrefillSms(flops, bytes, sms);
    }
    this.#prefill?.dispose();
    this.#prefill = undefined;
    this.#fused = {
      splitSms,
      batch,
      nnzQo: qo[batch],
      numQoHeads,
      numKvHeads,
      headDim,
      pageSize,
      dtype,
      causal: o.causal,
      variant: o.variant,
      tileQ: tileRows >> packShift,
      numWork: m.numWork,
      numItems: m.numItems,
      maxPage,
      layout: L,
    };
  }

  /** q [nnzQo, Hqo, Dqk]; kv [k, v] pages (or one [pages, 2, ...] tensor). Returns out and lse (base 2). */
  run(
    q: Tensor,
    kv: Tensor | readonly [Tensor, Tensor],
    options: { out?: Tensor; lse?: Tensor; kScale?: number; vScale?: number; stream?: StreamLike } = {},
  ): Required<PrefillResult> {
    const op = "run BatchAttention";
    this.#assertAlive(op);
    if (this.#prefill) {
      const kvDtype = this.#prefillKvDtype;
      if (kvDtype !== "e4m3" && kvDtype !== "e5m2" && (options.vScale ?? 1) !== 1) {
        invalid(op, "vScale", `1 for ${kvDtype} KV (a scale is for fp8 KV)`, options.vScale);
      }
      const res = this.#prefill.run(q, kv, { ...options, returnLse: true });
      return { out: res.out, lse: res.lse! };
    }
    const p = this.#fused;
    if (!p) {
      throw new FlashInferError("INVALID_ARGUMENT", `Cannot ${op} as plan() was not called: plan the batch first`);
    }
    expectTensor(op, "q", q, [p.dtype]);
    expectShape(op, "q", q, [p.nnzQo, p.numQoHeads, p.headDim]);
    expectQoLayout(op, "q", q);
    const view = kvCacheView(op, kv, this.#kvLayout);
    if (view.dtype !== p.dtype) invalid(op, "kvCache", `of dtype ${p.dtype}`, view.dtype);
    if (view.pageSize !== p.pageSize || view.numKvHeads !== p.numKvHeads || view.headDim !== p.headDim) {
      invalid(
        op,
        "kvCache",
        `pages of ${p.pageSize} tokens x ${p.numKvHeads} kv heads x ${p.headDim} (the plan)`,
        `=${view.pageSize} x ${view.numKvHeads} x ${view.headDim}`,
      );
    }
    expectPagesCover(op, "kvCache", p.maxPage, view.numPages);
    const kScale = options.kScale ?? 1, vScale = options.vScale ?? 1;
    if (!(Number.isFinite(kScale) && kScale > 0)) invalid(op, "kScale", "a positive number", kScale);
    if (vScale !== 1) invalid(op, "vScale", `1 for ${p.dtype} KV (a scale is for fp8 KV)`, vScale);
    const out = options.out ?? Tensor.empty([p.nnzQo, p.numQoHeads, p.headDim], p.dtype);
    expectTensor(op, "out", out, [p.dtype]);
    expectShape(op, "out", out, [p.nnzQo, p.numQoHeads, p.headDim]);
    expectQoLayout(op, "out", out);
    const lse = options.lse ?? Tensor.empty([p.nnzQo, p.numQoHeads], "f32");
    expectTensor(op, "lse", lse, ["f32"]);
    expectShape(op, "lse", lse, [p.nnzQo, p.numQoHeads]);
    if (!lse.isContiguous()) invalid(op, "lse", "contiguous", `=strides ${show(lse.strides)}`);

    const ws = this.#workspace.ptr, L = p.layout;
    const at = (offset: number) => ws + BigInt(offset);
    const prefill = prefillParams({
      q: q.ptr,
      k: view.k,
      v: view.v,
      o: out.ptr,
      lse: lse.ptr,
      qoIndptr: at(L.qoIndptr),
      kvIndptr: at(L.kvIndptr),
      kvIndices: at(L.kvIndices),
      kvLens: at(L.kvLens),
      work: at(L.work),
      queue: at(L.prefillQueue),
      mask: 0n,
      maskIndptr: 0n,
      qStrideN: q.strides[0],
      qStrideH: q.strides[1],
      oStrideN: out.strides[0],
      oStrideH: out.strides[1],
      kStrides: { page: view.stridePage, n: view.strideSlot, h: view.strideHead },
      vStrides: { page: view.stridePage, n: view.strideSlot, h: view.strideHead },
      numWork: p.numWork,
      qoLen: 0,
      kvLen: 0,
      numQoHeads: p.numQoHeads,
      numKvHeads: p.numKvHeads,
      headDimQk: p.headDim,
      headDimVo: p.headDim,
      pageSize: p.pageSize,
      paged: true,
      causal: p.causal,
      dtype: p.dtype,
      kvDtype: p.dtype,
      tileQ: p.tileQ,
      variant: p.variant,
      kScale,
      vScale,
    });
    const decode = decodeParams({
      q,
      out,
      lse,
      view,
      items: at(L.items),
      indices: at(L.kvIndices),
      alibi: 0n,
      tmpO: at(L.tmpO),
      tmpLse: at(L.tmpLse),
      counters: at(L.counters),
      numItems: p.numItems,
      numQoHeads: p.numQoHeads,
      numKvHeads: p.numKvHeads,
      headDim: p.headDim,
      pageSize: p.pageSize,
      qDtype: p.dtype,
      kvDtype: p.dtype,
      variant: p.variant,
      kScale,
      vScale,
    });
    const lib = native();
    if (p.splitSms > 0) {
      check(lib.fi_batch_attention_run_split(prefill, decode, p.splitSms, streamHandle(options.stream)), op);
    } else check(lib.fi_batch_attention_run(prefill, decode, at(L.queue), streamHandle(options.stream)), op);
    return { out, lse };
  }

  #assertAlive(op: string): void {
    if (this.#disposed || this.#workspace.disposed) {
      throw new FlashInferError("DISPOSED", `Cannot ${op} as the BatchAttention or its workspace was disposed`);
    }
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#uploaded?.synchronize();
    this.#uploaded?.dispose();
    this.#pinned?.dispose();
    this.#prefill?.dispose();
    if (this.#ownsWorkspace) this.#workspace.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
