/**
 * The roofline report: times every suite's kernels with CUDA events (warm-up, median), prints GB/s or
 * TFLOP/s beside the device copy bandwidth measured in the same run, and appends the table to
 * bench/RESULTS.md with the device, date and commit.
 *
 *   deno task bench:report            # every suite
 *   deno task bench:report ops        # only the named suites
 */
import { appendFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Device } from "../src/runtime/device.ts";
import { Stream } from "../src/runtime/stream.ts";
import { env, isDeno, packageRoot, runtimeName } from "../src/runtime/platform.ts";
import { copyBandwidth } from "./timing.ts";
import type { Row, Suite } from "./suites/types.ts";
import { opsSuite } from "./suites/ops.ts";
import { decodeSuite } from "./suites/decode.ts";
import { batchAttentionSuite, prefillSuite } from "./suites/prefill.ts";
import { samplingSuite } from "./suites/sampling.ts";

/** Every suite; a family adds its own here. */
const SUITES: Suite[] = [opsSuite, decodeSuite, prefillSuite, batchAttentionSuite, samplingSuite];

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const args: string[] = isDeno ? g.Deno.args : g.process.argv.slice(2);

function commit(): string {
  if (env("FI_COMMIT")) return env("FI_COMMIT")!;
  try {
    if (isDeno) {
      const out = new g.Deno.Command("git", {
        args: ["rev-parse", "--short", "HEAD"],
        cwd: packageRoot,
        stderr: "null",
      }).outputSync();
      if (out.code === 0) return new TextDecoder().decode(out.stdout).trim();
    }
  } catch { /* not a git checkout */ }
  return "unknown";
}

try {
  Device.require();
} catch (e) {
  // The report needs a GPU; say why plainly instead of a stack trace.
  console.error(`bench/report.ts: ${(e as Error).message}`);
  if (isDeno) g.Deno.exit(1);
  g.process.exit(1);
}
const dev = Device.current();
using stream = new Stream();
const copy = copyBandwidth(stream);
const chosen = args.length ? SUITES.filter((s) => args.includes(s.name)) : SUITES;
const rows: Row[] = [];
for (const suite of chosen) {
  console.error(`running suite ${suite.name}...`);
  rows.push(...suite.run(stream));
}

const fmt = (x: number | undefined, digits = 1) => (x === undefined ? "" : x.toFixed(digits));
const lines = [
  `## ${new Date().toISOString().slice(0, 10)} · ${dev.name} · commit ${commit()} · ${runtimeName}`,
  "",
  `Ceiling measured in this run: device copy ${copy.toFixed(0)} GB/s (bytes read + written). ` +
  `SMs ${dev.smCount}, L2 ${(dev.l2CacheBytes / 2 ** 20).toFixed(0)} MiB.`,
  "",
  "| op | shape | median µs | GB/s | % of copy | TFLOP/s | note |",
  "| --- | --- | ---: | ---: | ---: | ---: | --- |",
  ...rows.map((r) => {
    const gbps = r.bytes ? r.bytes / r.us / 1e3 : undefined;
    const tflops = r.flops ? r.flops / r.us / 1e6 : undefined;
    return `| ${r.op} | ${r.shape} | ${fmt(r.us, 2)} | ${fmt(gbps, 0)} | ${gbps ? fmt((100 * gbps) / copy, 0) : ""} | ${
      fmt(tflops, 1)
    } | ${r.note ?? ""} |`;
  }),
  "",
];
const section = lines.join("\n");
console.log(section);
appendFileSync(join(packageRoot, "bench", "RESULTS.md"), "\n" + section);
if (env("OUT")) writeFileSync(join(env("OUT")!, `results-${chosen.map((s) => s.name).join("-")}.md`), section);
