/**
 * Tensor: a device pointer, a dtype, a shape and strides (in elements). Small on purpose: made empty,
 * from host values, from raw bytes or from an external pointer; viewed; copied back to the host.
 */
import { decode, type DType, DTYPE_BYTES, encode, isDType, type RawArray, rawArray } from "./dtype.ts";
import { FlashInferError, invalid, show } from "./errors.ts";
import { check, native } from "./library.ts";
import { copyDeviceToHost, copyHostToDevice, DeviceBuffer } from "./memory.ts";
import { streamHandle, type StreamLike } from "./stream.ts";

export type Shape = readonly number[];

function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

function checkShape(op: string, shape: unknown): asserts shape is Shape {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    invalid(op, "shape", "an array of non-negative integers", shape);
  }
}

function numelOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export class Tensor implements Disposable {
  readonly dtype: DType;
  readonly shape: Shape;
  readonly strides: Shape;
  readonly numel: number;
  /** The owner of the memory when this library allocated it; views share their base's. */
  readonly #buffer: DeviceBuffer | undefined;
  /** Byte offset from the buffer's start, or the absolute address for external memory. */
  readonly #offset: bigint;
  /** True for the tensor that allocated #buffer: only it frees the memory. */
  readonly #owner: boolean;
  #disposed = false;

  private constructor(
    dtype: DType,
    shape: Shape,
    strides: Shape,
    buffer: DeviceBuffer | undefined,
    offset: bigint,
    owner = false,
  ) {
    this.#owner = owner;
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    this.numel = numelOf(shape);
    this.#buffer = buffer;
    this.#offset = offset;
  }

  /** An uninitialized tensor in fresh device memory. */
  static empty(shape: Shape, dtype: DType): Tensor {
    checkShape("allocate a tensor", shape);
    if (!isDType(dtype)) {
      invalid("allocate a tensor", "dtype", "one of f32, f16, bf16, e4m3, e5m2, i32, i64, u8", dtype);
    }
    const buffer = new DeviceBuffer(numelOf(shape) * DTYPE_BYTES[dtype]);
    return new Tensor(dtype, shape, contiguousStrides(shape), buffer, 0n, true);
  }

  /** A tensor holding `values` rounded to `dtype` (numbers, or a typed array of numbers). */
  static fromArray(values: ArrayLike<number>, shape: Shape, dtype: DType): Tensor {
    checkShape("make a tensor from an array", shape);
    if (values.length !== numelOf(shape)) {
      invalid(
        "make a tensor from an array",
        "values",
        `of length ${numelOf(shape)} for shape ${show(shape)}`,
        `=${values.length}`,
      );
    }
    return Tensor.fromRaw(encode(dtype, values), shape, dtype);
  }

  /** A tensor holding raw element bits (e.g. a Uint16Array of bf16 bits). */
  static fromRaw(raw: ArrayBufferView, shape: Shape, dtype: DType): Tensor {
    const t = Tensor.empty(shape, dtype);
    if (raw.byteLength !== t.nbytes) {
      t.dispose();
      invalid(
        "make a tensor from raw data",
        "raw",
        `${t.nbytes} bytes for shape ${show(shape)} of ${dtype}`,
        `=${raw.byteLength} bytes`,
      );
    }
    copyHostToDevice(t.ptr, raw);
    return t;
  }

  /**
   * A tensor over memory that another library owns (e.g. a PyTorch tensor's data_ptr). dispose()
   * leaves the memory alone; the owner must keep it alive while this tensor is used.
   */
  static fromPointer(ptr: bigint, shape: Shape, dtype: DType, strides?: Shape): Tensor {
    if (typeof ptr !== "bigint" || ptr <= 0n) invalid("wrap a device pointer", "ptr", "a positive bigint", ptr);
    checkShape("wrap a device pointer", shape);
    if (!isDType(dtype)) invalid("wrap a device pointer", "dtype", "a dtype name", dtype);
    if (strides !== undefined && (strides.length !== shape.length || !strides.every(Number.isSafeInteger))) {
      invalid("wrap a device pointer", "strides", `${shape.length} integers`, strides);
    }
    return new Tensor(dtype, shape, strides ?? contiguousStrides(shape), undefined, ptr);
  }

  get rank(): number {
    return this.shape.length;
  }

  get nbytes(): number {
    return this.numel * DTYPE_BYTES[this.dtype];
  }

  /** The device address of element 0. Throws when the memory was disposed. */
  get ptr(): bigint {
    if (this.#disposed || this.#buffer?.disposed) {
      throw new FlashInferError("DISPOSED", `Cannot use the ${this} as it was disposed`);
    }
    return this.#buffer ? this.#buffer.ptr + this.#offset : this.#offset;
  }

  /** True after dispose(), or once the tensor this one views was disposed. */
  get disposed(): boolean {
    return this.#disposed || (this.#buffer?.disposed ?? false);
  }

  /** Whether this tensor owns (allocated) its memory, as opposed to viewing memory owned elsewhere. */
  get ownsMemory(): boolean {
    return this.#buffer !== undefined;
  }

  isContiguous(): boolean {
    let s = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.strides[i] !== s) return false;
      s *= this.shape[i];
    }
    return true;
  }

  /** A contiguous view with another shape of the same element count. */
  reshape(shape: Shape): Tensor {
    checkShape("reshape a tensor", shape);
    if (numelOf(shape) !== this.numel) {
      invalid("reshape a tensor", "shape", `${this.numel} elements like ${show(this.shape)}`, shape);
    }
    if (!this.isContiguous()) invalid("reshape a tensor", "tensor", "contiguous", `=strides ${show(this.strides)}`);
    return new Tensor(this.dtype, shape, contiguousStrides(shape), this.#buffer, this.#offset);
  }

  /** The view of `length` entries of dimension `dim` from `start`. */
  narrow(dim: number, start: number, length: number): Tensor {
    if (!Number.isInteger(dim) || dim < 0 || dim >= this.rank) {
      invalid("narrow a tensor", "dim", `in [0, ${this.rank})`, dim);
    }
    if (
      !Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 ||
      start + length > this.shape[dim]
    ) {
      invalid("narrow a tensor", "start + length", `within [0, ${this.shape[dim]}]`, `=${start} + ${length}`);
    }
    const shape = [...this.shape];
    shape[dim] = length;
    const offset = this.#offset + BigInt(start * this.strides[dim] * DTYPE_BYTES[this.dtype]);
    return new Tensor(this.dtype, shape, this.strides, this.#buffer, offset);
  }

  /** The view of index `index` of dimension `dim`, with that dimension removed. */
  select(dim: number, index: number): Tensor {
    const t = this.narrow(dim, index, 1);
    return new Tensor(
      this.dtype,
      t.shape.filter((_, i) => i !== dim),
      t.strides.filter((_, i) => i !== dim),
      this.#buffer,
      t.#offset,
    );
  }

  /** Copies to the host as raw element bits (Float32Array for f32, Uint16Array for f16 and bf16, ...). */
  toRaw(stream?: StreamLike): RawArray {
    if (this.isContiguous()) {
      const out = rawArray(this.dtype, this.numel);
      copyDeviceToHost(out, this.ptr, stream);
      return out;
    }
    using c = this.contiguous(stream);
    return c.toRaw(stream);
  }

  /** Copies to the host and decodes every element to a float64. */
  toArray(stream?: StreamLike): Float64Array {
    return decode(this.dtype, this.toRaw(stream));
  }

  /**
   * A contiguous copy in fresh memory. Handles views whose rows (all dimensions but the first) are
   * contiguous, as narrow() and select() on dimension 0 or 1 make.
   */
  contiguous(stream?: StreamLike): Tensor {
    const out = Tensor.empty(this.shape, this.dtype);
    if (this.numel === 0) return out;
    const bytes = DTYPE_BYTES[this.dtype];
    const rowShape = this.shape.slice(1);
    const rowContiguous = this.rank >= 1 &&
      contiguousStrides(rowShape).every((s, i) => rowShape[i] === 1 || this.strides[i + 1] === s);
    if (!rowContiguous) {
      out.dispose();
      throw new FlashInferError(
        "UNSUPPORTED",
        `Cannot copy a tensor with strides ${show(this.strides)}: only views whose rows are contiguous`,
      );
    }
    const rowBytes = numelOf(rowShape) * bytes;
    check(
      native().fi_copy_2d_async(
        out.ptr,
        BigInt(rowBytes),
        this.ptr,
        BigInt(this.strides[0] * bytes),
        BigInt(rowBytes),
        BigInt(this.shape[0]),
        streamHandle(stream),
      ),
      "cudaMemcpy2DAsync",
    );
    return out;
  }

  /** Fills every byte with `byte` (e.g. 0xff to poison an output before a test). */
  fillBytes(byte: number, stream?: StreamLike): this {
    if (!this.isContiguous()) throw new FlashInferError("UNSUPPORTED", "Cannot fill a non-contiguous tensor");
    check(native().fi_memset_async(this.ptr, byte, BigInt(this.nbytes), streamHandle(stream)), "cudaMemsetAsync");
    return this;
  }

  /**
   * Ends this tensor's use. The memory is freed if this tensor allocated it, which also ends every
   * view of it; disposing a view or an external tensor frees nothing. Calling it twice is harmless.
   */
  dispose(): void {
    this.#disposed = true;
    if (this.#owner) this.#buffer?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${show(this.shape)})`;
  }
}
