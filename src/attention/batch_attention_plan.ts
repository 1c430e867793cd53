/**
 * Plan-time host logic of BatchAttention's fused launch, pure TypeScript (tested without a GPU).
 *
 * A request with one query token goes to the decode queue (split-KV work items, as batch decode
 * plans them); every other request's query tiles go to the prefill queue, heaviest first. One
 * persistent launch drains both queues (cuda/kernels/attention/batch_attention.cuh): part of its SMs
 * start on prefill and the rest on decode, so compute-bound and bandwidth-bound work run at once.
 */
import { prefillWork } from "./prefill_scheduler.ts";
import { ITEM_INTS, scheduleDecode } from "./scheduler.ts";

export interface MixedInput {
  /** Query rows: request b owns rows qoIndptr[b]..qoIndptr[b + 1]. */
  qoIndptr: Int32Array;
  kvLens: Int32Array;
  /** First page of each request in the flat page list (the page indptr). */
  pageIndptr: Int32Array;
  /** Query tokens per prefill tile (the prefill kernel's tile after GQA head packing). */
  tileQ: number;
  causal: boolean;
  windowLeft: number;
  /** Decode CTAs per work item: kv heads x ceil(group / 16). */
  decodeCtasPerItem: number;
  /** Prefill CTAs per work entry: head packs. */
  prefillCtasPerEntry: number;
  /** Resident CTAs of one launch (SMs x CTAs per SM). */
  residentCtas: number;
  numSms: number;
  /** Fraction of the resident CTAs (mix) or of the SMs (partition) that start on the prefill queue. */
  prefillShare: number;
  /** "mix": one CTA of each kind per SM; "partition": whole SMs per kind. */
  placement?: "mix" | "partition";
}

export interface MixedPlan {
  /** [request, tile] pairs of the prefill requests only, heaviest first. */
  work: Int32Array;
  numWork: number;
  /** Decode work items (ITEM_INTS each); the request field holds the query row. */
  items: Int32Array;
  numItems: number;
  /** Rows of float partials that split decode requests need. */
  partialRows: number;
  /** Split-KV merge counters the kernel indexes by query row: rows x decodeCtasPerItem. */
  counterRows: number;
  /** CTAs (mix) or SMs (partition) that start on the prefill queue. */
  prefillFirst: number;
  /** 0: mix, 1: partition (the kernel's state[6]). */
  placement: number;
  decodeRequests: number;
}

export function planMixed(input: MixedInput): MixedPlan {
  const { qoIndptr, kvLens, pageIndptr } = input;
  const batch = kvLens.length;
  const prefillLens = new Int32Array(batch);
  let decodes = 0;
  for (let b = 0; b < batch; b++) {
    const n = qoIndptr[b + 1] - qoIndptr[b];
    if (n === 1) decodes++;
    else prefillLens[b] = n;
  }
  const work = prefillWork(prefillLens, kvLens, input.tileQ, input.causal, input.windowLeft);
  const numWork = work.length / 2;

  const seqLens = new Int32Array(decodes), pageBase = new Int32Array(decodes), rowOf = new Int32Array(decodes);
  for (let b = 0, i = 0; b < batch; b++) {
    if (qoIndptr[b + 1] - qoIndptr[b] !== 1) continue;
    seqLens[i] = kvLens[b];
    pageBase[i] = pageIndptr[b];
    rowOf[i++] = qoIndptr[b];
  }
  // Split long decodes only when the prefill queue cannot keep the other half of the GPU busy.
  const prefillCtas = numWork * input.prefillCtasPerEntry;
  const sched = scheduleDecode({
    seqLens,
    pageBase,
    windowLeft: input.windowLeft,
    ctasPerItem: input.decodeCtasPerItem,
    numSms: input.numSms,
    ctasPerSm: Math.max(1, Math.floor(input.residentCtas / Math.max(1, input.numSms))),
    disableSplitKv: prefillCtas >= input.residentCtas / 2,
  });
  const items = sched.items.subarray(0, sched.numItems * ITEM_INTS);
  for (let i = 0; i < sched.numItems; i++) items[i * ITEM_INTS] = rowOf[items[i * ITEM_INTS]];

  const partition = input.placement === "partition";
  const units = partition ? input.numSms : input.residentCtas;
  let prefillFirst = 0;
  if (numWork > 0 && sched.numItems === 0) prefillFirst = units;
  else if (numWork > 0) prefillFirst = Math.min(prefillCtas, Math.max(1, Math.round(units * input.prefillShare)));
  return {
    work,
    numWork,
    items,
    numItems: sched.numItems,
    partialRows: sched.partialRows,
    counterRows: sched.anySplit ? qoIndptr[batch] : 0,
    prefillFirst,
    placement: partition ? 1 : 0,
    decodeRequests: decodes,
  };
}

/**
 * The split form launches its prefill CTAs in clusters of this many (kSplitCluster in
 * cuda/src/batch_attention.cu), which packs them onto fewer GPCs: beside them the decode ran 30-40 µs
 * faster on the H100 (bench/NOTES.md). Prefill SM counts are multiples of it.
 */
export const SPLIT_CLUSTER = 8;

/** `share` of `numSms` as a prefill SM count for the split form: a multiple of SPLIT_CLUSTER below numSms. */
export function splitSmsOfShare(share: number, numSms: number): number {
  if (numSms <= SPLIT_CLUSTER) return Math.min(numSms - 1, Math.max(1, Math.round(share * numSms)));
  const clusters = Math.round((share * numSms) / SPLIT_CLUSTER);
  return SPLIT_CLUSTER * Math.min(Math.ceil(numSms / SPLIT_CLUSTER) - 1, Math.max(1, clusters));
}

/**
 * SMs for the prefill half of the split form (the Hopper prefill kernel beside the plain decode
 * kernel): the count that finishes both halves together under a rate model measured on the H100
 * (bench/NOTES.md): the prefill at 1.7 TFLOP/s an SM, the decode at 28 GB/s an SM up to the 3.0 TB/s
 * DRAM roofline. The 1.7 is a fit of measured totals, not the prefill's own rate: beside the decode the
 * prefill keeps about 3.3 (3.4 alone) and the decode slows by a fifth instead. Its choice for the 4096 +
 * 128 x 8192 batch, 46 of 132 SMs, was the best share in a sweep; in steps of SPLIT_CLUSTER it is 48.
 */
export function splitPrefillSms(prefillFlops: number, decodeBytes: number, numSms: number): number {
  const step = numSms > SPLIT_CLUSTER ? SPLIT_CLUSTER : 1;
  let best = step, bestTime = Infinity;
  for (let p = step; p < numSms; p += step) {
    const prefill = prefillFlops / (1.7e12 * p);
    const decode = decodeBytes / Math.min(3.0e12, 28e9 * (numSms - p));
    const t = Math.max(prefill, decode);
    if (t < bestTime) {
      bestTime = t;
      best = p;
    }
  }
  return best;
}
