#!/usr/bin/env bash
# One GPU call for the sampling work (run from the copy's root on the device machine, under
# .device/on-gpu.sh): A/B probe and report against a reference library (.device-lib/ref.so.xz, when
# carried), then every sampling and pipe test. Logs go to $OUT; a short summary is printed last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .device-lib/unpack.sh
export FI_COMMIT=$(cat .device-lib/commit)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
ref=""
if [ -f .device-lib/ref.so.xz ]; then xz -dc .device-lib/ref.so.xz > /tmp/ref.so && ref=/tmp/ref.so; fi
deno run -A bench/sampling_probe.ts > "$OUT/probe_new.log" 2>&1
[ -n "$ref" ] && FLASHINFER_TS_LIB=$ref deno run -A bench/sampling_probe.ts > "$OUT/probe_ref.log" 2>&1
deno test -A test/sampling_test.ts test/pipe_test.ts test/sampling_validation_test.ts > "$OUT/tests.log" 2>&1
echo "tests rc $?" >> "$OUT/tests.log"
deno run -A bench/report.ts sampling > "$OUT/report_new.log" 2>&1
[ -n "$ref" ] && FLASHINFER_TS_LIB=$ref deno run -A bench/report.ts sampling > "$OUT/report_ref.log" 2>&1
for f in probe_ref probe_new; do [ -f "$OUT/$f.log" ] && { echo "== $f"; grep '^probe' "$OUT/$f.log" | cut -c1-90; }; done
for f in report_ref report_new; do [ -f "$OUT/$f.log" ] && { echo "== $f"; grep '^| ' "$OUT/$f.log" | cut -d'|' -f2-4; }; done
echo "== tests"; grep -E "FAILED|failed|passed|ok \||rc " "$OUT/tests.log" | tail -15
