/**
 * Samplers at vocab 128256 on f32 probabilities from softmax(randn * 3) (PyTorch peer's setup),
 * batch 1 and 128. Each row is timed over a CUDA graph of 20 launches that rotate through input
 * copies larger than L2 (host launch overhead excluded). `bytes` is what the kernel actually read:
 * the mean number of passes over the row (from the kernel's debug counters) times the row size.
 */
import { Tensor } from "../../src/runtime/tensor.ts";
import { CudaGraph, type Stream } from "../../src/runtime/stream.ts";
import {
  minPSamplingFromProbs,
  samplingFromLogits,
  samplingFromProbs,
  type SamplingOptions,
  topKSamplingFromProbs,
  topKTopPSamplingFromLogits,
  topKTopPSamplingFromProbs,
  topPSamplingFromProbs,
} from "../../src/sampling/sampling.ts";
import { env } from "../../src/runtime/platform.ts";
import { timeKernel } from "../timing.ts";
import type { Row, Suite } from "./types.ts";

const VOCAB = 128256;
const LAUNCHES = 20;

// Seeded (mulberry32; FI_BENCH_SEED overrides 1) so that runs, and libraries compared in one call,
// time the same rows: a B1 time moves by 1-2 µs with the row's data.
let seed = (Number(env("FI_BENCH_SEED")) || 1) >>> 0;
function random(): number {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

function randnRows(rows: number, d: number, scale: number, softmax: boolean): Float32Array {
  const out = new Float32Array(rows * d);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    for (let i = 0; i < d; i += 2) {
      const u = Math.max(random(), 1e-12), v = random();
      const rad = Math.sqrt(-2 * Math.log(u)) * scale;
      out[r * d + i] = rad * Math.cos(2 * Math.PI * v);
      if (i + 1 < d) out[r * d + i + 1] = rad * Math.sin(2 * Math.PI * v);
    }
    if (!softmax) continue;
    for (let i = 0; i < d; i++) m = Math.max(m, out[r * d + i]);
    let s = 0;
    for (let i = 0; i < d; i++) s += out[r * d + i] = Math.exp(out[r * d + i] - m);
    for (let i = 0; i < d; i++) out[r * d + i] /= s;
  }
  return out;
}

type Sampler = (x: Tensor, o: SamplingOptions) => Tensor;

const SAMPLERS: { op: string; logits?: boolean; run: Sampler; target: Record<number, number>; peer: string }[] = [
  {
    op: "samplingFromProbs",
    run: (x, o) => samplingFromProbs(x, o),
    target: { 1: 20, 128: 45 },
    peer: "FlashInfer 0.3.1 49 µs, torch.multinomial 278 µs",
  },
  {
    op: "topPSamplingFromProbs p0.9",
    run: (x, o) => topPSamplingFromProbs(x, 0.9, o),
    target: { 1: 20, 128: 120 },
    peer: "FlashInfer 0.3.1 142 µs, torch sort 2533 µs",
  },
  {
    op: "topKSamplingFromProbs k50",
    run: (x, o) => topKSamplingFromProbs(x, 50, o),
    target: { 1: 20, 128: 150 },
    peer: "FlashInfer 0.3.1 340 µs, torch.topk+multinomial 344 µs",
  },
  {
    op: "topKTopPSamplingFromProbs k50 p0.9",
    run: (x, o) => topKTopPSamplingFromProbs(x, 50, 0.9, o),
    target: { 1: 20, 128: 200 },
    peer: "FlashInfer 0.3.1 812 µs",
  },
  { op: "minPSamplingFromProbs p0.1", run: (x, o) => minPSamplingFromProbs(x, 0.1, o), target: { 1: 20 }, peer: "" },
  { op: "samplingFromLogits", logits: true, run: (x, o) => samplingFromLogits(x, o), target: { 1: 20 }, peer: "" },
  {
    op: "topKTopPSamplingFromLogits k50 p0.9",
    logits: true,
    run: (x, o) => topKTopPSamplingFromLogits(x, 50, 0.9, o),
    target: { 1: 20 },
    peer: "",
  },
];

export const samplingSuite: Suite = {
  name: "sampling",
  run(stream: Stream): Row[] {
    const rows: Row[] = [];
    for (const batch of [1, 128]) {
      const copies = batch === 1 ? 64 : 4;
      const hostProbs = randnRows(batch, VOCAB, 3, true);
      const hostLogits = randnRows(batch, VOCAB, 3, false);
      const probs = Array.from({ length: copies }, () => Tensor.fromRaw(hostProbs, [batch, VOCAB], "f32"));
      const logits = Array.from({ length: copies }, () => Tensor.fromRaw(hostLogits, [batch, VOCAB], "f32"));
      const outs = Array.from({ length: LAUNCHES }, () => Tensor.empty([batch], "i32"));
      using dbg = Tensor.empty([batch, 2], "i32");
      for (const s of SAMPLERS) {
        const inputs = s.logits ? logits : probs;
        s.run(inputs[0], { seed: 1, debugRounds: dbg, stream }).dispose();
        stream.synchronize();
        const r = dbg.toRaw() as Int32Array;
        let passes = 0, rounds = 0, maxPasses = 0;
        for (let i = 0; i < batch; i++) {
          passes += r[2 * i], rounds += r[2 * i + 1], maxPasses = Math.max(maxPasses, r[2 * i]);
        }
        passes /= batch, rounds /= batch;
        let call = 0;
        using graph = CudaGraph.capture(stream, () => {
          for (let i = 0; i < LAUNCHES; i++) {
            s.run(inputs[(call++) % copies], { seed: 1, offset: i, out: outs[i], stream });
          }
        });
        const us = timeKernel(stream, () => graph.replay(stream), { warmup: 3, iters: 20 }) / LAUNCHES;
        const target = s.target[batch];
        rows.push({
          op: `${s.op} f32`,
          shape: `B${batch} V${VOCAB}`,
          us,
          bytes: passes * batch * VOCAB * 4,
          note: `passes ${passes.toFixed(2)} (max ${maxPasses}), rounds ${rounds.toFixed(2)}` +
            (target ? `; target <= ${target} µs` : "") + (s.peer && batch === 128 ? `; ${s.peer}` : ""),
        });
      }
      [...probs, ...logits, ...outs].forEach((t) => t.dispose());
    }
    return rows;
  },
};
