/**
 * Builds the native library (cuda/) with CMake into build/, and copies it to build/lib/.
 *
 *   deno run -A build.ts            # or: deno task build / bun build.ts
 *   deno run -A build.ts --if-possible   # skip (exit 0, with a note) when nvcc or cmake is missing
 *
 * Architectures: the GPU's own when nvidia-smi sees one (sm_90a on Hopper), sm_90a when there is no
 * GPU, or FLASHINFER_TS_CUDA_ARCHS="80;90a" to choose. Rebuilds only when the sources changed.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { env, hashTree, isDeno, libraryFileName, packageRoot } from "./src/runtime/platform.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

function run(cmd: string[], cwd = packageRoot): { code: number; stdout: string } {
  try {
    if (isDeno) {
      const out = new g.Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "piped", stderr: "inherit" })
        .outputSync();
      return { code: out.code, stdout: new TextDecoder().decode(out.stdout) };
    }
    const out = g.Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "inherit" });
    return { code: out.exitCode ?? 1, stdout: out.stdout?.toString() ?? "" };
  } catch {
    return { code: -1, stdout: "" }; // not found
  }
}

function runInherit(cmd: string[], cwd = packageRoot): number {
  if (isDeno) {
    return new g.Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout: "inherit", stderr: "inherit" }).outputSync()
      .code;
  }
  return g.Bun.spawnSync(cmd, { cwd, stdout: "inherit", stderr: "inherit" }).exitCode ?? 1;
}

const args: string[] = isDeno ? g.Deno.args : g.process.argv.slice(2);
const ifPossible = args.includes("--if-possible");

function fail(message: string, missingTool = false): never {
  if (missingTool && ifPossible) {
    console.log(`build.ts: skipping the native build: ${message.split("\n")[0]}`);
    if (isDeno) g.Deno.exit(0);
    g.process.exit(0);
  }
  console.error(`build.ts: ${message}`);
  if (isDeno) g.Deno.exit(1);
  g.process.exit(1);
  throw new Error("unreachable");
}

function findNvcc(): string {
  const candidates = [
    env("CUDACXX"),
    "nvcc",
    env("CUDA_HOME") && join(env("CUDA_HOME")!, "bin", "nvcc"),
    "/usr/local/cuda/bin/nvcc",
  ];
  for (const c of candidates) {
    if (c && run([c, "--version"]).code === 0) return c;
  }
  return fail(
    "nvcc (the CUDA compiler) was not found on PATH, in $CUDA_HOME/bin or /usr/local/cuda/bin.\n" +
      "  Install the CUDA toolkit 12.4 or newer (https://developer.nvidia.com/cuda-downloads), or set CUDACXX to nvcc's path.",
    true,
  );
}

function cudaVersion(nvcc: string): [number, number] {
  const m = run([nvcc, "--version"]).stdout.match(/release (\d+)\.(\d+)/);
  return m ? [Number(m[1]), Number(m[2])] : [0, 0];
}

/** -gencode flags for the requested or detected architectures. */
function gencodeFlags(): { archs: string[]; flags: string } {
  let archs = env("FLASHINFER_TS_CUDA_ARCHS")?.split(/[;, ]+/).filter(Boolean);
  if (!archs?.length) {
    const smi = run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"]);
    const caps = smi.code === 0 ? [...new Set(smi.stdout.trim().split("\n").filter(Boolean))] : [];
    // Hopper gets its arch-specific target (wgmma, setmaxnreg); other GPUs their plain one.
    archs = caps.length ? caps.map((c) => c.trim().replace(".", "")).map((a) => (a === "90" ? "90a" : a)) : ["90a"];
  }
  for (const a of archs) {
    if (!/^\d{2,3}a?$/.test(a)) fail(`FLASHINFER_TS_CUDA_ARCHS entry "${a}" is not like 80, 90a or 120`);
  }
  return { archs, flags: archs.map((a) => `-gencode=arch=compute_${a},code=sm_${a}`).join(" ") };
}

const nvcc = findNvcc();
const [major, minor] = cudaVersion(nvcc);
if (major < 12 || (major === 12 && minor < 4)) {
  fail(`CUDA ${major}.${minor} is too old: flashinfer-ts needs CUDA 12.4 or newer (nvcc at ${nvcc}).`);
}
if (run(["cmake", "--version"]).code !== 0) {
  fail("cmake was not found on PATH. Install CMake 3.24 or newer (apt-get install cmake, or pip install cmake).", true);
}
const ninja = run(["ninja", "--version"]).code === 0;

const buildDir = join(packageRoot, "build");
const cmakeDir = join(buildDir, "cmake");
const libDir = join(buildDir, "lib");
const libName = libraryFileName();
const hash = hashTree(join(packageRoot, "cuda"));
const { archs, flags } = gencodeFlags();
const stampPath = join(libDir, "build-stamp.json");
const stamp = JSON.stringify({ hash, archs });

if (existsSync(join(libDir, libName)) && existsSync(stampPath) && readFileSync(stampPath, "utf8") === stamp) {
  console.log(`build.ts: ${join(libDir, libName)} is up to date (sources ${hash}, sm ${archs.join(", ")})`);
} else {
  mkdirSync(cmakeDir, { recursive: true });
  mkdirSync(libDir, { recursive: true });
  console.log(`build.ts: building for sm ${archs.join(", ")} with CUDA ${major}.${minor} (sources ${hash})`);
  const configure = [
    "cmake",
    "-S",
    join(packageRoot, "cuda"),
    "-B",
    cmakeDir,
    ...(ninja ? ["-G", "Ninja"] : []),
    `-DCMAKE_CUDA_COMPILER=${nvcc}`,
    `-DFI_CUDA_GENCODE=${flags}`,
    `-DFI_SOURCE_HASH=${hash}`,
    "-DCMAKE_BUILD_TYPE=Release",
  ];
  if (runInherit(configure) !== 0) fail("cmake could not configure cuda/ (see its output above).");
  // Ninja and make print [n/m] progress lines as each translation unit finishes.
  const jobs = String(Math.max(1, navigator.hardwareConcurrency ?? 2));
  if (runInherit(["cmake", "--build", cmakeDir, "--parallel", jobs]) !== 0) {
    fail("the native build failed (see the compiler output above).");
  }
  copyFileSync(join(cmakeDir, libName), join(libDir, libName));
  writeFileSync(stampPath, stamp);
  console.log(`build.ts: wrote ${join(libDir, libName)}`);
}
