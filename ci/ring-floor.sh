#!/usr/bin/env bash
# What a completion loop of our own would give W5 (not part of CI): the one-connection round
# trip of `ci/ring-floor` (a fixed-reply RESP responder on the io-uring crate alone), with
# DEFER_TASKRUN and with COOP_TASKRUN, against kvs-server and redis-server, alternated, each
# server pinned to CPU 0 and kvs-bench to CPU 1. A read-only load: every GET misses, so kvs
# answers from its key filter and Redis from its dict, and neither reads a value.
#
#   ci/ring-floor.sh [--rounds N]       (default 5; prints each run, then the medians)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5
if [[ "${1:-}" == "--rounds" ]]; then
  rounds=$2
fi
die() { echo "ci/ring-floor.sh: $*" >&2; exit 1; }
[[ $(nproc) -ge 2 ]] || die "needs 2 CPUs (servers on 0, kvs-bench on 1)"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed to pin the servers"
servers=(floor-defer floor-coop kvs)
if command -v redis-server >/dev/null 2>&1; then
  servers+=(redis)
else
  echo "ci/ring-floor.sh: redis-server not found; running without it (ci/bench.sh installs it)"
fi
cargo build --release --bins
cargo build --release --manifest-path ci/ring-floor/Cargo.toml
floor=ci/ring-floor/target/release/ring-floor
results=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$work" "$results"' EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
for ((r = 1; r <= rounds; r++)); do
  for s in "${servers[@]}"; do
    port=$(free_port)
    dir="$work/$s-$r"
    mkdir -p "$dir"
    case $s in
      floor-defer) RING_FLOOR_DEFER=1 taskset -c 0 "$floor" "127.0.0.1:$port" & ;;
      floor-coop) taskset -c 0 "$floor" "127.0.0.1:$port" & ;;
      kvs) taskset -c 0 target/release/kvs-server --addr "127.0.0.1:$port" --dir "$dir" \
        --cores 1 --fsync never 2>"$dir/log" & ;;
      redis) taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --save '' --appendonly no >"$dir/log" 2>&1 & ;;
    esac
    pid=$!
    for _ in $(seq 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    out=$(target/release/kvs-bench --addr "127.0.0.1:$port" --protocol resp -c 1 -P 1 \
      --read-ratio 1.0 --keys 100000 --key-size 16 --seed 1 -d 5s --warmup 1s --cpu 1 \
      --server-pid "$pid" --no-progress --json)
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    line=$(python3 -c 'import json, sys
j = json.loads(sys.argv[2])
print(sys.argv[1], round(j["latency_us"]["p50"], 1), round(j["server_cpu"]["us_per_op"], 1))' "$s" "$out")
    echo "ci/ring-floor.sh: round $r/$rounds $line (p50 us, server CPU us per request)"
    echo "$line" >>"$results"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, p50, cpu = line.split()
    runs.setdefault(name, []).append((float(p50), float(cpu)))
print("ci/ring-floor.sh: medians over %d round(s): server, p50 (us), server CPU per request (us)" % max(len(v) for v in runs.values()))
for name, v in runs.items():
    print("  %-12s %6.1f %6.1f" % (name, statistics.median(p for p, _ in v), statistics.median(c for _, c in v)))
PY
