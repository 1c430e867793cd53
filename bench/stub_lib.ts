/**
 * Builds a stub of the native library for timing the host side of plan() on a machine with no GPU:
 * every entry of the symbol table returns 0, memory calls use malloc, events and streams are dummies,
 * and the host-only helpers (cuda/src/host_scan.cpp) are the real ones.
 *   deno run -A bench/stub_lib.ts            # writes /tmp/fi-stub/libstub.so (needs gcc and g++)
 *   FLASHINFER_TS_LIB=/tmp/fi-stub/libstub.so deno run -A bench/plan_host.ts
 * The GPU machine's host runs the same JS 2-4x slower (bench/NOTES.md, sixth session).
 */
import { ABI_VERSION } from "../src/runtime/abi.ts";
import { symbols } from "../src/runtime/symbols.ts";

const dir = "/tmp/fi-stub";
const ctype: Record<string, string> = {
  i32: "int",
  u32: "unsigned",
  i64: "long long",
  u64: "unsigned long long",
  usize: "unsigned long",
  f32: "float",
  f64: "double",
  buffer: "void*",
};
// Bodies that write an out parameter (a0, a1, ... are the parameters in order).
const bodies: Record<string, string> = {
  fi_abi_version: `return ${ABI_VERSION};`,
  fi_device_count: "*(int*)a0 = 1; return 0;",
  fi_device_get: "*(int*)a0 = 0; return 0;",
  fi_device_props: "long long* o = (long long*)a1; o[0] = 132; o[1] = 9; o[2] = 0; o[3] = 80LL << 30; " +
    'o[4] = 50 << 20; o[5] = 232448; o[6] = 5120; o[7] = 2619000; strcpy((char*)a2, "stub"); return 0;',
  fi_malloc: "*(void**)a1 = malloc(a0 ? a0 : 1); return 0;",
  fi_host_alloc: "*(void**)a1 = malloc(a0 ? a0 : 1); return 0;",
  fi_stream_create: "*(unsigned long long*)a0 = 1; return 0;",
  fi_event_create: "*(unsigned long long*)a1 = 1; return 0;",
  fi_source_hash: "((char*)a0)[0] = 0; return 0;",
  fi_last_error: "((char*)a0)[0] = 0; return 0;",
};
const real = new Set(["fi_host_index_max"]); // linked from host_scan.cpp

let c = "#include <stdlib.h>\n#include <string.h>\n";
const seen = new Set<string>();
for (const [key, spec] of Object.entries(symbols)) {
  const name = (spec as { name?: string }).name ?? key;
  if (seen.has(name) || real.has(name)) continue;
  seen.add(name);
  const params = spec.parameters.map((t, i) => `${ctype[t]} a${i}`).join(", ") || "void";
  c += `int ${name}(${params}) { ${bodies[name] ?? "return 0;"} }\n`;
}
Deno.mkdirSync(dir, { recursive: true });
Deno.writeTextFileSync(`${dir}/stub.c`, c);
const root = new URL("..", import.meta.url).pathname;
const run = (cmd: string[]) => {
  const { code } = new Deno.Command(cmd[0], { args: cmd.slice(1) }).outputSync();
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited with ${code}`);
};
run(["gcc", "-O2", "-c", "-fPIC", "-w", "-o", `${dir}/stub.o`, `${dir}/stub.c`]);
run([
  "g++",
  "-O3",
  "-c",
  "-fPIC",
  `-I${root}cuda/include`,
  "-o",
  `${dir}/host_scan.o`,
  `${root}cuda/src/host_scan.cpp`,
]);
run(["g++", "-shared", "-o", `${dir}/libstub.so`, `${dir}/stub.o`, `${dir}/host_scan.o`]);
console.log(`wrote ${dir}/libstub.so`);
