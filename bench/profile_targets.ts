/**
 * One launch each of the kernels with the largest open gaps, for Nsight Compute:
 *   ncu --clock-control none --kernel-name regex:'batch_decode|sampler|prefill' deno run -A bench/profile_targets.ts
 * fp8 (e4m3) batch decode B128 L8192 and its bf16 twin, top-p 0.9 sampling at B128 over 128256
 * tokens, and causal ragged prefill B4 S4096 (32/8 heads, head dim 128).
 */
import { Device } from "../src/runtime/device.ts";
import { Stream } from "../src/runtime/stream.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { Workspace } from "../src/runtime/workspace.ts";
import { BatchDecodeWithPagedKvCache } from "../src/attention/decode.ts";
import { BatchPrefillWithRaggedKvCache } from "../src/attention/prefill.ts";
import { softmax, topPSamplingFromProbs } from "../src/sampling/sampling.ts";

Device.require();
const stream = new Stream();
using workspace = new Workspace();

// Decode: 128 requests of 8192 tokens in pages of 16, consecutive pages.
const batch = 128, len = 8192, page = 16, pages = batch * len / page;
const indptr = Int32Array.from({ length: batch + 1 }, (_, b) => b * (len / page));
const indices = Int32Array.from({ length: pages }, (_, i) => i);
const last = new Int32Array(batch).fill(page);
using q = Tensor.empty([batch, 32, 128], "bf16").fillBytes(0x3c);
for (const kvDtype of ["bf16", "e4m3"] as const) {
  using cache = Tensor.empty([pages, 2, page, 8, 128], kvDtype).fillBytes(0x31);
  using decode = new BatchDecodeWithPagedKvCache(workspace);
  decode.plan(indptr, indices, last, 32, 8, 128, page, { qDtype: "bf16", kvDtype, stream });
  using _out = decode.run(q, cache, { stream });
  stream.synchronize();
}

// Sampling: top-p 0.9 at B128 over softmax(randn * 3).
const vocab = 128256;
const logits = new Float32Array(128 * vocab).map(() =>
  3 * Math.sqrt(-2 * Math.log(Math.random() + 1e-12)) * Math.cos(6.283 * Math.random())
);
using lt = Tensor.fromRaw(logits, [128, vocab], "f32");
using probs = softmax(lt, { stream });
using _tokens = topPSamplingFromProbs(probs, 0.9, { seed: 1, stream });
stream.synchronize();

// Prefill: 4 requests of 4096 tokens, causal.
const s = 4096, b4 = 4;
using pq = Tensor.empty([b4 * s, 32, 128], "bf16").fillBytes(0x3c);
using pk = Tensor.empty([b4 * s, 8, 128], "bf16").fillBytes(0x3c);
using pv = Tensor.empty([b4 * s, 8, 128], "bf16").fillBytes(0x3c);
const qo = Int32Array.from({ length: b4 + 1 }, (_, i) => i * s);
using prefill = new BatchPrefillWithRaggedKvCache(workspace);
prefill.plan(qo, qo, 32, 8, 128, { causal: true, qDtype: "bf16", stream });
const r = prefill.run(pq, pk, pv, { stream });
stream.synchronize();
console.log("profile targets ran", r.out.shape);
