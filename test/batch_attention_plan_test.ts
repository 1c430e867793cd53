// BatchAttention's fused-launch planning (pure host logic): which requests go to which queue, how the
// decode items address their query rows, and how many CTAs start on each queue.
import { assert, test } from "./harness.ts";
import { planMixed, SPLIT_CLUSTER, splitPrefillSms, splitSmsOfShare } from "../src/attention/batch_attention_plan.ts";
import { ITEM_INTS } from "../src/attention/scheduler.ts";

const base = {
  tileQ: 32,
  causal: true,
  windowLeft: -1,
  decodeCtasPerItem: 8,
  prefillCtasPerEntry: 8,
  residentCtas: 264,
  numSms: 132,
  prefillShare: 0.5,
};

test("planMixed: one-token requests become decode items addressed by their query row", () => {
  // requests: decode (row 0), prefill 100 rows (1..100), decode (row 101), prefill 40 rows, decode
  const qoIndptr = new Int32Array([0, 1, 101, 102, 142, 143]);
  const kvLens = new Int32Array([700, 100, 9000, 60, 1]);
  const pageIndptr = new Int32Array([0, 44, 51, 614, 618, 619]);
  const m = planMixed({ ...base, qoIndptr, kvLens, pageIndptr });
  assert.equal(m.decodeRequests, 3);
  // prefill work: only requests 1 and 3, every tile once
  const reqs = new Set<number>();
  for (let i = 0; i < m.work.length; i += 2) reqs.add(m.work[i]);
  assert.deepEqual([...reqs].sort(), [1, 3]);
  assert.equal(m.numWork, Math.ceil(100 / 32) + Math.ceil(40 / 32));
  // decode items: rows 0, 101, 142 with their own page bases and lengths, covering each range once
  const covered = new Map<number, number>();
  for (let i = 0; i < m.numItems; i++) {
    const it = m.items.subarray(i * ITEM_INTS, (i + 1) * ITEM_INTS);
    const row = it[0];
    assert.ok([0, 101, 142].includes(row), `row ${row}`);
    const b = qoIndptr.indexOf(row);
    assert.equal(it[4], kvLens[b]);
    assert.equal(it[5], pageIndptr[b]);
    covered.set(row, (covered.get(row) ?? 0) + it[2] - it[1]);
  }
  assert.deepEqual([...covered.entries()].sort((a, b) => a[0] - b[0]), [[0, 700], [101, 9000], [142, 1]]);
  // both queues have work: half the CTAs start on prefill (capped by the prefill CTAs there are)
  assert.equal(m.prefillFirst, Math.min(132, m.numWork * 8));
});

test("planMixed: a batch of one kind starts every CTA on its queue; big prefill disables split KV", () => {
  const decodeOnly = planMixed({
    ...base,
    qoIndptr: new Int32Array([0, 1, 2]),
    kvLens: new Int32Array([8192, 8192]),
    pageIndptr: new Int32Array([0, 512, 1024]),
  });
  assert.equal(decodeOnly.numWork, 0);
  assert.equal(decodeOnly.prefillFirst, 0);
  assert.ok(decodeOnly.numItems > 2, "two long decodes alone are split to fill the GPU");
  assert.ok(decodeOnly.partialRows > 0 && decodeOnly.counterRows === 2);

  const prefillOnly = planMixed({
    ...base,
    qoIndptr: new Int32Array([0, 64]),
    kvLens: new Int32Array([64]),
    pageIndptr: new Int32Array([0, 4]),
  });
  assert.equal(prefillOnly.numItems, 0);
  assert.equal(prefillOnly.prefillFirst, base.residentCtas);

  // 1 x 4096 prefill + 2 long decodes: the prefill fills half the GPU, so the decodes stay whole
  const mixed = planMixed({
    ...base,
    qoIndptr: new Int32Array([0, 4096, 4097, 4098]),
    kvLens: new Int32Array([4096, 8192, 8192]),
    pageIndptr: new Int32Array([0, 256, 768, 1280]),
  });
  assert.equal(mixed.numItems, 2);
  assert.equal(mixed.partialRows, 0);
  assert.equal(mixed.prefillFirst, 132);
  assert.equal(mixed.placement, 0);
  // partition: the share counts SMs, not CTAs
  const parted = planMixed({
    ...base,
    placement: "partition",
    qoIndptr: new Int32Array([0, 4096, 4097, 4098]),
    kvLens: new Int32Array([4096, 8192, 8192]),
    pageIndptr: new Int32Array([0, 256, 768, 1280]),
  });
  assert.equal(parted.placement, 1);
  assert.equal(parted.prefillFirst, 66);
});

test("splitPrefillSms: the prefill half gets the SMs that finish both halves together", () => {
  // the batch: 137 GFLOP of causal prefill beside 4.3 GB of decode on 132 SMs
  const p = splitPrefillSms(137e9, 4.3e9, 132);
  assert.equal(p, 48);
  // more prefill takes more SMs; no decode bytes leaves the decode the SMs short of a last cluster
  assert.ok(splitPrefillSms(274e9, 4.3e9, 132) > p);
  assert.equal(splitPrefillSms(137e9, 0, 132), 128);
  // every count is a whole number of the prefill's clusters (small GPUs: any count)
  for (const f of [1e9, 50e9, 137e9, 500e9]) assert.equal(splitPrefillSms(f, 4.3e9, 132) % SPLIT_CLUSTER, 0);
  assert.equal(splitPrefillSms(137e9, 0, 6), 5);
});

test("splitSmsOfShare: a share of the SMs as whole clusters, at least one, leaving the decode an SM", () => {
  assert.equal(splitSmsOfShare(0.35, 132), 48);
  assert.equal(splitSmsOfShare(0.01, 132), SPLIT_CLUSTER);
  assert.equal(splitSmsOfShare(1, 132), 128);
  assert.equal(splitSmsOfShare(1, 128), 120);
  assert.equal(splitSmsOfShare(0.5, 4), 2);
  assert.equal(splitSmsOfShare(1, 4), 3);
});
