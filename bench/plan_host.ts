/**
 * The decode plan's host time at B256 L1024 (or L=...) page 16, with and without the page-id check:
 * median of 3000 plans after N (default 3000) untimed ones. With the real library on a GPU machine, or
 * with the stub (bench/stub_lib.ts) anywhere: FLASHINFER_TS_LIB=/tmp/fi-stub/libstub.so.
 */
import { BatchDecodeWithPagedKvCache, Workspace } from "../mod.ts";

const B = 256, L = Number(Deno.env.get("L") ?? 1024), PS = 16, perRequest = L / PS;
const warmUp = Number(Deno.env.get("N") ?? 3000);
const indptr = Int32Array.from({ length: B + 1 }, (_, b) => b * perRequest);
const indices = Int32Array.from({ length: B * perRequest }, (_, i) => i);
const last = new Int32Array(B).fill(PS);
using ws = new Workspace(256 << 20);
using w = new BatchDecodeWithPagedKvCache(ws);
for (const checkIndices of [true, false]) {
  const plan = () => w.plan(indptr, indices, last, 32, 8, 128, PS, { qDtype: "bf16", checkIndices });
  for (let i = 0; i < warmUp; i++) plan();
  const times: number[] = [];
  for (let i = 0; i < 3000; i++) {
    const t0 = performance.now();
    plan();
    times.push((performance.now() - t0) * 1e3);
  }
  times.sort((a, b) => a - b);
  console.log(`plan B${B} L${L} p${PS} checkIndices ${checkIndices}: median ${times[1500].toFixed(2)} µs`);
}
