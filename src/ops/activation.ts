/** Gated activations: act(x[..., :d]) * x[..., d:], FlashInfer's silu_and_mul and friends. */
import { expectSameDtype, expectShape, expectTensor, rows } from "../runtime/check.ts";
import { type DType, DTYPE_CODE } from "../runtime/dtype.ts";
import { invalid } from "../runtime/errors.ts";
import { check, native } from "../runtime/library.ts";
import { streamHandle, type StreamLike } from "../runtime/stream.ts";
import { Tensor } from "../runtime/tensor.ts";

const HALF: readonly DType[] = ["f16", "bf16"];

export interface ActivationOptions {
  /** Where to write [..., d]; allocated when omitted. */
  out?: Tensor;
  stream?: StreamLike;
}

function actAndMul(op: string, kind: number, input: Tensor, options: ActivationOptions): Tensor {
  expectTensor(op, "input", input, HALF);
  const x = rows(op, "input", input);
  if (x.cols % 2 !== 0) invalid(op, "input", "of even size in its last dimension", x.cols);
  const d = x.cols / 2;
  const outShape = [...input.shape.slice(0, -1), d];
  let out = options.out;
  if (out === undefined) out = Tensor.empty(outShape, input.dtype);
  else {
    expectTensor(op, "out", out);
    expectSameDtype(op, "out", out, input, "input");
    expectShape(op, "out", out, outShape);
  }
  const o = rows(op, "out", out);
  check(
    native().fi_act_and_mul(
      out.ptr,
      o.stride,
      input.ptr,
      x.stride,
      x.rows,
      d,
      kind,
      DTYPE_CODE[input.dtype],
      streamHandle(options.stream),
    ),
    op,
  );
  return out;
}

/** silu(x[..., :d]) * x[..., d:] */
export function siluAndMul(input: Tensor, options: ActivationOptions = {}): Tensor {
  return actAndMul("siluAndMul", 0, input, options);
}

/** gelu(x[..., :d]) * x[..., d:], with the exact (erf) GELU. */
export function geluAndMul(input: Tensor, options: ActivationOptions = {}): Tensor {
  return actAndMul("geluAndMul", 1, input, options);
}

/** gelu_tanh(x[..., :d]) * x[..., d:], with the tanh approximation of GELU. */
export function geluTanhAndMul(input: Tensor, options: ActivationOptions = {}): Tensor {
  return actAndMul("geluTanhAndMul", 2, input, options);
}
