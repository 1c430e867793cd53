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

/**
 * Whether the Hopper prefill kernel should take its items from a device counter (greedy: the CTA that
 * finishes first takes the next) instead of round-robin. `grid` persistent CTAs take the items
 * i = headGroup * entries + entry in the order i, i + grid, ... Round-robin keeps the CTAs running at
 * one time on one head group's KV (L2 hits) and needs no atomics, so it stays unless it leaves some CTA
 * more than 10% over the mean cost. It can leave 1.8x: the costs repeat heaviest-to-lightest once per
 * head group, and with grid near the entry count each CTA keeps landing on the same phase (1x4096 on
 * 132 SMs: 451 us round-robin, 302 us greedy). With many items a CTA, round-robin is even: not checked.
 */
export function roundRobinUneven(
  work: Int32Array,
  qoLens: ArrayLike<number>,
  kvLens: ArrayLike<number>,
  tileQ: number,
  causal: boolean,
  windowLeft: number,
  headGroups: number,
  grid: number,
): boolean {
  const entries = work.length / 2, items = entries * headGroups;
  if (grid <= 1 || items <= grid || items > 64 * grid) return false;
  const cost = new Float64Array(entries);
  for (let x = 0; x < entries; x++) {
    const b = work[2 * x];
    cost[x] = tileCost(qoLens[b], kvLens[b], work[2 * x + 1], tileQ, causal, windowLeft);
  }
  const load = new Float64Array(grid);
  let cta = 0, total = 0;
  for (let y = 0; y < headGroups; y++) {
    for (let x = 0; x < entries; x++) {
      load[cta] += cost[x];
      total += cost[x];
      if (++cta === grid) cta = 0;
    }
  }
  let max = 0;
  for (let c = 0; c < grid; c++) max = Math.max(max, load[c]);
  return max > 1.1 * (total / grid);
}
