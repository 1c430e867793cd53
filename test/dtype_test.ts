// Host codecs: exact round trips, known encodings, ties to even, subnormals, saturation.
import { decode, decodeMiniFloat, encode, encodeMiniFloat, roundTo } from "../src/runtime/dtype.ts";
import { assert, test } from "./harness.ts";

const FORMATS = [["f16", 16], ["bf16", 16], ["e4m3", 8], ["e5m2", 8]] as const;

test("dtype: every finite code decodes and encodes back to itself", () => {
  for (const [fmt, bits] of FORMATS) {
    for (let code = 0; code < 1 << bits; code++) {
      const v = decodeMiniFloat(fmt, code);
      if (Number.isNaN(v)) continue;
      const back = encodeMiniFloat(fmt, v);
      // -0 and +0 are distinct codes; every other finite value maps to exactly one code.
      assert.equal(back, code, `${fmt} code 0x${code.toString(16)} (${v}) came back as 0x${back.toString(16)}`);
    }
  }
});

test("dtype: known encodings", () => {
  assert.equal(encodeMiniFloat("bf16", 1), 0x3f80);
  assert.equal(encodeMiniFloat("bf16", -2), 0xc000);
  assert.equal(encodeMiniFloat("f16", 1), 0x3c00);
  assert.equal(encodeMiniFloat("f16", 65504), 0x7bff);
  assert.equal(encodeMiniFloat("f16", 1e6), 0x7c00); // overflow to infinity
  assert.equal(encodeMiniFloat("e4m3", 448), 0x7e);
  assert.equal(encodeMiniFloat("e4m3", 1e6), 0x7e); // saturates
  assert.equal(encodeMiniFloat("e4m3", -1e6), 0xfe);
  assert.equal(encodeMiniFloat("e5m2", 57344), 0x7b);
  assert.equal(encodeMiniFloat("e5m2", 1e9), 0x7b);
  assert.ok(Number.isNaN(decodeMiniFloat("e4m3", encodeMiniFloat("e4m3", NaN))));
  assert.ok(Number.isNaN(decodeMiniFloat("bf16", encodeMiniFloat("bf16", NaN))));
  assert.equal(decodeMiniFloat("f16", encodeMiniFloat("f16", -Infinity)), -Infinity);
});

test("dtype: rounding is to nearest, ties to even", () => {
  // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to the even mantissa (1).
  assert.equal(decodeMiniFloat("bf16", encodeMiniFloat("bf16", 1 + 2 ** -8)), 1);
  assert.equal(decodeMiniFloat("bf16", encodeMiniFloat("bf16", 1 + 3 * 2 ** -8)), 1 + 2 ** -6);
  // Just above the tie rounds up: no double rounding through float32.
  assert.equal(decodeMiniFloat("bf16", encodeMiniFloat("bf16", 1 + 2 ** -8 + 2 ** -40)), 1 + 2 ** -7);
  // f16 subnormal: smallest is 2^-24; half of it ties to 0, a bit more rounds up.
  assert.equal(decodeMiniFloat("f16", encodeMiniFloat("f16", 2 ** -25)), 0);
  assert.equal(decodeMiniFloat("f16", encodeMiniFloat("f16", 2 ** -25 * 1.01)), 2 ** -24);
  // e4m3 subnormal step is 2^-9.
  assert.equal(decodeMiniFloat("e4m3", encodeMiniFloat("e4m3", 3 * 2 ** -9)), 3 * 2 ** -9);
});

test("dtype: encode/decode arrays for every dtype", () => {
  for (const dt of ["f32", "f16", "bf16", "e4m3", "e5m2", "i32", "i64", "u8"] as const) {
    // Values every dtype holds exactly (u8 has no sign, integers no fractions).
    const values = dt === "u8"
      ? [0, 1, 2, 3, 96]
      : dt === "i32" || dt === "i64"
      ? [0, 1, -2, 3, 96]
      : [0, 1.5, -2, 3, 96];
    assert.deepEqual(Array.from(decode(dt, encode(dt, values))), values, dt);
  }
  assert.deepEqual(Array.from(roundTo("bf16", [1 / 3])), [0.333984375]);
});
