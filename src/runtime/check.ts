/**
 * Argument checks shared by every op, run before any native call. Each failure throws the standard
 * message: `Cannot <op> as '<arg>' must be <expectation>: received <value>`.
 */
import type { DType } from "./dtype.ts";
import { invalid, show } from "./errors.ts";
import { Tensor } from "./tensor.ts";

/** A live Tensor of one of `dtypes` (any dtype when omitted). */
export function expectTensor(op: string, arg: string, t: unknown, dtypes?: readonly DType[]): asserts t is Tensor {
  if (!(t instanceof Tensor)) invalid(op, arg, "a Tensor", t);
  if (t.disposed) invalid(op, arg, "a live tensor", `=a disposed ${t}`);
  if (dtypes && !dtypes.includes(t.dtype)) invalid(op, arg, `of dtype ${dtypes.join(" or ")}`, t.dtype);
}

export function expectRank(op: string, arg: string, t: Tensor, min: number, max = min): void {
  if (t.rank < min || t.rank > max) {
    const want = min === max ? `${min}-dimensional` : `${min}- to ${max}-dimensional`;
    invalid(op, arg, want, `=shape ${show(t.shape)}`);
  }
}

/** Dimension `dim` of `t` equals `size`; `what` names the size in the message. */
export function expectDim(op: string, arg: string, t: Tensor, dim: number, size: number, what: string): void {
  if (t.shape[dim] !== size) {
    invalid(op, arg, `of size ${size} (${what}) in dimension ${dim}`, `=shape ${show(t.shape)}`);
  }
}

export function expectSameDtype(op: string, arg: string, t: Tensor, other: Tensor, otherArg: string): void {
  if (t.dtype !== other.dtype) invalid(op, arg, `of the dtype of '${otherArg}' (${other.dtype})`, t.dtype);
}

export function expectShape(op: string, arg: string, t: Tensor, shape: readonly number[]): void {
  if (t.rank !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    invalid(op, arg, `of shape ${show(shape)}`, `=shape ${show(t.shape)}`);
  }
}

export function expectFinite(op: string, arg: string, value: unknown, min = -Infinity): asserts value is number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < min) {
    invalid(op, arg, min === -Infinity ? "a finite number" : `a finite number >= ${min}`, value);
  }
}

export function expectPositive(op: string, arg: string, value: unknown): asserts value is number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) invalid(op, arg, "a positive number", value);
}

/**
 * Rows of a tensor whose last dimension is contiguous and whose leading dimensions collapse into one:
 * the layout every row-wise kernel takes. Returns the row count, row length and row stride.
 */
export function rows(op: string, arg: string, t: Tensor): { rows: number; cols: number; stride: number } {
  const r = t.rank;
  if (r === 0) invalid(op, arg, "at least 1-dimensional", `=shape ${show(t.shape)}`);
  const cols = t.shape[r - 1];
  if (t.strides[r - 1] !== 1 && cols > 1) {
    invalid(op, arg, "contiguous in its last dimension", `=strides ${show(t.strides)}`);
  }
  if (r === 1) return { rows: 1, cols, stride: cols };
  for (let i = 0; i < r - 2; i++) {
    if (t.shape[i] > 1 && t.strides[i] !== t.strides[i + 1] * t.shape[i + 1]) {
      invalid(
        op,
        arg,
        "collapsible into rows (leading dimensions contiguous with each other)",
        `=strides ${show(t.strides)}`,
      );
    }
  }
  let n = 1;
  for (let i = 0; i < r - 1; i++) n *= t.shape[i];
  return { rows: n, cols, stride: t.strides[r - 2] };
}

/** The leading (all but last) dimensions of two tensors agree. */
export function expectSameRows(op: string, arg: string, t: Tensor, other: Tensor, otherArg: string): void {
  const a = t.shape.slice(0, -1), b = other.shape.slice(0, -1);
  if (a.length !== b.length || a.some((d, i) => d !== b[i])) {
    invalid(op, arg, `of the leading shape of '${otherArg}' ${show(b)}`, `=shape ${show(t.shape)}`);
  }
}

/**
 * The vector width (elements) the native side will use: the widest of 16 / elemBytes, 8, 4, 2, 1
 * that divides every address and element count. Mirrors fi::vector_width in cuda/src/dispatch.h.
 */
export function vectorWidth(elemBytes: number, ptrs: readonly bigint[], counts: readonly number[]): number {
  let vec = 16 / elemBytes;
  while (vec > 1) {
    const align = BigInt(vec * elemBytes);
    if (ptrs.every((p) => p % align === 0n) && counts.every((n) => n % vec === 0)) break;
    vec /= 2;
  }
  return vec;
}
