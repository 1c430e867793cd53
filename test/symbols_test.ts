// The symbol table and the C header must agree entry for entry, type for type; bun's table converts.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../src/runtime/platform.ts";
import { symbols, toBunSymbols } from "../src/runtime/symbols.ts";
import { ABI_VERSION } from "../src/runtime/abi.ts";
import { assert, test } from "./harness.ts";

const header = readFileSync(join(packageRoot, "cuda", "include", "flashinfer_ts.h"), "utf8");

function cTypeToNative(param: string): string {
  const p = param.replace(/\/\*.*?\*\//g, "").trim();
  if (p === "void" || p === "") return "";
  if (p.includes("*")) return "buffer";
  const type = p.replace(/\s+\w+$/, "").replace(/^const\s+/, "").trim();
  const map: Record<string, string> = {
    uint64_t: "u64",
    int64_t: "i64",
    int32_t: "i32",
    uint32_t: "u32",
    float: "f32",
    double: "f64",
    size_t: "usize",
  };
  return map[type] ?? `unknown(${type})`;
}

function declarations(): Map<string, { params: string[]; result: string }> {
  const out = new Map<string, { params: string[]; result: string }>();
  const flat = header.replace(/\/\/.*$/gm, "").replace(/\/\*.*?\*\//gs, "").replace(/\s+/g, " ");
  for (const m of flat.matchAll(/FI_API (\w+) (\w+)\(([^)]*)\);/g)) {
    const params = m[3].split(",").map(cTypeToNative).filter(Boolean);
    out.set(m[2], { params, result: m[1] === "int32_t" ? "i32" : m[1] });
  }
  return out;
}

test("symbols: every C entry point has an entry of the same types, and no extras", () => {
  const decls = declarations();
  assert.ok(decls.size > 30, `parsed ${decls.size} declarations`);
  const seen = new Set<string>();
  for (const [key, spec] of Object.entries(symbols)) {
    const cname = ("name" in spec ? spec.name : undefined) ?? key;
    const d = decls.get(cname);
    assert.ok(d, `${key}: no declaration of ${cname} in flashinfer_ts.h`);
    assert.deepEqual([...spec.parameters], d.params, `${key}: parameter types`);
    assert.equal(spec.result, d.result, `${key}: result type`);
    seen.add(cname);
  }
  for (const name of decls.keys()) {
    assert.ok(seen.has(name), `${name} is declared in the header but missing from symbols.ts`);
  }
});

test("symbols: the ABI version matches the header", () => {
  const m = header.match(/#define FI_ABI_VERSION (\d+)/);
  assert.equal(Number(m?.[1]), ABI_VERSION);
});

test("symbols: bun conversion drops nonblocking twins and maps buffers to pointers", () => {
  const bun = toBunSymbols(symbols);
  assert.equal(bun.fi_stream_synchronize_nonblocking, undefined);
  assert.deepEqual(bun.fi_last_error, { args: ["ptr", "u64"], returns: "i32" });
  assert.deepEqual(bun.fi_malloc, { args: ["u64", "ptr"], returns: "i32" });
  assert.equal(Object.keys(bun).length, Object.values(symbols).filter((s) => !("nonblocking" in s)).length);
});
