/** A workspace: device scratch memory that plans lay out and runs use, so runs never allocate. */
import { invalid } from "./errors.ts";
import { DeviceBuffer } from "./memory.ts";

export class Workspace implements Disposable {
  readonly #buffer: DeviceBuffer;

  /** A workspace of `bytes` bytes (FlashInfer's default float workspace is 128 MiB). */
  constructor(bytes: number = 128 * 1024 * 1024) {
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      invalid("allocate a workspace", "bytes", "a positive integer", bytes);
    }
    this.#buffer = new DeviceBuffer(bytes);
  }

  get bytes(): number {
    return this.#buffer.bytes;
  }

  get ptr(): bigint {
    return this.#buffer.ptr;
  }

  get disposed(): boolean {
    return this.#buffer.disposed;
  }

  /** Throws the standard error when a plan needs more than this workspace holds. */
  require(op: string, bytes: number): void {
    if (bytes > this.bytes) invalid(op, "workspace", `at least ${bytes} bytes`, `=${this.bytes} bytes`);
  }

  dispose(): void {
    this.#buffer.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/**
 * Lays tables out one after another in a workspace: take(bytes) returns a table's byte offset and
 * moves past it, rounded up to `align`; `end` is the bytes used so far.
 */
export function tableCursor(align: number): { take(bytes: number): number; readonly end: number } {
  let at = 0;
  return {
    take(bytes: number): number {
      const start = at;
      at = Math.ceil((at + bytes) / align) * align;
      return start;
    },
    get end() {
      return at;
    },
  };
}
