/** The decode scheduler: pure host logic, no GPU. */
import { assert, test } from "./harness.ts";
import {
  chooseSplitSize,
  countItems,
  DECODE_TILE,
  decodeLanes,
  ITEM_INTS,
  scheduleDecode,
  scheduleDecodeLanes,
  waveBalanceChunks,
} from "../src/attention/scheduler.ts";

const base = { ctasPerItem: 8, numSms: 132, ctasPerSm: 2 };

function lens(n: number, len: number): Int32Array {
  return new Int32Array(n).fill(len);
}

function pageBase(n: number): Int32Array {
  return new Int32Array(n).map((_, i) => i * 1000);
}

/** Items cover each request's range exactly once, in order, and partial rows are dense. */
function checkCoverage(seqLens: Int32Array, s: ReturnType<typeof scheduleDecode>, windowLeft = -1): void {
  const next = new Int32Array(seqLens.length).map((_, b) =>
    windowLeft >= 0 ? Math.max(0, seqLens[b] - 1 - windowLeft) : 0
  );
  const partials: number[] = [];
  for (let i = 0; i < s.numItems; i++) {
    const [b, start, end, row, seqLen, pb] = s.items.subarray(i * ITEM_INTS, i * ITEM_INTS + 6);
    assert.equal(start, next[b], `item ${i} starts where the previous one ended`);
    assert.ok(end > start || seqLens[b] === 0, `item ${i} is not empty`);
    assert.equal(seqLen, seqLens[b]);
    assert.equal(pb, b * 1000);
    next[b] = end;
    if (row >= 0) partials.push(row);
    const count = s.mergeTable[2 * b + 1];
    assert.equal(row >= 0, count > 0, `item ${i}: a partial row exactly when the request is split`);
    const [chunks, first] = s.items.subarray(i * ITEM_INTS + 6, i * ITEM_INTS + 8);
    assert.equal(chunks, Math.max(1, count), `item ${i}: the request's chunk count`);
    assert.equal(first, count > 0 ? s.mergeTable[2 * b] : 0, `item ${i}: the request's first partial row`);
  }
  seqLens.forEach((l, b) => assert.equal(next[b], l, `request ${b} fully covered`));
  assert.deepEqual(partials, partials.map((_, i) => i), "partial rows are 0..n-1 in order");
  assert.equal(s.partialRows, partials.length);
}

test("scheduler: a batch that fills the GPU is not split", () => {
  for (const [b, l] of [[17, 4096], [64, 2048], [128, 8192], [256, 1024]]) {
    const s = scheduleDecode({ seqLens: lens(b, l), pageBase: pageBase(b), ...base });
    assert.equal(s.splitSize, 0, `B${b} L${l}`);
    assert.equal(s.numItems, b);
    assert.equal(s.anySplit, false);
    checkCoverage(lens(b, l), s);
  }
});

test("scheduler: small batches with long KV are split to fill one wave", () => {
  const s = scheduleDecode({ seqLens: lens(1, 4096), pageBase: pageBase(1), ...base });
  assert.ok(s.splitSize > 0 && s.splitSize % DECODE_TILE === 0);
  assert.ok(s.numItems * base.ctasPerItem <= base.numSms * base.ctasPerSm, "fits one wave");
  assert.ok(s.numItems * base.ctasPerItem > base.numSms, "fills the SMs");
  checkCoverage(lens(1, 4096), s);
  const mixed = new Int32Array([1, 16384, 64, 65, 3000, 7]);
  const m = scheduleDecode({ seqLens: mixed, pageBase: pageBase(mixed.length), ...base });
  checkCoverage(mixed, m);
  assert.ok(m.numItems <= Math.floor((132 * 2) / 8));
});

test("scheduler: fixedSplitSize, disableSplitKv and windowLeft", () => {
  const l = new Int32Array([100, 1000, 1, 129]);
  const f = scheduleDecode({ seqLens: l, pageBase: pageBase(4), ...base, fixedSplitSize: 100 });
  assert.equal(f.splitSize, 128);
  assert.equal(f.numItems, 1 + 8 + 1 + 2);
  checkCoverage(l, f);
  const d = scheduleDecode({ seqLens: lens(1, 100000), pageBase: pageBase(1), ...base, disableSplitKv: true });
  assert.equal(d.numItems, 1);
  assert.equal(d.splitSize, 0);
  const w = scheduleDecode({
    seqLens: new Int32Array([5000, 10, 300]),
    pageBase: pageBase(3),
    ...base,
    windowLeft: 200,
  });
  checkCoverage(new Int32Array([5000, 10, 300]), w, 200);
  assert.equal(w.items[1], 5000 - 201);
});

test("scheduler: countItems and chooseSplitSize edge cases", () => {
  assert.equal(countItems([0, 1, 64, 65], 64), 1 + 1 + 1 + 2);
  assert.equal(chooseSplitSize(new Int32Array([]), base), 0);
  assert.equal(chooseSplitSize(new Int32Array([10]), base), 0, "nothing to split below one tile");
  const empty = scheduleDecode({ seqLens: new Int32Array([0, 5]), pageBase: pageBase(2), ...base });
  assert.equal(empty.numItems, 2);
  assert.equal(empty.items[2], 0, "an empty request gets an empty item (output 0, lse -inf)");
});

test("scheduler: a batch with a nearly empty last wave is split to even the waves out", () => {
  // fp8 KV at head dim 128 runs 3 CTAs an SM: 64 requests x 8 CTAs on 396 slots is 1.29 waves.
  const fp8 = { ctasPerItem: 8, numSms: 132, ctasPerSm: 3 };
  assert.equal(waveBalanceChunks(64, 8, 132, 3), 3);
  const s = scheduleDecode({ seqLens: lens(64, 2048), pageBase: pageBase(64), ...fp8 });
  assert.equal(s.splitSize, 704);
  assert.equal(s.numItems, 64 * 3);
  assert.equal(s.anySplit, true);
  checkCoverage(lens(64, 2048), s);
  const mixed = new Int32Array(64).map((_, i) => 1 + ((i * 977) % 3000));
  checkCoverage(mixed, scheduleDecode({ seqLens: mixed, pageBase: pageBase(64), ...fp8 }));
  const off = scheduleDecode({ seqLens: lens(64, 2048), pageBase: pageBase(64), ...fp8, balanceWaves: false });
  assert.equal(off.numItems, 64);
  // Full enough waves, many waves, or under one wave: no split (bf16 at 2 CTAs an SM included).
  for (const [b, perSm] of [[64, 2], [128, 3], [256, 3], [256, 2], [17, 2], [33, 2]]) {
    assert.equal(waveBalanceChunks(b, 8, 132, perSm), 1, `B${b} at ${perSm} CTAs an SM`);
  }
});

/** Lane starts are monotone and cover every item; returns the tiles of each lane. */
function laneTiles(s: ReturnType<typeof scheduleDecodeLanes>): number[] {
  assert.equal(s.laneStarts[0], 0);
  assert.equal(s.laneStarts[s.numLanes], s.numItems);
  const tiles: number[] = [];
  for (let l = 0; l < s.numLanes; l++) {
    assert.ok(s.laneStarts[l + 1] >= s.laneStarts[l], `lane ${l} starts are monotone`);
    let t = 0;
    for (let i = s.laneStarts[l]; i < s.laneStarts[l + 1]; i++) {
      t += Math.ceil((s.items[i * ITEM_INTS + 2] - s.items[i * ITEM_INTS + 1]) / DECODE_TILE);
    }
    tiles.push(t);
  }
  return tiles;
}

test("scheduler: lanes cut the batch's tiles into equal runs", () => {
  assert.equal(decodeLanes(132, 3, 8), 49);
  assert.equal(decodeLanes(1, 1, 64), 1);
  for (const [b, l] of [[16, 4096], [64, 2048], [128, 8192], [256, 1024], [3, 100], [1, 64]]) {
    const seq = lens(b, l);
    const s = scheduleDecodeLanes({ seqLens: seq, pageBase: pageBase(b) }, 49);
    checkCoverage(seq, s);
    const tiles = laneTiles(s);
    const total = b * Math.ceil(l / DECODE_TILE);
    assert.equal(tiles.reduce((x, y) => x + y, 0), total, `B${b} L${l}: every tile once`);
    const quota = total / s.numLanes;
    assert.ok(
      Math.max(...tiles) <= Math.ceil(quota * 1.15) + 1,
      `B${b} L${l}: balanced (${Math.max(...tiles)} vs ${quota})`,
    );
    assert.ok(s.numLanes <= 49 && s.numLanes <= total);
  }
  // B64 L2k on 49 lanes: 2048 tiles, about 42 a lane, each request in at most 2 lanes.
  const s = scheduleDecodeLanes({ seqLens: lens(64, 2048), pageBase: pageBase(64) }, 49);
  assert.ok(Math.max(...laneTiles(s)) <= 44);
  for (let b = 0; b < 64; b++) assert.ok(s.mergeTable[2 * b + 1] <= 2, `request ${b} in at most 2 lanes`);
});

test("scheduler: lanes with mixed, empty and windowed requests", () => {
  const mixed = new Int32Array([0, 5000, 1, 0, 64, 65, 3000, 0, 9000, 128, 0]);
  for (const lanes of [1, 2, 7, 49, 1000]) {
    const s = scheduleDecodeLanes({ seqLens: mixed, pageBase: pageBase(mixed.length) }, lanes);
    checkCoverage(mixed, s);
    laneTiles(s);
    const w = scheduleDecodeLanes({ seqLens: mixed, pageBase: pageBase(mixed.length), windowLeft: 700 }, lanes);
    checkCoverage(mixed, w, 700);
    laneTiles(w);
  }
  const empty = scheduleDecodeLanes({ seqLens: new Int32Array([0, 0]), pageBase: pageBase(2) }, 49);
  assert.equal(empty.numLanes, 1);
  assert.equal(empty.numItems, 2);
  assert.equal(empty.anySplit, false);
  // Reuses the caller's tables.
  const items = new Int32Array(4096), mergeTable = new Int32Array(512), laneStarts = new Int32Array(64);
  const r = scheduleDecodeLanes({ seqLens: lens(64, 2048), pageBase: pageBase(64) }, 49, {
    items,
    mergeTable,
    laneStarts,
  });
  assert.equal(r.items, items);
  assert.equal(r.laneStarts, laneStarts);
});
