#!/usr/bin/env bash
# Fairness under attack, measured like a benchmark (not part of CI): a release build, the
# server's one worker pinned to CPU 0, the attackers and the well-behaved client on CPU 1, so
# the ratio of the client's attacked p99 to its quiet p99 shows the server's fairness rather
# than the attacker's share of a common core (the attacker runs under SCHED_IDLE, behind the
# client). Prints one `hostile:` line per attack.
#
#   ci/hostile-fairness.sh [--long]     (--long: KVS_HOSTILE_LONG=1, the full counts)
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--long" ]]; then
  export KVS_HOSTILE_LONG=1
fi
if [[ $(nproc) -lt 2 ]]; then
  echo "ci/hostile-fairness.sh: needs 2 CPUs (server on 0, clients on 1); this machine has $(nproc)" >&2
  exit 1
fi
KVS_HOSTILE_PINNED=1 cargo test --release --test hostile -- --nocapture --test-threads 1 2>&1 \
  | grep -oE '(hostile:|skipped|test result).*'
