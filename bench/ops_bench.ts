// `deno bench` suite of the public ops API: each iteration is one call plus a stream sync.
import { Device } from "../src/runtime/device.ts";
import { loadLibrary } from "../src/runtime/library.ts";
import { Stream } from "../src/runtime/stream.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { fusedAddRmsnorm, rmsnorm } from "../src/ops/norm.ts";
import { siluAndMul } from "../src/ops/activation.ts";
import { applyRopePosIdsInplace } from "../src/ops/rope.ts";

let ready = false;
try {
  loadLibrary({ buildIfMissing: false });
  ready = Device.count() > 0;
} catch {
  ready = false;
}
if (!ready) console.log("ops_bench: skipped (no native library or no GPU)");

if (ready) {
  const stream = new Stream();
  for (const [t, hidden] of [[1, 4096], [2048, 8192]]) {
    const x = Tensor.empty([t, hidden], "bf16").fillBytes(0x3c);
    const r = Tensor.empty([t, hidden], "bf16").fillBytes(0x3c);
    const w = Tensor.empty([hidden], "bf16").fillBytes(0x3c);
    const out = Tensor.empty([t, hidden], "bf16");
    const g = Tensor.empty([t, 2 * hidden], "bf16").fillBytes(0x3c);
    Deno.bench(`rmsnorm bf16 ${t}x${hidden}`, { group: `norm ${t}x${hidden}` }, () => {
      rmsnorm(x, w, { out, stream });
      stream.synchronize();
    });
    Deno.bench(`fusedAddRmsnorm bf16 ${t}x${hidden}`, { group: `norm ${t}x${hidden}` }, () => {
      fusedAddRmsnorm(x, r, w, { stream });
      stream.synchronize();
    });
    Deno.bench(`siluAndMul bf16 ${t}x${hidden}`, () => {
      siluAndMul(g, { out, stream });
      stream.synchronize();
    });
  }
  const q = Tensor.empty([4096, 32, 128], "bf16").fillBytes(0x3c);
  const k = Tensor.empty([4096, 8, 128], "bf16").fillBytes(0x3c);
  const pos = Tensor.fromArray(Array.from({ length: 4096 }, (_, i) => i), [4096], "i32");
  Deno.bench("applyRopePosIdsInplace bf16 4096 tokens 32/8 heads D128", () => {
    applyRopePosIdsInplace(q, k, pos, { stream });
    stream.synchronize();
  });
}
