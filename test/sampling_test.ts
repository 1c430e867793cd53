/**
 * GPU tests of the samplers: statistics over >= 10^6 draws on small vocabularies (many identical rows
 * through `indices`), renorm / mask / softmax against float64 references at the vocabulary
 * and batch sizes, determinism, device seed/offset with CUDA-graph replay, and invalid rows.
 */
import { assert, gpuTest } from "./harness.ts";
import { makeRng, randn } from "./reference/random.ts";
import { admissible, cosine, filtered, type FilterSpec, maskRef, softmaxRef } from "./reference/sampling.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { CudaGraph, Stream } from "../src/runtime/stream.ts";
import {
  chainSpeculativeSampling,
  minPSamplingFromProbs,
  samplingFromLogits,
  samplingFromProbs,
  softmax,
  topKMaskLogits,
  topKRenormProbs,
  topKSamplingFromProbs,
  topKTopPSamplingFromLogits,
  topKTopPSamplingFromProbs,
  topPRenormProbs,
  topPSamplingFromProbs,
} from "../src/sampling/sampling.ts";

const rng = makeRng();

/** softmax(randn * scale) rows, f32-rounded, as a flat Float32Array. */
function probRows(rows: number, d: number, scale = 3, zeros = 0): Float32Array {
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    const p = softmaxRef(randn(rng, d, scale));
    for (let i = 0; i < zeros; i++) p[Math.floor(rng() * d)] = 0;
    let s = 0;
    for (let i = 0; i < d; i++) s += p[i];
    for (let i = 0; i < d; i++) out[r * d + i] = p[i] / s;
  }
  return out;
}

function histogram(tokens: Int32Array, d: number): Float64Array {
  const h = new Float64Array(d);
  for (const t of tokens) {
    assert.ok(t >= 0 && t < d, `token ${t} out of range [0, ${d})`);
    h[t]++;
  }
  return h;
}

let totalDraws = 0;
const DRAWS_PER_CALL = 1 << 16;

/** Draws DRAWS_PER_CALL tokens from one row twice (offsets 0 and 1) and checks them against `want`. */
/** What every statistical draw passes its sampler: the rows to draw, the seed, the offset, the flags. */
interface DrawOptions {
  indices: Tensor;
  seed: number;
  offset: number;
  valid: Tensor;
}

function checkStatistics(
  name: string,
  d: number,
  want: Float64Array,
  draw: (o: DrawOptions) => Tensor,
) {
  using ix = Tensor.fromRaw(new Int32Array(DRAWS_PER_CALL), [DRAWS_PER_CALL], "i32");
  const counts = new Float64Array(d);
  for (const offset of [0, 1]) {
    using valid = Tensor.empty([DRAWS_PER_CALL], "u8").fillBytes(0x7f);
    using tokens = draw({ indices: ix, seed: SEED, offset, valid });
    const t = tokens.toRaw() as Int32Array;
    const h = histogram(t, d);
    for (let i = 0; i < d; i++) counts[i] += h[i];
    assert.ok((valid.toRaw() as Uint8Array).every((v) => v === 1), `${name}: every row valid`);
    totalDraws += t.length;
  }
  for (let i = 0; i < d; i++) {
    if (want[i] === 0) {
      assert.equal(counts[i], 0, `${name}: token ${i} is filtered out but was drawn ${counts[i]} times`);
    }
  }
  const cos = cosine(counts, want);
  assert.ok(cos >= 0.99, `${name}: cosine ${cos} < 0.99`);
}

const D = 111;
const SEED = 1234;

gpuTest("sampling: statistics of every sampler over >= 10^6 draws (vocab 111)", () => {
  const p = probRows(1, D, 1.5, 5);
  using probs = Tensor.fromRaw(p, [1, D], "f32");
  const logitsHost = Float32Array.from(randn(rng, D, 2));
  using logits = Tensor.fromRaw(logitsHost, [1, D], "f32");
  const cases: [string, FilterSpec, (o: DrawOptions) => Tensor][] = [
    [
      "samplingFromProbs",
      {},
      (o) => samplingFromProbs(probs, o),
    ],
    [
      "topK 10",
      { topK: 10 },
      (o) => topKSamplingFromProbs(probs, 10, o),
    ],
    [
      "topP 0.7",
      { topP: 0.7 },
      (o) => topPSamplingFromProbs(probs, 0.7, o),
    ],
    [
      "minP 0.1",
      { minP: 0.1 },
      (o) => minPSamplingFromProbs(probs, 0.1, o),
    ],
    [
      "topK 20 topP 0.6 joint",
      { topK: 20, topP: 0.6, order: "joint" },
      (o) =>
        topKTopPSamplingFromProbs(probs, 20, 0.6, {
          ...o,
          filterApplyOrder: "joint",
        }),
    ],
    [
      "topK 20 topP 0.6 top_k_first",
      { topK: 20, topP: 0.6 },
      (o) => topKTopPSamplingFromProbs(probs, 20, 0.6, o),
    ],
  ];
  for (const [name, f, draw] of cases) checkStatistics(name, D, filtered(p, f), draw);
  // logits: Gumbel-max, and softmax + top-k + top-p with a temperature, fused
  checkStatistics(
    "samplingFromLogits",
    D,
    softmaxRef(logitsHost),
    (o) => samplingFromLogits(logits, o),
  );
  checkStatistics(
    "topKTopPSamplingFromLogits T=0.8",
    D,
    filtered(softmaxRef(logitsHost, 0.8), { topK: 30, topP: 0.8 }),
    (o) => topKTopPSamplingFromLogits(logits, 30, 0.8, { ...o, temperature: 0.8 }),
  );
});

gpuTest("sampling: statistics with a row split over a cluster of 4, 8 or 16 CTAs (vocab 32000)", () => {
  const d = 32000;
  const p = probRows(1, d, 4);
  using probs = Tensor.fromRaw(p, [1, d], "f32");
  const f = { topK: 40, topP: 0.9 };
  checkStatistics(
    "topKTopP cluster 8",
    d,
    filtered(p, f),
    (o) => topKTopPSamplingFromProbs(probs, 40, 0.9, { ...o, ctasPerRow: 8 }),
  );
  checkStatistics(
    "topKTopP cluster 16",
    d,
    filtered(p, f),
    (o) => topKTopPSamplingFromProbs(probs, 40, 0.9, { ...o, ctasPerRow: 16 }),
  );
  checkStatistics(
    "topP cluster 4",
    d,
    filtered(p, { topP: 0.5 }),
    (o) => topPSamplingFromProbs(probs, 0.5, { ...o, ctasPerRow: 4 }),
  );
  // plain sampling on 16-byte aligned rows takes the group race (vocab 112 and 32000, split or not)
  const q = probRows(1, 112, 1.5, 7);
  using probs112 = Tensor.fromRaw(q, [1, 112], "f32");
  checkStatistics(
    "samplingFromProbs vocab 112",
    112,
    filtered(q, {}),
    (o) => samplingFromProbs(probs112, o),
  );
  checkStatistics(
    "samplingFromProbs cluster 8",
    d,
    filtered(p, {}),
    (o) => samplingFromProbs(probs, { ...o, ctasPerRow: 8 }),
  );
  console.log(`total draws so far: ${totalDraws}`);
  assert.ok(totalDraws >= 1_000_000, `only ${totalDraws} draws`);
});

/**
 * A row whose top-p 0.05 threshold falls among equal weights (every 26th token: 1231 at vocab 32000,
 * more than a cluster's gather region holds, so the fine bin is split by cluster rounds).
 */
function tiedRow(d: number): Float32Array {
  const w = new Float64Array(d);
  for (let i = 0; i < d; i++) w[i] = i % 26 === 1 ? 1 : 0.25 + 0.5 * rng();
  w[7] = 3; // above the ties: the crossing bin is not the top one
  let s = 0;
  for (let i = 0; i < d; i++) s += w[i];
  return Float32Array.from(w, (v) => v / s);
}

/** A row whose top-p threshold lies far below the max (under the fine bins: 16 binades under it). */
function deepTailRow(d: number): { p: Float32Array; topP: number } {
  const w = new Float64Array(d);
  let top = 0, tail = 0;
  for (let i = 0; i < d; i++) {
    w[i] = i < 64 ? 0.5 + 0.5 * rng() : (1 + rng()) * 3e-6; // the tail: under max * 2^-17
    if (i < 64) top += w[i];
    else tail += w[i];
  }
  const p = Float32Array.from(w, (v) => v / (top + tail));
  return { p, topP: (top + 0.5 * tail) / (top + tail) };
}

gpuTest(
  "sampling: a row split over 16 CTAs: fine bins, a gathered bracket and the fallbacks keep the distribution",
  () => {
    const d = 32000;
    const soft = probRows(1, d, 3);
    using probs = Tensor.fromRaw(soft, [1, d], "f32");
    checkStatistics(
      "topP 0.9 cluster 16 (gathered bracket)",
      d,
      filtered(soft, { topP: 0.9 }),
      (o) => topPSamplingFromProbs(probs, 0.9, { ...o, ctasPerRow: 16 }),
    );
    checkStatistics(
      "topK 30 cluster 16 (gathered upper set)",
      d,
      filtered(soft, { topK: 30 }),
      (o) => topKSamplingFromProbs(probs, 30, { ...o, ctasPerRow: 16 }),
    );
    const tied = tiedRow(d);
    using tiedT = Tensor.fromRaw(tied, [1, d], "f32");
    checkStatistics(
      "topP 0.05 among 1231 ties, cluster 16 (bracket too large: cluster rounds)",
      d,
      filtered(tied, { topP: 0.05 }),
      (o) => topPSamplingFromProbs(tiedT, 0.05, { ...o, ctasPerRow: 16 }),
    );
    const deep = deepTailRow(d);
    using deepT = Tensor.fromRaw(deep.p, [1, d], "f32");
    checkStatistics(
      "topP under the fine bins, cluster 16",
      d,
      filtered(deep.p, { topP: deep.topP }),
      (o) => topPSamplingFromProbs(deepT, deep.topP, { ...o, ctasPerRow: 16 }),
    );
    // logits: the first round turns them into weights; a deep threshold lists the slice again
    const deepLogitsHost = Float32Array.from(deep.p, (v) => Math.log(v));
    using deepLogits = Tensor.fromRaw(deepLogitsHost, [1, d], "f32");
    checkStatistics(
      "logits topK d topP deep joint, cluster 16",
      d,
      filtered(softmaxRef(deepLogitsHost), { topK: d, topP: deep.topP, order: "joint" }),
      (o) =>
        topKTopPSamplingFromLogits(deepLogits, d, deep.topP, {
          ...o,
          ctasPerRow: 16,
          filterApplyOrder: "joint",
        }),
    );
    const softLogitsHost = Float32Array.from(randn(rng, d, 3));
    using softLogits = Tensor.fromRaw(softLogitsHost, [1, d], "f32");
    checkStatistics(
      "logits topK 40 topP 0.9 T=0.7, cluster 16",
      d,
      filtered(softmaxRef(softLogitsHost, 0.7), { topK: 40, topP: 0.9 }),
      (o) =>
        topKTopPSamplingFromLogits(softLogits, 40, 0.9, {
          ...o,
          ctasPerRow: 16,
          temperature: 0.7,
        }),
    );
    // top-k first on logits: the stats pass skips the row's total and the first round adds it up
    // (here with most of the mass under the fine bins, so the dropped weights count too); with few
    // finite logits (<= 1024) or k above their count, the total comes from the listed logits.
    checkStatistics(
      "logits topK d topP deep, top-k first, cluster 16",
      d,
      filtered(softmaxRef(deepLogitsHost), { topK: d, topP: deep.topP }),
      (o) =>
        topKTopPSamplingFromLogits(deepLogits, d, deep.topP, {
          ...o,
          ctasPerRow: 16,
        }),
    );
    const sparseHost = new Float32Array(d).fill(-Infinity);
    for (const [i, v] of randn(rng, 600, 3).entries()) sparseHost[(i * 53 + 11) % d] = v;
    using sparse = Tensor.fromRaw(sparseHost, [1, d], "f32");
    for (const [k, topP] of [[40, 0.9], [5000, 0.8]]) {
      checkStatistics(
        `logits topK ${k} topP ${topP}, 600 finite of ${d}, cluster 16`,
        d,
        filtered(softmaxRef(sparseHost), { topK: k, topP }),
        (o) => topKTopPSamplingFromLogits(sparse, k, topP, { ...o, ctasPerRow: 16 }),
      );
    }
    // The admissible set against float64 at the vocabulary, one row a launch (the default
    // split at batch 1), over many offsets: every drawn token admissible, the tail's tokens reachable.
    const big = 128256;
    const rows: [string, Float32Array, [string, FilterSpec][]][] = [
      ["softmax(3 randn)", probRows(1, big, 3), [["p0.9", { topP: 0.9 }], ["k50", { topK: 50 }], ["k50p0.9", {
        topK: 50,
        topP: 0.9,
      }]]],
      ["ties", tiedRow(big), [["p0.05", { topP: 0.05 }]]],
    ];
    const deepBig = deepTailRow(big);
    rows.push(["deep tail", deepBig.p, [["pdeep", { topP: deepBig.topP }]]]);
    for (const [name, row, specs] of rows) {
      using t = Tensor.fromRaw(row, [1, big], "f32");
      for (const [key, f] of specs) {
        const { keep, ambiguous } = admissible(row, f, 1e-5);
        for (let offset = 0; offset < 200; offset++) {
          using valid = Tensor.empty([1], "u8").fillBytes(0x7f);
          const o = { seed: SEED, offset, valid };
          using tok = f.topK !== undefined && f.topP !== undefined
            ? topKTopPSamplingFromProbs(t, f.topK, f.topP, o)
            : f.topK !== undefined
            ? topKSamplingFromProbs(t, f.topK, o)
            : topPSamplingFromProbs(t, f.topP!, o);
          const x = (tok.toRaw() as Int32Array)[0];
          assert.equal((valid.toRaw() as Uint8Array)[0], 1, `${name} ${key}: valid`);
          assert.ok(x >= 0 && x < big && (keep[x] === 1 || ambiguous[x] === 1), `${name} ${key}: token ${x}`);
        }
      }
    }
  },
);

const VOCABS = [111, 32000, 128256, 151936];
const BATCHES = [1, 99, 512];
const DISTINCT = 3;

gpuTest("sampling: renorm, mask and softmax match float64; samplers stay admissible (vocab x batch grid)", () => {
  for (const d of VOCABS) {
    const base = probRows(DISTINCT, d, 3);
    const baseLogits = Float32Array.from(randn(rng, DISTINCT * d, 3));
    const sets = new Map<string, { keep: Uint8Array; ambiguous: Uint8Array }[]>();
    const specs: [string, FilterSpec][] = [
      ["k50", { topK: 50 }],
      ["p0.9", { topP: 0.9 }],
      ["k50p0.9", { topK: 50, topP: 0.9 }],
      ["k50p0.9j", { topK: 50, topP: 0.9, order: "joint" }],
      ["m0.05", { minP: 0.05 }],
    ];
    for (const [key, f] of specs) {
      sets.set(
        key,
        [...Array(DISTINCT)].map((_, r) => admissible(base.subarray(r * d, (r + 1) * d), f, 1e-5)),
      );
    }
    for (const batch of BATCHES) {
      const host = new Float32Array(batch * d), hostLogits = new Float32Array(batch * d);
      for (let r = 0; r < batch; r++) {
        host.set(base.subarray((r % DISTINCT) * d, (r % DISTINCT + 1) * d), r * d);
        hostLogits.set(baseLogits.subarray((r % DISTINCT) * d, (r % DISTINCT + 1) * d), r * d);
      }
      using probs = Tensor.fromRaw(host, [batch, d], "f32");
      using logits = Tensor.fromRaw(hostLogits, [batch, d], "f32");
      const tag = `d${d} B${batch}`;
      // renorm top-k and top-p
      for (const key of ["k50", "p0.9"] as const) {
        using out = Tensor.empty([batch, d], "f32").fillBytes(0xff);
        if (key === "k50") topKRenormProbs(probs, 50, { out });
        else topPRenormProbs(probs, 0.9, { out });
        const g = out.toRaw() as Float32Array;
        for (let r = 0; r < batch; r++) {
          const { keep, ambiguous } = sets.get(key)![r % DISTINCT];
          const row = base.subarray((r % DISTINCT) * d, (r % DISTINCT + 1) * d);
          let z = 0;
          for (let i = 0; i < d; i++) if (keep[i]) z += row[i];
          for (let i = 0; i < d; i++) {
            const want = keep[i] ? row[i] / z : 0, have = g[r * d + i];
            if (ambiguous[i]) continue;
            if (!(want === 0 ? have === 0 : Math.abs(have - want) <= 1e-4 * want)) {
              assert.fail(`${tag} renorm ${key} row ${r} token ${i}: ${have} vs ${want}`);
            }
          }
        }
      }
      // mask and softmax (per-row temperature)
      {
        using masked = Tensor.empty([batch, d], "f32").fillBytes(0xff);
        topKMaskLogits(logits, 50, { out: masked });
        const temps = Float32Array.from({ length: batch }, (_, r) => 0.5 + (r % 4) * 0.25);
        using sm = Tensor.empty([batch, d], "f32").fillBytes(0xff);
        softmax(logits, { temperature: temps, out: sm });
        const m = masked.toRaw() as Float32Array, s = sm.toRaw() as Float32Array;
        for (let r = 0; r < Math.min(batch, 2 * DISTINCT); r++) {
          const x = baseLogits.subarray((r % DISTINCT) * d, (r % DISTINCT + 1) * d);
          const wantM = maskRef(x, 50), wantS = softmaxRef(x, temps[r]);
          for (let i = 0; i < d; i++) {
            if (m[r * d + i] !== wantM[i]) {
              assert.fail(`${tag} mask row ${r} token ${i}: ${m[r * d + i]} vs ${wantM[i]}`);
            }
            if (!(Math.abs(s[r * d + i] - wantS[i]) <= 1e-5 * wantS[i] + 1e-9)) {
              assert.fail(`${tag} softmax row ${r} token ${i}: ${s[r * d + i]} vs ${wantS[i]}`);
            }
          }
        }
      }
      // samplers: every token admissible, every row valid
      const samplers: [string, () => Tensor][] = [
        ["k50", () => topKSamplingFromProbs(probs, 50, { seed: 7 })],
        ["p0.9", () => topPSamplingFromProbs(probs, 0.9, { seed: 7 })],
        ["k50p0.9", () => topKTopPSamplingFromProbs(probs, 50, 0.9, { seed: 7 })],
        ["k50p0.9j", () => topKTopPSamplingFromProbs(probs, 50, 0.9, { seed: 7, filterApplyOrder: "joint" })],
        ["m0.05", () => minPSamplingFromProbs(probs, 0.05, { seed: 7 })],
      ];
      for (const [key, run] of samplers) {
        using tokens = run();
        const t = tokens.toRaw() as Int32Array;
        for (let r = 0; r < batch; r++) {
          const { keep, ambiguous } = sets.get(key)![r % DISTINCT];
          if (!(t[r] >= 0 && t[r] < d && (keep[t[r]] === 1 || ambiguous[t[r]] === 1))) {
            assert.fail(`${tag} ${key} row ${r}: token ${t[r]} not admissible`);
          }
        }
      }
      using plain = samplingFromProbs(probs, { seed: 3 });
      assert.ok(
        (plain.toRaw() as Int32Array).every((t, r) => t >= 0 && t < d && base[(r % DISTINCT) * d + t] > 0),
        `${tag} plain`,
      );
    }
  }
});

gpuTest("sampling: the same seed and offset give the same tokens; device offsets advance across graph replays", () => {
  const d = 32000, batch = 99;
  using probs = Tensor.fromRaw(probRows(batch, d, 2), [batch, d], "f32");
  const draw = (offset: number, seed = 99) => {
    using t = topKTopPSamplingFromProbs(probs, 100, 0.95, { seed, offset });
    return Array.from(t.toRaw() as Int32Array);
  };
  assert.deepEqual(draw(5), draw(5));
  assert.notDeepEqual(draw(5), draw(6));
  assert.notDeepEqual(draw(5, 99), draw(5, 100));
  // cluster split and single CTA give the same token (the race does not depend on visiting order)
  using a = topPSamplingFromProbs(probs, 0.9, { seed: 1, offset: 2, ctasPerRow: 1 });
  using b = topPSamplingFromProbs(probs, 0.9, { seed: 1, offset: 2, ctasPerRow: 8 });
  assert.deepEqual(Array.from(a.toRaw() as Int32Array), Array.from(b.toRaw() as Int32Array));
  using b16 = topKTopPSamplingFromProbs(probs, 100, 0.95, { seed: 1, offset: 2, ctasPerRow: 16 });
  using a16 = topKTopPSamplingFromProbs(probs, 100, 0.95, { seed: 1, offset: 2, ctasPerRow: 1 });
  assert.deepEqual(Array.from(a16.toRaw() as Int32Array), Array.from(b16.toRaw() as Int32Array));
  using a2 = samplingFromProbs(probs, { seed: 1, offset: 2, ctasPerRow: 1 });
  using b2 = samplingFromProbs(probs, { seed: 1, offset: 2, ctasPerRow: 8 });
  assert.deepEqual(Array.from(a2.toRaw() as Int32Array), Array.from(b2.toRaw() as Int32Array));
  // device seed and offset, advanced by the launch: a captured graph draws fresh tokens each replay
  using seedT = Tensor.fromRaw(new BigInt64Array([99n]), [1], "i64");
  using offT = Tensor.fromRaw(new BigInt64Array([5n]), [1], "i64");
  using stream = new Stream();
  using out = Tensor.empty([batch], "i32");
  using graph = CudaGraph.capture(stream, () => {
    topKTopPSamplingFromProbs(probs, 100, 0.95, { seed: seedT, offset: offT, out, stream });
  });
  graph.replay(stream);
  stream.synchronize();
  assert.deepEqual(Array.from(out.toRaw() as Int32Array), draw(5));
  graph.replay(stream);
  stream.synchronize();
  assert.deepEqual(Array.from(out.toRaw() as Int32Array), draw(6));
  assert.equal((offT.toRaw() as BigInt64Array)[0], 7n);
});

gpuTest("sampling: NaN, negative and empty rows and bad device indices are flagged, never out of range", () => {
  const d = 1000, batch = 6;
  const host = probRows(batch, d, 2);
  host[1 * d + 17] = NaN;
  host[2 * d + 3] = -0.5;
  host.fill(0, 3 * d, 4 * d);
  host[4 * d + 9] = Infinity;
  using probs = Tensor.fromRaw(host, [batch, d], "f32");
  const expectValid = [1, 0, 0, 0, 0, 1];
  for (
    const [name, run] of [
      ["plain", (v: Tensor) => samplingFromProbs(probs, { valid: v, seed: 1 })],
      ["topK", (v: Tensor) => topKSamplingFromProbs(probs, 5, { valid: v, seed: 1 })],
      ["topP", (v: Tensor) => topPSamplingFromProbs(probs, 0.5, { valid: v, seed: 1 })],
      ["minP", (v: Tensor) => minPSamplingFromProbs(probs, 0.5, { valid: v, seed: 1 })],
      ["topKTopP", (v: Tensor) => topKTopPSamplingFromProbs(probs, 5, 0.5, { valid: v, seed: 1 })],
    ] as const
  ) {
    using valid = Tensor.empty([batch], "u8").fillBytes(0x7f);
    using t = run(valid);
    const tok = t.toRaw() as Int32Array;
    assert.deepEqual(Array.from(valid.toRaw() as Uint8Array), expectValid, name);
    assert.ok(tok.every((x) => x >= 0 && x < d), `${name}: ${tok}`);
  }
  // logits: NaN and all -inf rows
  const lg = Float32Array.from(randn(rng, 3 * d));
  lg[5] = NaN;
  lg.fill(-Infinity, 2 * d, 3 * d);
  using logits = Tensor.fromRaw(lg, [3, d], "f32");
  using lv = Tensor.empty([3], "u8").fillBytes(0x7f);
  using _lt = samplingFromLogits(logits, { valid: lv, seed: 2 });
  assert.deepEqual(Array.from(lv.toRaw() as Uint8Array), [0, 1, 0]);
  using lv2 = Tensor.empty([3], "u8").fillBytes(0x7f);
  using _lt2 = topKTopPSamplingFromLogits(logits, 10, 0.9, { valid: lv2, seed: 2 });
  assert.deepEqual(Array.from(lv2.toRaw() as Uint8Array), [0, 1, 0]);
  // device indices out of range: flagged, token 0
  using ix = Tensor.fromRaw(new Int32Array([0, -1, 5, 6, 1 << 30]), [5], "i32");
  using iv = Tensor.empty([5], "u8").fillBytes(0x7f);
  using it = topPSamplingFromProbs(probs, 0.9, { indices: ix, valid: iv, seed: 3 });
  assert.deepEqual(Array.from(iv.toRaw() as Uint8Array), [1, 0, 1, 0, 0]);
  assert.deepEqual(Array.from(it.toRaw() as Int32Array).filter((_, i) => i === 1 || i > 2), [0, 0, 0]);
});

gpuTest("sampling: chain speculative sampling accepts matching drafts and rejects impossible ones", () => {
  const batch = 64, n = 3, d = 500;
  const target = probRows(batch * (n + 1), d, 2);
  const draftSame = new Float32Array(batch * n * d);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) {
      draftSame.set(target.subarray((b * (n + 1) + i) * d, (b * (n + 1) + i + 1) * d), (b * n + i) * d);
    }
  }
  const ids = Int32Array.from({ length: batch * n }, () => Math.floor(rng() * d));
  using tp = Tensor.fromRaw(target, [batch, n + 1, d], "f32");
  using dp = Tensor.fromRaw(draftSame, [batch, n, d], "f32");
  using di = Tensor.fromRaw(ids, [batch, n], "i32");
  const r = chainSpeculativeSampling(dp, di, tp, { seed: 5 });
  const out = r.outputTokenIds.toRaw() as Int32Array;
  assert.deepEqual(Array.from(r.acceptedTokenNum.toRaw() as Int32Array), new Array(batch).fill(n));
  assert.deepEqual(Array.from(r.emittedDraftTokenNum.toRaw() as Int32Array), new Array(batch).fill(n));
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < n; i++) assert.equal(out[b * (n + 1) + i], ids[b * n + i]);
    const bonus = out[b * (n + 1) + n];
    assert.ok(bonus >= 0 && bonus < d && target[(b * (n + 1) + n) * d + bonus] > 0);
  }
  [r.outputTokenIds, r.acceptedTokenNum, r.emittedDraftTokenNum].forEach((t) => t.dispose());
  // target gives the first draft token zero probability: rejected at 0, replacement != draft
  const t2 = target.slice();
  for (let b = 0; b < batch; b++) t2[(b * (n + 1)) * d + ids[b * n]] = 0;
  using tp2 = Tensor.fromRaw(t2, [batch, n + 1, d], "f32");
  const r2 = chainSpeculativeSampling(dp, di, tp2, { seed: 5 });
  const out2 = r2.outputTokenIds.toRaw() as Int32Array;
  assert.deepEqual(Array.from(r2.emittedDraftTokenNum.toRaw() as Int32Array), new Array(batch).fill(0));
  for (let b = 0; b < batch; b++) {
    assert.notEqual(out2[b * (n + 1)], ids[b * n]);
    for (let i = 1; i <= n; i++) assert.equal(out2[b * (n + 1) + i], -1);
  }
  [r2.outputTokenIds, r2.acceptedTokenNum, r2.emittedDraftTokenNum].forEach((t) => t.dispose());
});

gpuTest("sampling: rounds and passes are recorded (debug buffer)", () => {
  const d = 128256, batch = 8;
  using probs = Tensor.fromRaw(probRows(batch, d, 3), [batch, d], "f32");
  for (
    const [name, run] of [
      ["topK 50", (dbg: Tensor) => topKSamplingFromProbs(probs, 50, { debugRounds: dbg, seed: 1 })],
      ["topP 0.9", (dbg: Tensor) => topPSamplingFromProbs(probs, 0.9, { debugRounds: dbg, seed: 1 })],
      ["topK 50 topP 0.9", (dbg: Tensor) => topKTopPSamplingFromProbs(probs, 50, 0.9, { debugRounds: dbg, seed: 1 })],
    ] as const
  ) {
    using dbg = Tensor.empty([batch, 2], "i32").fillBytes(0);
    using _t = run(dbg);
    const r = dbg.toRaw() as Int32Array;
    console.log(
      `${name}: passes/rounds per row ${
        Array.from({ length: batch }, (_, i) => `${r[2 * i]}/${r[2 * i + 1]}`).join(" ")
      }`,
    );
    for (let i = 0; i < batch; i++) assert.ok(r[2 * i] >= 1 && r[2 * i] <= 12, `${name}: ${r[2 * i]} passes`);
  }
});
