#!/usr/bin/env bash
# Unpacks the carried library into build/lib; `export FI_COMMIT=$(cat .device-lib/commit)` names the
# commit in bench reports (the machine's copy of .git may be stale).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p build/lib
xz -dc .device-lib/lib.xz > build/lib/libflashinfer_ts.so
cp .device-lib/build-stamp.json build/lib/
