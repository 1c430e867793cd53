/** Host-only: every bad argument to the samplers is refused in TypeScript, before any native call. */
import { assert, assertThrowsCode, test } from "./harness.ts";
import { philox4x32_10 } from "./reference/sampling.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import {
  chainSpeculativeSampling,
  minPSamplingFromProbs,
  samplingFromProbs,
  softmax,
  topKMaskLogits,
  topKRenormProbs,
  topKSamplingFromProbs,
  topKTopPSamplingFromProbs,
  topPRenormProbs,
  topPSamplingFromProbs,
} from "../src/sampling/sampling.ts";
import { encodeSamplingParams, SAMPLING_PARAMS_BYTES } from "../src/sampling/params.ts";

const fake = (shape: number[], dtype: "f32" | "f16" | "i32" | "i64" | "u8" = "f32") =>
  Tensor.fromPointer(0x10000n, shape, dtype);
const probs = fake([4, 1000]);
const BAD = "INVALID_ARGUMENT";

test("sampling validation: probabilities of the wrong dtype or shape", () => {
  assertThrowsCode(
    () => samplingFromProbs(fake([4, 1000], "f16")),
    BAD,
    /'probs' must be of dtype f32: received "f16"/,
  );
  assertThrowsCode(() => samplingFromProbs(fake([1000])), BAD, /'probs' must be 2-dimensional/);
  assertThrowsCode(() => samplingFromProbs(fake([2, 3, 1000])), BAD, /'probs' must be 2-dimensional/);
  assertThrowsCode(() => samplingFromProbs(fake([4, 0])), BAD, /at least 1 wide/);
  assertThrowsCode(
    () => samplingFromProbs(Tensor.fromPointer(0x10000n, [4, 1000], "f32", [1, 4])),
    BAD,
    /contiguous in its last dimension/,
  );
  assertThrowsCode(() => samplingFromProbs("x" as unknown as Tensor), BAD, /'probs' must be a Tensor/);
});

test("sampling validation: k < 1 and p outside (0, 1]", () => {
  assertThrowsCode(() => topKSamplingFromProbs(probs, 0), BAD, /'topK' must be an integer >= 1: received 0/);
  assertThrowsCode(() => topKSamplingFromProbs(probs, 2.5), BAD, /'topK'/);
  assertThrowsCode(() => topPSamplingFromProbs(probs, 0), BAD, /'topP' must be in \(0, 1\]: received 0/);
  assertThrowsCode(() => topPSamplingFromProbs(probs, 1.5), BAD, /'topP' must be in \(0, 1\]: received 1.5/);
  assertThrowsCode(() => topPSamplingFromProbs(probs, NaN), BAD, /'topP'/);
  assertThrowsCode(() => minPSamplingFromProbs(probs, -0.1), BAD, /'minP' must be in \[0, 1\]/);
  assertThrowsCode(() => topKTopPSamplingFromProbs(probs, 5, 2), BAD, /'topP'/);
  assertThrowsCode(() => topKRenormProbs(probs, 0), BAD, /'topK'/);
  assertThrowsCode(() => topPRenormProbs(probs, 0), BAD, /'topP'/);
  assertThrowsCode(() => topKMaskLogits(probs, -3), BAD, /'topK'/);
  assertThrowsCode(() => softmax(probs, { temperature: 0 }), BAD, /'temperature' must be a positive finite number/);
});

test("sampling validation: per-row arrays of the wrong length or with a bad entry", () => {
  assertThrowsCode(
    () => topKSamplingFromProbs(probs, [5, 5, 5]),
    BAD,
    /'topK' must be of length 4 \(one per output row\): received 3/,
  );
  assertThrowsCode(
    () => topPSamplingFromProbs(probs, [0.9, 0.9, 0, 0.9]),
    BAD,
    /'topP\[2\]' must be in \(0, 1\]: received 0/,
  );
  assertThrowsCode(() => topKSamplingFromProbs(probs, fake([3], "i32")), BAD, /'topK' must be of shape \[4\]/);
  assertThrowsCode(() => topKSamplingFromProbs(probs, fake([4], "f32")), BAD, /'topK' must be of dtype i32/);
  assertThrowsCode(() => topPSamplingFromProbs(probs, fake([4], "i32")), BAD, /'topP' must be of dtype f32/);
  assertThrowsCode(() => softmax(probs, { temperature: [1, 1] }), BAD, /'temperature' must be of length 4/);
  // with indices, per-row parameters follow the output rows
  assertThrowsCode(
    () => topKSamplingFromProbs(probs, [5, 5, 5, 5], { indices: [0, 1] }),
    BAD,
    /'topK' must be of length 2/,
  );
});

test("sampling validation: indices out of range or of the wrong kind", () => {
  assertThrowsCode(
    () => samplingFromProbs(probs, { indices: [0, 4] }),
    BAD,
    /'indices\[1\]' must be an integer in \[0, 4\): received 4/,
  );
  assertThrowsCode(() => samplingFromProbs(probs, { indices: [-1] }), BAD, /'indices\[0\]'/);
  assertThrowsCode(() => samplingFromProbs(probs, { indices: [0.5] }), BAD, /'indices\[0\]'/);
  assertThrowsCode(
    () => samplingFromProbs(probs, { indices: fake([4], "f32") }),
    BAD,
    /'indices' must be of dtype i32 or i64/,
  );
  assertThrowsCode(
    () => samplingFromProbs(probs, { indices: fake([2, 2], "i32") }),
    BAD,
    /'indices' must be a contiguous 1-dimensional/,
  );
});

test("sampling validation: seeds, offsets, outputs and options", () => {
  assertThrowsCode(() => samplingFromProbs(probs, { seed: -1 }), BAD, /'seed'/);
  assertThrowsCode(() => samplingFromProbs(probs, { offset: 1.5 }), BAD, /'offset'/);
  assertThrowsCode(() => samplingFromProbs(probs, { seed: fake([1], "i32") }), BAD, /'seed' must be of dtype i64/);
  assertThrowsCode(
    () => samplingFromProbs(probs, { offset: fake([2], "i64") }),
    BAD,
    /'offset' must be a tensor of one element/,
  );
  assertThrowsCode(() => samplingFromProbs(probs, { out: fake([3], "i32") }), BAD, /'out' must be of shape \[4\]/);
  assertThrowsCode(() => samplingFromProbs(probs, { valid: fake([4], "i32") }), BAD, /'valid' must be of dtype u8/);
  assertThrowsCode(
    () => topKTopPSamplingFromProbs(probs, 5, 0.5, { filterApplyOrder: "both" as "joint" }),
    BAD,
    /'filterApplyOrder'/,
  );
  assertThrowsCode(
    () => samplingFromProbs(probs, { debugTrace: fake([4, 2], "i32") }),
    BAD,
    /'debugTrace' must be of shape \[4, 16\]/,
  );
  assertThrowsCode(() => samplingFromProbs(probs, { ctasPerRow: 3 }), BAD, /'ctasPerRow'/);
  assertThrowsCode(() => samplingFromProbs(probs, { ctasPerRow: 32 }), BAD, /'ctasPerRow' must be 1, 2, 4, 8 or 16/);
  assertThrowsCode(
    () => samplingFromProbs(probs, { deterministic: "yes" as unknown as boolean }),
    BAD,
    /'deterministic'/,
  );
  assertThrowsCode(() => topKRenormProbs(probs, 5, { out: fake([4, 999]) }), BAD, /'out' must be of shape \[4, 1000\]/);
});

test("sampling validation: chain speculative sampling shapes", () => {
  const dp = fake([2, 3, 100]), di = fake([2, 3], "i32"), tp = fake([2, 4, 100]);
  assertThrowsCode(
    () => chainSpeculativeSampling(dp, di, fake([2, 3, 100])),
    BAD,
    /'targetProbs' must be of shape \[2, 4, 100\]/,
  );
  assertThrowsCode(
    () => chainSpeculativeSampling(dp, fake([2, 2], "i32"), tp),
    BAD,
    /'draftTokenIds' must be of shape \[2, 3\]/,
  );
  assertThrowsCode(
    () => chainSpeculativeSampling(dp, fake([2, 3], "i64"), tp),
    BAD,
    /'draftTokenIds' must be of dtype i32/,
  );
  assertThrowsCode(() => chainSpeculativeSampling(fake([2, 100]), di, tp), BAD, /'draftProbs' must be 3-dimensional/);
  assertThrowsCode(
    () => chainSpeculativeSampling(dp, di, tp, { acceptedTokenNum: fake([3], "i32") }),
    BAD,
    /'acceptedTokenNum'/,
  );
});

test("sampling: the parameter block has the C layout's size", () => {
  const b = encodeSamplingParams({
    input: 1n,
    output: 2n,
    inStride: 3,
    outStride: 4,
    batch: 5,
    d: 6,
    rowsIn: 7,
    op: 0,
    filter: 3,
    inputLogits: true,
    indicesDtype: 5,
    topK: 9,
    topP: 0.5,
    minP: 0,
    temperature: 1,
    seed: 11n,
    offset: 12n,
    offsetStep: 1n,
    cluster: 0,
  });
  assert.equal(b.byteLength, SAMPLING_PARAMS_BYTES);
  const v = new DataView(b.buffer);
  assert.equal(v.getBigUint64(0, true), 1n);
  assert.equal(v.getBigInt64(11 * 8, true), 3n); // in_stride follows the 11 pointers
  assert.equal(v.getFloat64(21 * 8, true), 0.5); // top_p
  assert.equal(v.getBigUint64(24 * 8, true), 11n); // seed
});

test("sampling: Philox 4x32-10 matches the Random123 known answers", () => {
  const hex = (a: number[]) => a.map((x) => x.toString(16).padStart(8, "0")).join(" ");
  assert.equal(hex(philox4x32_10([0, 0, 0, 0], [0, 0])), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
  assert.equal(
    hex(philox4x32_10([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])),
    "408f276d 41c83b0e a20bc7c6 6d5451fd",
  );
  assert.equal(
    hex(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    "d16cfe09 94fdcceb 5001e420 24126ea1",
  );
});
