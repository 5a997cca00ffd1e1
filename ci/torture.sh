#!/usr/bin/env bash
# The long kill -9 torture of kvs-server (outside CI): writers with an acknowledged-write
# ledger, the server killed with SIGKILL at seeded random moments, restarted, the ledger
# checked. The normal test suite runs a short version of the same test.
#
#   ci/torture.sh [--cycles N] [--seed S] [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

cycles=1000
seed=""
profile=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cycles) cycles="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --release) profile=(--release); shift ;;
    *) echo "usage: ci/torture.sh [--cycles N] [--seed S] [--release]" >&2; exit 2 ;;
  esac
done

export KVS_TORTURE_CYCLES="$cycles"
if [[ -n "$seed" ]]; then
  export KVS_TORTURE_SEED="$seed"
fi
echo "ci/torture.sh: $cycles kill -9 cycles${seed:+, seed $seed}"
exec cargo test "${profile[@]}" --test torture kill_9_torture_long -- --ignored --nocapture
