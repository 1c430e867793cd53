/** RMSNorm, fused add + RMSNorm, their Gemma variants, and LayerNorm (FlashInfer's semantics). */
import { expectFinite, expectSameDtype, expectSameRows, expectShape, expectTensor, rows } from "../runtime/check.ts";
import { type DType, DTYPE_CODE } from "../runtime/dtype.ts";
import { invalid } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";

const HALF: readonly DType[] = ["f16", "bf16"];

export interface NormOptions {
  /** Added to the mean square (variance for LayerNorm) before the square root. Default 1e-6. */
  eps?: number;
  /** Where to write; allocated when omitted. May be `input` itself. */
  out?: Tensor;
  stream?: StreamLike;
}

function outputFor(op: string, input: Tensor, out: Tensor | undefined) {
  if (out === undefined) return Tensor.empty(input.shape, input.dtype);
  expectTensor(op, "out", out);
  expectSameDtype(op, "out", out, input, "input");
  expectShape(op, "out", out, input.shape);
  return out;
}

function normRows(op: string, kind: number, input: Tensor, weight: Tensor, options: NormOptions): Tensor {
  expectTensor(op, "input", input, HALF);
  expectTensor(op, "weight", weight, HALF);
  const x = rows(op, "input", input);
  expectSameDtype(op, "weight", weight, input, "input");
  expectShape(op, "weight", weight, [x.cols]);
  const eps = options.eps ?? 1e-6;
  expectFinite(op, "eps", eps, 0);
  const out = outputFor(op, input, options.out);
  const o = rows(op, "out", out);
  check(
    native().fi_rmsnorm(
      out.ptr,
      o.stride,
      input.ptr,
      x.stride,
      weight.ptr,
      x.rows,
      x.cols,
      eps,
      kind,
      DTYPE_CODE[input.dtype],
      streamHandle(options.stream),
    ),
    op,
  );
  return out;
}

/** out = input / sqrt(mean(input²) + eps) * weight, over the last dimension. */
export function rmsnorm(input: Tensor, weight: Tensor, options: NormOptions = {}): Tensor {
  return normRows("rmsnorm", 0, input, weight, options);
}

/** Gemma's RMSNorm: out = input / sqrt(mean(input²) + eps) * (1 + weight). */
export function gemmaRmsnorm(input: Tensor, weight: Tensor, options: NormOptions = {}): Tensor {
  return normRows("gemmaRmsnorm", 1, input, weight, options);
}

export interface FusedAddNormOptions {
  eps?: number;
  stream?: StreamLike;
}

function fusedAdd(
  op: string,
  kind: number,
  input: Tensor,
  residual: Tensor,
  weight: Tensor,
  options: FusedAddNormOptions,
): void {
  expectTensor(op, "input", input, HALF);
  expectTensor(op, "residual", residual, HALF);
  expectTensor(op, "weight", weight, HALF);
  const x = rows(op, "input", input);
  const r = rows(op, "residual", residual);
  expectSameDtype(op, "residual", residual, input, "input");
  expectSameDtype(op, "weight", weight, input, "input");
  expectShape(op, "residual", residual, input.shape);
  expectShape(op, "weight", weight, [x.cols]);
  const eps = options.eps ?? 1e-6;
  expectFinite(op, "eps", eps, 0);
  check(
    native().fi_fused_add_rmsnorm(
      input.ptr,
      x.stride,
      residual.ptr,
      r.stride,
      weight.ptr,
      x.rows,
      x.cols,
      eps,
      kind,
      DTYPE_CODE[input.dtype],
      streamHandle(options.stream),
    ),
    op,
  );
}

/**
 * In place: residual += input; input = rmsnorm(residual) * weight. The norm uses the float sum, as
 * FlashInfer does (rows wider than 32768 bf16 elements normalize the stored, rounded sum).
 */
export function fusedAddRmsnorm(
  input: Tensor,
  residual: Tensor,
  weight: Tensor,
  options: FusedAddNormOptions = {},
): void {
  fusedAdd("fusedAddRmsnorm", 0, input, residual, weight, options);
}

/** In place: residual += input; input = rmsnorm(residual) * (1 + weight). */
export function gemmaFusedAddRmsnorm(
  input: Tensor,
  residual: Tensor,
  weight: Tensor,
  options: FusedAddNormOptions = {},
): void {
  fusedAdd("gemmaFusedAddRmsnorm", 1, input, residual, weight, options);
}

/**
 * out = (input - mean) / sqrt(var + eps) * gamma + beta over the last dimension. gamma and beta are
 * f32 (as in FlashInfer) or of the input's dtype.
 */
export function layernorm(input: Tensor, gamma: Tensor, beta: Tensor, options: NormOptions = {}): Tensor {
  const op = "layernorm";
  expectTensor(op, "input", input, HALF);
  const x = rows(op, "input", input);
  const wDtypes: DType[] = ["f32", input.dtype];
  expectTensor(op, "gamma", gamma, wDtypes);
  expectTensor(op, "beta", beta, wDtypes);
  expectSameDtype(op, "beta", beta, gamma, "gamma");
  expectShape(op, "gamma", gamma, [x.cols]);
  expectShape(op, "beta", beta, [x.cols]);
  if (!gamma.isContiguous() || !beta.isContiguous()) invalid(op, "gamma", "contiguous", "=a strided view");
  const eps = options.eps ?? 1e-6;
  expectFinite(op, "eps", eps, 0);
  const out = outputFor(op, input, options.out);
  const o = rows(op, "out", out);
  expectSameRows(op, "out", out, input, "input");
  check(
    native().fi_layernorm(
      out.ptr,
      o.stride,
      input.ptr,
      x.stride,
      gamma.ptr,
      beta.ptr,
      x.rows,
      x.cols,
      eps,
      DTYPE_CODE[input.dtype],
      DTYPE_CODE[gamma.dtype],
      streamHandle(options.stream),
    ),
    op,
  );
  return out;
}
