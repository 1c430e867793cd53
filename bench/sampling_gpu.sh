#!/usr/bin/env bash
# One GPU call for the sampling work (run from the copy's root on the device machine, under
# .device/on-gpu.sh): probe, report and every sampling and pipe test for the built library, and the
# same for the libraries carried as .device-lib/ref.so.xz (a reference: probe and report only) and
# .device-lib/alt.so.xz (an alternative candidate: tests too), when present. Logs go to $OUT; a short
# summary is printed last.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_prelude.sh"
libs="new"
for v in ref alt; do
  if [ -f ".device-lib/$v.so.xz" ]; then xz -dc ".device-lib/$v.so.xz" > "/tmp/$v.so" && libs="$libs $v"; fi
done
run() {  # run NAME CMD...: with the library NAME
  local v=$1; shift
  if [ "$v" = new ]; then "$@"; else FLASHINFER_TS_LIB=/tmp/$v.so "$@"; fi
}
for v in $libs; do run "$v" deno run -A bench/sampling_probe.ts > "$OUT/probe_$v.log" 2>&1; done
for v in $libs; do
  [ "$v" = ref ] && continue
  run "$v" deno test -A test/sampling_test.ts test/pipe_test.ts test/sampling_validation_test.ts > "$OUT/tests_$v.log" 2>&1
  echo "tests rc $?" >> "$OUT/tests_$v.log"
done
for v in $libs; do run "$v" deno run -A bench/report.ts sampling > "$OUT/report_$v.log" 2>&1; done
for v in $libs; do echo "== probe $v"; grep '^probe' "$OUT/probe_$v.log" | cut -c1-60; done
for v in $libs; do echo "== report $v"; grep '^| ' "$OUT/report_$v.log" | cut -d'|' -f2-4 | tail -n +3; done
for v in $libs; do
  [ -f "$OUT/tests_$v.log" ] && { echo "== tests $v"; grep -E "FAILED|ok \||rc " "$OUT/tests_$v.log" | tail -6; }
done
