/**
 * Merging attention states: a state is a normalized partial output v with its base-2 log-sum-exp s
 * over some keys; merging gives the attention over the union of those keys (cascade attention,
 * split KV). As FlashInfer's merge_state / merge_state_in_place / merge_states.
 */
import { expectRank, expectShape, expectTensor } from "../runtime/check.ts";
import { type DType, DTYPE_CODE } from "../runtime/dtype.ts";
import { invalid, show } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";

const HALF: readonly DType[] = ["f16", "bf16"];

function expectState(
  op: string,
  vArg: string,
  sArg: string,
  v: Tensor,
  s: Tensor,
  dtype?: DType,
): [number, number, number] {
  expectTensor(op, vArg, v, dtype ? [dtype] : HALF);
  expectRank(op, vArg, v, 3);
  const [n, h, d] = v.shape;
  if (d % 4 !== 0) invalid(op, vArg, "of a head dim divisible by 4", `=shape ${show(v.shape)}`);
  if (!v.isContiguous()) invalid(op, vArg, "contiguous", `=strides ${show(v.strides)}`);
  expectTensor(op, sArg, s, ["f32"]);
  expectShape(op, sArg, s, [n, h]);
  if (!s.isContiguous()) invalid(op, sArg, "contiguous", `=strides ${show(s.strides)}`);
  return [n, h, d];
}

function merge(
  mode: number,
  v: Tensor,
  s: Tensor,
  vb: Tensor | undefined,
  sb: Tensor | undefined,
  vo: Tensor,
  so: Tensor | undefined,
  mask: Tensor | undefined,
  rows: number,
  states: number,
  heads: number,
  d: number,
  stream: StreamLike,
  op: string,
): void {
  check(
    native().fi_merge_states(
      mode,
      v.ptr,
      s.ptr,
      vb?.ptr ?? 0n,
      sb?.ptr ?? 0n,
      vo.ptr,
      so?.ptr ?? 0n,
      mask?.ptr ?? 0n,
      rows,
      states,
      heads,
      d,
      DTYPE_CODE[v.dtype],
      streamHandle(stream),
    ),
    op,
  );
}

export interface MergeOutputOptions {
  /** Outputs [n, H, D] and [n, H] float32, allocated when omitted. */
  vOut?: Tensor;
  sOut?: Tensor;
  stream?: StreamLike;
}

function outputs(
  op: string,
  o: MergeOutputOptions,
  dtype: DType,
  n: number,
  h: number,
  d: number,
): { v: Tensor; s: Tensor } {
  const v = o.vOut ?? Tensor.empty([n, h, d], dtype), s = o.sOut ?? Tensor.empty([n, h], "f32");
  expectTensor(op, "vOut", v, [dtype]);
  expectShape(op, "vOut", v, [n, h, d]);
  if (!v.isContiguous()) invalid(op, "vOut", "contiguous", `=strides ${show(v.strides)}`);
  expectTensor(op, "sOut", s, ["f32"]);
  expectShape(op, "sOut", s, [n, h]);
  if (!s.isContiguous()) invalid(op, "sOut", "contiguous", `=strides ${show(s.strides)}`);
  return { v, s };
}

/** Merges (vA, sA) and (vB, sB), [n, H, D] and [n, H] float32, into new tensors. */
export function mergeState(
  vA: Tensor,
  sA: Tensor,
  vB: Tensor,
  sB: Tensor,
  options: MergeOutputOptions = {},
): { v: Tensor; s: Tensor } {
  const op = "merge states";
  const [n, h, d] = expectState(op, "vA", "sA", vA, sA);
  expectState(op, "vB", "sB", vB, sB, vA.dtype);
  expectShape(op, "vB", vB, vA.shape);
  const { v, s } = outputs(op, options, vA.dtype, n, h, d);
  merge(1, vA, sA, vB, sB, v, s, undefined, n, 2, h, d, options.stream, op);
  return { v, s };
}

/** Merges (vOther, sOther) into (v, s) in place; rows whose mask [n] (u8) is 0 are left alone. */
export function mergeStateInPlace(
  v: Tensor,
  s: Tensor,
  vOther: Tensor,
  sOther: Tensor,
  options: { mask?: Tensor; stream?: StreamLike } = {},
): void {
  const op = "merge states in place";
  const [n, h, d] = expectState(op, "v", "s", v, s);
  expectState(op, "vOther", "sOther", vOther, sOther, v.dtype);
  expectShape(op, "vOther", vOther, v.shape);
  if (options.mask !== undefined) {
    expectTensor(op, "mask", options.mask, ["u8"]);
    expectShape(op, "mask", options.mask, [n]);
  }
  merge(1, v, s, vOther, sOther, v, s, options.mask, n, 2, h, d, options.stream, op);
}

/** Merges the S states of each row: v [n, S, H, D], s [n, S, H] float32 -> v [n, H, D], s [n, H]. */
export function mergeStates(v: Tensor, s: Tensor, options: MergeOutputOptions = {}): { v: Tensor; s: Tensor } {
  const op = "merge states";
  expectTensor(op, "v", v, HALF);
  expectRank(op, "v", v, 4);
  const [n, states, h, d] = v.shape;
  if (d % 4 !== 0) invalid(op, "v", "of a head dim divisible by 4", `=shape ${show(v.shape)}`);
  if (!v.isContiguous()) invalid(op, "v", "contiguous", `=strides ${show(v.strides)}`);
  expectTensor(op, "s", s, ["f32"]);
  expectShape(op, "s", s, [n, states, h]);
  if (!s.isContiguous()) invalid(op, "s", "contiguous", `=strides ${show(s.strides)}`);
  const { v: vo, s: so } = outputs(op, options, v.dtype, n, h, d);
  merge(0, v, s, undefined, undefined, vo, so, undefined, n, states, h, d, options.stream, op);
  return { v: vo, s: so };
}
