/**
 * The decode work scheduler: pure host logic, no GPU. It turns per-request KV ranges into work items
 * (one CTA row each: a request's whole range, or one chunk of it) so that the GPU is busy:
 * - a batch that already fills the SMs (batch x CTAs per item >= SMs) is not split;
 * - otherwise the smallest chunk (a multiple of the 64-token tile) is chosen whose item count still
 *   fits one wave of `numSms * ctasPerSm` CTAs, and split requests get partial rows that the last of
 *   their chunks combines by their LSE;
 * - except that a batch of 1-3 waves whose last wave is at most half full (e.g. 512 CTAs on 396 slots:
 *   the second wave runs 116 CTAs on an idle GPU) splits each request into n <= 4 chunks when that
 *   evens the waves out by 15% or more (waveBalanceChunks).
 */

/**
 * Ints per work item: [request, kvStart, kvEnd, partialRow (-1: direct), seqLen, pageBase, chunks of the
 * request, its first partial row].
 */
export const ITEM_INTS = 8;
/** Tokens per decode tile (cuda/kernels/attention/decode.cuh kDecodeTile). */
export const DECODE_TILE = 64;

export interface ScheduleInput {
  /** Tokens of each request (its KV length). */
  seqLens: Int32Array;
  /** First page of each request in the page table (indptr[b]). */
  pageBase: Int32Array;
  /** Attend from this position on (window); defaults to 0 for every request. */
  windowLeft?: number;
  /** CTAs each item launches (kv heads x head groups). */
  ctasPerItem: number;
  numSms: number;
  /** Resident CTAs per SM for this kernel (shared memory bound). */
  ctasPerSm: number;
  /** Split every request into chunks of this many tokens (rounded up to the tile). */
  fixedSplitSize?: number;
  disableSplitKv?: boolean;
  /** Split requests of a batch that fills the GPU to even out its waves (default true). */
  balanceWaves?: boolean;
}

export interface Schedule {
  /** numItems x ITEM_INTS. */
  items: Int32Array;
  numItems: number;
  /** Chunk length in tokens, or 0 when nothing is split. */
  splitSize: number;
  /** Rows of partial outputs (float) the split requests need. */
  partialRows: number;
  /** [batch][2]: first partial row and count (0 when the request is written directly). */
  mergeTable: Int32Array;
  anySplit: boolean;
}

function ceilDiv(a: number, b: number): number {
  return Math.floor((a + b - 1) / b);
}

/** Items a chunk size makes: sum over requests of max(1, ceil(len / chunk)). */
export function countItems(lens: ArrayLike<number>, chunk: number): number {
  let n = 0;
  for (let b = 0; b < lens.length; b++) n += lens[b] > chunk ? ceilDiv(lens[b], chunk) : 1;
  return n;
}

/**
 * Chunks per request (1: no split) that even out the waves of a batch that fills the GPU: with equal
 * requests, n chunks each take ceil(n * ctas / slots) waves of 1/n the length. Considered only for 1-3
 * waves whose last one is at most half full, and taken when it saves 15% or more.
 */
export function waveBalanceChunks(batch: number, ctasPerItem: number, numSms: number, ctasPerSm: number): number {
  const slots = numSms * ctasPerSm, ctas = batch * ctasPerItem;
  const waves = ctas / slots, frac = waves - Math.floor(waves);
  if (waves < 1 || waves >= 3 || frac === 0 || frac > 0.5) return 1;
  let best = 1, bestSpan = Math.ceil(waves);
  for (let n = 2; n <= 4; n++) {
    const span = Math.ceil((n * ctas) / slots) / n;
    if (span < bestSpan) (best = n, bestSpan = span);
  }
  return bestSpan <= 0.85 * Math.ceil(waves) ? best : 1;
}

/** The chunk size in tokens (0 = no split) for the given per-request lengths. */
export function chooseSplitSize(lens: ArrayLike<number>, input: Omit<ScheduleInput, "seqLens" | "pageBase">): number {
  const batch = lens.length;
  if (input.disableSplitKv || batch === 0) return 0;
  let maxLen = 0;
  for (let b = 0; b < batch; b++) if (lens[b] > maxLen) maxLen = lens[b];
  if (input.fixedSplitSize !== undefined) {
    const c = ceilDiv(Math.max(1, input.fixedSplitSize), DECODE_TILE) * DECODE_TILE;
    return c >= maxLen ? 0 : c;
  }
  if (batch * input.ctasPerItem >= input.numSms) {
    // The batch fills the GPU: split only to even out its waves.
    const n = input.balanceWaves === false
      ? 1
      : waveBalanceChunks(batch, input.ctasPerItem, input.numSms, input.ctasPerSm);
    if (n === 1) return 0;
    const c = ceilDiv(ceilDiv(maxLen, n), DECODE_TILE) * DECODE_TILE;
    return c >= maxLen ? 0 : c;
  }
  const maxItems = Math.max(batch, Math.floor((input.numSms * input.ctasPerSm) / input.ctasPerItem));
  // Smallest tile multiple whose item count fits: binary search over tiles per chunk.
  let lo = 1, hi = Math.max(1, ceilDiv(maxLen, DECODE_TILE));
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (countItems(lens, mid * DECODE_TILE) <= maxItems) hi = mid;
    else lo = mid + 1;
  }
  const c = lo * DECODE_TILE;
  return c >= maxLen ? 0 : c;
}

/** Plans the work items for one decode step (no allocation when `out` has room: plan runs every step). */
export function scheduleDecode(input: ScheduleInput, out?: { items?: Int32Array; mergeTable?: Int32Array }): Schedule {
  const { seqLens, pageBase } = input;
  const batch = seqLens.length;
  const window = input.windowLeft ?? -1;
  const startOf = (b: number) => (window >= 0 && seqLens[b] - 1 - window > 0 ? seqLens[b] - 1 - window : 0);
  // Splitting is considered only for batches too small to fill the GPU, with badly filled waves, or a
  // fixed split size, so the per-request lengths are materialized only then.
  let split = 0;
  if (
    !input.disableSplitKv &&
    (input.fixedSplitSize !== undefined || batch * input.ctasPerItem < input.numSms ||
      (input.balanceWaves !== false &&
        waveBalanceChunks(batch, input.ctasPerItem, input.numSms, input.ctasPerSm) > 1))
  ) {
    const lens = new Int32Array(batch);
    for (let b = 0; b < batch; b++) lens[b] = seqLens[b] - startOf(b);
    split = chooseSplitSize(lens, input);
  }
  let numItems = batch;
  if (split) {
    numItems = 0;
    for (let b = 0; b < batch; b++) {
      const len = seqLens[b] - startOf(b);
      numItems += len > split ? ceilDiv(len, split) : 1;
    }
  }
  const items = out?.items && out.items.length >= numItems * ITEM_INTS
    ? out.items
    : new Int32Array(numItems * ITEM_INTS);
  const mergeTable = out?.mergeTable && out.mergeTable.length >= 2 * batch ? out.mergeTable : new Int32Array(2 * batch);
  if (!split) {
    // One item per request, written straight to the output.
    for (let b = 0, o = 0; b < batch; b++, o += ITEM_INTS) {
      const len = seqLens[b];
      items[o] = b;
      items[o + 1] = window >= 0 ? startOf(b) : 0;
      items[o + 2] = len;
      items[o + 3] = -1;
      items[o + 4] = len;
      items[o + 5] = pageBase[b];
      items[o + 6] = 1;
      items[o + 7] = 0;
    }
    mergeTable.fill(0, 0, 2 * batch);
    return { items, numItems, splitSize: 0, partialRows: 0, mergeTable, anySplit: false };
  }
  let i = 0, partial = 0;
  for (let b = 0; b < batch; b++) {
    const s0 = startOf(b), len = seqLens[b] - s0;
    const n = len > split ? ceilDiv(len, split) : 1;
    const first = partial;
    mergeTable[2 * b] = n > 1 ? partial : 0;
    mergeTable[2 * b + 1] = n > 1 ? n : 0;
    for (let j = 0; j < n; j++, i++) {
      const o = i * ITEM_INTS;
      const start = s0 + j * (n > 1 ? split : 0);
      items[o] = b;
      items[o + 1] = start;
      items[o + 2] = n > 1 ? Math.min(seqLens[b], start + split) : seqLens[b];
      items[o + 3] = n > 1 ? partial++ : -1;
      items[o + 4] = seqLens[b];
      items[o + 5] = pageBase[b];
      items[o + 6] = n;
      items[o + 7] = n > 1 ? first : 0;
    }
  }
  return { items, numItems, splitSize: split, partialRows: partial, mergeTable, anySplit: partial > 0 };
}

/**
 * The persistent (lane) schedule: `lanes` rows of CTAs stay resident and each loops over its own list of
 * items, so a batch costs one start-up per item, not one per launch wave, and no wave runs part-empty.
 * The batch's tiles (64 tokens) are laid end to end, request after request, and cut into `lanes` runs
 * of equal length; a request cut by a lane boundary becomes chunks (partial rows merged by their LSE by
 * the last chunk to finish, as for a split). A cut within `snap` tiles of a request boundary moves onto
 * it (at most `snapTiles`, and an eighth of a lane), so no lane starts or ends with a sliver of a request. Items are written lane after lane;
 * laneStarts[l] .. laneStarts[l + 1] are lane l's items.
 */
export interface LaneSchedule extends Schedule {
  numLanes: number;
  /** [numLanes + 1]: lane l runs items laneStarts[l] .. laneStarts[l + 1] - 1. */
  laneStarts: Int32Array;
}

/** Lanes of CTA rows that fit resident: floor(SMs x CTAs an SM / CTAs an item), at least 1. */
export function decodeLanes(numSms: number, ctasPerSm: number, ctasPerItem: number): number {
  return Math.max(1, Math.floor((numSms * ctasPerSm) / ctasPerItem));
}

export function scheduleDecodeLanes(
  input: Pick<ScheduleInput, "seqLens" | "pageBase" | "windowLeft">,
  lanes: number,
  out?: { items?: Int32Array; mergeTable?: Int32Array; laneStarts?: Int32Array },
  snapTiles = 1,
): LaneSchedule {
  const { seqLens, pageBase } = input;
  const batch = seqLens.length;
  const window = input.windowLeft ?? -1;
  const startOf = (b: number) => (window >= 0 && seqLens[b] - 1 - window > 0 ? seqLens[b] - 1 - window : 0);
  const tilesOf = (b: number) => ceilDiv(Math.max(0, seqLens[b] - startOf(b)), DECODE_TILE);
  let total = 0;
  for (let b = 0; b < batch; b++) total += tilesOf(b);
  const L = Math.max(1, Math.min(lanes, total));
  // Lane boundaries in global tiles: cut[l] = round(l * total / L), snapped onto a nearby request boundary.
  const snap = Math.min(snapTiles, Math.floor(total / L / 8));
  const cuts = new Float64Array(L + 1);
  cuts[L] = total;
  {
    let b = 0, reqStart = 0; // request b occupies global tiles [reqStart, reqStart + tilesOf(b))
    for (let l = 1; l < L; l++) {
      const ideal = Math.round((l * total) / L);
      while (b < batch && reqStart + tilesOf(b) <= ideal) reqStart += tilesOf(b++);
      // ideal lies in request b's tiles: [reqStart, reqStart + tilesOf(b)).
      let c = ideal;
      if (ideal - reqStart <= snap) c = reqStart;
      else if (b < batch && reqStart + tilesOf(b) - ideal <= snap) c = reqStart + tilesOf(b);
      cuts[l] = Math.max(cuts[l - 1], Math.min(total, c));
    }
  }
  // Count items: each request contributes one item per lane its tiles touch (an empty one: one item).
  const laneOf = (tile: number) => {
    // The lane whose [cuts[l], cuts[l + 1]) holds tile (cuts may repeat: the last such lane).
    let lo = 0, hi = L - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (cuts[mid] <= tile) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  let numItems = 0;
  {
    let g = 0;
    for (let b = 0; b < batch; b++) {
      const n = tilesOf(b);
      numItems += n === 0 ? 1 : laneOf(g + n - 1) - laneOf(g) + 1;
      g += n;
    }
  }
  const items = out?.items && out.items.length >= numItems * ITEM_INTS
    ? out.items
    : new Int32Array(numItems * ITEM_INTS);
  const mergeTable = out?.mergeTable && out.mergeTable.length >= 2 * batch ? out.mergeTable : new Int32Array(2 * batch);
  const laneStarts = out?.laneStarts && out.laneStarts.length >= L + 1 ? out.laneStarts : new Int32Array(L + 1);
  // Items of a lane are consecutive when requests are visited in order: request b's chunks go to lanes
  // laneOf(first tile) .. laneOf(last tile), and lanes only grow with b.
  let i = 0, partial = 0, g = 0, lane = 0;
  laneStarts[0] = 0;
  for (let b = 0; b < batch; b++) {
    const s0 = startOf(b), n = tilesOf(b);
    const l0 = laneOf(g);
    const l1 = n === 0 ? l0 : laneOf(g + n - 1);
    const chunks = l1 - l0 + 1;
    const first = partial;
    mergeTable[2 * b] = chunks > 1 ? partial : 0;
    mergeTable[2 * b + 1] = chunks > 1 ? chunks : 0;
    for (let l = l0; l <= l1; l++, i++) {
      while (lane < l) laneStarts[++lane] = i;
      const t0 = Math.max(g, cuts[l]) - g, t1 = Math.min(g + n, cuts[l + 1]) - g;
      const o = i * ITEM_INTS;
      items[o] = b;
      items[o + 1] = s0 + t0 * DECODE_TILE;
      items[o + 2] = chunks > 1 ? Math.min(seqLens[b], s0 + t1 * DECODE_TILE) : seqLens[b];
      items[o + 3] = chunks > 1 ? partial++ : -1;
      items[o + 4] = seqLens[b];
      items[o + 5] = pageBase[b];
      items[o + 6] = chunks;
      items[o + 7] = chunks > 1 ? first : 0;
    }
    g += n;
  }
  while (lane < L) laneStarts[++lane] = i;
  return {
    items,
    numItems,
    splitSize: 0,
    partialRows: partial,
    mergeTable,
    anySplit: partial > 0,
    numLanes: L,
    laneStarts,
  };
}
