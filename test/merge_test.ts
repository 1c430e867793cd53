/** mergeState, mergeStateInPlace (with mask) and mergeStates against the float64 reference. */
import { assert, assertThrowsCode, gpuTest, test } from "./harness.ts";
import { makeRng, randn } from "./reference/random.ts";
import { assertClose } from "./reference/compare.ts";
import { mergeReference } from "./reference/attention.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { type DType, roundTo } from "../src/runtime/dtype.ts";
import { mergeState, mergeStateInPlace, mergeStates } from "../src/attention/merge.ts";

const rng = makeRng();

function lses(n: number): Float64Array {
  // Base-2 LSEs spread over a range, with a few empty states (-inf).
  const s = randn(rng, n, 4);
  for (let i = 0; i < n; i += 7) s[i] = -Infinity;
  return Float64Array.from(s, (x) => (Number.isFinite(x) ? Math.fround(x) : x));
}

for (const dtype of ["bf16", "f16"] as DType[]) {
  for (const d of [64, 128, 256]) {
    gpuTest(`mergeStates ${dtype} D${d}`, () => {
      const n = 9, S = 5, H = 6;
      const v = roundTo(dtype, randn(rng, n * S * H * d));
      const s = lses(n * S * H);
      using vt = Tensor.fromArray(v, [n, S, H, d], dtype);
      using st = Tensor.fromArray(s, [n, S, H], "f32");
      using vOut = Tensor.empty([n, H, d], dtype).fillBytes(0xff);
      using sOut = Tensor.empty([n, H], "f32").fillBytes(0xff);
      mergeStates(vt, st, { vOut, sOut });
      const got = vOut.toArray(), gs = sOut.toArray();
      const want = new Float64Array(n * H * d), ws = new Float64Array(n * H);
      for (let r = 0; r < n; r++) {
        for (let h = 0; h < H; h++) {
          const vs = [], ss = [];
          for (let j = 0; j < S; j++) {
            const o = ((r * S + j) * H + h) * d;
            vs.push(v.subarray(o, o + d));
            ss.push(s[(r * S + j) * H + h]);
          }
          const m = mergeReference(vs, ss);
          want.set(m.v, (r * H + h) * d);
          ws[r * H + h] = m.s;
        }
      }
      assertClose(got, want, dtype, "merged v");
      for (let i = 0; i < ws.length; i++) {
        assert.ok(
          gs[i] === ws[i] || Math.abs(gs[i] - ws[i]) < 1e-4 * Math.max(1, Math.abs(ws[i])),
          `lse ${i}: ${gs[i]} vs ${ws[i]}`,
        );
      }
    });
  }
  gpuTest(`mergeState and mergeStateInPlace with mask ${dtype}`, () => {
    const n = 11, H = 4, d = 128;
    const va = roundTo(dtype, randn(rng, n * H * d)), vb = roundTo(dtype, randn(rng, n * H * d));
    const sa = lses(n * H), sb = lses(n * H).map((x, i) => (i % 5 === 1 ? -Infinity : x));
    using vat = Tensor.fromArray(va, [n, H, d], dtype);
    using sat = Tensor.fromArray(sa, [n, H], "f32");
    using vbt = Tensor.fromArray(vb, [n, H, d], dtype);
    using sbt = Tensor.fromArray(sb, [n, H], "f32");
    using vOut = Tensor.empty([n, H, d], dtype).fillBytes(0xff);
    using sOut = Tensor.empty([n, H], "f32").fillBytes(0xff);
    mergeState(vat, sat, vbt, sbt, { vOut, sOut });
    const mask = Uint8Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 0 : 1));
    using maskT = Tensor.fromRaw(mask, [n], "u8");
    mergeStateInPlace(vat, sat, vbt, sbt, { mask: maskT });
    const want = new Float64Array(n * H * d), ws = new Float64Array(n * H);
    const wantMasked = new Float64Array(n * H * d), wsMasked = new Float64Array(n * H);
    for (let r = 0; r < n; r++) {
      for (let h = 0; h < H; h++) {
        const i = r * H + h;
        const m = mergeReference([va.subarray(i * d, (i + 1) * d), vb.subarray(i * d, (i + 1) * d)], [sa[i], sb[i]]);
        want.set(m.v, i * d);
        ws[i] = m.s;
        wantMasked.set(mask[r] ? m.v : va.subarray(i * d, (i + 1) * d), i * d);
        wsMasked[i] = mask[r] ? m.s : sa[i];
      }
    }
    assertClose(vOut.toArray(), want, dtype, "mergeState v");
    assertClose(vat.toArray(), wantMasked, dtype, "mergeStateInPlace v");
    const check = (got: Float64Array, ref: Float64Array, what: string) => {
      for (let i = 0; i < ref.length; i++) {
        assert.ok(
          got[i] === ref[i] || Math.abs(got[i] - ref[i]) < 1e-4 * Math.max(1, Math.abs(ref[i])),
          `${what} ${i}: ${got[i]} vs ${ref[i]}`,
        );
      }
    };
    check(sOut.toArray(), ws, "mergeState lse");
    check(sat.toArray(), wsMasked, "mergeStateInPlace lse");
  });
}

test("merge: bad shapes are refused naming the argument", () => {
  const f = (shape: number[], dtype: DType) => Tensor.fromPointer(0x10000n, shape, dtype);
  assertThrowsCode(
    () => mergeState(f([2, 4, 64], "bf16"), f([2, 4], "f32"), f([2, 4, 64], "f16"), f([2, 4], "f32")),
    "INVALID_ARGUMENT",
    /'vB' must be of dtype bf16/,
  );
  assertThrowsCode(
    () => mergeState(f([2, 4, 64], "bf16"), f([2, 5], "f32"), f([2, 4, 64], "bf16"), f([2, 4], "f32")),
    "INVALID_ARGUMENT",
    /'sA' must be of shape \[2, 4\]/,
  );
  assertThrowsCode(
    () => mergeStates(f([2, 3, 4, 64], "bf16"), f([2, 4], "f32")),
    "INVALID_ARGUMENT",
    /'s' must be of shape \[2, 3, 4\]/,
  );
  assertThrowsCode(
    () =>
      mergeStateInPlace(f([2, 4, 64], "bf16"), f([2, 4], "f32"), f([2, 4, 64], "bf16"), f([2, 4], "f32"), {
        mask: f([3], "u8"),
      }),
    "INVALID_ARGUMENT",
    /'mask' must be of shape \[2\]/,
  );
  assertThrowsCode(
    () => mergeStates(f([2, 3, 4, 64], "f32"), f([2, 3, 4], "f32")),
    "INVALID_ARGUMENT",
    /'v' must be of dtype f16 or bf16/,
  );
});
