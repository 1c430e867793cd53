/** Comparing a GPU result with a float64 reference. */
import assert from "node:assert/strict";
import type { DType } from "../../src/runtime/dtype.ts";

/** Tolerances relative to the reference's norm, by output dtype (DESIGN.md). */
export const TOLERANCE: Record<string, number> = { f32: 1e-5, f16: 1e-3, bf16: 1e-2, e4m3: 5e-2, e5m2: 5e-2 };

/**
 * ‖out − ref‖ / ‖ref‖ within the dtype's tolerance, every element finite (an unwritten, poisoned
 * element is NaN), and no element off by more than 10× the tolerance of the reference's scale.
 */
export function assertClose(
  out: ArrayLike<number>,
  ref: ArrayLike<number>,
  dtype: DType,
  what: string,
  tol = TOLERANCE[dtype],
): number {
  assert.equal(out.length, ref.length, `${what}: length`);
  let num = 0, den = 0;
  for (let i = 0; i < ref.length; i++) {
    if (!Number.isFinite(out[i])) {
      assert.fail(`${what}: element ${i} is ${out[i]} (reference ${ref[i]}): unwritten or overflowed`);
    }
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  const rel = Math.sqrt(num / Math.max(den, 1e-300));
  assert.ok(rel <= tol, `${what}: relative error ${rel.toExponential(2)} > ${tol}`);
  const rms = Math.sqrt(den / Math.max(ref.length, 1));
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(out[i] - ref[i]);
    if (err > 10 * tol * Math.max(Math.abs(ref[i]), rms)) {
      assert.fail(`${what}: element ${i} is ${out[i]}, reference ${ref[i]} (error ${err.toExponential(2)})`);
    }
  }
  return rel;
}
