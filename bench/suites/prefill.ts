/** Causal bf16 prefill at the issue's shapes: ragged and paged (page 16) batch prefill, TFLOP/s. */
import { BatchPrefillWithPagedKvCache, BatchPrefillWithRaggedKvCache } from "../../src/attention/prefill.ts";
import { BatchAttention } from "../../src/attention/batch_attention.ts";
import { BatchDecodeWithPagedKvCache } from "../../src/attention/decode.ts";
import { Tensor } from "../../src/runtime/tensor.ts";
import type { Stream } from "../../src/runtime/stream.ts";
import { Workspace } from "../../src/runtime/workspace.ts";
import { timeKernel } from "../timing.ts";
import type { Row, Suite } from "./types.ts";

function randomBf16(n: number): Uint16Array {
  const raw = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    raw[i] = (Math.random() < 0.5 ? 0x8000 : 0) | ((122 + ((Math.random() * 6) | 0)) << 7) |
      ((Math.random() * 128) | 0);
  }
  return raw;
}

const TARGETS: Record<string, string> = {
  "128 B16 S1024": "FlashInfer FA2 317, PyTorch FA2 265",
  "128 B4 S4096": "FlashInfer FA2 361, PyTorch FA2 320",
  "128 B1 S16384": "FlashInfer FA2 378, PyTorch FA2 345",
  "64 B16 S1024": "FlashInfer FA2 241",
  "64 B4 S4096": "FlashInfer FA2 300",
  "64 B1 S16384": "FlashInfer FA2 313",
};

export const prefillSuite: Suite = {
  name: "prefill",
  run(stream: Stream): Row[] {
    const rows: Row[] = [];
    using ws = new Workspace(16 << 20);
    for (const [d, hq, hkv] of [[128, 32, 8], [64, 32, 32]]) {
      for (const [B, S] of [[16, 1024], [4, 4096], [1, 16384]]) {
        const n = B * S;
        const indptr = Int32Array.from({ length: B + 1 }, (_, b) => b * S);
        using q = Tensor.fromRaw(randomBf16(n * hq * d), [n, hq, d], "bf16");
        using k = Tensor.fromRaw(randomBf16(n * hkv * d), [n, hkv, d], "bf16");
        using v = Tensor.fromRaw(randomBf16(n * hkv * d), [n, hkv, d], "bf16");
        using out = Tensor.empty([n, hq, d], "bf16");
        const flops = (4 * B * hq * S * S * d) / 2;
        const shape = `B${B} S${S} ${hq}/${hkv} hd${d}`;
        const note = `target: ${TARGETS[`${d} B${B} S${S}`]} TFLOP/s`;
        using ragged = new BatchPrefillWithRaggedKvCache(ws);
        ragged.plan(indptr, indptr, hq, hkv, d, { causal: true, qDtype: "bf16" });
        rows.push({
          op: "ragged prefill causal bf16",
          shape,
          flops,
          note,
          us: timeKernel(stream, () => ragged.run(q, k, v, { out, stream }), { warmup: 3, iters: 10 }),
        });
        if (d !== 128) continue;
        // The same keys in a page-16 cache [pages, 2, 16, Hkv, D], pages in request order.
        const ps = 16, pages = n / ps;
        using cache = Tensor.fromRaw(randomBf16(pages * 2 * ps * hkv * d), [pages, 2, ps, hkv, d], "bf16");
        using paged = new BatchPrefillWithPagedKvCache(ws);
        const pIndptr = Int32Array.from({ length: B + 1 }, (_, b) => (b * S) / ps);
        const indices = Int32Array.from({ length: pages }, (_, i) => i);
        paged.plan(indptr, pIndptr, indices, new Int32Array(B).fill(ps), hq, hkv, d, ps, {
          causal: true,
          qDtype: "bf16",
        });
        rows.push({
          op: "paged(16) prefill causal bf16",
          shape,
          flops,
          note: "target: within 10% of ragged",
          us: timeKernel(stream, () => paged.run(q, cache, { out, stream }), { warmup: 3, iters: 10 }),
        });
      }
    }
    return rows;
  },
};

/**
 * The issue's mixed batch through BatchAttention: 1 prefill chunk of 4096 + 128 decodes at 8192. Also
 * timed: our own prefill and decode wrappers run one after the other (the bar the fused launch must
 * beat), and other shares of CTAs starting on the prefill queue.
 */
/**
 * The issue's mixed batch: request 0 a causal chunk of 4096 over its own 4096 keys, then 128 decodes at
 * 8192; 32/8 heads, hd 128, page 16; every request's pages laid out one after the other.
 */
export function mixedBatch() {
  const hq = 32, hkv = 8, d = 128, ps = 16, decodes = 128, chunk = 4096, ctx = 8192;
  const B = decodes + 1;
  const qo = new Int32Array(B + 1);
  qo[1] = chunk;
  for (let b = 1; b < B; b++) qo[b + 1] = qo[b] + 1;
  const kvLens = new Int32Array(B).fill(ctx);
  kvLens[0] = chunk;
  const maxBlocks = ctx / ps;
  const table = new Int32Array(B * maxBlocks);
  let pages = 0;
  for (let b = 0; b < B; b++) for (let p = 0; p < Math.ceil(kvLens[b] / ps); p++) table[b * maxBlocks + p] = pages++;
  return { hq, hkv, d, ps, decodes, chunk, ctx, B, qo, kvLens, maxBlocks, table, pages };
}

export const batchAttentionSuite: Suite = {
  name: "batch_attention",
  run(stream: Stream): Row[] {
    const { hq, hkv, d, ps, decodes, chunk, ctx, B, qo, kvLens, maxBlocks, table, pages: next } = mixedBatch();
    using k = Tensor.empty([next, ps, hkv, d], "bf16").fillBytes(0x3c);
    using v = Tensor.empty([next, ps, hkv, d], "bf16").fillBytes(0x3c);
    using q = Tensor.fromRaw(randomBf16(qo[B] * hq * d), [qo[B], hq, d], "bf16");
    using out = Tensor.empty([qo[B], hq, d], "bf16");
    using lse = Tensor.empty([qo[B], hq], "f32");
    using ws = new Workspace(16 << 20);
    const flops = 4 * hq * d * (chunk * chunk / 2 + decodes * ctx);
    const bytes = 2 * 2 * hkv * d * (chunk + decodes * ctx);
    const shape = `1x${chunk} prefill + ${decodes}x${ctx} decode, 32/8 hd128 p16`;
    const rows: Row[] = [];
    const configs: { backend: "auto" | "fused"; share?: number; placement?: "mix" | "partition" }[] = [
      { backend: "auto" },
      { backend: "auto", share: 0.2 },
      { backend: "auto", share: 0.25 },
      { backend: "auto", share: 0.3 },
      { backend: "auto", share: 0.35 },
      { backend: "auto", share: 0.4 },
      { backend: "fused", share: 0.5, placement: "partition" },
      { backend: "fused", share: 0.5, placement: "mix" },
    ];
    for (const [index, { backend, share, placement }] of configs.entries()) {
      using attention = new BatchAttention({ workspace: ws, backend });
      attention.plan(qo, kvLens, table, hq, hkv, d, d, {
        qDtype: "bf16",
        pageSize: ps,
        causal: true,
        prefillShare: share,
        placement,
      });
      const how = share === undefined ? "rate model" : `prefillShare ${share}`;
      rows.push({
        op: `BatchAttention mixed bf16 (${attention.path}, ${placement ? placement + " " : ""}${how})`,
        shape,
        flops,
        bytes,
        note: backend === "auto" && share === undefined
          ? "target <= 1600 us (FlashInfer BatchAttention 1781 us)"
          : "exploration",
        // The first row also brings the GPU's clock up from idle (the host just built the inputs): timed
        // after 2 warm-up calls it read 15-35 us slower than the same plan timed later (bench/NOTES.md).
        us: timeKernel(stream, () => attention.run(q, [k, v], { out, lse, stream }), {
          warmup: index === 0 ? 60 : 10,
          iters: 50,
        }),
      });
    }
    // Each half alone through the fused launch: what the two queues cost without the other.
    {
      using attention = new BatchAttention({ workspace: ws, backend: "fused" });
      attention.plan(qo.subarray(0, 2), kvLens.subarray(0, 1), table.subarray(0, maxBlocks), hq, hkv, d, d, {
        qDtype: "bf16",
        pageSize: ps,
        causal: true,
      });
      rows.push({
        op: `BatchAttention prefill part alone (${attention.path})`,
        shape: `1x${chunk} prefill, 32/8 hd128 p16`,
        flops: 4 * hq * d * chunk * chunk / 2,
        note: "exploration",
        us: timeKernel(stream, () =>
          attention.run(q.narrow(0, 0, chunk), [k, v], {
            out: out.narrow(0, 0, chunk),
            lse: lse.narrow(0, 0, chunk),
            stream,
          }), {
          warmup: 2,
          iters: 10,
        }),
      });
      const dq = new Int32Array(decodes + 1).map((_, i) => i);
      attention.plan(dq, kvLens.subarray(1), table.subarray(maxBlocks), hq, hkv, d, d, {
        qDtype: "bf16",
        pageSize: ps,
        causal: true,
      });
      rows.push({
        op: `BatchAttention decode part alone (${attention.path})`,
        shape: `${decodes}x${ctx} decode, 32/8 hd128 p16`,
        bytes: 2 * 2 * hkv * d * decodes * ctx,
        note: "exploration",
        us: timeKernel(stream, () =>
          attention.run(q.narrow(0, chunk, decodes), [k, v], {
            out: out.narrow(0, chunk, decodes),
            lse: lse.narrow(0, chunk, decodes),
            stream,
          }), {
          warmup: 2,
          iters: 10,
        }),
      });
    }
    // The same work through our own prefill and decode wrappers, one launch after the other.
    using pws = new Workspace(16 << 20), dws = new Workspace(64 << 20);
    using prefill = new BatchPrefillWithPagedKvCache(pws, "NHD");
    const pPages = Math.ceil(chunk / ps);
    prefill.plan(
      new Int32Array([0, chunk]),
      new Int32Array([0, pPages]),
      table.subarray(0, pPages),
      new Int32Array([ps]),
      hq,
      hkv,
      d,
      ps,
      { qDtype: "bf16", causal: true },
    );
    using decode = new BatchDecodeWithPagedKvCache(dws, { kvLayout: "NHD" });
    const dIndptr = new Int32Array(decodes + 1), dIndices = new Int32Array(decodes * maxBlocks);
    for (let b = 0; b < decodes; b++) {
      dIndptr[b + 1] = dIndptr[b] + maxBlocks;
      dIndices.set(table.subarray((b + 1) * maxBlocks, (b + 2) * maxBlocks), b * maxBlocks);
    }
    decode.plan(dIndptr, dIndices, new Int32Array(decodes).fill(ps), hq, hkv, d, ps, { qDtype: "bf16" });
    const qp = q.narrow(0, 0, chunk), op = out.narrow(0, 0, chunk), lp = lse.narrow(0, 0, chunk);
    const qd = q.narrow(0, chunk, decodes), od = out.narrow(0, chunk, decodes), ld = lse.narrow(0, chunk, decodes);
    rows.push({
      op: "our prefill alone (paged)",
      shape: `1x${chunk} prefill, 32/8 hd128 p16`,
      flops: 4 * hq * d * chunk * chunk / 2,
      note: "exploration",
      us: timeKernel(stream, () => prefill.run(qp, [k, v], { out: op, lse: lp, stream }), { warmup: 2, iters: 10 }),
    });
    rows.push({
      op: "our decode alone",
      shape: `${decodes}x${ctx} decode, 32/8 hd128 p16`,
      bytes: 2 * 2 * hkv * d * decodes * ctx,
      note: "exploration",
      us: timeKernel(stream, () => decode.run(qd, [k, v], { out: od, lse: ld, stream }), { warmup: 2, iters: 10 }),
    });
    rows.push({
      op: "our prefill + decode, one after the other",
      shape,
      flops,
      bytes,
      note: "the fused launch must beat this",
      us: timeKernel(stream, () => {
        prefill.run(qp, [k, v], { out: op, lse: lp, stream });
        decode.run(qd, [k, v], { out: od, lse: ld, stream });
      }, { warmup: 2, iters: 10 }),
    });
    return rows;
  },
};
