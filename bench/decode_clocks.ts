/**
 * Experiment: per-CTA phase clocks of one decode launch (cuda/src/decode.cu FI_DECODE_CLOCKS): for each
 * shape, a few plain runs, then two clocked launches back to back whose records are appended to the
 * file named by the first argument. Analyse with bench/decode_clocks.py.
 *   deno run -A bench/decode_clocks.ts clocks.txt
 */
import { Tensor } from "../src/runtime/tensor.ts";
import { Stream } from "../src/runtime/stream.ts";
import { Workspace } from "../src/runtime/workspace.ts";
import type { DType } from "../src/runtime/dtype.ts";
import { BatchDecodeWithPagedKvCache } from "../src/attention/decode.ts";
import { appendFileSync } from "node:fs";

const HQO = 32, HKV = 8, D = 128, PS = 16;
const path = Deno.args[0] ?? "clocks.txt";
using stream = new Stream();
using ws = new Workspace(256 << 20);
const shapes: [DType, number, number][] = [
  ["e4m3", 16, 4096],
  ["e4m3", 64, 2048],
  ["bf16", 16, 4096],
  ["bf16", 64, 2048],
  ["e4m3", 256, 1024],
];
for (const [dtype, batch, len] of shapes) {
  const per = Math.ceil(len / PS), pages = batch * per;
  const indptr = new Int32Array(batch + 1), last = new Int32Array(batch).fill(len - (per - 1) * PS);
  for (let b = 0; b < batch; b++) indptr[b + 1] = indptr[b] + per;
  const indices = new Int32Array(pages).map((_, i) => i);
  // Moderate values: e4m3 0x3a = 1.25, bf16 0x3c3c ~ 0.0115.
  using kv = Tensor.empty([pages, 2, PS, HKV, D], dtype).fillBytes(dtype === "bf16" ? 0x3c : 0x3a, stream);
  using q = Tensor.empty([batch, HQO, D], "bf16").fillBytes(0x3c, stream);
  using out = Tensor.empty([batch, HQO, D], "bf16");
  const w = new BatchDecodeWithPagedKvCache(ws);
  w.plan(indptr, indices, last, HQO, HKV, D, PS, { qDtype: "bf16", kvDtype: dtype, stream });
  for (let i = 0; i < 20; i++) w.run(q, kv, { out, stream });
  appendFileSync(path, `## ${dtype} B${batch} L${len} ${JSON.stringify(w.schedule)}\n`);
  Deno.env.set("FI_DECODE_CLOCKS", path);
  w.run(q, kv, { out, stream });
  w.run(q, kv, { out, stream });
  Deno.env.delete("FI_DECODE_CLOCKS");
  stream.synchronize();
  w.dispose();
  console.error(`clocks: ${dtype} B${batch} L${len} done`);
}
