/** What a benchmark suite returns: one row per (operation, shape). */
import type { Stream } from "../../src/runtime/stream.ts";

export interface Row {
  op: string;
  shape: string;
  /** Median microseconds. */
  us: number;
  /** The fewest bytes the op must move (inputs read once, outputs written once), for GB/s. */
  bytes?: number;
  /** Floating-point operations, for TFLOP/s. */
  flops?: number;
  /** A target or peer figure to print beside it, e.g. "target >= 2800 GB/s". */
  note?: string;
}

export interface Suite {
  name: string;
  run(stream: Stream): Row[];
}
