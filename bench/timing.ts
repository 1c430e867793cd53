/** Kernel timing with CUDA events: warm-up, then the median of many runs; and the copy ceiling. */
import { Event, type Stream } from "../src/runtime/stream.ts";
import { check, native } from "../src/runtime/library.ts";
import { DeviceBuffer } from "../src/runtime/memory.ts";

export interface TimeOptions {
  warmup?: number;
  iters?: number;
}

/** Median microseconds of `fn` (which queues work on `stream`), timed by events around each call. */
export function timeKernel(stream: Stream, fn: (iter: number) => void, options: TimeOptions = {}): number {
  const warmup = options.warmup ?? 10, iters = options.iters ?? 50;
  for (let i = 0; i < warmup; i++) fn(i);
  const events = Array.from({ length: iters + 1 }, () => new Event());
  // Back-to-back events: each interval is one call; no host gap sits inside a timed interval as
  // long as the host queues faster than the GPU runs.
  events[0].record(stream);
  for (let i = 0; i < iters; i++) {
    fn(i);
    events[i + 1].record(stream);
  }
  events[iters].synchronize();
  const times: number[] = [];
  for (let i = 0; i < iters; i++) times.push(events[i + 1].elapsedSince(events[i]) * 1e3);
  events.forEach((e) => e.dispose());
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (1 GiB each way). */
export function copyBandwidth(stream: Stream): number {
  const bytes = 1 << 30;
  using a = new DeviceBuffer(bytes);
  using b = new DeviceBuffer(bytes);
  const lib = native();
  const us = timeKernel(stream, () => check(lib.fi_copy_async(b.ptr, a.ptr, BigInt(bytes), stream.handle), "copy"), {
    warmup: 3,
    iters: 20,
  });
  return (2 * bytes) / us / 1e3;
}
