/** LogitsPipe: order checks (host only) and fused results equal to the direct calls (GPU). */
import { assert, assertThrowsCode, gpuTest, test } from "./harness.ts";
import { makeRng, randn } from "./reference/random.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { LogitsPipe, MinP, Sample, Softmax, Temperature, TopK, TopP } from "../src/sampling/pipe.ts";
import {
  minPSamplingFromProbs,
  softmax,
  topKRenormProbs,
  topKTopPSamplingFromLogits,
  topPRenormProbs,
} from "../src/sampling/sampling.ts";

const BAD = "INVALID_ARGUMENT";

test("pipe: valid orders build, fuse into one kernel and say so", () => {
  const p = new LogitsPipe([Temperature(), Softmax(), TopK(), TopP(), Sample()]);
  assert.deepEqual(p.plan, ["fused sample"]);
  assert.equal(p.outputType, "tokens");
  assert.deepEqual(new LogitsPipe([TopK(), Sample()]).plan, ["fused sample"]);
  assert.deepEqual(new LogitsPipe([TopP(), MinP(), Sample()], { inputType: "probs" }).plan, ["fused sample"]);
  assert.deepEqual(new LogitsPipe([Temperature(), Softmax(), TopK(), TopP()]).plan, [
    "softmax",
    "topKRenormProbs",
    "topPRenormProbs",
  ]);
  assert.deepEqual(new LogitsPipe([TopK(), Softmax()]).plan, ["topKMaskLogits", "softmax"]);
});

test("pipe: invalid orders are refused with a clear error", () => {
  assertThrowsCode(() => new LogitsPipe([]), BAD, /'steps' must be a non-empty array/);
  assertThrowsCode(
    () => new LogitsPipe([Softmax(), Temperature()]),
    BAD,
    /'steps\[1\]' must be given logits, but Temperature follows a step that yields probs/,
  );
  assertThrowsCode(
    () => new LogitsPipe([TopP(), Sample()]),
    BAD,
    /'steps\[0\]' must be given probs, but TopP follows a step that yields logits/,
  );
  assertThrowsCode(
    () => new LogitsPipe([Softmax()], { inputType: "probs" }),
    BAD,
    /Softmax follows a step that yields probs/,
  );
  assertThrowsCode(() => new LogitsPipe([Softmax(), Sample(), TopK()]), BAD, /Sample\(\) must be the last step/);
  assertThrowsCode(() => new LogitsPipe([Softmax(), MinP(), TopK(), Sample()]), BAD, /MinP must be the last filter/);
  assertThrowsCode(() => new LogitsPipe([Softmax(), TopK(), TopK(), Sample()]), BAD, /the only TopK step/);
  assertThrowsCode(() => new LogitsPipe([Softmax(), MinP()]), BAD, /ending in Sample\(\) when MinP is used/);
  assertThrowsCode(() => new LogitsPipe([Temperature()]), BAD, /followed by Softmax\(\) or Sample\(\)/);
  assertThrowsCode(() => new LogitsPipe([{ name: "Argmax" } as never]), BAD, /'steps\[0\]' must be one of/);
  const p = new LogitsPipe([Softmax(), TopK(), Sample()]);
  assertThrowsCode(
    () => p.run(Tensor.fromPointer(0x10000n, [2, 10], "f32"), {}),
    BAD,
    /'topK' must be given, as the pipe has TopK\(\)/,
  );
  assertThrowsCode(
    () => p.run(Tensor.fromPointer(0x10000n, [2, 10], "f32"), { topK: 0 }),
    BAD,
    /'topK' must be an integer >= 1/,
  );
});

gpuTest("pipe: the fused pipe draws exactly what the direct calls draw", () => {
  const rng = makeRng();
  const batch = 64, d = 32000;
  using logits = Tensor.fromRaw(Float32Array.from(randn(rng, batch * d, 3)), [batch, d], "f32");
  const tokens = (t: Tensor) => {
    const a = Array.from(t.toRaw() as Int32Array);
    t.dispose();
    return a;
  };
  const pipe = new LogitsPipe([Temperature(), Softmax(), TopK(), TopP(), Sample()]);
  assert.deepEqual(
    tokens(pipe.run(logits, { temperature: 0.7, topK: 50, topP: 0.9, seed: 3, offset: 4 })),
    tokens(topKTopPSamplingFromLogits(logits, 50, 0.9, { temperature: 0.7, seed: 3, offset: 4 })),
  );
  const joint = new LogitsPipe([Softmax(), TopP(), TopK(), Sample()]);
  assert.deepEqual(
    tokens(joint.run(logits, { topK: 50, topP: 0.9, seed: 3, offset: 4 })),
    tokens(topKTopPSamplingFromLogits(logits, 50, 0.9, { filterApplyOrder: "joint", seed: 3, offset: 4 })),
  );
  using probs = softmax(logits);
  const minp = new LogitsPipe([MinP(), Sample()], { inputType: "probs" });
  assert.deepEqual(
    tokens(minp.run(probs, { minP: 0.1, seed: 1 })),
    tokens(minPSamplingFromProbs(probs, 0.1, { seed: 1 })),
  );
  // unfused: softmax, renorm top-k, renorm top-p, step by step
  using stepwise = new LogitsPipe([Softmax(), TopK(), TopP()]).run(logits, { topK: 50, topP: 0.9 });
  using k = topKRenormProbs(probs, 50);
  using kp = topPRenormProbs(k, 0.9);
  const a = stepwise.toRaw() as Float32Array, b = kp.toRaw() as Float32Array;
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= 1e-6 + 1e-5 * b[i], `element ${i}: ${a[i]} vs ${b[i]}`);
  }
});
