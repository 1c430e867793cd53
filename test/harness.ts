/**
 * A tiny harness so the same test files run under `deno test` and `bun test`, with node:assert/strict.
 * `gpuTest` registers a test that needs the native library and a GPU; without them it is reported as
 * skipped, with the reason printed once.
 */
import assert from "node:assert/strict";
import { Device } from "../src/runtime/device.ts";
import { loadLibrary } from "../src/runtime/library.ts";

export { assert };

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const isDeno = typeof g.Deno?.test === "function";
const bunTestSpecifier = "bun:test";
// deno-lint-ignore no-explicit-any
const bun: any = isDeno ? undefined : await import(bunTestSpecifier);

type Fn = () => void | Promise<void>;

export function test(name: string, fn: Fn, options: { skip?: string } = {}): void {
  const label = options.skip ? `${name} [skipped: ${options.skip}]` : name;
  if (isDeno) {
    g.Deno.test({ name: label, fn, ignore: options.skip !== undefined, sanitizeResources: false, sanitizeOps: false });
  } else if (options.skip) {
    bun.test.skip(label, fn);
  } else {
    bun.test(label, fn, 600_000);
  }
}

let gpuReason: string | null | undefined;

/** Why GPU tests cannot run here, or null when they can. Loads the library without building it. */
export function gpuUnavailable(): string | null {
  if (gpuReason !== undefined) return gpuReason;
  try {
    loadLibrary({ buildIfMissing: false });
    gpuReason = Device.count() > 0 ? null : "no CUDA device (no GPU or no driver)";
  } catch (e) {
    gpuReason = `native library not loaded: ${(e as Error).message.split("\n")[0]} (run 'deno task build')`;
  }
  if (gpuReason) console.log(`GPU tests skipped: ${gpuReason}`);
  return gpuReason;
}

export function gpuTest(name: string, fn: Fn): void {
  const reason = gpuUnavailable();
  test(name, fn, reason ? { skip: reason } : {});
}

/** Asserts that `fn` throws a FlashInferError whose code and message match. */
export function assertThrowsCode(fn: () => unknown, code: string, message?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    const err = e as { code?: string; message?: string };
    assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.message}`);
    if (message) assert.match(err.message ?? "", message);
    return true;
  });
}
