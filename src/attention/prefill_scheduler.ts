/**
 * Plan-time host logic of batch prefill, pure TypeScript (tested without a GPU): the flat work table
 * (request, query tile) that one launch covers, ordered heaviest first so the long causal tiles start
 * early and the short ones fill the tail, and the byte layout of the tables in the workspace.
 */

import { tableCursor } from "../runtime/workspace.ts";

/** Keys a query tile visits: the cost used to order the work. */
export function tileCost(
  qoLen: number,
  kvLen: number,
  tile: number,
  tileQ: number,
  causal: boolean,
  windowLeft: number,
): number {
  const delta = kvLen - qoLen;
  const first = tile * tileQ, last = Math.min(qoLen, first + tileQ) - 1;
  const end = causal ? Math.min(kvLen, last + delta + 1) : kvLen;
  const begin = windowLeft >= 0 ? Math.max(0, first + delta - windowLeft) : 0;
  return Math.max(0, end - begin) + 1; // + 1: every tile has a fixed cost (Q load, O store)
}

/** Work items [request, tile] flattened into an Int32Array of 2 * items, heaviest first. */
export function prefillWork(
  qoLens: ArrayLike<number>,
  kvLens: ArrayLike<number>,
  tileQ: number,
  causal: boolean,
  windowLeft = -1,
): Int32Array {
  const items: { b: number; t: number; cost: number }[] = [];
  for (let b = 0; b < qoLens.length; b++) {
    const tiles = Math.ceil(qoLens[b] / tileQ);
    for (let t = 0; t < tiles; t++) {
      items.push({ b, t, cost: tileCost(qoLens[b], kvLens[b], t, tileQ, causal, windowLeft) });
    }
  }
  items.sort((x, y) => y.cost - x.cost || x.b - y.b || x.t - y.t);
  const work = new Int32Array(2 * items.length);
  items.forEach((it, i) => {
    work[2 * i] = it.b;
    work[2 * i + 1] = it.t;
  });
  return work;
}

/** Byte offsets of the plan's tables in the workspace (each 16-byte aligned). */
export interface PrefillTableLayout {
  /** 2 int32, zero: the Hopper kernel's item counter (runs leave it zero). */
  queue: number;
  qoIndptr: number;
  kvIndptr: number;
  kvLens: number;
  work: number;
  kvIndices: number;
  maskIndptr: number;
  mask: number;
  bytes: number;
}

export function prefillTableLayout(
  batch: number,
  workItems: number,
  pages: number,
  maskBytes: number,
): PrefillTableLayout {
  const tables = tableCursor(16), take = tables.take;
  const queue = take(8);
  const qoIndptr = take(4 * (batch + 1));
  const kvIndptr = take(4 * (batch + 1));
  const kvLens = take(4 * batch);
  const work = take(8 * workItems);
  const kvIndices = take(4 * pages);
  const maskIndptr = take(4 * (batch + 1));
  const mask = take(maskBytes);
  return { queue, qoIndptr, kvIndptr, kvLens, work, kvIndices, maskIndptr, mask, bytes: tables.end };
}
