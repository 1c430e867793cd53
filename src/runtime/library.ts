/**
 * Finds, loads and checks the native library. Lookup order: the FLASHINFER_TS_LIB environment
 * variable (a file path), then build/lib/ in the package, then a build on demand (build.ts) when the
 * CUDA sources and nvcc are present. Every path tried is listed in the error when none works.
 */
import { ABI_VERSION } from "./abi.ts";
import { codeOfStatus, FlashInferError } from "./errors.ts";
import {
  env,
  existsSync,
  hashTree,
  isBun,
  isDeno,
  join,
  libraryFileName,
  packageRoot,
  runSync,
  selfExecutable,
} from "./platform.ts";
import { symbols, toBunSymbols } from "./symbols.ts";

// deno-lint-ignore no-explicit-any
type NativeFn = (...args: any[]) => any;
/** The library's entry points by their symbol-table keys; each returns an i32 status. */
export type Native = { readonly [K in keyof typeof symbols]: NativeFn };

interface Handle {
  native: Native;
  path: string;
  close(): void;
}

// bun:ffi is imported only under Bun; the specifier is a variable so Deno never resolves it.
const bunFfiSpecifier = "bun:ffi";
// deno-lint-ignore no-explicit-any
const bunFfi: any = isBun ? await import(bunFfiSpecifier) : undefined;

function open(path: string): Handle {
  if (isDeno) {
    // deno-lint-ignore no-explicit-any
    const lib = (globalThis as any).Deno.dlopen(path, symbols);
    return { native: lib.symbols as Native, path, close: () => lib.close() };
  }
  if (isBun) {
    const lib = bunFfi.dlopen(path, toBunSymbols(symbols));
    const native = { ...lib.symbols } as Record<string, NativeFn>;
    // Bun has no nonblocking calls: the twin runs on this thread (Stream.synchronizeAsync polls instead).
    native.fi_stream_synchronize_nonblocking = lib.symbols.fi_stream_synchronize;
    return { native: native as unknown as Native, path, close: () => lib.close() };
  }
  throw new FlashInferError("LIBRARY_NOT_FOUND", "flashinfer-ts runs on Deno or Bun; this runtime has neither FFI");
}

function readString(fn: NativeFn, n = 1024): string {
  const buf = new Uint8Array(n);
  fn(buf, n);
  const end = buf.indexOf(0);
  return new TextDecoder().decode(buf.subarray(0, end < 0 ? n : end));
}

export interface LoadOptions {
  /** Build the library with build.ts when it is missing or stale (default: true, unless FLASHINFER_TS_NO_BUILD=1). */
  buildIfMissing?: boolean;
}

let current: Handle | undefined;

/** The path the default build writes the library to. */
export function defaultLibraryPath(): string {
  return join(packageRoot, "build", "lib", libraryFileName());
}

/** The hash of the CUDA sources beside this module, or undefined when they are not shipped. */
function sourcesHash(): string | undefined {
  const dir = join(packageRoot, "cuda");
  return existsSync(dir) ? hashTree(dir) : undefined;
}

/** Opens `path` and checks ABI version and source hash; throws a FlashInferError on mismatch. */
function openChecked(path: string, expectedHash: string | undefined): Handle {
  const h = open(path);
  const version = h.native.fi_abi_version();
  if (version !== ABI_VERSION) {
    h.close();
    throw new FlashInferError(
      "ABI_MISMATCH",
      `The native library at ${path} speaks ABI version ${version} but this code expects ${ABI_VERSION}: rebuild it with 'deno task build'`,
    );
  }
  const built = readString(h.native.fi_source_hash, 64);
  if (expectedHash !== undefined && built !== expectedHash) {
    h.close();
    throw new FlashInferError(
      "ABI_MISMATCH",
      `The native library at ${path} was built from other sources (library ${built}, sources ${expectedHash}): rebuild it with 'deno task build'`,
    );
  }
  return h;
}

/** Loads the library once; later calls return the same one. */
export function loadLibrary(options: LoadOptions = {}): Native {
  if (current) return current.native;
  const build = options.buildIfMissing ?? env("FLASHINFER_TS_NO_BUILD") !== "1";
  const tried: string[] = [];
  const override = env("FLASHINFER_TS_LIB");
  const hash = sourcesHash();
  const attempt = (path: string, checkHash: boolean): Handle | undefined => {
    if (!existsSync(path)) {
      tried.push(`${path} (not found)`);
      return undefined;
    }
    try {
      return openChecked(path, checkHash ? hash : undefined);
    } catch (e) {
      tried.push(`${path} (${e instanceof Error ? e.message : String(e)})`);
      return undefined;
    }
  };
  // An explicit path is the user's choice: load it whatever sources sit beside this module.
  current = (override ? attempt(override, false) : undefined) ?? attempt(defaultLibraryPath(), true);
  if (!current && build && hash !== undefined) {
    const script = join(packageRoot, "build.ts");
    const args = isDeno ? [selfExecutable(), "run", "-A", script] : [selfExecutable(), script];
    const code = runSync(args, packageRoot);
    if (code === 0) current = attempt(defaultLibraryPath(), true);
    else tried.push(`build on demand (${args.join(" ")}) exited with code ${code}`);
  } else if (!current) {
    tried.push(
      hash === undefined ? "build on demand (no cuda/ sources beside this module)" : "build on demand (disabled)",
    );
  }
  if (!current) {
    throw new FlashInferError(
      "LIBRARY_NOT_FOUND",
      `Cannot load the flashinfer-ts native library; tried:\n  ${tried.join("\n  ")}\n` +
        `Build it with 'deno task build' (needs nvcc and cmake) or set FLASHINFER_TS_LIB to its path.`,
    );
  }
  return current.native;
}

/** The loaded library (loading it on first use). */
export function native(): Native {
  return current ? current.native : loadLibrary();
}

/** The library if it is loaded already (never loads or builds it): for optional host-side fast paths. */
export function loadedNative(): Native | undefined {
  return current?.native;
}

/** Where the loaded library came from, or undefined before the first load. */
export function libraryPath(): string | undefined {
  return current?.path;
}

/** The last native error message of this thread. */
export function lastError(): string {
  return readString(native().fi_last_error);
}

/** Throws a FlashInferError for a non-zero native status; `what` names the operation. */
export function check(status: number, what: string): void {
  if (status !== 0) {
    const code = codeOfStatus(status);
    const hint = code === "NO_GPU" ? "no usable CUDA device (no GPU, or no driver): " : "";
    throw new FlashInferError(code, `${what} failed: ${hint}${lastError()}`);
  }
}
