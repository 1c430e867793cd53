/** Paged KV cache ops: appendPagedKvCache, getBatchIndicesPositions, getSeqLens; cache validation. */
import { assert, assertThrowsCode, gpuTest, test } from "./harness.ts";
import { makeRng, randint } from "./reference/random.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import type { DType } from "../src/runtime/dtype.ts";
import {
  appendPagedKvCache,
  getBatchIndicesPositions,
  getSeqLens,
  kvCacheView,
} from "../src/attention/paged_kv_cache.ts";
import type { KvLayout } from "../src/attention/variants.ts";
import { scanIndices, scanIndicesJs, scanIndicesWasm, stageIndices } from "../src/attention/index_scan.ts";
import { loadedNative, native } from "../src/runtime/library.ts";

const rng = makeRng();

for (const layout of ["NHD", "HND"] as KvLayout[]) {
  for (const [dtype, ps] of [["bf16", 16], ["e4m3", 1], ["f16", 64]] as [DType, number][]) {
    gpuTest(`appendPagedKvCache ${dtype} ${layout} page ${ps}, with getBatchIndicesPositions and getSeqLens`, () => {
      const hkv = 4, d = 128, numPages = 40;
      const appendLens = [2, 17, 1, 0, 70];
      const oldLens = [3, 0, 40, 5, 1];
      const batch = appendLens.length;
      const newLens = appendLens.map((a, b) => a + oldLens[b]);
      const indptr = [0], last: number[] = [];
      const perm = [...Array(numPages).keys()].sort(() => rng() - 0.5);
      let used = 0;
      for (let b = 0; b < batch; b++) {
        const pages = Math.ceil(newLens[b] / ps);
        indptr.push(indptr[b] + pages);
        last.push(pages ? newLens[b] - (pages - 1) * ps : 0);
        used += pages;
      }
      assert.ok(used <= numPages * (ps === 1 ? 10 : 1));
      const indices = Int32Array.from({ length: indptr[batch] }, (_, i) => perm[i % numPages]);
      // Page sharing would make writes collide: give page size 1 its own bigger cache.
      const pagesTotal = Math.max(numPages, indptr[batch]);
      if (ps === 1) indices.forEach((_, i) => (indices[i] = i));
      const appendIndptr = [0];
      appendLens.forEach((a, b) => appendIndptr.push(appendIndptr[b] + a));
      const nnz = appendIndptr[batch];
      using appendIndptrT = Tensor.fromArray(appendIndptr, [batch + 1], "i32");
      using seqLensT = Tensor.fromArray(newLens, [batch], "i32");
      const { batchIndices, positions } = getBatchIndicesPositions(appendIndptrT, seqLensT, nnz);
      const bi = batchIndices.toArray(), pos = positions.toArray();
      for (let b = 0; b < batch; b++) {
        for (let i = appendIndptr[b]; i < appendIndptr[b + 1]; i++) {
          assert.equal(bi[i], b);
          assert.equal(pos[i], oldLens[b] + i - appendIndptr[b]);
        }
      }
      using indptrT = Tensor.fromArray(indptr, [batch + 1], "i32");
      using lastT = Tensor.fromArray(last.map((x) => Math.max(x, 1)), [batch], "i32");
      using indicesT = Tensor.fromRaw(indices, [indices.length], "i32");
      using sl = getSeqLens(indptrT, lastT, ps);
      assert.deepEqual([...sl.toArray()], newLens.map((l) => l));

      const bytes = dtype === "e4m3" ? 1 : 2;
      const rowElems = hkv * d;
      const raw = (n: number) =>
        bytes === 1
          ? Uint8Array.from({ length: n }, () => randint(rng, 0, 0x7e))
          : Uint16Array.from({ length: n }, () => randint(rng, 0, 0x7bff));
      const keys = raw(nnz * rowElems), values = raw(nnz * rowElems);
      using k = Tensor.fromRaw(keys, [nnz, hkv, d], dtype);
      using v = Tensor.fromRaw(values, [nnz, hkv, d], dtype);
      const shape = layout === "NHD" ? [pagesTotal, 2, ps, hkv, d] : [pagesTotal, 2, hkv, ps, d];
      using cache = Tensor.empty(shape, dtype).fillBytes(0xff);
      appendPagedKvCache(k, v, batchIndices, positions, cache, indicesT, indptrT, lastT, { kvLayout: layout });
      const c = cache.toRaw() as Uint16Array | Uint8Array;
      const poison = bytes === 1 ? 0xff : 0xffff;
      const written = new Set<number>();
      for (let i = 0; i < nnz; i++) {
        const b = bi[i], p = pos[i];
        const page = indices[indptr[b] + Math.floor(p / ps)], slot = p % ps;
        for (let h = 0; h < hkv; h++) {
          for (const [kv, src] of [[0, keys], [1, values]] as const) {
            const base = layout === "NHD"
              ? (((page * 2 + kv) * ps + slot) * hkv + h) * d
              : (((page * 2 + kv) * hkv + h) * ps + slot) * d;
            for (let j = 0; j < d; j++) {
              if (c[base + j] !== src[(i * hkv + h) * d + j]) {
                assert.fail(`token ${i} head ${h} ${kv ? "v" : "k"}[${j}] not written`);
              }
              written.add(base + j);
            }
          }
        }
      }
      let untouched = 0;
      for (let i = 0; i < c.length; i++) {
        if (!written.has(i)) (assert.equal(c[i], poison, `element ${i} written unexpectedly`), untouched++);
      }
      assert.ok(untouched > 0);
      batchIndices.dispose();
      positions.dispose();
    });
  }
}

test("kvCacheView: bad caches are refused naming the argument", () => {
  const f = (shape: number[], dtype: DType, strides?: number[]) => Tensor.fromPointer(0x10000n, shape, dtype, strides);
  assertThrowsCode(
    () => kvCacheView("run decode", f([4, 3, 16, 8, 128], "bf16"), "NHD"),
    "INVALID_ARGUMENT",
    /'kvCache' must be of size 2 \(K and V\) in dimension 1/,
  );
  assertThrowsCode(
    () => kvCacheView("run decode", f([4, 2, 16, 8], "bf16"), "NHD"),
    "INVALID_ARGUMENT",
    /'kvCache' must be 5-dimensional/,
  );
  assertThrowsCode(
    () => kvCacheView("run decode", f([4, 2, 16, 8, 128], "f32"), "NHD"),
    "INVALID_ARGUMENT",
    /'kvCache' must be of dtype f16 or bf16 or e4m3 or e5m2/,
  );
  assertThrowsCode(
    () => kvCacheView("run decode", [f([4, 16, 8, 128], "bf16"), f([4, 16, 8, 128], "f16")], "NHD"),
    "INVALID_ARGUMENT",
    /'kvCache\[1\]' must be of dtype bf16/,
  );
  assertThrowsCode(
    () => kvCacheView("run decode", [f([4, 16, 8, 128], "bf16"), f([4, 16, 4, 128], "bf16")], "NHD"),
    "INVALID_ARGUMENT",
    /'kvCache\[1\]' must be of shape/,
  );
  assertThrowsCode(
    () => kvCacheView("run decode", f([4, 2, 16, 8, 128], "bf16"), "NDH" as KvLayout),
    "INVALID_ARGUMENT",
    /'kvLayout'/,
  );
  const v = kvCacheView("run decode", f([4, 2, 8, 16, 128], "bf16"), "HND");
  assert.deepEqual([v.numPages, v.pageSize, v.numKvHeads, v.headDim, v.strideSlot, v.strideHead], [
    4,
    16,
    8,
    128,
    128,
    16 * 128,
  ]);
  assert.equal(v.v - v.k, BigInt(8 * 16 * 128 * 2));
});

/** Loads the native library if it can be (no GPU needed): the host scans then take their native path. */
function libraryLoads(): boolean {
  try {
    return native() !== undefined;
  } catch {
    return false;
  }
}

test("stageIndices: copies the ids into the staging buffer and scans them in the same pass", () => {
  if (libraryLoads()) assert.ok(loadedNative(), "the library is loaded, so large stages take the native pass");
  for (const n of [0, 5, 4096, 4099, 50001]) {
    const ids = Int32Array.from({ length: n + 3 }, () => randint(rng, 0, 1 << 24));
    if (n > 10) ids[n - 7] = -5;
    for (const src of [ids, ids.subarray(2)]) {
      const m = Math.min(n, src.length);
      const dst = new Int32Array(m + 4).fill(-9);
      assert.deepEqual(stageIndices(src, m, dst), scanIndicesJs(src, m), `n ${m}`);
      assert.deepEqual(Array.from(dst.subarray(0, m)), Array.from(src.subarray(0, m)), `copy n ${m}`);
      assert.deepEqual(Array.from(dst.subarray(m)), [-9, -9, -9, -9], `nothing past n ${m}`);
    }
  }
  assert.throws(() => stageIndices(new Int32Array(5000), 5000, new Int32Array(4999)), RangeError);
});

test("scanIndices: the native (AVX2) and WebAssembly SIMD scans agree with the JS loop", () => {
  // The native scan needs only the library (no GPU); without one, scanIndices is the WebAssembly scan.
  const scans: [string, typeof scanIndices][] = [["wasm", scanIndicesWasm], ["default", scanIndices]];
  if (libraryLoads()) assert.ok(loadedNative(), "the library is loaded, so scanIndices takes the native path");
  for (const [name, scan] of scans) {
    for (const n of [0, 1, 3, 4095, 4096, 4097, 10001, 70000]) {
      const a = Int32Array.from({ length: n + 5 }, () => randint(rng, 0, 1 << 20));
      const check = () => assert.deepEqual(scan(a, n), scanIndicesJs(a, n), `${name} n ${n}`);
      check();
      if (n > 0) {
        a[randint(rng, 0, n - 1)] = -3;
        check();
        assert.equal(scan(a, n).negative, true);
        a.fill(7, 0, n);
        a[n - 1] = 1 << 30;
        check();
        assert.equal(scan(a, n).max, 1 << 30);
        a[n - 1] = -2147483648; // the smallest int32 is the largest unsigned
        check();
      }
      a[n] = -1; // past n: ignored
      assert.equal(scan(a, n).negative, n > 0 && scanIndicesJs(a, n).negative);
      // A subarray starts at its own offset.
      if (n > 8) assert.deepEqual(scan(a.subarray(3), n - 3), scanIndicesJs(a.subarray(3), n - 3), `${name} sub`);
    }
  }
});
