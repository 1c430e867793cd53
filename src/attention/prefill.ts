/**
 * Prefill attention with FlashInfer's semantics: singlePrefillWithKvCache, and the plan/run wrappers
 * BatchPrefillWithRaggedKvCache and BatchPrefillWithPagedKvCache. Causal masks align bottom-right
 * (query i of a request with qoLen queries and kvLen keys sees keys j <= i + kvLen - qoLen); a custom
 * mask (booleans per request, packed to bits) replaces the causal mask. Logits are
 * smScale * q·k, then cap * tanh(logits / cap) when logitsSoftCap > 0, then + slope_h * (j - (i + kvLen - qoLen))
 * for ALiBi; windowLeft keeps keys j >= i + kvLen - qoLen - windowLeft. LSE is in base 2.
 */
import { Device } from "../runtime/device.ts";
import { expectTensor } from "../runtime/check.ts";
import { type DType, DTYPE_BYTES } from "../runtime/dtype.ts";
import { invalid, show } from "../runtime/errors.ts";
import { PinnedBuffer } from "../runtime/memory.ts";
import { Resource } from "../runtime/resource.ts";
import { Event, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import type { Workspace } from "../runtime/workspace.ts";
import { type BoolArray, packbits } from "./mask.ts";
import { expectPagesCover, maxPageId } from "./paged_kv_cache.ts";
import { headPack, prefillConfig, tileTokens } from "./prefill_configs.ts";
import {
  expectRows,
  kvScales,
  type KvStrides,
  kvStrides,
  launchPrefill,
  outputs,
  type PrefillOutputOptions,
  type PrefillResult,
  prefillVariant,
} from "./prefill_launch.ts";
import { prefillTableLayout, prefillWork, roundRobinUneven } from "./prefill_scheduler.ts";
import type { KvLayout, ResolvedVariant, VariantOptions } from "./variants.ts";

export type { PrefillResult } from "./prefill_launch.ts";

export interface SinglePrefillOptions extends VariantOptions, PrefillOutputOptions {
  causal?: boolean;
  /** Layout of k and v: NHD [kvLen, Hkv, D] (default) or HND [Hkv, kvLen, D]. */
  kvLayout?: KvLayout;
  /** A host mask of qoLen * kvLen booleans (row-major, true = attend); packed and uploaded per call. */
  customMask?: BoolArray;
  /** The mask already packed (packbits) on the device: u8 [ceil(qoLen * kvLen / 8)]. */
  packedCustomMask?: Tensor;
}

function expectLayout(op: string, layout: unknown): KvLayout {
  if (layout !== "NHD" && layout !== "HND") invalid(op, "kvLayout", `"NHD" or "HND"`, layout);
  return layout;
}

/**
 * Attention of one request: q [qoLen, Hqo, Dqk], k [kvLen, Hkv, Dqk], v [kvLen, Hkv, Dvo] (NHD, or
 * HND [Hkv, kvLen, D]). Returns { out [qoLen, Hqo, Dvo], lse? [qoLen, Hqo] }.
 */
export function singlePrefillWithKvCache(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SinglePrefillOptions = {},
): PrefillResult {
  const op = "run single prefill";
  expectTensor(op, "q", q, ["f16", "bf16"]);
  if (q.rank !== 3) invalid(op, "q", "3-dimensional [qoLen, numQoHeads, headDim]", `=shape ${show(q.shape)}`);
  const [qoLen, numQoHeads, headDimQk] = q.shape;
  const layout = expectLayout(op, options.kvLayout ?? "NHD");
  expectTensor(op, "k", k);
  expectTensor(op, "v", v);
  if (k.rank !== 3) invalid(op, "k", `3-dimensional (${layout})`, `=shape ${show(k.shape)}`);
  if (v.rank !== 3) invalid(op, "v", `3-dimensional (${layout})`, `=shape ${show(v.shape)}`);
  const numKvHeads = layout === "NHD" ? k.shape[1] : k.shape[0];
  const headDimVo = v.shape[2];
  const config = prefillConfig(op, headDimQk, headDimVo, q.dtype, k.dtype);
  if (v.dtype !== k.dtype) invalid(op, "v", `of the dtype of 'k' (${k.dtype})`, v.dtype);
  if (numKvHeads < 1 || numQoHeads % numKvHeads !== 0) {
    invalid(op, "numQoHeads", "a multiple of 'numKvHeads'", `=${numQoHeads} and ${numKvHeads}`);
  }
  const ks = kvStrides(op, "k", k, layout, undefined, numKvHeads, headDimQk, k.dtype);
  const vs = kvStrides(op, "v", v, layout, ks.tokens, numKvHeads, headDimVo, k.dtype);
  const kvLen = ks.tokens;
  const qs = expectRows(op, "q", q, [qoLen, numQoHeads, headDimQk], q.dtype);
  const variant = prefillVariant(op, headDimQk, options, k.dtype);
  const scales = kvScales(op, options);
  const hasMask = options.customMask !== undefined || options.packedCustomMask !== undefined;
  const causal = !hasMask && (options.causal ?? false);
  if (causal && kvLen < qoLen) {
    invalid(op, "k", `at least as long as q (${qoLen} rows) for a causal mask`, `=${kvLen} rows`);
  }

  let ownedMask: Tensor | undefined;
  let mask = 0n;
  const maskBytes = Math.ceil((qoLen * kvLen) / 8);
  if (options.customMask !== undefined && options.packedCustomMask !== undefined) {
    invalid(op, "customMask", "given without 'packedCustomMask'", "=both");
  }
  if (options.customMask !== undefined) {
    const m = options.customMask;
    if (m === null || typeof m !== "object" || m.length !== qoLen * kvLen) {
      invalid(
        op,
        "customMask",
        `of qoLen * kvLen = ${qoLen * kvLen} booleans`,
        `=${(m as BoolArray)?.length} elements`,
      );
    }
    ownedMask = Tensor.fromRaw(packbits(m), [maskBytes], "u8");
    mask = ownedMask.ptr;
  } else if (options.packedCustomMask !== undefined) {
    const m = options.packedCustomMask;
    expectTensor(op, "packedCustomMask", m, ["u8"]);
    if (m.numel !== maskBytes || !m.isContiguous()) {
      invalid(
        op,
        "packedCustomMask",
        `a contiguous u8 tensor of ceil(qoLen * kvLen / 8) = ${maskBytes} bytes`,
        `=shape ${show(m.shape)}`,
      );
    }
    mask = m.ptr;
  }

  const res = outputs(op, options, qoLen, numQoHeads, headDimVo, q.dtype);
  launchPrefill(op, {
    q: q.ptr,
    k: k.ptr,
    v: v.ptr,
    o: res.out.ptr,
    lse: res.lse?.ptr ?? 0n,
    qoIndptr: 0n,
    kvIndptr: 0n,
    kvIndices: 0n,
    kvLens: 0n,
    work: 0n,
    queue: 0n, // no workspace: the Hopper kernel takes items round-robin
    mask,
    maskIndptr: 0n,
    qStrideN: qs.sn,
    qStrideH: qs.sh,
    oStrideN: res.out.strides[0],
    oStrideH: res.out.strides[1],
    kStrides: { page: ks.sn, n: 0, h: ks.sh },
    vStrides: { page: vs.sn, n: 0, h: vs.sh },
    numWork: 0,
    qoLen,
    kvLen,
    numQoHeads,
    numKvHeads,
    headDimQk,
    headDimVo,
    pageSize: 1,
    paged: false,
    causal,
    dtype: q.dtype,
    kvDtype: k.dtype,
    tileQ: tileTokens(config, numQoHeads, numKvHeads),
    variant,
    ...scales,
  }, options.stream);
  // cudaFree waits for the device, so the kernel has read the mask before its memory goes.
  ownedMask?.dispose();
  return res;
}

export interface BatchPrefillPlanOptions extends VariantOptions {
  /** Defaults to headDimQk. */
  headDimVo?: number;
  causal?: boolean;
  /** Booleans of every request's qoLen x kvLen mask, concatenated (replaces the causal mask). */
  customMask?: BoolArray;
  /** The same, already packed per request with segmentPackbits (each request starts on a byte). */
  packedCustomMask?: Uint8Array;
  /** q / out dtype (default "f16", as FlashInfer). */
  qDtype?: DType;
  /** KV dtype (default qDtype). */
  kvDtype?: DType;
  stream?: StreamLike;
}

interface Plan {
  batch: number;
  nnzQo: number;
  nnzKv: number;
  numQoHeads: number;
  numKvHeads: number;
  headDimQk: number;
  headDimVo: number;
  qDtype: DType;
  kvDtype: DType;
  causal: boolean;
  tileQ: number;
  numWork: number;
  variant: ResolvedVariant;
  hasMask: boolean;
  /** The Hopper kernel takes items from the counter in the workspace (roundRobinUneven). */
  greedy: boolean;
  maxPage: number;
  pageSize: number;
  // byte offsets of the tables in the workspace
  layout: ReturnType<typeof prefillTableLayout>;
}

/** Reads an indptr: an Int32Array of batch + 1 non-decreasing values starting at 0. */
export function expectIndptr(op: string, arg: string, x: unknown, batch?: number): Int32Array {
  if (!(x instanceof Int32Array)) invalid(op, arg, "an Int32Array", x);
  if (x.length < 2) invalid(op, arg, "of length batch + 1 >= 2", `=length ${x.length}`);
  if (batch !== undefined && x.length !== batch + 1) {
    invalid(op, arg, `of length batch + 1 = ${batch + 1} like 'qoIndptr'`, `=length ${x.length}`);
  }
  if (x[0] !== 0) invalid(op, arg, "starting at 0", x[0]);
  for (let b = 0; b < x.length - 1; b++) {
    if (x[b + 1] < x[b]) invalid(op, arg, "non-decreasing", `=${arg}[${b}] = ${x[b]} > ${arg}[${b + 1}] = ${x[b + 1]}`);
  }
  return x;
}

export function expectHeads(op: string, numQoHeads: unknown, numKvHeads: unknown): void {
  if (!Number.isInteger(numQoHeads) || (numQoHeads as number) < 1 || (numQoHeads as number) > 65535) {
    invalid(op, "numQoHeads", "an integer in [1, 65535]", numQoHeads);
  }
  if (!Number.isInteger(numKvHeads) || (numKvHeads as number) < 1) {
    invalid(op, "numKvHeads", "a positive integer", numKvHeads);
  }
  if ((numQoHeads as number) % (numKvHeads as number) !== 0) {
    invalid(op, "numQoHeads", "a multiple of 'numKvHeads'", `=${numQoHeads} and ${numKvHeads}`);
  }
}

/** Shared plan/run machinery of the two batch wrappers. */
abstract class BatchPrefillBase extends Resource {
  protected readonly workspace: Workspace;
  protected readonly kvLayout: KvLayout;
  #pinned: PinnedBuffer | undefined;
  #uploaded: Event | undefined;
  protected plan_: Plan | undefined;

  protected constructor(kind: string, workspace: Workspace, kvLayout: KvLayout) {
    super(kind);
    const op = `make a ${kind}`;
    if (workspace === null || typeof workspace !== "object" || !("ptr" in workspace)) {
      invalid(op, "workspace", "a Workspace", workspace);
    }
    this.workspace = workspace;
    this.kvLayout = expectLayout(op, kvLayout);
  }

  /** Validates lengths and options, orders the work and uploads the tables (one async copy). */
  protected planTables(
    op: string,
    qoIndptr: Int32Array,
    kvLens: Int32Array,
    kvIndptr: Int32Array,
    kvIndices: Int32Array | undefined,
    pageSize: number,
    numQoHeads: number,
    numKvHeads: number,
    headDimQk: number,
    o: BatchPrefillPlanOptions,
    maxPage = -1, // paged: the largest page id (checked non-negative by the caller)
  ): void {
    this.assertAlive("plan");
    const batch = qoIndptr.length - 1;
    expectHeads(op, numQoHeads, numKvHeads);
    const headDimVo = o.headDimVo ?? headDimQk;
    const qDtype = o.qDtype ?? "f16";
    const kvDtype = o.kvDtype ?? qDtype;
    const config = prefillConfig(op, headDimQk, headDimVo, qDtype, kvDtype);
    const variant = prefillVariant(op, headDimQk, o, kvDtype);
    const qoLens = new Int32Array(batch);
    for (let b = 0; b < batch; b++) qoLens[b] = qoIndptr[b + 1] - qoIndptr[b];
    const hasMask = o.customMask !== undefined || o.packedCustomMask !== undefined;
    const causal = !hasMask && (o.causal ?? false);
    if (causal) {
      for (let b = 0; b < batch; b++) {
        if (kvLens[b] < qoLens[b]) {
          invalid(
            op,
            "kvIndptr",
            "to give each request at least as many keys as queries for a causal mask",
            `=request ${b} with ${qoLens[b]} queries and ${kvLens[b]} keys`,
          );
        }
      }
    }

    // Custom mask: pack (or check the packed one) per request.
    const maskIndptr = new Int32Array(batch + 1);
    for (let b = 0; b < batch; b++) maskIndptr[b + 1] = maskIndptr[b] + Math.ceil((qoLens[b] * kvLens[b]) / 8);
    let packed: Uint8Array | undefined;
    if (o.customMask !== undefined && o.packedCustomMask !== undefined) {
      invalid(op, "customMask", "given without 'packedCustomMask'", "=both");
    }
    if (o.customMask !== undefined) {
      const m = o.customMask;
      let total = 0;
      for (let b = 0; b < batch; b++) total += qoLens[b] * kvLens[b];
      if (m === null || typeof m !== "object" || m.length !== total) {
        invalid(op, "customMask", `of sum(qoLen * kvLen) = ${total} booleans`, `=${(m as BoolArray)?.length} elements`);
      }
      packed = new Uint8Array(maskIndptr[batch]);
      let at = 0;
      for (let b = 0; b < batch; b++) {
        const n = qoLens[b] * kvLens[b], base = maskIndptr[b];
        for (let i = 0; i < n; i++) if (m[at + i]) packed[base + (i >> 3)] |= 1 << (i & 7);
        at += n;
      }
    } else if (o.packedCustomMask !== undefined) {
      packed = o.packedCustomMask;
      if (!(packed instanceof Uint8Array) || packed.length !== maskIndptr[batch]) {
        invalid(
          op,
          "packedCustomMask",
          `a Uint8Array of ${maskIndptr[batch]} bytes (segmentPackbits of each request's mask)`,
          `=${(packed as Uint8Array)?.length} bytes`,
        );
      }
    }

    const tileQ = tileTokens(config, numQoHeads, numKvHeads);
    const work = prefillWork(qoLens, kvLens, tileQ, causal, variant.windowLeft);
    const numWork = work.length / 2;
    if (numWork > 2 ** 31 - 1) invalid(op, "qoIndptr", "at most 2^31 - 1 query tiles", numWork);
    const pages = kvIndices?.length ?? 0;
    const layout = prefillTableLayout(batch, numWork, pages, packed?.length ?? 0);
    this.workspace.require(op, layout.bytes);

    // The pinned staging buffer may still be the source of the previous plan's copy: wait for it.
    this.#uploaded?.synchronize();
    if (!this.#pinned || this.#pinned.size < layout.bytes) {
      this.#pinned?.dispose();
      this.#pinned = new PinnedBuffer(Math.max(layout.bytes, 4096));
    }
    const bytes = this.#pinned.bytes;
    const i32 = (offset: number, values: Int32Array) =>
      new Int32Array(bytes.buffer, bytes.byteOffset + offset, values.length).set(values);
    i32(layout.queue, new Int32Array(2));
    i32(layout.qoIndptr, qoIndptr);
    i32(layout.kvIndptr, kvIndptr);
    i32(layout.kvLens, kvLens);
    i32(layout.work, work);
    if (kvIndices) i32(layout.kvIndices, kvIndices);
    i32(layout.maskIndptr, maskIndptr);
    if (packed) bytes.set(packed, layout.mask);
    this.#pinned.copyToDevice(this.workspace.ptr, layout.bytes, o.stream);
    this.#uploaded ??= new Event({ timing: false });
    this.#uploaded.record(o.stream);

    this.plan_ = {
      batch,
      nnzQo: qoIndptr[batch],
      nnzKv: kvIndptr[batch],
      numQoHeads,
      numKvHeads,
      headDimQk,
      headDimVo,
      qDtype,
      kvDtype,
      causal,
      tileQ,
      numWork,
      variant,
      hasMask: packed !== undefined,
      greedy: roundRobinUneven(
        work,
        qoLens,
        kvLens,
        tileQ,
        causal,
        variant.windowLeft,
        numQoHeads / headPack(numQoHeads / numKvHeads),
        Device.current().smCount,
      ),
      maxPage,
      pageSize,
      layout,
    };
  }

  protected requirePlan(op: string): Plan {
    this.assertAlive("run");
    if (!this.plan_) invalid(op, "plan", "called before run", "=no plan");
    return this.plan_;
  }

  protected launch(
    op: string,
    p: Plan,
    q: Tensor,
    k: bigint,
    v: bigint,
    ks: KvStrides,
    vs: KvStrides,
    o: PrefillOutputOptions,
    paged: boolean,
  ): PrefillResult {
    const qs = expectRows(op, "q", q, [p.nnzQo, p.numQoHeads, p.headDimQk], p.qDtype);
    const res = outputs(op, o, p.nnzQo, p.numQoHeads, p.headDimVo, p.qDtype);
    const scales = kvScales(op, o);
    const ws = this.workspace.ptr, L = p.layout;
    launchPrefill(op, {
      q: q.ptr,
      k,
      v,
      o: res.out.ptr,
      lse: res.lse?.ptr ?? 0n,
      qoIndptr: ws + BigInt(L.qoIndptr),
      kvIndptr: ws + BigInt(L.kvIndptr),
      kvIndices: paged ? ws + BigInt(L.kvIndices) : 0n,
      kvLens: ws + BigInt(L.kvLens),
      work: ws + BigInt(L.work),
      queue: p.greedy ? ws + BigInt(L.queue) : 0n,
      mask: p.hasMask ? ws + BigInt(L.mask) : 0n,
      maskIndptr: p.hasMask ? ws + BigInt(L.maskIndptr) : 0n,
      qStrideN: qs.sn,
      qStrideH: qs.sh,
      oStrideN: res.out.strides[0],
      oStrideH: res.out.strides[1],
      kStrides: ks,
      vStrides: vs,
      numWork: p.numWork,
      qoLen: 0,
      kvLen: 0,
      numQoHeads: p.numQoHeads,
      numKvHeads: p.numKvHeads,
      headDimQk: p.headDimQk,
      headDimVo: p.headDimVo,
      pageSize: p.pageSize,
      paged,
      causal: p.causal,
      dtype: p.qDtype,
      kvDtype: p.kvDtype,
      tileQ: p.tileQ,
      variant: p.variant,
      ...scales,
    }, o.stream);
    return res;
  }

  protected release(): void {
    this.#uploaded?.dispose();
    this.#pinned?.dispose();
  }
}

/**
 * Batch prefill over ragged K/V: request b's keys are rows kvIndptr[b]..kvIndptr[b + 1] of k [nnzKv, Hkv, D]
 * (NHD) or [Hkv, nnzKv, D] (HND); its queries rows qoIndptr[b]..qoIndptr[b + 1] of q [nnzQo, Hqo, D].
 */
export class BatchPrefillWithRaggedKvCache extends BatchPrefillBase {
  constructor(workspace: Workspace, kvLayout: KvLayout = "NHD") {
    super("ragged batch prefill", workspace, kvLayout);
  }

  plan(
    qoIndptr: Int32Array,
    kvIndptr: Int32Array,
    numQoHeads: number,
    numKvHeads: number,
    headDimQk: number,
    options: BatchPrefillPlanOptions = {},
  ): void {
    const op = "plan ragged batch prefill";
    expectIndptr(op, "qoIndptr", qoIndptr);
    expectIndptr(op, "kvIndptr", kvIndptr, qoIndptr.length - 1);
    const kvLens = new Int32Array(qoIndptr.length - 1);
    for (let b = 0; b < kvLens.length; b++) kvLens[b] = kvIndptr[b + 1] - kvIndptr[b];
    this.planTables(op, qoIndptr, kvLens, kvIndptr, undefined, 1, numQoHeads, numKvHeads, headDimQk, options);
  }

  /** q [nnzQo, Hqo, Dqk], k [nnzKv, Hkv, Dqk], v [nnzKv, Hkv, Dvo] (NHD; HND swaps the first two). */
  run(q: Tensor, k: Tensor, v: Tensor, options: PrefillOutputOptions = {}): PrefillResult {
    const op = "run ragged batch prefill";
    const p = this.requirePlan(op);
    expectTensor(op, "q", q);
    const ks = kvStrides(op, "k", k, this.kvLayout, p.nnzKv, p.numKvHeads, p.headDimQk, p.kvDtype);
    const vs = kvStrides(op, "v", v, this.kvLayout, p.nnzKv, p.numKvHeads, p.headDimVo, p.kvDtype);
    return this.launch(
      op,
      p,
      q,
      k.ptr,
      v.ptr,
      { page: ks.sn, n: 0, h: ks.sh },
      { page: vs.sn, n: 0, h: vs.sh },
      options,
      false,
    );
  }
}

/**
 * Batch prefill over a paged KV cache (FlashInfer's format): request b owns pages
 * kvIndices[kvIndptr[b]..kvIndptr[b + 1]], all full but the last, which holds kvLastPageLen[b] entries.
 * The cache is one tensor [pages, 2, pageSize, Hkv, D] (NHD) / [pages, 2, Hkv, pageSize, D] (HND), or a
 * pair [k, v] of [pages, pageSize, Hkv, D] / [pages, Hkv, pageSize, D].
 */
export class BatchPrefillWithPagedKvCache extends BatchPrefillBase {
  constructor(workspace: Workspace, kvLayout: KvLayout = "NHD") {
    super("paged batch prefill", workspace, kvLayout);
  }

  plan(
    qoIndptr: Int32Array,
    kvIndptr: Int32Array,
    kvIndices: Int32Array,
    kvLastPageLen: Int32Array,
    numQoHeads: number,
    numKvHeads: number,
    headDimQk: number,
    pageSize: number,
    options: BatchPrefillPlanOptions = {},
  ): void {
    const op = "plan paged batch prefill";
    expectIndptr(op, "qoIndptr", qoIndptr);
    const batch = qoIndptr.length - 1;
    expectIndptr(op, "kvIndptr", kvIndptr, batch);
    if (!Number.isInteger(pageSize) || pageSize < 1) invalid(op, "pageSize", "a positive integer", pageSize);
    if (!(kvIndices instanceof Int32Array)) invalid(op, "kvIndices", "an Int32Array", kvIndices);
    if (kvIndices.length < kvIndptr[batch]) {
      invalid(op, "kvIndices", `at least kvIndptr[${batch}] = ${kvIndptr[batch]} long`, `=length ${kvIndices.length}`);
    }
    const maxPage = maxPageId(op, "kvIndices", kvIndices, kvIndptr[batch]);
    if (!(kvLastPageLen instanceof Int32Array)) invalid(op, "kvLastPageLen", "an Int32Array", kvLastPageLen);
    if (kvLastPageLen.length !== batch) {
      invalid(op, "kvLastPageLen", `of length batch = ${batch}`, `=length ${kvLastPageLen.length}`);
    }
    const kvLens = new Int32Array(batch);
    for (let b = 0; b < batch; b++) {
      const pages = kvIndptr[b + 1] - kvIndptr[b], last = kvLastPageLen[b];
      if (pages === 0 ? last !== 0 : !(last >= 1 && last <= pageSize)) {
        invalid(
          op,
          "kvLastPageLen",
          pages === 0 ? "0 for a request with no pages" : `in [1, pageSize = ${pageSize}]`,
          `=kvLastPageLen[${b}] = ${last}`,
        );
      }
      kvLens[b] = pages === 0 ? 0 : (pages - 1) * pageSize + last;
    }
    this.planTables(
      op,
      qoIndptr,
      kvLens,
      kvIndptr,
      kvIndices.subarray(0, kvIndptr[batch]),
      pageSize,
      numQoHeads,
      numKvHeads,
      headDimQk,
      options,
      maxPage,
    );
  }

  /** q [nnzQo, Hqo, Dqk]; kvCache one tensor or [k, v] (see the class comment). */
  run(q: Tensor, kvCache: Tensor | readonly [Tensor, Tensor], options: PrefillOutputOptions = {}): PrefillResult {
    const op = "run paged batch prefill";
    const p = this.requirePlan(op);
    expectTensor(op, "q", q);
    const nhd = this.kvLayout === "NHD";
    const dt = p.kvDtype;
    let k: bigint, v: bigint, ks: KvStrides, vs: KvStrides, pages: number;
    if (kvCache instanceof Tensor) {
      expectTensor(op, "kvCache", kvCache, [dt]);
      if (p.headDimVo !== p.headDimQk) {
        invalid(op, "kvCache", "a [k, v] pair when headDimVo differs from headDimQk", "=one tensor");
      }
      const shape = kvCache.shape;
      pages = shape[0];
      const want = nhd
        ? [pages, 2, p.pageSize, p.numKvHeads, p.headDimQk]
        : [pages, 2, p.numKvHeads, p.pageSize, p.headDimQk];
      if (kvCache.rank !== 5 || want.some((d, i) => d !== shape[i])) {
        invalid(op, "kvCache", `of shape ${show(want)} (${this.kvLayout})`, `=shape ${show(shape)}`);
      }
      const s = kvCache.strides;
      ks = vs = nhd ? { page: s[0], n: s[2], h: s[3] } : { page: s[0], n: s[3], h: s[2] };
      checkKvAlign(op, "kvCache", kvCache, [s[0], s[1], s[2], s[3]]);
      k = kvCache.ptr;
      v = k + BigInt(s[1] * DTYPE_BYTES[dt]);
    } else {
      if (!Array.isArray(kvCache) || kvCache.length !== 2) invalid(op, "kvCache", "a Tensor or a [k, v] pair", kvCache);
      const [kt, vt] = kvCache;
      expectTensor(op, "kvCache[0]", kt, [dt]);
      expectTensor(op, "kvCache[1]", vt, [dt]);
      pages = kt.shape[0];
      const shapeOf = (d: number) => nhd ? [pages, p.pageSize, p.numKvHeads, d] : [pages, p.numKvHeads, p.pageSize, d];
      for (const [t, arg, d] of [[kt, "kvCache[0]", p.headDimQk], [vt, "kvCache[1]", p.headDimVo]] as const) {
        const want = shapeOf(d);
        if (t.rank !== 4 || want.some((x, i) => x !== t.shape[i])) {
          invalid(op, arg, `of shape ${show(want)} (${this.kvLayout})`, `=shape ${show(t.shape)}`);
        }
        checkKvAlign(op, arg, t, t.strides.slice(0, 3));
      }
      const of = (s: readonly number[]) => nhd ? { page: s[0], n: s[1], h: s[2] } : { page: s[0], n: s[2], h: s[1] };
      ks = of(kt.strides);
      vs = of(vt.strides);
      k = kt.ptr;
      v = vt.ptr;
    }
    expectPagesCover(op, "kvCache", p.maxPage, pages);
    return this.launch(op, p, q, k, v, ks, vs, options, true);
  }
}

function checkKvAlign(op: string, arg: string, t: Tensor, strides: readonly number[]): void {
  if (t.strides[t.rank - 1] !== 1) invalid(op, arg, "contiguous in its last dimension", `=strides ${show(t.strides)}`);
  const vec = 16 / DTYPE_BYTES[t.dtype];
  if (t.numel > 0 && (t.ptr % 16n !== 0n || strides.some((s) => s % vec !== 0))) {
    invalid(op, arg, `16-byte aligned with strides that are multiples of ${vec}`, `=strides ${show(t.strides)}`);
  }
}
