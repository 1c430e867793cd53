/** Device allocations, pinned host buffers and copies. */
import { invalid } from "./errors.ts";
import { check, native } from "./library.ts";
import { isDeno } from "./platform.ts";
import { Resource } from "./resource.ts";
import { streamHandle, type StreamLike } from "./stream.ts";

const ptrOut = new BigUint64Array(1);

/** A block of device memory from cudaMalloc, freed by dispose() (or, as a backstop, by the GC). */
export class DeviceBuffer extends Resource {
  readonly #ptr: bigint;
  readonly bytes: number;

  constructor(bytes: number) {
    super("device buffer");
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      invalid("allocate device memory", "bytes", "a non-negative integer", bytes);
    }
    check(native().fi_malloc(BigInt(bytes), ptrOut), `cudaMalloc(${bytes} bytes)`);
    this.#ptr = ptrOut[0];
    this.bytes = bytes;
    const ptr = this.#ptr;
    this.track(() => native().fi_free(ptr));
  }

  /** The device address. */
  get ptr(): bigint {
    this.assertAlive("use");
    return this.#ptr;
  }

  protected release(): void {
    native().fi_free(this.#ptr);
  }
}

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const bunFfiSpecifier = "bun:ffi";
// deno-lint-ignore no-explicit-any
const bunFfi: any = isDeno ? undefined : await import(bunFfiSpecifier).catch(() => undefined);

function hostView(ptr: bigint, bytes: number): ArrayBuffer {
  if (bytes === 0) return new ArrayBuffer(0);
  if (isDeno) return g.Deno.UnsafePointerView.getArrayBuffer(g.Deno.UnsafePointer.create(ptr), bytes);
  return bunFfi.toArrayBuffer(Number(ptr), 0, bytes);
}

/**
 * Page-locked host memory (cudaMallocHost): the source of asynchronous uploads such as plan tables.
 * `bytes` views it directly; after dispose() the view must not be used.
 */
export class PinnedBuffer extends Resource {
  readonly #ptr: bigint;
  readonly #view: Uint8Array;
  readonly size: number;

  constructor(bytes: number) {
    super("pinned host buffer");
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      invalid("allocate pinned memory", "bytes", "a non-negative integer", bytes);
    }
    check(native().fi_host_alloc(BigInt(bytes), ptrOut), `cudaMallocHost(${bytes} bytes)`);
    this.#ptr = ptrOut[0];
    this.size = bytes;
    this.#view = new Uint8Array(hostView(this.#ptr, bytes));
    const ptr = this.#ptr;
    this.track(() => native().fi_host_free(ptr));
  }

  get ptr(): bigint {
    this.assertAlive("use");
    return this.#ptr;
  }

  /** The pinned bytes, viewed in place. */
  get bytes(): Uint8Array {
    this.assertAlive("read");
    return this.#view;
  }

  /** Copies `bytes` bytes from here to device address `dst`, asynchronously on `stream`. */
  copyToDevice(dst: bigint, bytes: number, stream?: StreamLike): void {
    this.assertAlive("copy from");
    if (bytes > this.size) invalid("copy from pinned memory", "bytes", `at most ${this.size}`, bytes);
    check(native().fi_copy_async(dst, this.#ptr, BigInt(bytes), streamHandle(stream)), "cudaMemcpyAsync");
  }

  protected release(): void {
    native().fi_host_free(this.#ptr);
  }
}

/** Copies host bytes to a device address; returns once `src` may be reused. */
export function copyHostToDevice(dst: bigint, src: ArrayBufferView, stream?: StreamLike): void {
  const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  check(native().fi_copy_h2d(dst, bytes, BigInt(bytes.byteLength), streamHandle(stream)), "copy to device");
}

/** Copies device bytes into `dst`; returns once they are there. */
export function copyDeviceToHost(dst: ArrayBufferView, src: bigint, stream?: StreamLike): void {
  const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
  check(native().fi_copy_d2h(bytes, src, BigInt(bytes.byteLength), streamHandle(stream)), "copy to host");
}
