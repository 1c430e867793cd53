/**
 * Batch decode on the paged KV cache at the issue's shapes (H100 targets; Llama-3-8B: 32/8 heads, hd 128,
 * page 16), bf16 and fp8 KV, and the plan's host time. Each request's pages are consecutive (as
 * FlashInfer's benchmarks use), plus one row with a random page order; the B1 shape rotates over 16
 * page ranges (1 GiB of cache) so it does not run from L2.
 * bytes = q read + out written + the K and V bytes actually read.
 */
import { Tensor } from "../../src/runtime/tensor.ts";
import { CudaGraph, Event, type Stream } from "../../src/runtime/stream.ts";
import { PinnedBuffer } from "../../src/runtime/memory.ts";
import { Workspace } from "../../src/runtime/workspace.ts";
import type { DType } from "../../src/runtime/dtype.ts";
import { BatchDecodeWithPagedKvCache } from "../../src/attention/decode.ts";
import { checkPageTable } from "../../src/attention/paged_kv_cache.ts";
import { scheduleDecode } from "../../src/attention/scheduler.ts";
import { timeKernel } from "../timing.ts";
import { check, native } from "../../src/runtime/library.ts";
import { env } from "../../src/runtime/platform.ts";
import type { Row, Suite } from "./types.ts";

const HQO = 32, HKV = 8, HEAD_DIM = 128, PS = 16;
/** Pages of random bits generated on the host; larger caches repeat them (far beyond the L2 still). */
const BLOCK = 512;

function randomBits(n: number, bytes: 1 | 2): Uint16Array | Uint8Array {
  // Moderate-magnitude random floats as raw bits: exponent near 1 so softmax stays well conditioned.
  if (bytes === 2) {
    const raw = new Uint16Array(n);
    for (let i = 0; i < n; i++) {
      raw[i] = (Math.random() < 0.5 ? 0x8000 : 0) | ((121 + ((Math.random() * 6) | 0)) << 7) |
        ((Math.random() * 128) | 0);
    }
    return raw;
  }
  const raw = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    raw[i] = (Math.random() < 0.5 ? 0x80 : 0) | ((3 + ((Math.random() * 5) | 0)) << 3) | ((Math.random() * 8) | 0);
  }
  return raw;
}

function table(batch: number, len: number, totalPages: number, offset = 0, shuffle = false) {
  const per = Math.ceil(len / PS);
  const indptr = new Int32Array(batch + 1), last = new Int32Array(batch).fill(len - (per - 1) * PS);
  for (let b = 0; b < batch; b++) indptr[b + 1] = indptr[b] + per;
  const perm = new Int32Array(batch * per);
  for (let i = 0; i < perm.length; i++) perm[i] = offset + i;
  for (let i = perm.length - 1; shuffle && i > 0; i--) {
    const j = (Math.random() * (i + 1)) | 0;
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  for (let i = 0; i < perm.length; i++) perm[i] %= totalPages;
  return { indptr, indices: perm, last };
}

const TARGETS: Record<string, string> = {
  "B16 L4096": "target: beat cuDNN (2.6-3.06 TB/s); FlashInfer 112 µs",
  "B64 L2048": "target: beat cuDNN (2.6-3.06 TB/s); FlashInfer 197 µs",
  "B128 L8192": "target >= 3000 GB/s; FlashInfer 1430 µs",
  "B256 L1024": "target: beat cuDNN (2.6-3.06 TB/s); FlashInfer 378 µs",
  "B1 L4096": "target <= 15 µs (cuDNN 19, FlashInfer 20)",
};

export const decodeSuite: Suite = {
  name: "decode",
  run(stream: Stream): Row[] {
    const rows: Row[] = [];
    // Rows are logged as they come, so a run cut short still shows what it measured.
    const add = (r: Row) => {
      rows.push(r);
      console.error(`${r.op} | ${r.shape} | ${r.us.toFixed(2)} µs | ${r.note ?? ""}`);
    };
    using ws = new Workspace(256 << 20);
    type Extra = {
      disableSplitKv?: boolean;
      fixedSplitSize?: number;
      kvLayout?: "HND";
      persistent?: boolean;
      numSms?: number;
      headDim?: number;
    };
    type Job = [DType, number, number, boolean, Extra?];
    // FI_BENCH_DECODE_SHAPES=16x4096,64x2048 times only those target shapes.
    const only = env("FI_BENCH_DECODE_SHAPES")?.split(",");
    const main = ([[16, 4096], [64, 2048], [128, 8192], [256, 1024]] as [number, number][])
      .filter(([b, l]) => !only || only.includes(`${b}x${l}`));
    // FI_BENCH_DECODE_DTYPES=e4m3 times only those KV dtypes (A/B runs of a kernel variant).
    const dtypes = (env("FI_BENCH_DECODE_DTYPES") ?? "bf16,e4m3,e5m2").split(",") as DType[];
    const has = (d: DType) => dtypes.includes(d);
    // FI_BENCH_DECODE_NO_EXTRAS=1: the target shapes only (e.g. a reference library in the same run).
    const noExtras = env("FI_BENCH_DECODE_NO_EXTRAS") === "1";
    const fp8Extras: Job[] = [
      // The persistent grid (lanes) against one CTA row per item, at every target shape.
      ...main.map(([b, l]): Job => ["e4m3", b, l, false, { persistent: b * 8 < 132 }]),
      ["e4m3", 64, 2048, false, { disableSplitKv: true }],
      ["e4m3", 16, 4096, false, { fixedSplitSize: 2048 }],
      // Each head's tokens contiguous (HND) against NHD's 128-byte rows interleaved by head.
      ["e4m3", 128, 8192, false, { kvLayout: "HND" }],
      // FI_BENCH_DECODE_FP8_SMS=110,120: the lanes sized for that many SMs, at every target shape.
      ...(env("FI_BENCH_DECODE_FP8_SMS")?.split(",").map(Number) ?? []).flatMap((numSms) =>
        main.map(([b, l]): Job => ["e4m3", b, l, false, { numSms }])
      ),
    ];
    // The target shapes first (bf16, then fp8), explorations last.
    const jobs: Job[] = [
      ...(has("bf16") ? [...main, [1, 4096]].map(([b, l]): Job => ["bf16", b, l, false]) : []),
      ...dtypes.filter((d) => d !== "bf16").flatMap((d) => main.map(([b, l]): Job => [d, b, l, false])),
      // fp8 alternatives: no wave-balance split at B64, the 2-CTA split size at B16, HND.
      ...(has("e4m3") && !noExtras ? fp8Extras : []),
      ...(has("bf16") && !noExtras
        ? [
          [64, 2048, true],
          // Scheduler alternatives at the split-sensitive shapes.
          [16, 4096, false, { disableSplitKv: true }],
          [16, 4096, false, { fixedSplitSize: 1024 }],
          [1, 4096, false, { fixedSplitSize: 256 }],
          [1, 4096, false, { fixedSplitSize: 512 }],
        ].map(([b, l, sh, x]) => ["bf16", b, l, sh, x] as Job)
        : []),
    ];
    // FI_BENCH_DECODE_JOBS='[["bf16", 128, 8192, {"fixedSplitSize": 4096}]]': more rows, as [dtype, B, L, extra].
    const more = JSON.parse(env("FI_BENCH_DECODE_JOBS") ?? "[]") as [DType, number, number, Extra?][];
    jobs.push(...more.map(([d, b, l, x]): Job => [d, b, l, false, x]));
    const bf16Us = new Map<string, number>(); // by shape, for the fp8 rows' ratio
    for (const [dtype, batch, len, shuffle, extra] of jobs) {
      {
        const kvBytes = dtype === "bf16" ? 2 : 1;
        const D = extra?.headDim ?? HEAD_DIM;
        const pagesNeeded = batch * Math.ceil(len / PS);
        // At least 1 GiB of cache so runs do not hit L2; small shapes rotate over page ranges.
        const minPages = Math.ceil((1 << 30) / (2 * PS * HKV * D * kvBytes));
        const pages = Math.max(pagesNeeded, batch === 1 ? minPages : 0);
        const { kvLayout, numSms, headDim: _, ...planExtra } = extra ?? {};
        const inner = kvLayout === "HND" ? [HKV, PS, D] : [PS, HKV, D]; // a page's K (or V) half
        using cache = Tensor.fromRaw(randomBits(Math.min(pages, BLOCK) * 2 * PS * HKV * D, kvBytes as 1 | 2), [
          Math.min(pages, BLOCK),
          2,
          ...inner,
        ], dtype);
        // Larger caches tile the random block (generating GBs of random bits on the host is slow).
        const big = pages > BLOCK ? Tensor.empty([pages, 2, ...inner], dtype) : undefined;
        if (big) {
          for (let p = 0; p < pages; p += BLOCK) {
            const n = Math.min(BLOCK, pages - p);
            using dst = big.narrow(0, p, n);
            using src = cache.narrow(0, 0, n);
            copyRows(dst, src, stream);
          }
        }
        const kv = big ?? cache;
        const rot = batch === 1 ? 16 : 1;
        const wrappers = Array.from({ length: rot }, (_, r) => {
          const w = new BatchDecodeWithPagedKvCache(rot > 1 ? new Workspace(16 << 20) : ws, { kvLayout, numSms });
          const t = table(batch, len, pages, r * pagesNeeded, shuffle);
          w.plan(t.indptr, t.indices, t.last, HQO, HKV, D, PS, {
            qDtype: "bf16",
            kvDtype: dtype,
            stream,
            ...planExtra,
          });
          return w;
        });
        using q = Tensor.fromRaw(randomBits(batch * HQO * D, 2), [batch, HQO, D], "bf16");
        using out = Tensor.empty([batch, HQO, D], "bf16");
        let us: number;
        if (batch * len < 1 << 16) {
          // Small shapes: one CUDA graph replays `rot` runs, so host launch overhead is not timed (as in serving).
          for (const w of wrappers) w.run(q, kv, { out, stream });
          using graph = CudaGraph.capture(stream, () => wrappers.forEach((w) => w.run(q, kv, { out, stream })));
          us = timeKernel(stream, () => graph.replay(stream), { iters: 50 }) / rot;
        } else {
          us = timeKernel(stream, (i) => wrappers[i % rot].run(q, kv, { out, stream }), {
            iters: batch * len >= 1 << 20 ? 20 : 100,
          });
        }
        const bytes = batch * len * HKV * D * 2 * kvBytes + 2 * batch * HQO * D * 2;
        const shape = `B${batch} L${len}`;
        const key = `${shape} D${D}`;
        if (dtype === "bf16" && !shuffle && !extra) bf16Us.set(key, us);
        const ratio = bf16Us.has(key) ? ` ${(us / bf16Us.get(key)!).toFixed(3)}x bf16;` : "";
        const s = wrappers[0].schedule!;
        add({
          op: `batchDecode ${dtype === "bf16" ? "bf16" : `bf16 q / ${dtype} kv`}`,
          shape: `${shape} H32/8 D${D} p16${shuffle ? " shuffled pages" : ""}${
            extra ? " " + JSON.stringify(extra) : ""
          }`,
          us,
          bytes,
          note: `${
            shuffle || extra
              ? `exploration${ratio}`
              : dtype === "bf16"
              ? TARGETS[shape]
              : `${ratio} target <= 0.6x bf16 time`
          } (split ${s.splitSize}, items ${s.numItems}${s.numLanes ? `, lanes ${s.numLanes}` : ""}${
            batch === 1 ? ", CUDA graph" : ""
          })`,
        });
        wrappers.forEach((w) => w.dispose());
        big?.dispose();
      }
    }
    // Plan host time at B = 256 (L 1024, page 16): median of many plans, performance.now, after 500
    // untimed plans (a serving loop plans every step: what counts is the optimized code's time; with no
    // warm-up the median moved 18-23 µs between runs with the tiers the JIT reached in 300 plans).
    if (env("FI_BENCH_DECODE_NO_PLAN") !== "1") {
      using w = new BatchDecodeWithPagedKvCache(ws);
      for (const len of [1024, 8192]) {
        const t = table(256, len, 1 << 30);
        for (const checkIndices of [true, false]) {
          const plan = () =>
            w.plan(t.indptr, t.indices, t.last, HQO, HKV, HEAD_DIM, PS, { qDtype: "bf16", stream, checkIndices });
          for (let i = 0; i < 500; i++) plan();
          const times: number[] = [];
          for (let i = 0; i < 1000; i++) {
            const t0 = performance.now();
            plan();
            times.push((performance.now() - t0) * 1e3);
          }
          times.sort((a, b) => a - b);
          add({
            op: `batchDecode plan (host)${checkIndices ? "" : ", checkIndices false"}`,
            shape: `B256 L${len} p16`,
            us: times[times.length >> 1],
            note: "host µs; target <= 20 µs",
          });
        }
        // Parts: the page-table check (the O(pages) index scan) and the scheduler alone.
        const parts: [string, () => void][] = [
          ["checkPageTable", () => checkPageTable("plan", t.indptr, t.indices, t.last, PS)],
          [
            "scheduleDecode",
            () =>
              scheduleDecode({ seqLens: lens, pageBase: t.indptr, ctasPerItem: 8, numSms: 132, ctasPerSm: 2 }, {
                items,
                mergeTable,
              }),
          ],
          // The native calls of a plan: wait for the staging buffer's last copy, upload, record.
          ["event synchronize", () => event.synchronize()],
          ["copyToDevice (pinned)", () => pinned.copyToDevice(ws.ptr, uploadBytes, stream)],
          ["event record", () => event.record(stream)],
        ];
        const lens = new Int32Array(256).fill(len);
        const items = new Int32Array(256 * 8), mergeTable = new Int32Array(512);
        const uploadBytes = 256 * 8 * 4 + 2048 * 4 + t.indices.length * 4;
        using pinned = new PinnedBuffer(uploadBytes);
        using event = new Event({ timing: false }).record(stream);
        for (const [name, f] of parts) {
          for (let i = 0; i < 200; i++) f();
          const t0 = performance.now();
          for (let i = 0; i < 1000; i++) f();
          add({
            op: `  plan part: ${name} (host)`,
            shape: name.startsWith("copy") ? `${(uploadBytes / 1024).toFixed(0)} KB` : `B256 L${len} p16`,
            us: performance.now() - t0,
            note: "host µs",
          });
        }
        stream.synchronize(); // the uploads are done before their pinned buffer goes
      }
      stream.synchronize();
    }
    return rows;
  },
};

/** Copies src's bytes into dst (both contiguous, same size) on the stream. */
function copyRows(dst: Tensor, src: Tensor, stream: Stream): void {
  check(native().fi_copy_async(dst.ptr, src.ptr, BigInt(src.nbytes), stream.handle), "copy");
}
