// Gated activations against float64 references, outputs poisoned first.
import { geluAndMul, geluTanhAndMul, siluAndMul } from "../src/ops/activation.ts";
import { roundTo } from "../src/runtime/dtype.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { gpuTest } from "./harness.ts";
import { assertClose } from "./reference/compare.ts";
import { actAndMulRef, ACTIVATIONS } from "./reference/ops.ts";
import { makeRng, randn } from "./reference/random.ts";

const OPS = { silu: siluAndMul, gelu: geluAndMul, geluTanh: geluTanhAndMul } as const;
const SHAPES: [number, number][] = [[1, 4096], [5, 7], [3, 130], [17, 1000], [128, 14336], [300, 8192]];

for (const dtype of ["f16", "bf16"] as const) {
  for (const [name, fn] of Object.entries(OPS)) {
    gpuTest(`${name}AndMul ${dtype}`, () => {
      const rng = makeRng();
      for (const [rows, d] of SHAPES) {
        const x = roundTo(dtype, randn(rng, rows * 2 * d, 2));
        using xt = Tensor.fromArray(x, [rows, 2 * d], dtype);
        using out = Tensor.empty([rows, d], dtype).fillBytes(0xff);
        fn(xt, { out });
        const ref = actAndMulRef(x, rows, d, ACTIVATIONS[name as keyof typeof ACTIVATIONS]);
        assertClose(out.toArray(), ref, dtype, `${name}AndMul ${dtype} ${rows}x${d}`);
      }
    });
  }
}
