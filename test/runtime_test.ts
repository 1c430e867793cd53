// Runtime on the GPU: tensors, views, copies, pinned memory, streams, events, graphs, disposal.
import { Device } from "../src/runtime/device.ts";
import { copyHostToDevice, PinnedBuffer } from "../src/runtime/memory.ts";
import { CudaGraph, Event, Stream } from "../src/runtime/stream.ts";
import { Tensor } from "../src/runtime/tensor.ts";
import { encode, roundTo } from "../src/runtime/dtype.ts";
import { rmsnorm } from "../src/ops/norm.ts";
import { assert, assertThrowsCode, gpuTest } from "./harness.ts";
import { makeRng, randn } from "./reference/random.ts";

gpuTest("runtime: device properties", () => {
  const d = Device.current();
  assert.ok(d.smCount > 0 && d.totalMemory > 0 && d.name.length > 0, JSON.stringify(d));
  assert.ok(d.computeCapability[0] >= 7);
  const mem = Device.memoryInfo();
  assert.ok(mem.free > 0 && mem.free <= mem.total);
});

gpuTest("runtime: tensors round-trip every dtype", () => {
  const rng = makeRng();
  for (const dt of ["f32", "f16", "bf16", "e4m3", "e5m2"] as const) {
    const values = roundTo(dt, randn(rng, 1000));
    using t = Tensor.fromArray(values, [10, 100], dt);
    assert.deepEqual(Array.from(t.toArray()), Array.from(values), dt);
  }
  for (const dt of ["i32", "i64", "u8"] as const) {
    const values = Array.from({ length: 77 }, (_, i) => (i * 7) % 200);
    using t = Tensor.fromArray(values, [77], dt);
    assert.deepEqual(Array.from(t.toArray()), values, dt);
  }
});

gpuTest("runtime: views (narrow, select, reshape, contiguous)", () => {
  const values = Array.from({ length: 24 }, (_, i) => i);
  using t = Tensor.fromArray(values, [4, 6], "f32");
  assert.deepEqual(Array.from(t.narrow(0, 1, 2).toArray()), values.slice(6, 18));
  assert.deepEqual(Array.from(t.narrow(1, 2, 3).toArray()), [2, 3, 4, 8, 9, 10, 14, 15, 16, 20, 21, 22]);
  assert.deepEqual(Array.from(t.select(0, 3).toArray()), values.slice(18));
  assert.deepEqual(t.reshape([2, 12]).shape, [2, 12]);
  const view = t.narrow(0, 1, 1);
  t.dispose();
  assert.equal(view.disposed, true);
  assertThrowsCode(() => view.ptr, "DISPOSED", /disposed/);
});

gpuTest("runtime: pinned buffer upload, stream and event ordering", async () => {
  using stream = new Stream();
  using pinned = new PinnedBuffer(4096);
  const f = new Float32Array(pinned.bytes.buffer, pinned.bytes.byteOffset, 1024);
  for (let i = 0; i < 1024; i++) f[i] = i * 0.5;
  using dst = Tensor.empty([1024], "f32");
  pinned.copyToDevice(dst.ptr, 4096, stream);
  const start = new Event().record(stream);
  const end = new Event().record(stream);
  await stream.synchronizeAsync();
  assert.ok(stream.query());
  assert.ok(end.elapsedSince(start) >= 0);
  // An ordering-only event (what plans record every step) syncs, but measures no time.
  using order = new Event({ timing: false }).record(stream);
  order.synchronize();
  assertThrowsCode(
    () => order.elapsedSince(start),
    "INVALID_ARGUMENT",
    /'this event' must be an Event made with timing/,
  );
  start.dispose();
  end.dispose();
  assert.deepEqual(Array.from(dst.toArray()), Array.from(f));
  pinned.dispose();
  assertThrowsCode(() => pinned.bytes, "DISPOSED");
});

gpuTest("runtime: CUDA graph capture and replay", () => {
  using stream = new Stream();
  const rng = makeRng();
  const x = roundTo("bf16", randn(rng, 8 * 256));
  using input = Tensor.fromArray(x, [8, 256], "bf16");
  using w = Tensor.fromArray(roundTo("bf16", randn(rng, 256)), [256], "bf16");
  using eager = rmsnorm(input, w, { stream });
  using out = Tensor.empty([8, 256], "bf16");
  out.fillBytes(0xff, stream);
  using graph = CudaGraph.capture(stream, () => rmsnorm(input, w, { out, stream }));
  graph.replay(stream);
  stream.synchronize();
  assert.deepEqual(Array.from(out.toArray(stream)), Array.from(eager.toArray(stream)));
  // New input values at the same address: the replay computes on them.
  copyHostToDevice(input.ptr, encode("bf16", randn(rng, 8 * 256)));
  graph.replay(stream);
  using eager2 = rmsnorm(input, w, { stream });
  assert.deepEqual(Array.from(out.toArray(stream)), Array.from(eager2.toArray(stream)));
  assert.notDeepEqual(Array.from(eager2.toArray(stream)), Array.from(eager.toArray(stream)));
  assertThrowsCode(() => CudaGraph.capture(Stream.default, () => {}), "INVALID_ARGUMENT", /stream/);
});

gpuTest("runtime: dispose is idempotent and use after dispose throws", () => {
  const t = Tensor.empty([16], "f16");
  t.dispose();
  t.dispose();
  assertThrowsCode(() => t.toArray(), "DISPOSED", /Tensor\(f16, \[16\]\)/);
  const s = new Stream();
  s.dispose();
  s.dispose();
  assertThrowsCode(() => s.synchronize(), "DISPOSED", /stream/);
});
