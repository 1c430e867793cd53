/** Kernel timing with CUDA events: warm-up, then the median of many runs; and the copy ceiling. */
import { Event, type Stream } from "../src/runtime/stream.ts";
import { check, native } from "../src/runtime/library.ts";
import { DeviceBuffer } from "../src/runtime/memory.ts";

export interface TimeOptions {
  warmup?: number;
  /** Timed batches; the median batch is reported. */
  batches?: number;
  /** Back-to-back calls per batch, between one pair of events. */
  batch?: number;
  /** Total timed calls, as an alternative to `batches` (split into batches of `batch`). */
  iters?: number;
}

/**
 * Median microseconds per call of `fn` (which queues work on `stream`): calls run back to back in
 * batches between one pair of events, as they do inside a model step, and the median batch's mean is
 * reported. (An event between every two kernels would add its own gap to each measurement.)
 */
export function timeKernel(stream: Stream, fn: (iter: number) => void, options: TimeOptions = {}): number {
  const warmup = options.warmup ?? 10, batch = options.batch ?? 10;
  const batches = options.batches ?? (options.iters ? Math.max(3, Math.round(options.iters / batch)) : 15);
  let iter = 0;
  for (let i = 0; i < warmup; i++) fn(iter++);
  const start = new Event(), end = new Event();
  const times: number[] = [];
  for (let b = 0; b < batches; b++) {
    start.record(stream);
    for (let i = 0; i < batch; i++) fn(iter++);
    end.record(stream);
    end.synchronize();
    times.push((end.elapsedSince(start) * 1e3) / batch);
  }
  start.dispose();
  end.dispose();
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
    batches: 5,
    batch: 4,
  });
  return (2 * bytes) / us / 1e3;
}
