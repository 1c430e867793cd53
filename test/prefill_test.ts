/**
 * Prefill attention (single, ragged, paged) against a float64 reference, outputs poisoned first;
 * host-only tests of the masks' bit packing, the scheduler and argument validation.
 */
import { assert, assertThrowsCode, gpuTest, test } from "./harness.ts";
import { assertClose } from "./reference/compare.ts";
import { makeRng, randint, randn } from "./reference/random.ts";
import { attentionRef, type AttentionRefOptions } from "./reference/prefill_attention.ts";
import {
  BatchPrefillWithPagedKvCache,
  BatchPrefillWithRaggedKvCache,
  singlePrefillWithKvCache,
} from "../src/attention/prefill.ts";
import { packbits, segmentPackbits } from "../src/attention/mask.ts";
import { BatchAttention } from "../src/attention/batch_attention.ts";
import { headPack, PREFILL_CONFIGS, PREFILL_FP8_CONFIGS } from "../src/attention/prefill_configs.ts";
import { prefillWork, roundRobinUneven, tileCost } from "../src/attention/prefill_scheduler.ts";
import type { KvLayout } from "../src/attention/variants.ts";
import { type DType, DTYPE_CODE, roundTo } from "../src/runtime/dtype.ts";
import { native } from "../src/runtime/library.ts";
import { Device } from "../src/runtime/device.ts";
import { lastPrefillKernel, type PrefillKernel, setPrefillKernel } from "../src/attention/prefill_launch.ts";
import { CudaGraph, Stream } from "../src/runtime/stream.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { Workspace } from "../src/runtime/workspace.ts";

const rng = makeRng();
const check0 = (status: number) => assert.equal(status, 0);
const FAKE = 0x10000n;

// ---------------------------------------------------------------- host-only

test("packbits: little-endian bits, as numpy's packbits(bitorder='little')", () => {
  assert.deepEqual([...packbits([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])], [1, 2]);
  assert.deepEqual([...packbits([true, true, false, true])], [0b1011]);
  const { packed, packedIndptr } = segmentPackbits([1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1], [0, 3, 11]);
  assert.deepEqual([...packedIndptr], [0, 1, 2]);
  assert.deepEqual([...packed], [0b111, 0b11000000]);
  assertThrowsCode(
    () => segmentPackbits([1, 0], [0, 3]),
    "INVALID_ARGUMENT",
    /'mask' must be of length indptr\[1\] = 3/,
  );
});

test("prefill scheduler: the Hopper kernel's items go greedy only where round-robin is uneven", () => {
  const uneven = (b: number, s: number, tileQ: number, groups: number, grid: number, causal = true) => {
    const lens = new Array(b).fill(s);
    return roundRobinUneven(prefillWork(lens, lens, tileQ, causal, -1), lens, lens, tileQ, causal, -1, groups, grid);
  };
  // 1 x 4096 causal, 32-token tiles, 8 head groups on 132 CTAs: every CTA keeps the same phase of the
  // heaviest-to-lightest run (1.8x the mean), on 36 CTAs the phases rotate
  assert.equal(uneven(1, 4096, 32, 8, 132), true);
  assert.equal(uneven(1, 4096, 32, 8, 36), false);
  // the issue's prefill shapes are even; equal costs (not causal) always are
  assert.equal(uneven(16, 1024, 32, 8, 132), false);
  assert.equal(uneven(4, 4096, 32, 8, 132), false);
  assert.equal(uneven(1, 4096, 32, 8, 132, false), false);
  // no more items than CTAs, or one CTA: nothing to balance
  assert.equal(uneven(1, 64, 32, 8, 132), false);
  assert.equal(uneven(1, 4096, 32, 8, 1), false);
});

test("prefill scheduler: every (request, tile) exactly once, heaviest first", () => {
  const qo = [1, 300, 128, 0, 1000], kv = [5, 300, 4000, 7, 1000];
  for (const causal of [false, true]) {
    const work = prefillWork(qo, kv, 128, causal, -1);
    const seen = new Set<string>();
    let prev = Infinity;
    for (let i = 0; i < work.length; i += 2) {
      const [b, t] = [work[i], work[i + 1]];
      const key = `${b}/${t}`;
      assert.ok(!seen.has(key), key);
      seen.add(key);
      const c = tileCost(qo[b], kv[b], t, 128, causal, -1);
      assert.ok(c <= prev);
      prev = c;
    }
    assert.equal(seen.size, qo.reduce((s, q) => s + Math.ceil(q / 128), 0));
  }
  // causal: the last tile of the long request sees everything; its first tile only its diagonal
  assert.ok(tileCost(1000, 1000, 7, 128, true, -1) > tileCost(1000, 1000, 0, 128, true, -1));
});

const fakeWorkspace = { ptr: FAKE, bytes: 1 << 30, require() {}, disposed: false } as unknown as Workspace;

test("single prefill: bad input is refused before any native call", () => {
  const q = Tensor.fromPointer(FAKE, [16, 8, 128], "bf16");
  const k = Tensor.fromPointer(FAKE, [32, 2, 128], "bf16");
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, k, Tensor.fromPointer(FAKE, [32, 2, 128], "f16")),
    "INVALID_ARGUMENT",
    /'v' must be of the dtype of 'k'/,
  );
  assertThrowsCode(
    () =>
      singlePrefillWithKvCache(
        Tensor.fromPointer(FAKE, [16, 8, 96], "bf16"),
        Tensor.fromPointer(FAKE, [32, 2, 96], "bf16"),
        Tensor.fromPointer(FAKE, [32, 2, 96], "bf16"),
      ),
    "UNSUPPORTED",
    /head dim 96, q bf16, kv bf16\) is not compiled/,
  );
  assertThrowsCode(
    () => singlePrefillWithKvCache(Tensor.fromPointer(FAKE, [16, 8, 128], "f32"), k, k),
    "INVALID_ARGUMENT",
    /'q' must be of dtype f16 or bf16/,
  );
  assertThrowsCode(
    () =>
      singlePrefillWithKvCache(
        q,
        Tensor.fromPointer(FAKE, [32, 3, 128], "bf16"),
        Tensor.fromPointer(FAKE, [32, 3, 128], "bf16"),
      ),
    "INVALID_ARGUMENT",
    /'numQoHeads' must be a multiple of 'numKvHeads': received 8 and 3/,
  );
  const shortK = Tensor.fromPointer(FAKE, [8, 2, 128], "bf16");
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, shortK, shortK, { causal: true }),
    "INVALID_ARGUMENT",
    /'k' must be at least as long as q \(16 rows\) for a causal mask: received 8 rows/,
  );
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, k, k, { customMask: new Uint8Array(16 * 32 - 1) }),
    "INVALID_ARGUMENT",
    /'customMask' must be of qoLen \* kvLen = 512 booleans: received 511/,
  );
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, k, k, { kvLayout: "XYZ" as KvLayout }),
    "INVALID_ARGUMENT",
    /'kvLayout'/,
  );
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, k, k, { posEncodingMode: "XPOS" as "NONE" }),
    "INVALID_ARGUMENT",
    /'posEncodingMode'/,
  );
  assertThrowsCode(() => singlePrefillWithKvCache(q, k, k, { windowLeft: -3 }), "INVALID_ARGUMENT", /'windowLeft'/);
  assertThrowsCode(
    () => singlePrefillWithKvCache(q, k, k, { out: Tensor.fromPointer(FAKE, [16, 8, 64], "bf16") }),
    "INVALID_ARGUMENT",
    /'out' must be of shape \[16, 8, 128\]/,
  );
});

test("batch prefill: bad plans and run before plan are refused before any native call", () => {
  const ragged = new BatchPrefillWithRaggedKvCache(fakeWorkspace);
  const q = Tensor.fromPointer(FAKE, [10, 8, 128], "bf16");
  assertThrowsCode(
    () => ragged.run(q, q, q),
    "INVALID_ARGUMENT",
    /Cannot run ragged batch prefill as 'plan' must be called before run/,
  );
  const qo = new Int32Array([0, 4, 10]);
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4]), 8, 2, 128),
    "INVALID_ARGUMENT",
    /'kvIndptr' must be of length batch \+ 1 = 3/,
  );
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4, 3]), 8, 2, 128),
    "INVALID_ARGUMENT",
    /'kvIndptr' must be non-decreasing/,
  );
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4, 9]), 8, 2, 128, { causal: true }),
    "INVALID_ARGUMENT",
    /at least as many keys as queries for a causal mask: received request 1 with 6 queries and 5 keys/,
  );
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4, 12]), 8, 2, 128, { customMask: new Uint8Array(3) }),
    "INVALID_ARGUMENT",
    /'customMask' must be of sum\(qoLen \* kvLen\) = 64 booleans/,
  );
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4, 12]), 8, 2, 64, { kvDtype: "e4m3", qDtype: "bf16" }),
    "UNSUPPORTED",
    /kv e4m3\) is not compiled/,
  );
  assertThrowsCode(
    () => ragged.plan(qo, new Int32Array([0, 4, 12]), 8, 2, 128, { kvDtype: "f16", qDtype: "bf16" }),
    "UNSUPPORTED",
    /q bf16, kv f16\) is not compiled/,
  );
  assertThrowsCode(() => ragged.plan(qo, new Int32Array([0, 4, 12]), 8, 2, 80), "UNSUPPORTED", /head dim 80/);
  assertThrowsCode(
    () => ragged.plan([0, 4, 10] as unknown as Int32Array, new Int32Array([0, 4, 12]), 8, 2, 128),
    "INVALID_ARGUMENT",
    /'qoIndptr' must be an Int32Array/,
  );
  const paged = new BatchPrefillWithPagedKvCache(fakeWorkspace, "HND");
  assertThrowsCode(() => paged.run(q, q), "INVALID_ARGUMENT", /'plan' must be called before run/);
  assertThrowsCode(
    () => paged.plan(qo, new Int32Array([0, 1, 2]), new Int32Array([0, 1]), new Int32Array([4, 17]), 8, 2, 128, 16),
    "INVALID_ARGUMENT",
    /'kvLastPageLen' must be in \[1, pageSize = 16\]: received kvLastPageLen\[1\] = 17/,
  );
  assertThrowsCode(
    () => paged.plan(qo, new Int32Array([0, 1, 2]), new Int32Array([0]), new Int32Array([4, 6]), 8, 2, 128, 16),
    "INVALID_ARGUMENT",
    /'kvIndices' must be at least kvIndptr\[2\] = 2 long/,
  );
  assertThrowsCode(
    () => paged.plan(qo, new Int32Array([0, 1, 2]), new Int32Array([3, -2]), new Int32Array([4, 6]), 8, 2, 128, 16),
    "INVALID_ARGUMENT",
    /'kvIndices' must be non-negative page ids: received kvIndices\[1\] = -2/,
  );
  assertThrowsCode(
    () =>
      paged.plan(qo, new Int32Array([0, 1, 2]), new Int32Array([0, 1]), new Int32Array([3, 6]), 8, 2, 128, 16, {
        causal: true,
      }),
    "INVALID_ARGUMENT",
    /request 0 with 4 queries and 3 keys/,
  );
  assertThrowsCode(
    () => new BatchPrefillWithPagedKvCache(fakeWorkspace, "ABC" as KvLayout),
    "INVALID_ARGUMENT",
    /'kvLayout' must be "NHD" or "HND"/,
  );
});

// ---------------------------------------------------------------- GPU helpers

function randTensor(shape: number[], dtype: DType, scale = 1): { t: Tensor; x: Float64Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const x = roundTo(dtype, randn(rng, n, scale));
  return { t: Tensor.fromArray(x, shape, dtype), x };
}

/** [rows][H][D] (NHD) -> [H][rows][D]. */
function toHnd(x: Float64Array, rows: number, h: number, d: number): Float64Array {
  const y = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < h; i++) y.set(x.subarray((r * h + i) * d, (r * h + i + 1) * d), (i * rows + r) * d);
  }
  return y;
}

function poisoned(shape: number[], dtype: DType): Tensor {
  return Tensor.empty(shape, dtype).fillBytes(0xff);
}

/** Rows to check: all of them for small requests, a spread subsample for large ones. */
function sampleRows(qoLen: number, max = 48): number[] {
  if (qoLen <= max) return Array.from({ length: qoLen }, (_, i) => i);
  const s = new Set<number>([0, 1, qoLen - 1, qoLen - 2, 127, 128]);
  while (s.size < max) s.add(randint(rng, 0, qoLen - 1));
  return [...s].filter((r) => r < qoLen).sort((a, b) => a - b);
}

function check(
  out: Float64Array,
  lse: Float64Array | undefined,
  ref: { out: Float64Array; lse: Float64Array },
  rowBase: number,
  rows: number[],
  hq: number,
  dvo: number,
  dtype: DType,
  what: string,
): void {
  const got: number[] = [], want: number[] = [], gl: number[] = [], wl: number[] = [];
  for (const r of rows) {
    for (let h = 0; h < hq; h++) {
      for (let d = 0; d < dvo; d++) {
        got.push(out[((rowBase + r) * hq + h) * dvo + d]);
        want.push(ref.out[(r * hq + h) * dvo + d]);
      }
      if (lse) {
        const w = ref.lse[r * hq + h], g = lse[(rowBase + r) * hq + h];
        if (w === -Infinity) assert.equal(g, -Infinity, `${what}: lse of row ${r} head ${h}`);
        else {
          gl.push(g);
          wl.push(w);
        }
      }
    }
  }
  assertClose(got, want, dtype, `${what}: out`);
  if (lse && wl.length) assertClose(gl, wl, "f32", `${what}: lse`, 2e-4);
}

interface SingleCase {
  dtype: DType;
  /** fp8 KV (default: dtype), with scales. */
  kvDtype?: DType;
  kScale?: number;
  vScale?: number;
  dqk: number;
  dvo?: number;
  qoLen: number;
  kvLen: number;
  hq: number;
  hkv: number;
  layout: KvLayout;
  causal?: boolean;
  opts?: AttentionRefOptions & { mask?: undefined };
  maskFn?: (i: number, j: number) => boolean;
  variant?: {
    windowLeft?: number;
    logitsSoftCap?: number;
    smScale?: number;
    posEncodingMode?: "ALIBI" | "ROPE_LLAMA";
    ropeScale?: number;
    ropeTheta?: number;
  };
}

function runSingle(c: SingleCase): void {
  const dvo = c.dvo ?? c.dqk;
  const kvDtype = c.kvDtype ?? c.dtype, kScale = c.kScale ?? 1, vScale = c.vScale ?? 1;
  const what = `single ${c.dtype}${
    kvDtype !== c.dtype ? `/${kvDtype} kScale ${kScale} vScale ${vScale}` : ""
  } hd${c.dqk}/${dvo} qo${c.qoLen} kv${c.kvLen} ${c.hq}/${c.hkv} ${c.layout}${c.causal ? " causal" : ""}${
    c.maskFn ? " mask" : ""
  }${c.variant ? " " + JSON.stringify(c.variant) : ""}`;
  const q = randTensor([c.qoLen, c.hq, c.dqk], c.dtype);
  const kStored = roundTo(kvDtype, randn(rng, c.kvLen * c.hkv * c.dqk));
  const vStored = roundTo(kvDtype, randn(rng, c.kvLen * c.hkv * dvo));
  const hnd = c.layout === "HND";
  using k = Tensor.fromArray(
    hnd ? toHnd(kStored, c.kvLen, c.hkv, c.dqk) : kStored,
    hnd ? [c.hkv, c.kvLen, c.dqk] : [c.kvLen, c.hkv, c.dqk],
    kvDtype,
  );
  using v = Tensor.fromArray(
    hnd ? toHnd(vStored, c.kvLen, c.hkv, dvo) : vStored,
    hnd ? [c.hkv, c.kvLen, dvo] : [c.kvLen, c.hkv, dvo],
    kvDtype,
  );
  const kx: Float64Array = kStored.map((x) => x * kScale), vx: Float64Array = vStored.map((x) => x * vScale);
  using out = poisoned([c.qoLen, c.hq, dvo], c.dtype);
  using lse = poisoned([c.qoLen, c.hq], "f32");
  let customMask: Uint8Array | undefined;
  if (c.maskFn) {
    customMask = new Uint8Array(c.qoLen * c.kvLen);
    for (let i = 0; i < c.qoLen; i++) {
      for (let j = 0; j < c.kvLen; j++) {
        customMask[i * c.kvLen + j] = c.maskFn(i, j) ? 1 : 0;
      }
    }
  }
  singlePrefillWithKvCache(q.t, k, v, {
    causal: c.causal,
    kvLayout: c.layout,
    out,
    lse,
    customMask,
    kScale: c.kScale,
    vScale: c.vScale,
    ...c.variant,
  });
  const rows = sampleRows(c.qoLen);
  let qr: Float64Array = q.x, kr: Float64Array = kx;
  if (c.variant?.posEncodingMode === "ROPE_LLAMA") {
    // The kernel rotates in shared memory and rounds to the input dtype, as FlashInfer does.
    const rcp = 1 / (c.variant.ropeScale ?? 1), theta = c.variant.ropeTheta ?? 1e4;
    qr = roundTo(c.dtype, ropeRef(q.x, c.qoLen, c.hq, c.dqk, c.kvLen - c.qoLen, rcp, theta));
    kr = roundTo(c.dtype, ropeRef(kx, c.kvLen, c.hkv, c.dqk, 0, rcp, theta));
  }
  const ref = attentionRef(qr, kr, vx, c.qoLen, c.kvLen, c.hq, c.hkv, c.dqk, dvo, {
    causal: c.causal,
    mask: c.maskFn,
    windowLeft: c.variant?.windowLeft,
    logitsSoftCap: c.variant?.logitsSoftCap,
    smScale: c.variant?.smScale,
    alibi: c.variant?.posEncodingMode === "ALIBI",
  }, rows);
  check(out.toArray(), lse.toArray(), ref, 0, rows, c.hq, dvo, c.dtype, what);
  q.t.dispose();
}

/** Llama RoPE (NeoX pairs i, i + D/2) of [rows][H][D], row r at position pos0 + r. */
function ropeRef(
  x: Float64Array,
  rows: number,
  h: number,
  d: number,
  pos0: number,
  rcpScale: number,
  theta: number,
): Float64Array {
  const y = new Float64Array(x);
  const half = d / 2;
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < half; i++) {
      const a = (pos0 + r) * rcpScale * Math.pow(theta, -(2 * i) / d);
      const cs = Math.cos(a), sn = Math.sin(a);
      for (let hh = 0; hh < h; hh++) {
        const b = (r * h + hh) * d, x1 = x[b + i], x2 = x[b + i + half];
        y[b + i] = x1 * cs - x2 * sn;
        y[b + i + half] = x2 * cs + x1 * sn;
      }
    }
  }
  return y;
}

// ---------------------------------------------------------------- GPU tests

gpuTest("prefill: the compiled set in TypeScript matches the library's", () => {
  const lib = native();
  for (const c of PREFILL_CONFIGS) {
    for (const dt of ["f16", "bf16"] as const) {
      assert.equal(lib.fi_prefill_tile_q(c.headDimQk, c.headDimVo, DTYPE_CODE[dt]), c.tileQ, JSON.stringify(c));
    }
  }
  assert.equal(lib.fi_prefill_tile_q(96, 96, DTYPE_CODE.bf16), 0);
  for (const c of PREFILL_CONFIGS) {
    const fp8 = PREFILL_FP8_CONFIGS.some((f) => f.headDimQk === c.headDimQk && f.headDimVo === c.headDimVo);
    assert.equal(lib.fi_prefill_fp8_compiled(c.headDimQk, c.headDimVo), fp8 ? 1 : 0, `fp8 ${JSON.stringify(c)}`);
  }
  for (const g of [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 7]) {
    assert.equal(1 << lib.fi_prefill_head_pack_shift(g), headPack(g), `group ${g}`);
  }
  assert.equal(lib.fi_prefill_tile_q(128, 128, DTYPE_CODE.f32), 0);
});

gpuTest("single prefill: head dims 64/128/256 and 192/128, fp16/bf16, NHD/HND, causal and not, GQA", () => {
  for (const dtype of ["f16", "bf16"] as DType[]) {
    for (const [dqk, dvo] of [[64, 64], [128, 128], [256, 256], [192, 128]]) {
      for (const layout of ["NHD", "HND"] as KvLayout[]) {
        for (const causal of [false, true]) {
          const qoLen = randint(rng, 1, 300), kvLen = qoLen + randint(rng, 0, 200);
          runSingle({ dtype, dqk, dvo, qoLen, kvLen, hq: 4, hkv: causal ? 2 : 4, layout, causal });
        }
      }
    }
  }
});

gpuTest("single prefill: long requests (qo 2048, subsampled rows) and edge lengths", () => {
  runSingle({ dtype: "bf16", dqk: 128, qoLen: 2048, kvLen: 2048, hq: 4, hkv: 1, layout: "NHD", causal: true });
  runSingle({ dtype: "f16", dqk: 128, qoLen: 1500, kvLen: 3000, hq: 2, hkv: 1, layout: "HND", causal: true });
  runSingle({ dtype: "bf16", dqk: 64, qoLen: 1, kvLen: 1, hq: 2, hkv: 2, layout: "NHD", causal: true });
  runSingle({ dtype: "bf16", dqk: 64, qoLen: 1, kvLen: 777, hq: 8, hkv: 1, layout: "NHD", causal: true });
  runSingle({ dtype: "f16", dqk: 256, qoLen: 65, kvLen: 63, hq: 2, hkv: 1, layout: "NHD", causal: false });
  // GQA groups that pack 1 (group 3), 2 (group 6) and 8 heads of 16 (two tiles per KV head) per tile
  runSingle({ dtype: "bf16", dqk: 128, qoLen: 300, kvLen: 310, hq: 6, hkv: 2, layout: "NHD", causal: true });
  runSingle({ dtype: "bf16", dqk: 64, qoLen: 100, kvLen: 400, hq: 6, hkv: 1, layout: "HND", causal: true });
  runSingle({
    dtype: "f16",
    dqk: 256,
    qoLen: 50,
    kvLen: 90,
    hq: 16,
    hkv: 1,
    layout: "NHD",
    causal: true,
    variant: { posEncodingMode: "ALIBI" },
  });
});

gpuTest("single prefill: fp8 KV (e4m3, e5m2) with scales, fp16/bf16 q, NHD/HND", () => {
  for (const kvDtype of ["e4m3", "e5m2"] as DType[]) {
    for (const dtype of ["bf16", "f16"] as DType[]) {
      runSingle({
        dtype,
        kvDtype,
        kScale: 0.5,
        vScale: 1.7,
        dqk: 128,
        qoLen: 150,
        kvLen: 400,
        hq: 8,
        hkv: 2,
        layout: "NHD",
        causal: true,
      });
      runSingle({
        dtype,
        kvDtype,
        kScale: 1.3,
        dqk: 128,
        qoLen: 70,
        kvLen: 70,
        hq: 4,
        hkv: 4,
        layout: "HND",
        causal: false,
        variant: { logitsSoftCap: 8 },
      });
    }
  }
  const q = Tensor.fromPointer(FAKE, [16, 8, 128], "bf16");
  assertThrowsCode(
    () =>
      singlePrefillWithKvCache(
        q,
        Tensor.fromPointer(FAKE, [32, 2, 128], "e4m3"),
        Tensor.fromPointer(FAKE, [32, 2, 128], "e4m3"),
        { posEncodingMode: "ROPE_LLAMA" },
      ),
    "UNSUPPORTED",
    /fused RoPE .* fp8/,
  );
  assertThrowsCode(
    () =>
      singlePrefillWithKvCache(
        Tensor.fromPointer(FAKE, [16, 8, 64], "bf16"),
        Tensor.fromPointer(FAKE, [32, 2, 64], "e5m2"),
        Tensor.fromPointer(FAKE, [32, 2, 64], "e5m2"),
      ),
    "UNSUPPORTED",
    /head dim 64, q bf16, kv e5m2\) is not compiled/,
  );
});

gpuTest("single prefill: variants (window, soft cap, ALiBi, smScale, custom mask)", () => {
  for (const dtype of ["bf16", "f16"] as DType[]) {
    const dqk = dtype === "bf16" ? 128 : 64;
    const base = { dtype, dqk, qoLen: 200, kvLen: 333, hq: 4, hkv: 2, layout: "NHD" as KvLayout };
    runSingle({ ...base, causal: true, variant: { windowLeft: 37 } });
    runSingle({ ...base, causal: false, variant: { windowLeft: 100 } });
    runSingle({ ...base, causal: true, variant: { logitsSoftCap: 5 } });
    runSingle({ ...base, causal: true, variant: { posEncodingMode: "ALIBI" } });
    runSingle({ ...base, causal: true, variant: { posEncodingMode: "ROPE_LLAMA" } });
    runSingle({
      ...base,
      qoLen: 77,
      kvLen: 1500,
      causal: false,
      variant: { posEncodingMode: "ROPE_LLAMA", ropeScale: 2, ropeTheta: 5e5 },
    });
    runSingle({ ...base, hq: 8, hkv: 1, causal: true, variant: { posEncodingMode: "ROPE_LLAMA", windowLeft: 50 } });
    runSingle({ ...base, causal: false, variant: { smScale: 0.3 } });
    runSingle({ ...base, maskFn: (i, j) => ((i * 7 + j * 3) % 5) !== 0 && j <= i + 200 });
    // rows with nothing visible: zero output and lse -inf
    runSingle({ ...base, maskFn: (i, j) => i % 3 !== 0 && j % 2 === 0 });
  }
});

interface BatchCase {
  paged: boolean;
  pageSize: number;
  layout: KvLayout;
  dtype: DType;
  dqk: number;
  qoLens: number[];
  kvLens: number[];
  hq: number;
  hkv: number;
  causal: boolean;
  pair?: boolean;
  maskFn?: (b: number, i: number, j: number) => boolean;
  graph?: boolean;
  kvDtype?: DType;
}

function runBatch(c: BatchCase, ws: Workspace): void {
  const what = `${
    c.paged ? `paged ps${c.pageSize}${c.pair ? " pair" : ""}` : "ragged"
  } ${c.layout} ${c.dtype} hd${c.dqk} qo[${c.qoLens}] kv[${c.kvLens}]${c.causal ? " causal" : ""}${
    c.maskFn ? " mask" : ""
  }${c.graph ? " graph" : ""}`;
  const B = c.qoLens.length, D = c.dqk, hkv = c.hkv;
  const qoIndptr = new Int32Array(B + 1), kvIndptr = new Int32Array(B + 1);
  for (let b = 0; b < B; b++) {
    qoIndptr[b + 1] = qoIndptr[b] + c.qoLens[b];
    kvIndptr[b + 1] = kvIndptr[b] + c.kvLens[b];
  }
  const nnzQo = qoIndptr[B], nnzKv = kvIndptr[B];
  const q = randTensor([nnzQo, c.hq, D], c.dtype);
  const kvDt = c.kvDtype ?? c.dtype;
  const kx = roundTo(kvDt, randn(rng, nnzKv * hkv * D)), vx = roundTo(kvDt, randn(rng, nnzKv * hkv * D));
  let customMask: Uint8Array | undefined;
  if (c.maskFn) {
    const parts: number[] = [];
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < c.qoLens[b]; i++) {
        for (let j = 0; j < c.kvLens[b]; j++) parts.push(c.maskFn(b, i, j) ? 1 : 0);
      }
    }
    customMask = new Uint8Array(parts);
  }
  using out = poisoned([nnzQo, c.hq, D], c.dtype);
  using lse = poisoned([nnzQo, c.hq], "f32");
  const tensors: Tensor[] = [q.t];
  const opts = { causal: c.causal, qDtype: c.dtype, kvDtype: kvDt, customMask };
  let runIt: (stream?: Stream) => void;
  if (!c.paged) {
    const hnd = c.layout === "HND";
    const k = Tensor.fromArray(hnd ? toHnd(kx, nnzKv, hkv, D) : kx, hnd ? [hkv, nnzKv, D] : [nnzKv, hkv, D], c.dtype);
    const v = Tensor.fromArray(hnd ? toHnd(vx, nnzKv, hkv, D) : vx, hnd ? [hkv, nnzKv, D] : [nnzKv, hkv, D], c.dtype);
    tensors.push(k, v);
    const w = new BatchPrefillWithRaggedKvCache(ws, c.layout);
    w.plan(qoIndptr, kvIndptr, c.hq, hkv, D, opts);
    runIt = (stream) => w.run(q.t, k, v, { out, lse, stream });
  } else {
    const ps = c.pageSize;
    const pagesOf = c.kvLens.map((n) => Math.ceil(n / ps));
    const total = pagesOf.reduce((a, b) => a + b, 0);
    const numPages = total + 3;
    const ids = Array.from({ length: numPages }, (_, i) => i).sort(() => rng() - 0.5);
    const pIndptr = new Int32Array(B + 1), indices = new Int32Array(total), last = new Int32Array(B);
    const cache = new Float64Array(numPages * 2 * ps * hkv * D); // [P, 2, ...page]
    const pageElems = ps * hkv * D;
    let at = 0;
    for (let b = 0; b < B; b++) {
      pIndptr[b + 1] = pIndptr[b] + pagesOf[b];
      last[b] = c.kvLens[b] === 0 ? 0 : c.kvLens[b] - (pagesOf[b] - 1) * ps;
      for (let pg = 0; pg < pagesOf[b]; pg++) {
        const id = ids[at];
        indices[at++] = id;
        for (let s = 0; s < ps; s++) {
          const tok = pg * ps + s;
          if (tok >= c.kvLens[b]) continue;
          for (let h = 0; h < hkv; h++) {
            const src = ((kvIndptr[b] + tok) * hkv + h) * D;
            const slot = c.layout === "NHD" ? (s * hkv + h) * D : (h * ps + s) * D;
            cache.set(kx.subarray(src, src + D), (id * 2) * pageElems + slot);
            cache.set(vx.subarray(src, src + D), (id * 2 + 1) * pageElems + slot);
          }
        }
      }
    }
    const pageShape = c.layout === "NHD" ? [ps, hkv, D] : [hkv, ps, D];
    let kvArg: Tensor | [Tensor, Tensor];
    if (c.pair) {
      const kc = new Float64Array(numPages * pageElems), vc = new Float64Array(numPages * pageElems);
      for (let p = 0; p < numPages; p++) {
        kc.set(cache.subarray(2 * p * pageElems, (2 * p + 1) * pageElems), p * pageElems);
        vc.set(cache.subarray((2 * p + 1) * pageElems, (2 * p + 2) * pageElems), p * pageElems);
      }
      kvArg = [
        Tensor.fromArray(kc, [numPages, ...pageShape], kvDt),
        Tensor.fromArray(vc, [numPages, ...pageShape], kvDt),
      ];
      tensors.push(...kvArg);
    } else {
      kvArg = Tensor.fromArray(cache, [numPages, 2, ...pageShape], kvDt);
      tensors.push(kvArg);
    }
    const w = new BatchPrefillWithPagedKvCache(ws, c.layout);
    w.plan(qoIndptr, pIndptr, indices, last, c.hq, hkv, D, ps, opts);
    runIt = (stream) => w.run(q.t, kvArg, { out, lse, stream });
  }
  if (c.graph) {
    check0(native().fi_stream_synchronize(0n)); // the plan's upload (default stream) lands before the capture replays
    using stream = new Stream();
    using graph = CudaGraph.capture(stream, () => runIt(stream));
    graph.replay(stream);
    stream.synchronize();
  } else {
    runIt();
  }
  const o = out.toArray(), l = lse.toArray();
  for (let b = 0; b < B; b++) {
    if (c.qoLens[b] === 0) continue;
    const rows = sampleRows(c.qoLens[b], 24);
    const sl = (x: Float64Array, start: number, n: number) => x.subarray(start * hkv * D, (start + n) * hkv * D);
    const maskFn = c.maskFn;
    const ref = attentionRef(
      q.x.subarray(qoIndptr[b] * c.hq * D, qoIndptr[b + 1] * c.hq * D),
      sl(kx, kvIndptr[b], c.kvLens[b]),
      sl(vx, kvIndptr[b], c.kvLens[b]),
      c.qoLens[b],
      c.kvLens[b],
      c.hq,
      hkv,
      D,
      D,
      { causal: c.causal, mask: maskFn ? (i, j) => maskFn(b, i, j) : undefined },
      rows,
    );
    check(o, l, ref, qoIndptr[b], rows, c.hq, D, c.dtype, `${what} request ${b}`);
  }
  tensors.forEach((t) => t.dispose());
}

function randomMix(n: number, maxQo: number): { qoLens: number[]; kvLens: number[] } {
  const qoLens: number[] = [], kvLens: number[] = [];
  for (let b = 0; b < n; b++) {
    const qo = rng() < 0.3 ? randint(rng, 1, 4) : randint(rng, 1, maxQo);
    qoLens.push(qo);
    kvLens.push(qo + randint(rng, 0, 300));
  }
  return { qoLens, kvLens };
}

gpuTest("ragged batch prefill: random mixes, NHD/HND, fp16/bf16, hd 64/128/256, causal and custom mask", () => {
  using ws = new Workspace(64 << 20);
  for (const layout of ["NHD", "HND"] as KvLayout[]) {
    for (const [dtype, dqk] of [["bf16", 128], ["f16", 64], ["bf16", 256]] as [DType, number][]) {
      for (const causal of [true, false]) {
        runBatch({ paged: false, pageSize: 1, layout, dtype, dqk, ...randomMix(5, 400), hq: 8, hkv: 2, causal }, ws);
      }
    }
  }
  runBatch({
    paged: false,
    pageSize: 1,
    layout: "NHD",
    dtype: "bf16",
    dqk: 128,
    qoLens: [2048, 1, 300],
    kvLens: [2100, 2000, 300],
    hq: 4,
    hkv: 1,
    causal: true,
  }, ws);
  runBatch({
    paged: false,
    pageSize: 1,
    layout: "HND",
    dtype: "f16",
    dqk: 128,
    ...randomMix(5, 300),
    hq: 12,
    hkv: 4,
    causal: true,
  }, ws);
  runBatch({
    paged: false,
    pageSize: 1,
    layout: "NHD",
    dtype: "f16",
    dqk: 128,
    qoLens: [70, 3, 130],
    kvLens: [90, 5, 130],
    hq: 4,
    hkv: 2,
    causal: false,
    maskFn: (b, i, j) => (i + 2 * j + b) % 3 !== 0,
  }, ws);
});

gpuTest("paged batch prefill: page sizes 1 and 16, NHD/HND, one tensor and [k, v], random mixes", () => {
  using ws = new Workspace(64 << 20);
  for (const pageSize of [1, 16]) {
    for (const layout of ["NHD", "HND"] as KvLayout[]) {
      for (const [dtype, dqk] of [["bf16", 128], ["f16", 64]] as [DType, number][]) {
        runBatch({
          paged: true,
          pageSize,
          layout,
          dtype,
          dqk,
          ...randomMix(4, 300),
          hq: 8,
          hkv: 2,
          causal: true,
          pair: dtype === "f16",
        }, ws);
      }
    }
  }
  runBatch({
    paged: true,
    pageSize: 16,
    layout: "NHD",
    dtype: "bf16",
    dqk: 256,
    ...randomMix(3, 200),
    hq: 4,
    hkv: 4,
    causal: false,
  }, ws);
  runBatch({
    paged: true,
    pageSize: 16,
    layout: "HND",
    dtype: "bf16",
    dqk: 128,
    qoLens: [40, 17],
    kvLens: [100, 17],
    hq: 4,
    hkv: 2,
    causal: false,
    maskFn: (b, i, j) => (i * j + b) % 4 !== 1,
  }, ws);
  runBatch({
    paged: true,
    pageSize: 16,
    layout: "NHD",
    dtype: "bf16",
    dqk: 128,
    ...randomMix(6, 200),
    hq: 8,
    hkv: 2,
    causal: true,
    graph: true,
  }, ws);
  runBatch({
    paged: true,
    pageSize: 16,
    layout: "HND",
    dtype: "bf16",
    kvDtype: "e4m3",
    dqk: 128,
    ...randomMix(4, 200),
    hq: 8,
    hkv: 2,
    causal: true,
  }, ws);
  runBatch({
    paged: true,
    pageSize: 1,
    layout: "NHD",
    dtype: "f16",
    kvDtype: "e5m2",
    dqk: 128,
    ...randomMix(3, 100),
    hq: 4,
    hkv: 4,
    causal: false,
    pair: true,
  }, ws);
});

gpuTest("batch prefill: tensors that disagree with the plan are refused", () => {
  using ws = new Workspace(1 << 20);
  using w = new BatchPrefillWithRaggedKvCache(ws);
  w.plan(new Int32Array([0, 4, 10]), new Int32Array([0, 4, 12]), 8, 2, 128, { qDtype: "bf16" });
  const q = Tensor.fromPointer(FAKE, [10, 8, 128], "bf16"), k = Tensor.fromPointer(FAKE, [12, 2, 128], "bf16");
  assertThrowsCode(
    () => w.run(Tensor.fromPointer(FAKE, [11, 8, 128], "bf16"), k, k),
    "INVALID_ARGUMENT",
    /'q' must be of shape \[10, 8, 128\]/,
  );
  assertThrowsCode(
    () => w.run(q, Tensor.fromPointer(FAKE, [13, 2, 128], "bf16"), k),
    "INVALID_ARGUMENT",
    /'k' must be of shape \[12, 2, 128\]/,
  );
  assertThrowsCode(
    () => w.run(Tensor.fromPointer(FAKE, [10, 8, 128], "f16"), k, k),
    "INVALID_ARGUMENT",
    /'q' must be of dtype bf16/,
  );
  using p = new BatchPrefillWithPagedKvCache(ws);
  p.plan(
    new Int32Array([0, 4, 10]),
    new Int32Array([0, 1, 2]),
    new Int32Array([0, 5]),
    new Int32Array([4, 6]),
    8,
    2,
    128,
    16,
    { qDtype: "bf16" },
  );
  assertThrowsCode(
    () => p.run(q, Tensor.fromPointer(FAKE, [5, 2, 16, 2, 128], "bf16")),
    "INVALID_ARGUMENT",
    /'kvCache' must be at least 6 pages \(the largest planned page id is 5\): received 5 pages/,
  );
  assertThrowsCode(
    () => p.run(q, Tensor.fromPointer(FAKE, [6, 2, 8, 2, 128], "bf16")),
    "INVALID_ARGUMENT",
    /'kvCache' must be of shape \[6, 2, 16, 2, 128\]/,
  );
});

interface MixedCase {
  dtype: DType;
  d: number;
  hq: number;
  hkv: number;
  ps: number;
  layout: KvLayout;
  causal: boolean;
  qoLens: number[];
  kvLens: number[];
  variant?: { windowLeft?: number; logitsSoftCap?: number; posEncodingMode?: "ALIBI" };
  backend?: "auto" | "fused";
  /** The path plan must pick ("split" stands for "fused" where the split form does not apply). */
  path: "split" | "fused" | "prefill";
  /** Also capture a run in a CUDA graph and replay it (same plan). */
  graph?: boolean;
  /** Run this many times (the fused launch must leave its queue and split counters at zero). */
  runs?: number;
  /** Capture one run in a CUDA graph, re-plan with these lengths (no larger), replay and compare. */
  replan?: { qoLens: number[]; kvLens: number[] };
}

/** A paged cache holding each request's random K/V on shuffled pages, and its block table. */
function mixedCache(c: MixedCase, kvLens: number[], extraPages = 5) {
  const { dtype, d: D, hkv, ps } = c;
  const B = kvLens.length;
  const maxBlocks = Math.max(1, ...kvLens.map((n) => Math.ceil(n / ps)));
  const numPages = B * maxBlocks + extraPages;
  const ids = Array.from({ length: numPages }, (_, i) => i).sort(() => rng() - 0.5);
  const table = new Int32Array(B * maxBlocks).fill(-1);
  const kc = new Float64Array(numPages * ps * hkv * D), vc = new Float64Array(numPages * ps * hkv * D);
  const ks: Float64Array[] = [], vs: Float64Array[] = [];
  const at = (id: number, s: number, h: number) =>
    (c.layout === "NHD" ? (id * ps + s) * hkv + h : (id * hkv + h) * ps + s) * D;
  let next = 0;
  for (let b = 0; b < B; b++) {
    const k = roundTo(dtype, randn(rng, kvLens[b] * hkv * D)), v = roundTo(dtype, randn(rng, kvLens[b] * hkv * D));
    ks.push(k);
    vs.push(v);
    for (let p = 0; p < Math.ceil(kvLens[b] / ps); p++) {
      const id = ids[next++];
      table[b * maxBlocks + p] = id;
      for (let s = 0; s < ps && p * ps + s < kvLens[b]; s++) {
        for (let h = 0; h < hkv; h++) {
          const src = ((p * ps + s) * hkv + h) * D;
          kc.set(k.subarray(src, src + D), at(id, s, h));
          vc.set(v.subarray(src, src + D), at(id, s, h));
        }
      }
    }
  }
  const shape = c.layout === "NHD" ? [numPages, ps, hkv, D] : [numPages, hkv, ps, D];
  return { table, ks, vs, k: Tensor.fromArray(kc, shape, dtype), v: Tensor.fromArray(vc, shape, dtype) };
}

function checkMixed(
  c: MixedCase,
  qoLens: number[],
  kvLens: number[],
  qx: Float64Array,
  cache: { ks: Float64Array[]; vs: Float64Array[] },
  o: Float64Array,
  l: Float64Array,
  what: string,
): void {
  const { hq, hkv, d: D } = c;
  let row = 0;
  for (let b = 0; b < qoLens.length; b++) {
    const rows = sampleRows(qoLens[b], 24);
    const ref = attentionRef(
      qx.subarray(row * hq * D, (row + qoLens[b]) * hq * D),
      cache.ks[b],
      cache.vs[b],
      qoLens[b],
      kvLens[b],
      hq,
      hkv,
      D,
      D,
      {
        causal: c.causal,
        windowLeft: c.variant?.windowLeft,
        logitsSoftCap: c.variant?.logitsSoftCap,
        alibi: c.variant?.posEncodingMode === "ALIBI",
      },
      rows,
    );
    check(o, l, ref, row, rows, hq, D, c.dtype, `${what} request ${b} (qo ${qoLens[b]}, kv ${kvLens[b]})`);
    row += qoLens[b];
  }
}

function runMixed(c: MixedCase): void {
  const { dtype, d: D, hq, hkv, ps } = c;
  const offsets = (lens: number[]) => {
    const qo = new Int32Array(lens.length + 1);
    lens.forEach((n, b) => (qo[b + 1] = qo[b] + n));
    return qo;
  };
  const qo = offsets(c.qoLens);
  const cache = mixedCache(c, c.kvLens);
  const q = randTensor([qo[qo.length - 1], hq, D], dtype);
  using kt = cache.k;
  using vt = cache.v;
  using attention = new BatchAttention({
    backend: c.backend ?? "auto",
    workspace: new Workspace(16 << 20),
    kvLayout: c.layout,
  });
  const planOpts = { qDtype: dtype, kvDtype: dtype, oDtype: dtype, pageSize: ps, causal: c.causal, ...c.variant };
  attention.plan(qo, new Int32Array(c.kvLens), cache.table, hq, hkv, D, D, planOpts);
  const splits = native().fi_batch_attention_split_sms(D, DTYPE_CODE[dtype]) > 0;
  const path = c.path === "split" && !splits ? "fused" : c.path;
  assert.equal(attention.path, path);
  const what = `BatchAttention ${path} ${dtype} hd${D} ${hq}/${hkv} p${ps} ${c.layout}${c.causal ? " causal" : ""}`;
  for (let r = 0; r < (c.runs ?? 1); r++) {
    using out = poisoned([qo[qo.length - 1], hq, D], dtype);
    using lse = poisoned([qo[qo.length - 1], hq], "f32");
    attention.run(q.t, [kt, vt], { out, lse });
    checkMixed(c, c.qoLens, c.kvLens, q.x, cache, out.toArray(), lse.toArray(), `${what} run ${r}`);
  }
  if (c.graph) {
    using out = poisoned([qo[qo.length - 1], hq, D], dtype);
    using lse = poisoned([qo[qo.length - 1], hq], "f32");
    using stream = new Stream();
    check0(native().fi_stream_synchronize(0n));
    using graph = CudaGraph.capture(stream, () => attention.run(q.t, [kt, vt], { out, lse, stream }));
    graph.replay(stream);
    graph.replay(stream);
    stream.synchronize();
    checkMixed(c, c.qoLens, c.kvLens, q.x, cache, out.toArray(), lse.toArray(), `${what} graph`);
  }
  if (path !== "prefill") {
    assertThrowsCode(
      () => attention.run(q.t, [kt, vt], { vScale: 2 }),
      "INVALID_ARGUMENT",
      /'vScale' must be 1 for (bf16|f16) KV/,
    );
  }
  q.t.dispose();
  if (!c.replan) return;
  // Graph: capture a run of the first plan, re-plan smaller lengths over another cache, replay. The
  // captured q / out / lse keep the first plan's row count; rows past the second plan's are unused.
  const rows = qo[qo.length - 1];
  const qo2 = offsets(c.replan.qoLens);
  // (as many pages as the first plan's cache: the capture checks the cache against that plan)
  const cache2 = mixedCache(
    c,
    c.replan.kvLens,
    cache.k.shape[0] - c.replan.kvLens.length * Math.max(1, ...c.replan.kvLens.map((n) => Math.ceil(n / c.ps))),
  );
  using k2 = cache2.k;
  using v2 = cache2.v;
  const qfull = new Float64Array(rows * hq * D);
  qfull.set(roundTo(dtype, randn(rng, qo2[qo2.length - 1] * hq * D)));
  using qbuf = Tensor.fromArray(qfull, [rows, hq, D], dtype);
  using out = poisoned([rows, hq, D], dtype);
  using lse = poisoned([rows, hq], "f32");
  using stream = new Stream();
  attention.plan(qo, new Int32Array(c.kvLens), cache.table, hq, hkv, D, D, { ...planOpts, stream });
  using graph = CudaGraph.capture(stream, () => attention.run(qbuf, [k2, v2], { out, lse, stream }));
  attention.plan(qo2, new Int32Array(c.replan.kvLens), cache2.table, hq, hkv, D, D, { ...planOpts, stream });
  assert.equal(attention.path, c.path, "a re-plan keeps the captured path");
  graph.replay(stream);
  stream.synchronize();
  checkMixed(c, c.replan.qoLens, c.replan.kvLens, qfull, cache2, out.toArray(), lse.toArray(), `${what} graph replay`);
}

/** bf16, hd128, 8 q heads over 2 kv heads, page 16, NHD, causal: the shape most BatchAttention cases share. */
const LLAMA_LIKE = {
  dtype: "bf16",
  d: 128,
  hq: 8,
  hkv: 2,
  ps: 16,
  layout: "NHD",
  causal: true,
} as const;

gpuTest("BatchAttention: bf16 hd128 GQA 8/2, causal, mixed prefill and decode, page 16 (split and fused)", () => {
  const qoLens = [1, 1, 37, 1, 200, 1, 130, 1];
  const kvLens = qoLens.map((q) => q + randint(rng, 0, 600));
  for (const backend of ["auto", "fused"] as const) {
    runMixed({
      ...LLAMA_LIKE,
      backend,
      path: backend === "auto" ? "split" : "fused",
      runs: 2,
      graph: true,
      qoLens,
      kvLens,
    });
  }
});

gpuTest("BatchAttention: fp16 hd64 4/4, HND, page 1, non-causal, soft cap and window (split and fused)", () => {
  const qoLens = [3, 1, 1, 64, 1];
  const kvLens = qoLens.map((q) => q + randint(rng, 0, 300));
  for (const backend of ["auto", "fused"] as const) {
    runMixed({
      dtype: "f16",
      d: 64,
      hq: 4,
      hkv: 4,
      ps: 1,
      layout: "HND",
      causal: false,
      backend,
      path: backend === "auto" ? "split" : "fused",
      variant: { logitsSoftCap: 30, windowLeft: 90 },
      qoLens,
      kvLens,
    });
  }
});

gpuTest("BatchAttention: decode only with split KV (run twice: counters reset), split and fused", () => {
  for (const backend of ["auto", "fused"] as const) {
    runMixed({
      ...LLAMA_LIKE,
      hq: 32,
      hkv: 8,
      backend,
      path: backend === "auto" ? "split" : "fused",
      runs: 2,
      qoLens: [1, 1, 1],
      kvLens: [5000, 1, 2048],
    });
  }
});

gpuTest("BatchAttention: prefill only and ALiBi take the prefill kernel", () => {
  runMixed({
    ...LLAMA_LIKE,
    hkv: 8,
    path: "prefill",
    qoLens: [300, 17],
    kvLens: [300, 500],
  });
  runMixed({
    ...LLAMA_LIKE,
    dtype: "f16",
    path: "prefill",
    variant: { posEncodingMode: "ALIBI" },
    qoLens: [1, 40, 1],
    kvLens: [100, 60, 7],
  });
});

gpuTest("BatchAttention: a captured run replays a later, smaller plan", () => {
  runMixed({
    ...LLAMA_LIKE,
    backend: "fused",
    path: "fused",
    qoLens: [1, 150, 1, 1],
    kvLens: [900, 400, 3000, 17],
    replan: { qoLens: [1, 1, 90], kvLens: [2500, 33, 300] },
  });
});

gpuTest("BatchAttention: a captured run replays a decode-free plan and a plan of more decode items", () => {
  runMixed({
    ...LLAMA_LIKE,
    backend: "fused",
    path: "fused",
    qoLens: [1, 200, 1, 1, 1, 1, 1],
    kvLens: [100, 300, 70, 90, 33, 12, 400],
    replan: { qoLens: [120, 80], kvLens: [120, 100] },
  });
  runMixed({
    ...LLAMA_LIKE,
    backend: "fused",
    path: "fused",
    qoLens: [1, 200, 1, 1],
    kvLens: [4000, 300, 3500, 90],
    replan: { qoLens: [1, 1, 3], kvLens: [4000, 3500, 3] },
  });
});

test("BatchAttention: bad plans are refused before any native call", () => {
  const attention = new BatchAttention({ workspace: fakeWorkspace });
  const qo = new Int32Array([0, 1, 5]);
  assertThrowsCode(
    () => attention.plan(qo, new Int32Array([4, 8]), new Int32Array([7, -3]), 8, 2, 128, 128, { pageSize: 16 }),
    "INVALID_ARGUMENT",
    /'kvBlockTable' must be non-negative page ids: received a page id -3/,
  );
  assertThrowsCode(
    () => attention.plan([0, 1] as unknown as Int32Array, new Int32Array([4]), new Int32Array(4), 8, 2, 128, 128),
    "INVALID_ARGUMENT",
    /'qoOffsets' must be an Int32Array/,
  );
  assertThrowsCode(
    () => attention.plan(qo, new Int32Array([4]), new Int32Array(4), 8, 2, 128, 128),
    "INVALID_ARGUMENT",
    /'kvLens' must be an Int32Array of batch = 2 lengths/,
  );
  assertThrowsCode(
    () => attention.plan(qo, new Int32Array([4, 40]), new Int32Array(4), 8, 2, 128, 128, { pageSize: 16 }),
    "INVALID_ARGUMENT",
    /'kvBlockTable' must be at least 3 blocks per request \(kvLens\[1\] = 40\): received 2/,
  );
  assertThrowsCode(
    () =>
      attention.plan(qo, new Int32Array([4, 8]), new Int32Array(4), 8, 2, 128, 128, { qDtype: "bf16", oDtype: "f16" }),
    "INVALID_ARGUMENT",
    /'oDtype' must be equal to qDtype \(bf16\)/,
  );
  assertThrowsCode(
    () => attention.plan(qo, new Int32Array([4, 3]), new Int32Array(4), 8, 2, 128, 128, { causal: true }),
    "INVALID_ARGUMENT",
    /request 1 with 4 queries and 3 keys/,
  );
});

// ---------------------------------------------------------------- kernel choice (Hopper wgmma vs FA2)

test("prefill kernel: an unknown choice is refused", () => {
  assertThrowsCode(
    () => setPrefillKernel("fa3" as PrefillKernel),
    "INVALID_ARGUMENT",
    /'kernel' must be "auto", "fa2" or "hopper": received "fa3"/,
  );
});

/** Runs fn with the prefill kernel forced, checking every launch went to it. */
function withKernel(kernel: "fa2" | "hopper", fn: (expect: () => void) => void): void {
  setPrefillKernel(kernel);
  try {
    fn(() => assert.equal(lastPrefillKernel(), kernel, `the launch went to ${lastPrefillKernel()}`));
  } finally {
    setPrefillKernel(undefined);
  }
}

const onHopper = () => Device.current().computeCapability[0] === 9;

gpuTest("prefill kernel: auto takes the Hopper kernel where it applies, FA2 elsewhere", () => {
  const base = { dtype: "bf16" as DType, qoLen: 70, kvLen: 90, hq: 4, hkv: 2, layout: "NHD" as KvLayout, causal: true };
  runSingle({ ...base, dqk: 128 });
  assert.equal(lastPrefillKernel(), onHopper() ? "hopper" : "fa2");
  runSingle({ ...base, dqk: 64, variant: { logitsSoftCap: 30, windowLeft: 20 } });
  assert.equal(lastPrefillKernel(), onHopper() ? "hopper" : "fa2");
  for (
    const c of [{ dqk: 256 }, { dqk: 192, dvo: 128 }, { dqk: 128, variant: { posEncodingMode: "ALIBI" as const } }]
  ) {
    runSingle({ ...base, ...c });
    assert.equal(lastPrefillKernel(), "fa2", JSON.stringify(c));
  }
  runSingle({ ...base, dqk: 128, maskFn: (i, j) => (i + j) % 3 !== 0 });
  assert.equal(lastPrefillKernel(), "fa2", "custom mask");
  if (!onHopper()) return;
  setPrefillKernel("hopper");
  try {
    assertThrowsCode(() => runSingle({ ...base, dqk: 256 }), "UNSUPPORTED", /Hopper kernel was requested/);
  } finally {
    setPrefillKernel(undefined);
  }
});

for (const kernel of ["hopper", "fa2"] as const) {
  gpuTest(`prefill kernel ${kernel}: single, ragged and paged (pages 1, 16), fp16/bf16, hd 64/128, GQA, LSE`, () => {
    if (kernel === "hopper" && !onHopper()) return;
    withKernel(kernel, (expect) => {
      for (const dtype of ["f16", "bf16"] as DType[]) {
        for (const dqk of [64, 128]) {
          for (const causal of [false, true]) {
            // group 4 (packed), 1 and 3 (unpacked); NHD and HND
            for (
              const [hq, hkv, layout] of [[8, 2, "NHD"], [4, 4, "HND"], [6, 2, "NHD"]] as [number, number, KvLayout][]
            ) {
              const qoLen = randint(rng, 1, 400), kvLen = qoLen + randint(rng, 0, 300);
              runSingle({ dtype, dqk, qoLen, kvLen, hq, hkv, layout, causal });
              expect();
            }
          }
          runSingle({
            dtype,
            dqk,
            qoLen: 300,
            kvLen: 700,
            hq: 4,
            hkv: 1,
            layout: "NHD",
            causal: true,
            variant: { windowLeft: 150 },
          });
          expect();
          runSingle({
            dtype,
            dqk,
            qoLen: 200,
            kvLen: 260,
            hq: 2,
            hkv: 2,
            layout: "HND",
            causal: false,
            variant: { logitsSoftCap: 5, smScale: 0.4 },
          });
          expect();
        }
      }
      runSingle({ dtype: "bf16", dqk: 128, qoLen: 2048, kvLen: 2048, hq: 8, hkv: 2, layout: "NHD", causal: true });
      expect();
      runSingle({ dtype: "f16", dqk: 64, qoLen: 1, kvLen: 1, hq: 2, hkv: 2, layout: "NHD", causal: true });
      expect();
      using ws = new Workspace(64 << 20);
      for (const [dtype, dqk] of [["bf16", 128], ["f16", 64], ["f16", 128], ["bf16", 64]] as [DType, number][]) {
        for (const causal of [true, false]) {
          runBatch({
            paged: false,
            pageSize: 1,
            layout: "NHD",
            dtype,
            dqk,
            ...randomMix(5, 400),
            hq: 8,
            hkv: 2,
            causal,
          }, ws);
          expect();
          for (const pageSize of [1, 16]) {
            runBatch({
              paged: true,
              pageSize,
              layout: causal ? "NHD" : "HND",
              dtype,
              dqk,
              ...randomMix(4, 300),
              hq: 8,
              hkv: 2,
              causal,
              pair: pageSize === 1,
            }, ws);
            expect();
          }
        }
      }
      // One long causal request whose tiles round-robin would spread unevenly over 132 SMs: the Hopper
      // kernel takes its items from the workspace counter (a graph replay checks the counter reset).
      for (
        const [dtype, dqk, hq, hkv] of [["bf16", 128, 16, 4], ["f16", 64, 16, 2]] as [DType, number, number, number][]
      ) {
        for (const paged of [false, true]) {
          runBatch({
            paged,
            pageSize: paged ? 16 : 1,
            layout: "NHD",
            dtype,
            dqk,
            qoLens: [2048],
            kvLens: [2048],
            hq,
            hkv,
            causal: true,
            graph: paged,
          }, ws);
          expect();
        }
      }
      runBatch({
        paged: true,
        pageSize: 16,
        layout: "NHD",
        dtype: "bf16",
        dqk: 128,
        qoLens: [1500, 1, 129],
        kvLens: [1600, 900, 129],
        hq: 32,
        hkv: 8,
        causal: true,
        graph: true,
      }, ws);
      expect();
    });
  });
}
