// Loader errors, in fresh processes: no library, a library of another ABI, sources that changed.
import { spawnSync } from "node:child_process";
import { appendFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isDeno, packageRoot, selfExecutable } from "../src/runtime/platform.ts";
import { symbols } from "../src/runtime/symbols.ts";
import { assert, test } from "./harness.ts";

/** Copies the TypeScript half (no build/) into a temp dir; optionally with cuda/ sources. */
function sandbox(withCuda: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), "fi-loader-"));
  for (const p of ["mod.ts", "src"]) cpSync(join(packageRoot, p), join(dir, p), { recursive: true });
  if (withCuda) cpSync(join(packageRoot, "cuda"), join(dir, "cuda"), { recursive: true });
  return dir;
}

function load(dir: string, env: Record<string, string>): { code: number | null; out: string } {
  const script = `import { loadLibrary } from "${
    join(dir, "mod.ts")
  }"; try { loadLibrary(); console.log("LOADED"); } catch (e) { console.log(e.code + ": " + e.message); }`;
  const file = join(dir, "probe.ts");
  writeFileSync(file, script);
  const args = isDeno ? ["run", "-A", file] : [file];
  const r = spawnSync(selfExecutable(), args, { env: { ...process.env, ...env }, encoding: "utf8" });
  return { code: r.status, out: (r.stdout ?? "") + (r.stderr ?? "") };
}

test("loader: no library anywhere lists every path tried", () => {
  const dir = sandbox(false);
  try {
    const r = load(dir, { FLASHINFER_TS_LIB: "/nonexistent/libx.so" });
    assert.match(r.out, /LIBRARY_NOT_FOUND: Cannot load the flashinfer-ts native library; tried:/);
    assert.match(r.out, /\/nonexistent\/libx\.so \(not found\)/);
    assert.match(r.out, /build\/lib\/libflashinfer_ts\.so \(not found\)/);
    assert.match(r.out, /no cuda\/ sources/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: build on demand can be disabled and says so", () => {
  const dir = sandbox(true);
  try {
    const r = load(dir, { FLASHINFER_TS_NO_BUILD: "1" });
    assert.match(r.out, /LIBRARY_NOT_FOUND/);
    assert.match(r.out, /build on demand \(disabled\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: a library of another ABI version is refused with how to rebuild", (): void => {
  const cc = spawnSync("cc", ["--version"]);
  if (cc.status !== 0) return; // no C compiler here: nothing to build a stand-in with
  const dir = sandbox(false);
  try {
    // A stand-in library that exports every symbol but reports ABI version 999.
    const names = [...new Set(Object.entries(symbols).map(([k, s]) => ("name" in s ? s.name : undefined) ?? k))];
    const c = names.map((
      n,
    ) => (n === "fi_abi_version" ? "int fi_abi_version(void){return 999;}" : `int ${n}(void){return 0;}`)).join("\n");
    writeFileSync(join(dir, "fake.c"), c);
    const built = spawnSync("cc", ["-shared", "-fPIC", "-o", join(dir, "fake.so"), join(dir, "fake.c")]);
    assert.equal(built.status, 0, String(built.stderr));
    const r = load(dir, { FLASHINFER_TS_LIB: join(dir, "fake.so") });
    assert.match(r.out, /speaks ABI version 999 but this code expects \d+: rebuild it with 'deno task build'/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: a library built from other sources is refused, naming both hashes", () => {
  const lib = join(packageRoot, "build", "lib", "libflashinfer_ts.so");
  if (!existsSync(lib)) return; // nothing built here to copy
  const dir = sandbox(true);
  try {
    mkdirSync(join(dir, "build", "lib"), { recursive: true });
    cpSync(lib, join(dir, "build", "lib", "libflashinfer_ts.so"));
    appendFileSync(join(dir, "cuda", "src", "runtime.cu"), "\n// an edit after the build\n");
    const r = load(dir, { FLASHINFER_TS_NO_BUILD: "1" });
    assert.match(
      r.out,
      /was built from other sources \(library [0-9a-f]{16}, sources [0-9a-f]{16}\): rebuild it with 'deno task build'/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: without a GPU, device use fails with NO_GPU instead of a failing launch", () => {
  const lib = join(packageRoot, "build", "lib", "libflashinfer_ts.so");
  if (!existsSync(lib) || existsSync("/dev/nvidia0")) return; // needs the library and no GPU
  const dir = sandbox(false);
  try {
    const probe = join(dir, "gpu.ts");
    writeFileSync(
      probe,
      `import { Device, rmsnorm, Tensor } from "${join(dir, "mod.ts")}";
console.log("count", Device.count());
try { Tensor.empty([4], "f32"); } catch (e) { console.log(e.code + ": " + e.message); }
try { Device.current(); } catch (e) { console.log(e.code + ": " + e.message); }`,
    );
    const r = spawnSync(selfExecutable(), isDeno ? ["run", "-A", probe] : [probe], {
      env: { ...process.env, FLASHINFER_TS_LIB: lib },
      encoding: "utf8",
    });
    const out = r.stdout + r.stderr;
    assert.match(out, /count 0/);
    assert.match(
      out,
      /NO_GPU: cudaMalloc\(16 bytes\) failed: no usable CUDA device \(no GPU, or no driver\): cudaMalloc: /,
    );
    assert.match(out, /NO_GPU: Cannot run on the GPU as no CUDA device was found/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
