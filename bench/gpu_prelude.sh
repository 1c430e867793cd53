# Sourced first by the bench/*_gpu.sh scripts on the device machine: from the copy's root, unpacks the
# carried library, names its commit for the reports and makes $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash .device-lib/unpack.sh
export FI_COMMIT=$(cat .device-lib/commit)
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
