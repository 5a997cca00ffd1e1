#!/usr/bin/env bash
# The long power-cut run of kvs-server (outside CI; needs root, loop devices and mkfs.ext4):
# the data directory on a loop-mounted ext4 image, the filesystem shut down without flushing
# its journal while writers with a ledger run, then the server killed, the filesystem
# remounted, the server restarted and the ledger checked. The normal test suite runs a few
# cuts of the same test.
#
#   ci/power-cut.sh [--cuts N] [--fsync always|interval|both] [--seed S] [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

cuts=100
fsync=both
seed=""
profile=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cuts) cuts="$2"; shift 2 ;;
    --fsync) fsync="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --release) profile=(--release); shift ;;
    *) echo "usage: ci/power-cut.sh [--cuts N] [--fsync always|interval|both] [--seed S] [--release]" >&2; exit 2 ;;
  esac
done

export KVS_POWER_CUTS="$cuts" KVS_POWER_CUT_FSYNC="$fsync"
if [[ -n "$seed" ]]; then
  export KVS_POWER_CUT_SEED="$seed"
fi
echo "ci/power-cut.sh: $cuts power cuts per policy ($fsync)${seed:+, seed $seed}"
exec cargo test "${profile[@]}" --test power_cut power_cut_long -- --ignored --nocapture
