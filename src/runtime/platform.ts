/** The few things that differ between Deno and Bun, in one place. No global polyfills. */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

export const isDeno: boolean = typeof g.Deno?.dlopen === "function";
export const isBun: boolean = typeof g.Bun !== "undefined";
export const runtimeName: string = isDeno ? `deno ${g.Deno.version.deno}` : isBun ? `bun ${g.Bun.version}` : "unknown";

/** An environment variable, or undefined when unset (or when Deno was not allowed to read it). */
export function env(name: string): string | undefined {
  try {
    return isDeno ? g.Deno.env.get(name) : g.process?.env?.[name];
  } catch {
    return undefined;
  }
}

const rootUrl = new URL("../../", import.meta.url);
/**
 * The package root: the folder holding mod.ts, build.ts, cuda/ and build/. Imported from a registry
 * (JSR: an https: URL) the code has no folder of its own, so a per-user cache folder stands in:
 * put a library built elsewhere in its build/lib/, or point FLASHINFER_TS_LIB at one.
 */
export const packageRoot: string = rootUrl.protocol === "file:"
  ? fileURLToPath(rootUrl)
  : join(env("XDG_CACHE_HOME") ?? join(env("HOME") ?? ".", ".cache"), "flashinfer-ts");

export function libraryFileName(): string {
  const os = isDeno ? g.Deno.build.os : g.process?.platform;
  if (os === "windows" || os === "win32") return "flashinfer_ts.dll";
  if (os === "darwin") return "libflashinfer_ts.dylib";
  return "libflashinfer_ts.so";
}

/**
 * A 64-bit hash (as 16 hex digits) of every file under `dir`, by relative path and content: two
 * 32-bit FNV-1a lanes with different seeds, fast enough to run at every load. build.ts bakes the
 * same hash into the library, so the loader can tell a library built from other sources.
 */
export function hashTree(dir: string): string {
  let h1 = 0x811c9dc5, h2 = 0x01000193 ^ 0x9e3779b9;
  const feed = (bytes: Uint8Array) => {
    for (let i = 0; i < bytes.length; i++) {
      h1 = Math.imul(h1 ^ bytes[i], 0x01000193);
      h2 = Math.imul(h2 ^ bytes[i], 0x0100019d);
    }
  };
  const encoder = new TextEncoder();
  const walk = (rel: string) => {
    const entries = readdirSync(join(dir, rel)).sort();
    for (const name of entries) {
      const path = rel ? `${rel}/${name}` : name;
      if (statSync(join(dir, path)).isDirectory()) walk(path);
      else {
        feed(encoder.encode(path + "\0"));
        feed(readFileSync(join(dir, path)));
      }
    }
  };
  walk("");
  return (h1 >>> 0).toString(16).padStart(8, "0") + (h2 >>> 0).toString(16).padStart(8, "0");
}

export { existsSync, join };

/** Runs a command synchronously, inheriting stdio; returns its exit code. */
export function runSync(cmd: string[], cwd: string): number {
  if (isDeno) {
    const out = new g.Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "inherit", stderr: "inherit" })
      .outputSync();
    return out.code;
  }
  const out = g.Bun.spawnSync(cmd, { cwd, stdout: "inherit", stderr: "inherit" });
  return out.exitCode ?? 1;
}

/** The JavaScript runtime's own executable (to run build.ts with the runtime we are in). */
export function selfExecutable(): string {
  return isDeno ? g.Deno.execPath() : g.process.execPath;
}
