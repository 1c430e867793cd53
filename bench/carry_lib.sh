#!/usr/bin/env bash
# Packs build/lib into .device-lib/ (xz, about 3 MiB instead of 37) for a GPU machine that takes at most
# 64 MiB of carried files, with an unpack script to run there first:
#   bash bench/carry_lib.sh            # here, after `deno task build`
#   bash .device-lib/unpack.sh && ...  # there (carry .device-lib)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .device-lib && mkdir .device-lib
xz -T0 -3 -c build/lib/libflashinfer_ts.so > .device-lib/lib.xz
cp build/lib/build-stamp.json .device-lib/
git rev-parse --short HEAD > .device-lib/commit 2>/dev/null || true
cat > .device-lib/unpack.sh <<'UNPACK'
#!/usr/bin/env bash
# Unpacks the carried library into build/lib; `export FI_COMMIT=$(cat .device-lib/commit)` names the
# commit in bench reports (the machine's copy of .git may be stale).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p build/lib
xz -dc .device-lib/lib.xz > build/lib/libflashinfer_ts.so
cp .device-lib/build-stamp.json build/lib/
UNPACK
echo "packed $(du -h .device-lib/lib.xz | cut -f1) into .device-lib/"
