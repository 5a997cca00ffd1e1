#!/usr/bin/env bash
# The project's test command: every test, benchmark smoke run and example, once, and a tiny
# run of the side-by-side harness (ci/bench.sh --smoke).
# Both I/O backends are covered by the suite itself (tests force KVS_IO or deny io_uring to a
# child process), so there is no second pass with another backend.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test binaries keep their symbols but not their debug info: some thirty of them are linked,
# and with line tables they take about 1 GiB of disk, without them 0.6 GiB. A failing assertion
# still names its file and line; a backtrace names functions. Plain `cargo test` keeps the
# line tables ([profile.dev] in Cargo.toml).
export CARGO_PROFILE_DEV_STRIP="${CARGO_PROFILE_DEV_STRIP:-debuginfo}"

# What some tests need from outside (Redis's tools); idempotent and quick once installed.
bash ci/install-deps.sh

# In CI the lock file must already be up to date; locally cargo may refresh it.
locked=()
if [[ "${CI:-}" == "true" ]]; then
  locked=(--locked)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
# --no-fail-fast: one run reports every failing test binary, not just the first.
echo "ci/test.sh: cargo test ${locked[*]} --all-targets --no-fail-fast"
cargo test "${locked[@]}" --all-targets --no-fail-fast 2>&1 | tee -a "$log" || status=$?

# --all-targets leaves out documentation examples; they are compiled and run here.
if [[ $status -eq 0 ]]; then
  echo "ci/test.sh: cargo test ${locked[*]} --doc"
  cargo test "${locked[@]}" --doc 2>&1 | tee -a "$log" || status=$?
fi

# The side-by-side harness (kvs and Redis, every standard workload) as a tiny run, 1 s per
# workload, so that the script itself keeps working; its numbers mean nothing at that length.
if [[ $status -eq 0 ]]; then
  if [[ $(nproc) -lt 2 ]] || ! command -v redis-server >/dev/null 2>&1 \
    || ! command -v taskset >/dev/null 2>&1; then
    echo "skipped: ci/bench.sh --smoke needs 2 CPUs, redis-server and taskset" | tee -a "$log"
  else
    echo "ci/test.sh: bash ci/bench.sh --smoke"
    bash ci/bench.sh --smoke || status=$?
  fi
fi

# One closing line for the whole run, summed over every test binary.
skips=$(grep -ci '^skipped' "$log" || true)
if [[ $skips -gt 0 ]]; then
  echo "ci/test.sh: $skips test(s) could not run here and said why (lines starting 'skipped: ');" \
    "libtest counts them as passed"
fi
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i) ~ /^(passed|failed|ignored)[;,]?$/) { key = $(i); sub(/[;,]$/, "", key); n[key] += $(i - 1) }
       }
     }
     END { printf "tests: %d passed, %d failed, %d skipped\n", n["passed"], n["failed"], n["ignored"] }' "$log"
exit "$status"
