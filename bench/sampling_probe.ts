/**
 * Where a filtered sampler's time goes (diagnostic, not part of the report): the same timing as the
 * sampling suite (CUDA graph of 20 launches over inputs larger than L2), for configurations that
 * isolate passes and rounds: CTAs per row at B1, min-p (two passes, no rounds), k = vocab (the whole
 * row admissible: the search runs down to the smallest weight, speculative lists overflow),
 * and several top-p values at B128.
 *
 *   deno run -A bench/sampling_probe.ts
 */
import { Tensor } from "../src/runtime/tensor.ts";
import { CudaGraph, Stream } from "../src/runtime/stream.ts";
import {
  minPSamplingFromProbs,
  samplingFromProbs,
  type SamplingOptions,
  topKSamplingFromProbs,
  topKTopPSamplingFromLogits,
  topKTopPSamplingFromProbs,
  topPSamplingFromProbs,
} from "../src/sampling/sampling.ts";
import { timeKernel } from "./timing.ts";

const VOCAB = 128256, LAUNCHES = 20;

function softmaxRows(rows: number, d: number, scale: number): Float32Array {
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity, s = 0;
    for (let i = 0; i < d; i++) {
      const u = Math.max(Math.random(), 1e-12), v = Math.random();
      out[r * d + i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v) * scale;
      m = Math.max(m, out[r * d + i]);
    }
    for (let i = 0; i < d; i++) s += out[r * d + i] = Math.exp(out[r * d + i] - m);
    for (let i = 0; i < d; i++) out[r * d + i] /= s;
  }
  return out;
}

type Run = (x: Tensor, o: SamplingOptions) => Tensor;
const probes: { name: string; batch: number; run: Run; logits?: boolean }[] = [];
for (const cl of [1, 2, 4, 8, 16]) {
  probes.push({
    name: `topP 0.9 ctas ${cl}`,
    batch: 1,
    run: (x, o) => topPSamplingFromProbs(x, 0.9, { ...o, ctasPerRow: cl }),
  });
}
for (const cl of [4, 8, 16]) {
  probes.push({
    name: `topK 50 topP 0.9 ctas ${cl}`,
    batch: 1,
    run: (x, o) => topKTopPSamplingFromProbs(x, 50, 0.9, { ...o, ctasPerRow: cl }),
  });
}
for (const batch of [1, 128]) {
  probes.push({ name: "minP 0.1 (2 passes, 0 rounds)", batch, run: (x, o) => minPSamplingFromProbs(x, 0.1, o) });
  probes.push({
    name: `topK ${VOCAB} (threshold at the row minimum)`,
    batch,
    run: (x, o) => topKSamplingFromProbs(x, VOCAB, o),
  });
  probes.push({ name: "topK 1", batch, run: (x, o) => topKSamplingFromProbs(x, 1, o) });
  probes.push({ name: "topK 50", batch, run: (x, o) => topKSamplingFromProbs(x, 50, o) });
  probes.push({ name: "topK 2000", batch, run: (x, o) => topKSamplingFromProbs(x, 2000, o) });
  for (const p of [0.5, 0.9, 0.99]) {
    probes.push({ name: `topP ${p}`, batch, run: (x, o) => topPSamplingFromProbs(x, p, o) });
  }
  probes.push({ name: "topK 50 topP 0.9", batch, run: (x, o) => topKTopPSamplingFromProbs(x, 50, 0.9, o) });
  probes.push({ name: "plain", batch, run: (x, o) => samplingFromProbs(x, o) });
  probes.push({
    name: "logits topK 50 topP 0.9",
    batch,
    logits: true,
    run: (x, o) => topKTopPSamplingFromLogits(x, 50, 0.9, o),
  });
}

using stream = new Stream();
const inputs = new Map<string, Tensor[]>();
for (const batch of [1, 128]) {
  const host = softmaxRows(batch, VOCAB, 3);
  const logits = host.map((v) => Math.log(v)); // the same distribution as logits
  const copies = batch === 1 ? 64 : 4;
  inputs.set(`${batch}`, Array.from({ length: copies }, () => Tensor.fromRaw(host, [batch, VOCAB], "f32")));
  inputs.set(`${batch}L`, Array.from({ length: copies }, () => Tensor.fromRaw(logits, [batch, VOCAB], "f32")));
}
for (const pr of probes) {
  const xs = inputs.get(`${pr.batch}${pr.logits ? "L" : ""}`)!;
  using dbg = Tensor.empty([pr.batch, 2], "i32");
  pr.run(xs[0], { seed: 1, debugRounds: dbg, stream }).dispose();
  stream.synchronize();
  const r = dbg.toRaw() as Int32Array;
  let passes = 0, rounds = 0, maxP = 0, maxR = 0;
  for (let i = 0; i < pr.batch; i++) {
    passes += r[2 * i], rounds += r[2 * i + 1], maxP = Math.max(maxP, r[2 * i]), maxR = Math.max(maxR, r[2 * i + 1]);
  }
  // Checkpoint cycles (slots as SamplingOptions.debugTrace says: stats pass, stats, rounds, search,
  // race, reduce, end, and a cluster's diagnostics; 0 = not reached): the slowest row and the median
  // row by end time.
  using trace = Tensor.empty([pr.batch, 16], "i32").fillBytes(0);
  pr.run(xs[1 % xs.length], { seed: 1, debugTrace: trace, stream }).dispose();
  stream.synchronize();
  const tr = trace.toRaw() as Int32Array;
  const order = Array.from({ length: pr.batch }, (_, i) => i).sort((a, b) => tr[16 * a + 15] - tr[16 * b + 15]);
  const fmt = (i: number) => Array.from(tr.subarray(16 * i, 16 * i + 16), (v) => (v / 1000).toFixed(1)).join(" ");
  console.log(`  trace kcycles slowest row ${order[pr.batch - 1]}: ${fmt(order[pr.batch - 1])}`);
  if (pr.batch > 1) console.log(`  trace kcycles median row ${order[pr.batch >> 1]}: ${fmt(order[pr.batch >> 1])}`);
  const outs = Array.from({ length: LAUNCHES }, () => Tensor.empty([pr.batch], "i32"));
  let call = 0;
  using graph = CudaGraph.capture(stream, () => {
    for (let i = 0; i < LAUNCHES; i++) pr.run(xs[(call++) % xs.length], { seed: 1, offset: i, out: outs[i], stream });
  });
  const us = timeKernel(stream, () => graph.replay(stream), { warmup: 3, iters: 20 }) / LAUNCHES;
  console.log(
    `probe B${pr.batch} ${pr.name.padEnd(36)} ${us.toFixed(2).padStart(8)} us  passes ${
      (passes / pr.batch).toFixed(2)
    } (max ${maxP}) rounds ${(rounds / pr.batch).toFixed(2)} (max ${maxR})`,
  );
  outs.forEach((t) => t.dispose());
}
for (const xs of inputs.values()) xs.forEach((t) => t.dispose());
