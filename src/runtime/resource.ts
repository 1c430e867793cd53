/**
 * The base of every native resource: a private handle, an idempotent dispose(), `using` support,
 * and a FinalizationRegistry as a backstop for resources nobody disposed.
 */
import { FlashInferError } from "./errors.ts";

const backstop = new FinalizationRegistry<() => void>((release) => {
  try {
    release();
  } catch {
    // A finalizer has nobody to report to; the resource is gone either way.
  }
});

export abstract class Resource implements Disposable {
  #disposed = false;
  readonly #token = {};
  readonly #kind: string;

  protected constructor(kind: string) {
    this.#kind = kind;
  }

  /**
   * Registers the native release. `release` must not capture `this` (or the object never becomes
   * unreachable); pass the raw handle instead.
   */
  protected track(release: () => void): void {
    backstop.register(this, release, this.#token);
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Throws a clear error when the resource was disposed. */
  protected assertAlive(op = "use"): void {
    if (this.#disposed) {
      throw new FlashInferError("DISPOSED", `Cannot ${op} the ${this.#kind} as it was disposed`);
    }
  }

  /** Frees the native resource now. Calling it twice is harmless. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    backstop.unregister(this.#token);
    this.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Frees the native resource; called once. */
  protected abstract release(): void;
}
