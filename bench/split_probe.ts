/**
 * Probe for BatchAttention's split form (issue 4): where the mixed batch's time goes.
 * 1. The split form at several prefill shares (SHARES=0.25,0.3,... to choose them). When each half ends
 *    was read from a build with timing events on both streams (not kept; bench/NOTES.md has the figures).
 * 2. The decode half alone on a persistent grid sized for fewer SMs: the decode's bandwidth per SM
 *    (DECODE_SMS=plain,60,86 to choose the counts).
 * Usage: deno run -A bench/split_probe.ts
 */
import { BatchAttention } from "../src/attention/batch_attention.ts";
import { splitSmsOfShare } from "../src/attention/batch_attention_plan.ts";
import { BatchDecodeWithPagedKvCache } from "../src/attention/decode.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { Stream } from "../src/runtime/stream.ts";
import { Workspace } from "../src/runtime/workspace.ts";
import { timeKernel } from "./timing.ts";
import { mixedBatch } from "./suites/prefill.ts";

const { hq, hkv, d, ps, decodes, chunk, ctx, B, qo, kvLens, maxBlocks, table, pages: next } = mixedBatch();
const stream = new Stream();
using k = Tensor.empty([next, ps, hkv, d], "bf16").fillBytes(0x3c);
using v = Tensor.empty([next, ps, hkv, d], "bf16").fillBytes(0x3c);
using q = Tensor.empty([qo[B], hq, d], "bf16").fillBytes(0x3c);
using out = Tensor.empty([qo[B], hq, d], "bf16");
using lse = Tensor.empty([qo[B], hq], "f32");
using ws = new Workspace(16 << 20);
const shares = (Deno.env.get("SHARES") ?? "0.25,0.3,0.35,0.4,0.45").split(",").map(Number);
const repeat = Number(Deno.env.get("REPEAT") ?? 1), warmup = Number(Deno.env.get("WARMUP") ?? 2);
for (let r = 0; r < repeat; r++) {
  for (const share of Deno.env.get("MODEL_LAST") ? [...shares, undefined] : [undefined, ...shares]) {
    using attention = new BatchAttention({ workspace: ws, backend: "auto" });
    attention.plan(qo, kvLens, table, hq, hkv, d, d, {
      qDtype: "bf16",
      pageSize: ps,
      causal: true,
      prefillShare: share,
    });
    const us = timeKernel(stream, () => attention.run(q, [k, v], { out, lse, stream }), { warmup, iters: 10 });
    const sms = share === undefined ? "model" : splitSmsOfShare(share, 132);
    console.log(`split share=${share ?? "model"} (P ${sms}) ${us.toFixed(1)} us`);
  }
}
if (Deno.env.get("NODECODE")) Deno.exit(0);
const decodeBytes = 2 * 2 * hkv * d * decodes * ctx;
const dIndptr = new Int32Array(decodes + 1), dIndices = new Int32Array(decodes * maxBlocks);
for (let b = 0; b < decodes; b++) {
  dIndptr[b + 1] = dIndptr[b] + maxBlocks;
  dIndices.set(table.subarray((b + 1) * maxBlocks, (b + 2) * maxBlocks), b * maxBlocks);
}
using dws = new Workspace(64 << 20);
const qd = q.narrow(0, chunk, decodes), od = out.narrow(0, chunk, decodes), ld = lse.narrow(0, chunk, decodes);
const smsList = Deno.env.get("DECODE_SMS")?.split(",").map((x) => x === "plain" ? undefined : Number(x)) ??
  [undefined, 60, 70, 80, 86, 90, 100, 110, 120, 132];
for (const sms of smsList) {
  using decode = new BatchDecodeWithPagedKvCache(dws, { kvLayout: "NHD", numSms: sms });
  decode.plan(dIndptr, dIndices, new Int32Array(decodes).fill(ps), hq, hkv, d, ps, {
    qDtype: "bf16",
    persistent: sms !== undefined,
  });
  const us = timeKernel(stream, () => decode.run(qd, [k, v], { out: od, lse: ld, stream }), { warmup: 2, iters: 10 });
  console.log(
    `decode sms=${sms ?? "all (plain grid)"} lanes=${decode.schedule?.numLanes} ${us.toFixed(1)} us ${
      (decodeBytes / us / 1e3).toFixed(0)
    } GB/s (${sms ? (decodeBytes / us / 1e3 / sms).toFixed(1) : "-"} GB/s an SM)`,
  );
}
