/**
 * Host overhead of one op call, on Deno or Bun: the median over batches of calls, with the stream
 * drained between batches so the GPU queue never pushes back. Splits the cost into the FFI call
 * itself (a trivial native entry), validation (op call minus the bare native call with the same
 * arguments) and CUDA's own launch (the bare native call minus the trivial one).
 *
 *   deno run -A bench/overhead.ts      bun bench/overhead.ts
 */
import { Stream } from "../src/runtime/stream.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { native } from "../src/runtime/library.ts";
import { rmsnorm } from "../src/ops/norm.ts";
import { siluAndMul } from "../src/ops/activation.ts";
import { applyRopePosIdsInplace } from "../src/ops/rope.ts";
import { Device } from "../src/runtime/device.ts";
import { runtimeName } from "../src/runtime/platform.ts";

Device.require();
const stream = new Stream();

function perCallUs(fn: () => void, batches = 200, batch = 100): number {
  const samples: number[] = [];
  for (let b = 0; b < batches + 20; b++) {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) fn();
    const t1 = performance.now();
    stream.synchronize();
    if (b >= 20) samples.push(((t1 - t0) * 1e3) / batch);
  }
  samples.sort((a, b) => a - b);
  return samples[samples.length >> 1];
}

const x = Tensor.empty([1, 4096], "bf16").fillBytes(0x3c);
const w = Tensor.empty([4096], "bf16").fillBytes(0x3c);
const out = Tensor.empty([1, 4096], "bf16");
const g = Tensor.empty([1, 8192], "bf16").fillBytes(0x3c);
const q = Tensor.empty([1, 32, 128], "bf16").fillBytes(0x3c);
const k = Tensor.empty([1, 8, 128], "bf16").fillBytes(0x3c);
const pos = Tensor.fromArray([5], [1], "i32");
const lib = native();
const h = stream.handle;
const [xp, wp, op] = [x.ptr, w.ptr, out.ptr];

const rows = {
  "ffi: trivial native call (fi_abi_version)": perCallUs(() => lib.fi_abi_version()),
  "native fi_rmsnorm (FFI + CUDA launch, no validation)": perCallUs(() =>
    lib.fi_rmsnorm(op, 4096n, xp, 4096n, wp, 1, 4096, 1e-6, 0, 2, h)
  ),
  "rmsnorm (public API)": perCallUs(() => rmsnorm(x, w, { out, stream })),
  "siluAndMul (public API)": perCallUs(() => siluAndMul(g, { out, stream })),
  "applyRopePosIdsInplace (public API)": perCallUs(() => applyRopePosIdsInplace(q, k, pos, { stream })),
};
const launch = rows["native fi_rmsnorm (FFI + CUDA launch, no validation)"] -
  rows["ffi: trivial native call (fi_abi_version)"];
console.log(`host overhead per call on ${runtimeName}, ${Device.current().name} (median of 200 batches of 100 calls):`);
for (const [name, us] of Object.entries(rows)) console.log(`  ${name.padEnd(56)} ${us.toFixed(3)} µs`);
console.log(`  ${"CUDA's own launch cost (native call - trivial call)".padEnd(56)} ${launch.toFixed(3)} µs`);
for (
  const name of ["rmsnorm (public API)", "siluAndMul (public API)", "applyRopePosIdsInplace (public API)"] as const
) {
  console.log(
    `  ${(name.replace(" (public API)", "") + ": validation + FFI (call - CUDA launch)").padEnd(56)} ${
      (rows[name] - launch).toFixed(3)
    } µs`,
  );
}
