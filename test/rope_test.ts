// RoPE against float64 references: every position source, frequency mode, pairing, head dim, dtype.
import {
  applyLlama31Rope,
  applyLlama31RopePosIdsInplace,
  applyRope,
  applyRopeInplace,
  applyRopePosIds,
  applyRopeWithCosSinCache,
  applyRopeWithCosSinCacheInplace,
} from "../src/ops/rope.ts";
import { roundTo } from "../src/runtime/dtype.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { gpuTest } from "./harness.ts";
import { assertClose } from "./reference/compare.ts";
import { ropeFreq, ropeRef } from "./reference/ops.ts";
import { makeRng, randint, randn } from "./reference/random.ts";

const LLAMA31 = { low: 1, high: 4, oldContextLen: 8192 };

function batch(rng: () => number, requests: number) {
  const lens = Array.from({ length: requests }, () => randint(rng, 1, 40));
  const indptr = [0];
  for (const l of lens) indptr.push(indptr[indptr.length - 1] + l);
  const offsets = lens.map(() => randint(rng, 0, 3000));
  const pos: number[] = [];
  lens.forEach((l, b) => {
    for (let i = 0; i < l; i++) pos.push(offsets[b] + i);
  });
  return { indptr, offsets, pos, nnz: indptr[requests] };
}

for (const dtype of ["f16", "bf16"] as const) {
  for (const dim of [64, 128, 256]) {
    for (const interleave of [false, true]) {
      gpuTest(`applyRope / applyRopeInplace ${dtype} D${dim}${interleave ? " interleaved" : ""}`, () => {
        const rng = makeRng();
        const { indptr, offsets, pos, nnz } = batch(rng, 5);
        for (const rotaryDim of [dim, dim / 2]) {
          const [hq, hk] = [8, 2];
          const q = roundTo(dtype, randn(rng, nnz * hq * dim));
          const k = roundTo(dtype, randn(rng, nnz * hk * dim));
          using qt = Tensor.fromArray(q, [nnz, hq, dim], dtype);
          using kt = Tensor.fromArray(k, [nnz, hk, dim], dtype);
          using ip = Tensor.fromArray(indptr, [indptr.length], "i32");
          using off = Tensor.fromArray(offsets, [offsets.length], "i32");
          using qo = Tensor.empty([nnz, hq, dim], dtype).fillBytes(0xff);
          using ko = Tensor.empty([nnz, hk, dim], dtype).fillBytes(0xff);
          const opts = { rotaryDim, interleave, ropeScale: 2, ropeTheta: 5e4 };
          applyRope(qt, kt, ip, off, { ...opts, qOut: qo, kOut: ko });
          const angle = (p: number, j: number): [number, number] => {
            const a = p * ropeFreq(j, rotaryDim, 2, 5e4);
            return [Math.cos(a), Math.sin(a)];
          };
          const what = `${dtype} D${dim} rot${rotaryDim}`;
          assertClose(
            qo.toArray(),
            ropeRef(q, nnz, hq, dim, pos, { rotaryDim, interleave, angle }),
            dtype,
            `q ${what}`,
          );
          assertClose(
            ko.toArray(),
            ropeRef(k, nnz, hk, dim, pos, { rotaryDim, interleave, angle }),
            dtype,
            `k ${what}`,
          );
          applyRopeInplace(qt, kt, ip, off, opts);
          assertClose(
            qt.toArray(),
            ropeRef(q, nnz, hq, dim, pos, { rotaryDim, interleave, angle }),
            dtype,
            `q inplace ${what}`,
          );
        }
      });
    }
  }

  gpuTest(`applyRopePosIds (i32, i64) and Llama 3.1 ${dtype}`, () => {
    const rng = makeRng();
    const nnz = 37, hq = 32, hk = 8, dim = 128;
    const pos = Array.from({ length: nnz }, () => randint(rng, 0, 20000));
    for (const posDtype of ["i32", "i64"] as const) {
      const q = roundTo(dtype, randn(rng, nnz * hq * dim));
      const k = roundTo(dtype, randn(rng, nnz * hk * dim));
      using qt = Tensor.fromArray(q, [nnz, hq, dim], dtype);
      using kt = Tensor.fromArray(k, [nnz, hk, dim], dtype);
      using p = Tensor.fromArray(pos, [nnz], posDtype);
      const std = applyRopePosIds(qt, kt, p);
      const angle = (llama?: typeof LLAMA31, scale = 1, theta = 1e4) => (ps: number, j: number): [number, number] => {
        const a = ps * ropeFreq(j, dim, scale, theta, llama);
        return [Math.cos(a), Math.sin(a)];
      };
      assertClose(
        std.q.toArray(),
        ropeRef(q, nnz, hq, dim, pos, { rotaryDim: dim, interleave: false, angle: angle() }),
        dtype,
        `posIds ${posDtype} q`,
      );
      assertClose(
        std.k.toArray(),
        ropeRef(k, nnz, hk, dim, pos, { rotaryDim: dim, interleave: false, angle: angle() }),
        dtype,
        `posIds ${posDtype} k`,
      );
      std.q.dispose();
      std.k.dispose();
      applyLlama31RopePosIdsInplace(qt, kt, p);
      const a31 = angle(LLAMA31, 8, 5e5);
      assertClose(
        qt.toArray(),
        ropeRef(q, nnz, hq, dim, pos, { rotaryDim: dim, interleave: false, angle: a31 }),
        dtype,
        `llama31 posIds ${posDtype}`,
      );
    }
    // indptr/offsets flavour of Llama 3.1, interleaved.
    const { indptr, offsets, pos: p2, nnz: n2 } = batch(rng, 3);
    const q = roundTo(dtype, randn(rng, n2 * 4 * 64));
    using qt = Tensor.fromArray(q, [n2, 4, 64], dtype);
    using kt = Tensor.fromArray(roundTo(dtype, randn(rng, n2 * 64)), [n2, 1, 64], dtype);
    using ip = Tensor.fromArray(indptr, [indptr.length], "i32");
    using off = Tensor.fromArray(offsets, [offsets.length], "i32");
    const r = applyLlama31Rope(qt, kt, ip, off, { interleave: true });
    const a = (ps: number, j: number): [number, number] => {
      const x = ps * ropeFreq(j, 64, 8, 5e5, LLAMA31);
      return [Math.cos(x), Math.sin(x)];
    };
    assertClose(
      r.q.toArray(),
      ropeRef(q, n2, 4, 64, p2, { rotaryDim: 64, interleave: true, angle: a }),
      dtype,
      "llama31 indptr",
    );
    r.q.dispose();
    r.k.dispose();
  });

  gpuTest(`applyRopeWithCosSinCache ${dtype} (neox, interleaved, 2-D and 3-D, in place)`, () => {
    const rng = makeRng();
    const nnz = 29, hq = 6, hk = 2, headSize = 128, rotaryDim = 64, maxPos = 500;
    const cache = new Float64Array(maxPos * rotaryDim);
    for (let p = 0; p < maxPos; p++) {
      for (let j = 0; j < rotaryDim / 2; j++) {
        const a = p * ropeFreq(j, rotaryDim, 1, 1e4);
        cache[p * rotaryDim + j] = Math.cos(a);
        cache[p * rotaryDim + rotaryDim / 2 + j] = Math.sin(a);
      }
    }
    const cacheF32 = roundTo("f32", cache);
    const angle = (
      p: number,
      j: number,
    ): [number, number] => [cacheF32[p * rotaryDim + j], cacheF32[p * rotaryDim + rotaryDim / 2 + j]];
    using cs = Tensor.fromArray(cacheF32, [maxPos, rotaryDim], "f32");
    const pos = Array.from({ length: nnz }, () => randint(rng, 0, maxPos - 1));
    using pt = Tensor.fromArray(pos, [nnz], "i64");
    for (const isNeox of [true, false]) {
      const q = roundTo(dtype, randn(rng, nnz * hq * headSize));
      const k = roundTo(dtype, randn(rng, nnz * hk * headSize));
      using qt = Tensor.fromArray(q, [nnz, hq * headSize], dtype);
      using kt = Tensor.fromArray(k, [nnz, hk * headSize], dtype);
      const r = applyRopeWithCosSinCache(pt, qt, kt, headSize, cs, { isNeox });
      const o = { rotaryDim, interleave: !isNeox, angle };
      assertClose(r.query.toArray(), ropeRef(q, nnz, hq, headSize, pos, o), dtype, `cos/sin q neox=${isNeox}`);
      assertClose(r.key.toArray(), ropeRef(k, nnz, hk, headSize, pos, o), dtype, `cos/sin k neox=${isNeox}`);
      r.query.dispose();
      r.key.dispose();
      using q3 = Tensor.fromArray(q, [nnz, hq, headSize], dtype);
      using k3 = Tensor.fromArray(k, [nnz, hk, headSize], dtype);
      applyRopeWithCosSinCacheInplace(pt, q3, k3, headSize, cs, { isNeox });
      assertClose(q3.toArray(), ropeRef(q, nnz, hq, headSize, pos, o), dtype, `cos/sin inplace neox=${isNeox}`);
    }
  });
}
