/** Norms, activations and RoPE at the shapes (bf16), rotating input sets to defeat L2. */
import { Tensor } from "../../src/runtime/tensor.ts";
import type { Stream } from "../../src/runtime/stream.ts";
import { fusedAddRmsnorm, rmsnorm } from "../../src/ops/norm.ts";
import { siluAndMul } from "../../src/ops/activation.ts";
import { applyRopePosIds, applyRopePosIdsInplace } from "../../src/ops/rope.ts";
import { timeKernel } from "../timing.ts";
import { DeviceBuffer } from "../../src/runtime/memory.ts";
import { check, native } from "../../src/runtime/library.ts";
import type { Row, Suite } from "./types.ts";

/** Enough copies of the inputs that one pass over all of them is several times the L2. */
function copiesFor(bytesPerSet: number): number {
  return Math.max(1, Math.min(8, Math.ceil((400 << 20) / bytesPerSet)));
}

function randomBf16(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  // Random bf16 bit patterns of moderate magnitude: sign, exponent 120..130, random mantissa.
  const raw = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    raw[i] = (Math.random() < 0.5 ? 0x8000 : 0) | ((120 + ((Math.random() * 10) | 0)) << 7) |
      ((Math.random() * 128) | 0);
  }
  return Tensor.fromRaw(raw, shape, "bf16");
}

export const opsSuite: Suite = {
  name: "ops",
  run(stream: Stream): Row[] {
    const rows: Row[] = [];
    // What a plain device copy reaches at the byte counts of the large shapes: the ceiling at that size.
    for (const mib of [32, 48, 128]) {
      const bytes = mib << 20;
      const n = copiesFor(2 * bytes);
      const bufs = Array.from({ length: 2 * n }, () => new DeviceBuffer(bytes));
      rows.push({
        op: "device copy (cudaMemcpyAsync)",
        shape: `${mib} MiB`,
        us: timeKernel(
          stream,
          (i) =>
            check(
              native().fi_copy_async(bufs[2 * (i % n)].ptr, bufs[2 * (i % n) + 1].ptr, BigInt(bytes), stream.handle),
              "copy",
            ),
        ),
        bytes: 2 * bytes,
        note: "the ceiling at this size (read + write)",
      });
      bufs.forEach((b) => b.dispose());
    }
    for (const [t, h] of [[1, 4096], [128, 4096], [2048, 8192], [16384, 4096]]) {
      const bytes = t * h * 2;
      const n = copiesFor(4 * bytes);
      const xs = Array.from({ length: n }, () => randomBf16([t, h]));
      const rs = Array.from({ length: n }, () => randomBf16([t, h]));
      const outs = Array.from({ length: n }, () => Tensor.empty([t, h], "bf16"));
      using w = randomBf16([h]);
      const shape = `T${t} H${h}`;
      rows.push({
        op: "rmsnorm bf16",
        shape,
        us: timeKernel(stream, (i) => rmsnorm(xs[i % n], w, { out: outs[i % n], stream })),
        bytes: 2 * bytes,
        note: "target >= 2800 GB/s at the two large shapes",
      });
      rows.push({
        op: "fusedAddRmsnorm bf16",
        shape,
        us: timeKernel(stream, (i) => fusedAddRmsnorm(xs[i % n], rs[i % n], w, { stream })),
        bytes: 4 * bytes,
        note: "target >= 2800 GB/s at the two large shapes",
      });
      [...xs, ...rs, ...outs].forEach((x) => x.dispose());
      const gs = Array.from({ length: copiesFor(3 * bytes) }, () => randomBf16([t, 2 * h]));
      const os = gs.map(() => Tensor.empty([t, h], "bf16"));
      rows.push({
        op: "siluAndMul bf16",
        shape: `T${t} d${h}`,
        us: timeKernel(stream, (i) => siluAndMul(gs[i % gs.length], { out: os[i % gs.length], stream })),
        bytes: 3 * bytes,
        note: "target >= 2800 GB/s at the two large shapes",
      });
      [...gs, ...os].forEach((x) => x.dispose());
    }
    // RoPE: 128 requests of 1024 tokens, 32 q / 8 k heads, head dim 128 (1.34 GB in, 1.34 GB out).
    const nnz = 128 * 1024, d = 128;
    using q = randomBf16([nnz, 32, d]);
    using k = randomBf16([nnz, 8, d]);
    using qo = Tensor.empty([nnz, 32, d], "bf16");
    using ko = Tensor.empty([nnz, 8, d], "bf16");
    const pos = new Int32Array(nnz).map((_, i) => i % 1024);
    using posIds = Tensor.fromRaw(pos, [nnz], "i32");
    const ropeBytes = 2 * nnz * 40 * d * 2;
    rows.push({
      op: "applyRopePosIds bf16",
      shape: `nnz ${nnz} H32/8 D128`,
      us: timeKernel(stream, () => applyRopePosIds(q, k, posIds, { qOut: qo, kOut: ko, stream }), {
        batches: 7,
        batch: 4,
      }),
      bytes: ropeBytes,
      note: "target >= 2800 GB/s",
    });
    rows.push({
      op: "applyRopePosIdsInplace bf16",
      shape: `nnz ${nnz} H32/8 D128`,
      us: timeKernel(stream, () => applyRopePosIdsInplace(q, k, posIds, { stream }), { batches: 7, batch: 4 }),
      bytes: ropeBytes,
      note: "target >= 2800 GB/s",
    });
    return rows;
  },
};
