/**
 * flashinfer-ts: FlashInfer's GPU kernels for LLM serving, for Deno and Bun.
 *
 * ```ts
 * import { Tensor, rmsnorm } from "@flashinfer-ts/core";
 * using x = Tensor.fromArray(values, [tokens, hidden], "bf16");
 * using w = Tensor.fromArray(weights, [hidden], "bf16");
 * using y = rmsnorm(x, w, { eps: 1e-6 });
 * console.log(y.toArray());
 * ```
 * @module
 */
export { type ErrorCode, FlashInferError } from "./src/runtime/errors.ts";
export { decode, type DType, DTYPES, encode, roundTo } from "./src/runtime/dtype.ts";
export { ABI_VERSION } from "./src/runtime/abi.ts";
export { defaultLibraryPath, libraryPath, loadLibrary, type LoadOptions } from "./src/runtime/library.ts";
export { Device, type DeviceProperties } from "./src/runtime/device.ts";
export { CudaGraph, Event, Stream, type StreamLike } from "./src/runtime/stream.ts";
export { DeviceBuffer, PinnedBuffer } from "./src/runtime/memory.ts";
export { type Shape, Tensor } from "./src/runtime/tensor.ts";
export { Workspace } from "./src/runtime/workspace.ts";
export * from "./src/ops/norm.ts";
export * from "./src/ops/activation.ts";
export * from "./src/ops/rope.ts";
export * from "./src/attention/variants.ts";
export * from "./src/attention/paged_kv_cache.ts";
export * from "./src/attention/decode.ts";
export * from "./src/attention/merge.ts";
export { DECODE_COMPILED } from "./src/attention/compiled.ts";
export {
  type BatchPrefillPlanOptions,
  BatchPrefillWithPagedKvCache,
  BatchPrefillWithRaggedKvCache,
  type PrefillResult,
  type SinglePrefillOptions,
  singlePrefillWithKvCache,
} from "./src/attention/prefill.ts";
export { type BoolArray, packbits, segmentPackbits } from "./src/attention/mask.ts";
export { PREFILL_CONFIGS } from "./src/attention/prefill_configs.ts";
export { lastPrefillKernel, type PrefillKernel, setPrefillKernel } from "./src/attention/prefill_launch.ts";
export {
  BatchAttention,
  type BatchAttentionOptions,
  type BatchAttentionPlanOptions,
} from "./src/attention/batch_attention.ts";
export * from "./src/sampling/sampling.ts";
export {
  LogitsPipe,
  MinP,
  type PipeRunOptions,
  Sample,
  Softmax,
  type Step,
  type StepName,
  Temperature,
  type TensorKind,
  TopK,
  TopP,
} from "./src/sampling/pipe.ts";
