// Norms against float64 references on fresh random data, outputs poisoned first.
import { fusedAddRmsnorm, gemmaFusedAddRmsnorm, gemmaRmsnorm, layernorm, rmsnorm } from "../src/ops/norm.ts";
import { roundTo } from "../src/runtime/dtype.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { assert, gpuTest } from "./harness.ts";
import { assertClose } from "./reference/compare.ts";
import { layernormRef, rmsnormRef } from "./reference/ops.ts";
import { makeRng, randn } from "./reference/random.ts";

// 1 token, non-multiples of 8 (scalar and 2-wide paths), the model sizes, 1024 threads a row, and a
// row wider than the register path (the streaming kernels). The large-shape check is in
// "rmsnorm: many rows".
const SHAPES: [number, number][] = [[1, 4096], [7, 129], [3, 130], [33, 1000], [128, 4096], [64, 8192], [5, 16384], [
  2,
  65536,
]];

for (const dtype of ["f16", "bf16"] as const) {
  for (const gemma of [false, true]) {
    const name = gemma ? "gemmaRmsnorm" : "rmsnorm";
    gpuTest(`${name} ${dtype}`, () => {
      const rng = makeRng();
      for (const [rows, hidden] of SHAPES) {
        const x = roundTo(dtype, randn(rng, rows * hidden, 2));
        const w = roundTo(dtype, randn(rng, hidden, 0.5));
        using xt = Tensor.fromArray(x, [rows, hidden], dtype);
        using wt = Tensor.fromArray(w, [hidden], dtype);
        using out = Tensor.empty([rows, hidden], dtype).fillBytes(0xff);
        (gemma ? gemmaRmsnorm : rmsnorm)(xt, wt, { out, eps: 1e-5 });
        assertClose(
          out.toArray(),
          rmsnormRef(x, w, rows, hidden, 1e-5, gemma),
          dtype,
          `${name} ${dtype} ${rows}x${hidden}`,
        );
      }
    });

    const fname = gemma ? "gemmaFusedAddRmsnorm" : "fusedAddRmsnorm";
    gpuTest(`${fname} ${dtype}`, () => {
      const rng = makeRng();
      for (const [rows, hidden] of SHAPES) {
        const x = roundTo(dtype, randn(rng, rows * hidden));
        const r = roundTo(dtype, randn(rng, rows * hidden));
        const w = roundTo(dtype, randn(rng, hidden, 0.5));
        using xt = Tensor.fromArray(x, [rows, hidden], dtype);
        using rt = Tensor.fromArray(r, [rows, hidden], dtype);
        using wt = Tensor.fromArray(w, [hidden], dtype);
        (gemma ? gemmaFusedAddRmsnorm : fusedAddRmsnorm)(xt, rt, wt, { eps: 1e-6 });
        const sum = x.map((v, i) => v + r[i]);
        assertClose(rt.toArray(), sum, dtype, `${fname} residual ${dtype} ${rows}x${hidden}`);
        assertClose(
          xt.toArray(),
          rmsnormRef(sum, w, rows, hidden, 1e-6, gemma),
          dtype,
          `${fname} ${dtype} ${rows}x${hidden}`,
        );
      }
    });
  }

  gpuTest(`layernorm ${dtype} (f32 and ${dtype} weights)`, () => {
    const rng = makeRng();
    for (const [rows, hidden] of [...SHAPES.slice(0, 6), [2, 65536]]) {
      for (const wdt of ["f32", dtype] as const) {
        const x = roundTo(dtype, randn(rng, rows * hidden, 3).map((v) => v + 1));
        const g = roundTo(wdt, randn(rng, hidden));
        const b = roundTo(wdt, randn(rng, hidden));
        using xt = Tensor.fromArray(x, [rows, hidden], dtype);
        using gt = Tensor.fromArray(g, [hidden], wdt);
        using bt = Tensor.fromArray(b, [hidden], wdt);
        using out = Tensor.empty([rows, hidden], dtype).fillBytes(0xff);
        layernorm(xt, gt, bt, { out });
        assertClose(
          out.toArray(),
          layernormRef(x, g, b, rows, hidden, 1e-6),
          dtype,
          `layernorm ${dtype}/${wdt} ${rows}x${hidden}`,
        );
      }
    }
  });
}

gpuTest("rmsnorm: strided rows (a narrowed view) and 3-D input", () => {
  const rng = makeRng();
  const x = roundTo("bf16", randn(rng, 6 * 264));
  using base = Tensor.fromArray(x, [6, 264], "bf16");
  const view = base.narrow(1, 8, 256); // rows of 256 with stride 264
  const w = roundTo("bf16", randn(rng, 256));
  using wt = Tensor.fromArray(w, [256], "bf16");
  using out = rmsnorm(view, wt);
  const dense = new Float64Array(6 * 256);
  for (let r = 0; r < 6; r++) for (let i = 0; i < 256; i++) dense[r * 256 + i] = x[r * 264 + 8 + i];
  assertClose(out.toArray(), rmsnormRef(dense, w, 6, 256, 1e-6, false), "bf16", "strided rmsnorm");
  using x3 = Tensor.fromArray(roundTo("bf16", randn(rng, 2 * 3 * 128)), [2, 3, 128], "bf16");
  using w3 = Tensor.fromArray(roundTo("bf16", randn(rng, 128)), [128], "bf16");
  using o3 = rmsnorm(x3, w3);
  assert.deepEqual(o3.shape, [2, 3, 128]);
  assertClose(o3.toArray(), rmsnormRef(x3.toArray(), w3.toArray(), 6, 128, 1e-6, false), "bf16", "3-D rmsnorm");
});

gpuTest("rmsnorm: many rows (2048 x 8192, several waves of blocks)", () => {
  const rng = makeRng();
  const [rows, hidden] = [2048, 8192];
  const x = roundTo("bf16", randn(rng, rows * hidden));
  const w = roundTo("bf16", randn(rng, hidden));
  using xt = Tensor.fromArray(x, [rows, hidden], "bf16");
  using wt = Tensor.fromArray(w, [hidden], "bf16");
  using out = Tensor.empty([rows, hidden], "bf16").fillBytes(0xff);
  rmsnorm(xt, wt, { out });
  assertClose(out.toArray(), rmsnormRef(x, w, rows, hidden, 1e-6, false), "bf16", "rmsnorm 2048x8192");
});
