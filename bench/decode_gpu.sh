#!/usr/bin/env bash
# One GPU call for the decode work (run from the copy's root under .device/on-gpu.sh): the decode tests
# for the built library, then the decode report for it and, when .device-lib/ref.so.xz is carried (a
# reference library, e.g. main's), a report of the target rows for that one in the same run. Logs go to
# $OUT; a short summary is printed last.
source "$(dirname "${BASH_SOURCE[0]}")/gpu_prelude.sh"
timeout 75 deno test -A test/decode_test.ts test/merge_test.ts test/page_test.ts test/scheduler_test.ts \
  > "$OUT/tests.log" 2>&1
echo "tests rc $?" >> "$OUT/tests.log"
timeout 50 deno test -A test/prefill_test.ts --filter BatchAttention > "$OUT/tests_ba.log" 2>&1
echo "tests rc $?" >> "$OUT/tests_ba.log"
if [ -f .device-lib/ref.so.xz ]; then xz -dc .device-lib/ref.so.xz > /tmp/ref.so; fi
FI_BENCH_DECODE_NO_PLAN=1 timeout 70 deno run -A bench/report.ts decode > "$OUT/report_new.log" 2>&1
if [ -f /tmp/ref.so ]; then
  FLASHINFER_TS_LIB=/tmp/ref.so FI_BENCH_DECODE_NO_EXTRAS=1 FI_BENCH_DECODE_NO_PLAN=1 \
    timeout 35 deno run -A bench/report.ts decode > "$OUT/report_ref.log" 2>&1
fi
for v in new ref; do
  [ -f "$OUT/report_$v.log" ] && { echo "== report $v"; grep -E '^batchDecode' "$OUT/report_$v.log" | cut -c1-150; }
done
for f in tests tests_ba; do echo "== $f"; grep -E "FAILED|ok \||rc |=>" "$OUT/$f.log" | tail -8; done
