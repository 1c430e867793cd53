/**
 * BatchAttention: the unified API for a batch that mixes prefill and decode requests over a paged KV
 * cache, in one launch and CUDA-graph safe (plan uploads the tables; run only launches).
 *
 * For now it runs on the batch prefill kernel: every request's query tiles (a decode request is one
 * query row) go into the same flat, heaviest-first work table and one launch covers the batch. The
 * persistent kernel with a holistic (prefill + split-KV decode) scheduler is not built yet, so decode
 * requests waste most of a 128-row query tile.
 */
import { invalid } from "../runtime/errors.ts";
import type { DType } from "../runtime/dtype.ts";
import type { Tensor } from "../runtime/tensor.ts";
import type { StreamLike } from "../runtime/stream.ts";
import { Workspace } from "../runtime/workspace.ts";
import { BatchPrefillWithPagedKvCache } from "./prefill.ts";
import type { PrefillResult } from "./prefill_launch.ts";
import type { KvLayout, VariantOptions } from "./variants.ts";

export interface BatchAttentionOptions {
  /** Only "auto" for now. */
  backend?: "auto";
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
  stream?: StreamLike;
}

export class BatchAttention implements Disposable {
  readonly #workspace: Workspace;
  readonly #ownsWorkspace: boolean;
  readonly #prefill: BatchPrefillWithPagedKvCache;

  constructor(options: BatchAttentionOptions = {}) {
    const backend = options.backend ?? "auto";
    if (backend !== "auto") invalid("make a BatchAttention", "backend", `"auto"`, backend);
    this.#ownsWorkspace = options.workspace === undefined;
    this.#workspace = options.workspace ?? new Workspace();
    this.#prefill = new BatchPrefillWithPagedKvCache(this.#workspace, options.kvLayout ?? "NHD");
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
    this.#prefill.plan(qoOffsets, indptr, indices, last, numQoHeads, numKvHeads, headDimQk, pageSize, {
      ...options,
      headDimVo,
      qDtype,
      kvDtype: options.kvDtype ?? qDtype,
    });
  }

  /** q [nnzQo, Hqo, Dqk]; kv [k, v] pages (or one [pages, 2, ...] tensor). Returns out and lse (base 2). */
  run(
    q: Tensor,
    kv: Tensor | readonly [Tensor, Tensor],
    options: { out?: Tensor; lse?: Tensor; kScale?: number; vScale?: number; stream?: StreamLike } = {},
  ): Required<PrefillResult> {
    const res = this.#prefill.run(q, kv, { ...options, returnLse: true });
    return { out: res.out, lse: res.lse! };
  }

  dispose(): void {
    this.#prefill.dispose();
    if (this.#ownsWorkspace) this.#workspace.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
