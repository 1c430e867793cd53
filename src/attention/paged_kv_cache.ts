/**
 * The paged KV cache in FlashInfer's format and its page ops.
 *
 * Storage: one tensor [pages, 2, pageSize, Hkv, D] (NHD) or [pages, 2, Hkv, pageSize, D] (HND), K at
 * index 0 and V at 1 of dimension 1; or a pair [k, v] of [pages, pageSize, Hkv, D] (NHD) /
 * [pages, Hkv, pageSize, D] (HND). Metadata: indptr [B + 1] (pages of request b are
 * indices[indptr[b] .. indptr[b + 1])), indices, and lastPageLen [B] in [1, pageSize]; request b
 * holds (pages - 1) * pageSize + lastPageLen[b] tokens.
 */
import { expectRank, expectShape, expectTensor } from "../runtime/check.ts";
import { type DType, DTYPE_BYTES } from "../runtime/dtype.ts";
import { invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";
import type { KvLayout } from "./variants.ts";
import { type IndexScan, scanIndices } from "./index_scan.ts";

export type { KvLayout };
/** One tensor holding K and V, or the pair [k, v]. */
export type PagedKvCache = Tensor | readonly [Tensor, Tensor];

/** What kernels need of a cache: addresses and strides in elements. */
export interface KvCacheView {
  k: bigint;
  v: bigint;
  dtype: DType;
  numPages: number;
  pageSize: number;
  numKvHeads: number;
  headDim: number;
  stridePage: number;
  strideSlot: number;
  strideHead: number;
}

const KV_DTYPES: readonly DType[] = ["f16", "bf16", "e4m3", "e5m2"];

/** Checks a cache in either form and layout and returns its view. */
export function kvCacheView(op: string, cache: PagedKvCache, layout: KvLayout): KvCacheView {
  if (layout !== "NHD" && layout !== "HND") invalid(op, "kvLayout", `"NHD" or "HND"`, layout);
  const nhd = layout === "NHD";
  let k: Tensor, kStrides: readonly number[], kShape: readonly number[], vPtr: bigint;
  if (Array.isArray(cache)) {
    if (cache.length !== 2) invalid(op, "kvCache", "a tensor or a pair [k, v]", `=${cache.length} entries`);
    const [kt, vt] = cache as readonly [Tensor, Tensor];
    expectTensor(op, "kvCache[0]", kt, KV_DTYPES);
    expectTensor(op, "kvCache[1]", vt, [kt.dtype]);
    expectRank(op, "kvCache[0]", kt, 4);
    expectShape(op, "kvCache[1]", vt, kt.shape);
    if (vt.strides.some((s, i) => s !== kt.strides[i])) {
      invalid(op, "kvCache[1]", `of the strides of kvCache[0] ${show(kt.strides)}`, `=strides ${show(vt.strides)}`);
    }
    k = kt, kShape = kt.shape, kStrides = kt.strides, vPtr = vt.ptr;
  } else {
    expectTensor(op, "kvCache", cache as Tensor, KV_DTYPES);
    const t = cache as Tensor;
    expectRank(op, "kvCache", t, 5);
    if (t.shape[1] !== 2) invalid(op, "kvCache", `of size 2 (K and V) in dimension 1`, `=shape ${show(t.shape)}`);
    k = t;
    kShape = [t.shape[0], t.shape[2], t.shape[3], t.shape[4]];
    kStrides = [t.strides[0], t.strides[2], t.strides[3], t.strides[4]];
    vPtr = t.ptr + BigInt(t.strides[1] * DTYPE_BYTES[t.dtype]);
  }
  const arg = Array.isArray(cache) ? "kvCache[0]" : "kvCache";
  if (kStrides[3] !== 1) invalid(op, arg, "contiguous in its last (head) dimension", `=strides ${show(k.strides)}`);
  const bytes = DTYPE_BYTES[k.dtype];
  const align = 16 / bytes;
  const strides = [kStrides[0], kStrides[1], kStrides[2]];
  if (
    (kShape[3] * bytes) % 16 !== 0 || strides.some((s) => s % align !== 0) || k.ptr % 16n !== 0n || vPtr % 16n !== 0n
  ) {
    invalid(op, arg, "16-byte aligned with strides that keep rows 16-byte aligned", `=strides ${show(k.strides)}`);
  }
  return {
    k: k.ptr,
    v: vPtr,
    dtype: k.dtype,
    numPages: kShape[0],
    pageSize: nhd ? kShape[1] : kShape[2],
    numKvHeads: nhd ? kShape[2] : kShape[1],
    headDim: kShape[3],
    stridePage: kStrides[0],
    strideSlot: nhd ? kStrides[1] : kStrides[2],
    strideHead: nhd ? kStrides[2] : kStrides[1],
  };
}

/** What validating a page table found: per-request tokens and the largest page index used. */
export interface PageTableInfo {
  batch: number;
  seqLens: Int32Array;
  maxIndex: number;
}

function expectInt32Array(op: string, arg: string, a: unknown): asserts a is Int32Array {
  if (!(a instanceof Int32Array)) invalid(op, arg, "an Int32Array (host memory)", a);
}

/**
 * Checks indptr / indices / lastPageLen (host Int32Arrays) and returns the sequence lengths. Requests
 * with no pages have length 0 (their lastPageLen is ignored).
 */
export function checkPageTable(
  op: string,
  indptr: Int32Array,
  indices: Int32Array,
  lastPageLen: Int32Array,
  pageSize: number,
  numPages = Infinity,
  seqLens?: Int32Array,
  checkIndices = true,
): PageTableInfo {
  expectInt32Array(op, "indptr", indptr);
  expectInt32Array(op, "indices", indices);
  expectInt32Array(op, "lastPageLen", lastPageLen);
  if (!Number.isInteger(pageSize) || pageSize < 1) invalid(op, "pageSize", "a positive integer", pageSize);
  const batch = indptr.length - 1;
  if (batch < 1) invalid(op, "indptr", "of length batch + 1 >= 2", `=length ${indptr.length}`);
  if (indptr[0] !== 0) invalid(op, "indptr", "starting at 0", `=indptr[0] = ${indptr[0]}`);
  if (lastPageLen.length !== batch) {
    invalid(op, "lastPageLen", `of length ${batch} (batch)`, `=length ${lastPageLen.length}`);
  }
  if (indptr[batch] > indices.length) {
    invalid(op, "indices", `at least indptr[${batch}] = ${indptr[batch]} long`, `=length ${indices.length}`);
  }
  const lens = seqLens && seqLens.length === batch ? seqLens : new Int32Array(batch);
  for (let b = 0; b < batch; b++) {
    const pages = indptr[b + 1] - indptr[b];
    if (pages < 0) {
      invalid(op, "indptr", "non-decreasing", `=indptr[${b}] = ${indptr[b]} > indptr[${b + 1}] = ${indptr[b + 1]}`);
    }
    const last = lastPageLen[b];
    if (pages > 0 && !(last >= 1 && last <= pageSize)) {
      invalid(op, "lastPageLen", `in [1, ${pageSize}] (pageSize)`, `=lastPageLen[${b}] = ${last}`);
    }
    lens[b] = pages > 0 ? (pages - 1) * pageSize + last : 0;
  }
  const n = indptr[batch];
  const scan = checkIndices ? scanIndices(indices, n) : { max: -1, negative: false };
  expectIndicesIn(op, indices, n, numPages, scan);
  return { batch, seqLens: lens, maxIndex: scan.max };
}

/** Refuses page ids of indices[0, n) outside [0, numPages), given their scan (the error names the first). */
export function expectIndicesIn(op: string, indices: Int32Array, n: number, numPages: number, scan: IndexScan): void {
  if (scan.negative || scan.max >= numPages) {
    const bad = indices.subarray(0, n).findIndex((x) => x < 0 || x >= numPages);
    invalid(op, "indices", `in [0, ${numPages}) (the cache's pages)`, `=indices[${bad}] = ${indices[bad]}`);
  }
}

function expectI32Vector(op: string, arg: string, t: Tensor, length?: number): void {
  expectTensor(op, arg, t, ["i32"]);
  expectRank(op, arg, t, 1);
  if (length !== undefined && t.shape[0] !== length) invalid(op, arg, `of length ${length}`, `=shape ${show(t.shape)}`);
  if (!t.isContiguous()) invalid(op, arg, "contiguous", `=strides ${show(t.strides)}`);
}

/**
 * The largest page id of ids[0, n) in one scan, refusing a negative one; `where(i)` names a bad entry
 * in the error (default `${arg}[i] = id`).
 */
export function maxPageId(
  op: string,
  arg: string,
  ids: Int32Array,
  n = ids.length,
  where = (i: number) => `${arg}[${i}] = ${ids[i]}`,
): number {
  const { max, negative } = scanIndices(ids, n);
  if (negative) invalid(op, arg, "non-negative page ids", `=${where(ids.subarray(0, n).findIndex((x) => x < 0))}`);
  return max;
}

/** Refuses a cache with fewer pages than the plan's largest page id needs. */
export function expectPagesCover(op: string, arg: string, maxPage: number, pages: number): void {
  if (maxPage >= pages) {
    invalid(op, arg, `at least ${maxPage + 1} pages (the largest planned page id is ${maxPage})`, `=${pages} pages`);
  }
}

export interface AppendOptions {
  kvLayout?: KvLayout;
  stream?: StreamLike;
}

/**
 * Writes appendKey / appendValue [nnz, Hkv, D] into the cache at (batchIndices[i], positions[i]) through
 * the page table (device i32 tensors kvIndices, kvIndptr; kvLastPageLen is accepted for FlashInfer's
 * signature). The caller's page table must cover every position (see getBatchIndicesPositions).
 */
export function appendPagedKvCache(
  appendKey: Tensor,
  appendValue: Tensor,
  batchIndices: Tensor,
  positions: Tensor,
  kvCache: PagedKvCache,
  kvIndices: Tensor,
  kvIndptr: Tensor,
  kvLastPageLen: Tensor,
  options: AppendOptions = {},
): void {
  const op = "append to the paged KV cache";
  const view = kvCacheView(op, kvCache, options.kvLayout ?? "NHD");
  expectTensor(op, "appendKey", appendKey, [view.dtype]);
  expectTensor(op, "appendValue", appendValue, [view.dtype]);
  expectRank(op, "appendKey", appendKey, 3);
  const nnz = appendKey.shape[0];
  expectShape(op, "appendKey", appendKey, [nnz, view.numKvHeads, view.headDim]);
  expectShape(op, "appendValue", appendValue, [nnz, view.numKvHeads, view.headDim]);
  for (const [arg, t] of [["appendKey", appendKey], ["appendValue", appendValue]] as const) {
    const align = 16 / DTYPE_BYTES[t.dtype];
    if (t.strides[2] !== 1 || t.strides[0] % align !== 0 || t.strides[1] % align !== 0 || t.ptr % 16n !== 0n) {
      invalid(op, arg, "contiguous in the head dim with 16-byte aligned rows", `=strides ${show(t.strides)}`);
    }
  }
  expectI32Vector(op, "batchIndices", batchIndices, nnz);
  expectI32Vector(op, "positions", positions, nnz);
  expectI32Vector(op, "kvIndices", kvIndices);
  expectI32Vector(op, "kvIndptr", kvIndptr);
  expectI32Vector(op, "kvLastPageLen", kvLastPageLen, kvIndptr.shape[0] - 1);
  check(
    native().fi_append_paged_kv_cache(
      appendKey.ptr,
      appendValue.ptr,
      BigInt(appendKey.strides[0]),
      BigInt(appendKey.strides[1]),
      BigInt(appendValue.strides[0]),
      BigInt(appendValue.strides[1]),
      view.k,
      view.v,
      BigInt(view.stridePage),
      BigInt(view.strideSlot),
      BigInt(view.strideHead),
      batchIndices.ptr,
      positions.ptr,
      kvIndices.ptr,
      kvIndptr.ptr,
      nnz,
      view.numKvHeads,
      view.headDim,
      DTYPE_BYTES[view.dtype],
      view.pageSize,
      view.numPages,
      streamHandle(options.stream),
    ),
    op,
  );
}

/**
 * For appended tokens laid out by appendIndptr [B + 1] (device i32), the request of each token and its
 * position, given the sequence lengths after the append (seqLens [B]). Returns i32 [nnz] tensors.
 */
export function getBatchIndicesPositions(
  appendIndptr: Tensor,
  seqLens: Tensor,
  nnz: number,
  options: { stream?: StreamLike } = {},
): { batchIndices: Tensor; positions: Tensor } {
  const op = "get batch indices and positions";
  expectI32Vector(op, "appendIndptr", appendIndptr);
  const batch = appendIndptr.shape[0] - 1;
  if (batch < 0) invalid(op, "appendIndptr", "of length batch + 1 >= 1", `=shape ${show(appendIndptr.shape)}`);
  expectI32Vector(op, "seqLens", seqLens, batch);
  if (!Number.isInteger(nnz) || nnz < 0) invalid(op, "nnz", "a non-negative integer", nnz);
  const batchIndices = Tensor.empty([nnz], "i32");
  const positions = Tensor.empty([nnz], "i32");
  check(
    native().fi_get_batch_indices_positions(
      appendIndptr.ptr,
      seqLens.ptr,
      batchIndices.ptr,
      positions.ptr,
      batch,
      streamHandle(options.stream),
    ),
    op,
  );
  return { batchIndices, positions };
}

/** seqLens[b] = (indptr[b + 1] - indptr[b] - 1) * pageSize + lastPageLen[b] (0 without pages), on the device. */
export function getSeqLens(
  kvIndptr: Tensor,
  kvLastPageLen: Tensor,
  pageSize: number,
  options: { stream?: StreamLike } = {},
): Tensor {
  const op = "get sequence lengths";
  expectI32Vector(op, "kvIndptr", kvIndptr);
  const batch = kvIndptr.shape[0] - 1;
  if (batch < 0) invalid(op, "kvIndptr", "of length batch + 1 >= 1", `=shape ${show(kvIndptr.shape)}`);
  expectI32Vector(op, "kvLastPageLen", kvLastPageLen, batch);
  if (!Number.isInteger(pageSize) || pageSize < 1) invalid(op, "pageSize", "a positive integer", pageSize);
  const out = Tensor.empty([batch], "i32");
  check(
    native().fi_get_seq_lens(kvIndptr.ptr, kvLastPageLen.ptr, out.ptr, batch, pageSize, streamHandle(options.stream)),
    op,
  );
  return out;
}
