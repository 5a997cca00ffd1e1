#!/usr/bin/env bash
# redis-benchmark against kvs-server and against redis-server, side by side, on this machine.
#
# Each server runs pinned to CPU 0 and redis-benchmark to CPU 1 (taskset). Rounds alternate
# kvs, redis, kvs, redis, ... each on a freshly started server with an empty data directory,
# so drift on a shared machine hits both alike. For each durability pairing it prints, per
# test, the median over the rounds of requests per second and of the p50 and p99 latencies,
# and the ratio kvs/redis of the median throughputs. Each measured run follows an unrecorded
# warm-up run with a tenth of the requests. redis-benchmark reports p50, p95, p99 and max
# latencies, not p99.9.
#
# Durability pairings (kvs-server --fsync against redis-server's append-only file):
#   always    kvs --fsync always    vs redis --appendonly yes --appendfsync always
#   everysec  kvs --fsync 1000ms    vs redis --appendonly yes --appendfsync everysec
#   none      kvs --fsync never     vs redis --appendonly yes --appendfsync no
# Redis takes no RDB snapshots in any pairing (--save "").
#
# Usage: ci/resp-bench.sh [--rounds N] [--requests N] [--pipeline N] [--clients N]
#                         [--pairings "always everysec none"] [--io auto|uring|blocking]
# KVS_SERVER=path uses that binary instead of building target/release/kvs-server;
# RESP_BENCH_RAW=path appends every round's figures (pairing,server,test,rps,p50,p99) to path.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=5
requests=100000
pipeline=16
clients=50
pairings="always everysec none"
io=auto
while [[ $# -gt 0 ]]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --pipeline) pipeline=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --pairings) pairings=$2; shift 2 ;;
    --io) io=$2; shift 2 ;;
    *) echo "ci/resp-bench.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

say() { echo "ci/resp-bench.sh: $*" >&2; }

for tool in redis-server redis-benchmark redis-cli taskset; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    say "$tool is not installed (bash ci/install-deps.sh installs the Redis tools); nothing measured"
    exit 1
  fi
done
if [[ $(nproc --all) -lt 2 ]]; then
  say "needs two CPUs (server on CPU 0, client on CPU 1); this machine has $(nproc --all)"
  exit 1
fi

kvs_server=${KVS_SERVER:-}
if [[ -z $kvs_server ]]; then
  say "cargo build --release --bin kvs-server"
  cargo build --release --bin kvs-server >&2
  kvs_server=target/release/kvs-server
fi

work=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT

# Polls until `redis-cli -p PORT ping` answers, for at most 30 seconds.
wait_ready() {
  local port=$1 deadline=$((SECONDS + 30))
  until [[ $(redis-cli -p "$port" ping 2>/dev/null) == PONG ]]; do
    if ! kill -0 "$server_pid" 2>/dev/null; then return 1; fi
    if ((SECONDS >= deadline)); then say "server on port $port not ready in 30 s"; return 1; fi
    sleep 0.05
  done
}

# Starts kvs-server on CPU 0 with fsync policy $1; sets server_pid and port.
start_kvs() {
  local dir=$work/kvs-$RANDOM log
  mkdir -p "$dir"
  log=$dir/server.log
  NO_COLOR=1 taskset -c 0 "$kvs_server" --addr 127.0.0.1:0 --dir "$dir" --cores 1 --no-pin \
    --io "$io" --fsync "$1" 2>"$log" &
  server_pid=$!
  local deadline=$((SECONDS + 30))
  until grep -q 'listening on' "$log"; do
    if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS >= deadline)); then
      say "kvs-server did not start:"; cat "$log" >&2; exit 1
    fi
    sleep 0.05
  done
  port=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | head -n 1 | sed 's/.*://')
  wait_ready "$port"
}

# Starts redis-server on CPU 0 with appendfsync $1 on a free port; sets server_pid and port.
start_redis() {
  local dir=$work/redis-$RANDOM
  mkdir -p "$dir"
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" \
      --appendonly yes --appendfsync "$1" --daemonize no >"$dir/server.log" 2>&1 &
    server_pid=$!
    if wait_ready "$port"; then return; fi
    stop_server
  done
  say "redis-server did not start:"; cat "$dir/server.log" >&2; exit 1
}

# Runs the benchmark on CPU 1 against $port; appends "server,test,rps,p50,p99" lines to $results.
# The CSV columns are test, rps, avg, min, p50, p95, p99 and max latency.
# A tenth of the requests first, unrecorded, as a warm-up.
bench() {
  local server=$1
  taskset -c 1 redis-benchmark -h 127.0.0.1 -p "$port" -t set,get,mset -n $((requests / 10)) \
    -P "$pipeline" -c "$clients" --csv >/dev/null 2>&1
  taskset -c 1 redis-benchmark -h 127.0.0.1 -p "$port" -t set,get,mset -n "$requests" \
    -P "$pipeline" -c "$clients" --csv 2>"$work/bench.err" |
    awk -F, -v s="$server" 'NR > 1 { gsub(/"/, ""); print s "," $1 "," $2 "," $5 "," $7 }' >>"$results"
  if [[ -s $work/bench.err ]] && grep -qi error "$work/bench.err"; then
    say "redis-benchmark reported errors against $server:"; cat "$work/bench.err" >&2; exit 1
  fi
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# (max - min) / median of the numbers on stdin, in percent: how much the rounds disagree.
spread() { sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf("%.0f%%", (m > 0 ? 100 * (v[NR] - v[1]) / m : 0)) }'; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then commit="$commit (with uncommitted changes)"; fi
echo "# RESP side by side: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "# CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc --all) CPUs; kernel $(uname -r)"
echo "# kvs commit $commit; $("$kvs_server" --version); $(redis-server --version | cut -d' ' -f1-3)"
echo "# data directory filesystem: $(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')"
echo "# command: taskset -c 1 redis-benchmark -h 127.0.0.1 -p PORT -t set,get,mset -n $requests -P $pipeline -c $clients --csv"
echo "# servers: taskset -c 0; kvs-server --cores 1 --io $io; $rounds rounds, A B A B, fresh servers each round, warm-up -n $((requests / 10)) first"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

for pairing in $pairings; do
  case $pairing in
    always) kvs_fsync=always; redis_fsync=always ;;
    everysec) kvs_fsync=1000ms; redis_fsync=everysec ;;
    none) kvs_fsync=never; redis_fsync=no ;;
    *) say "unknown pairing '$pairing' (expected always, everysec or none)"; exit 2 ;;
  esac
  results=$work/results-$pairing.csv
  : >"$results"
  backend=
  for round in $(seq "$rounds"); do
    start_kvs "$kvs_fsync"
    [[ -n $backend ]] || backend=$(redis-cli -p "$port" info server | tr -d '\r' | sed -n 's/^io_backend://p')
    bench kvs
    stop_server
    start_redis "$redis_fsync"
    bench redis
    stop_server
    say "$pairing: round $round of $rounds done"
  done
  echo
  echo "## $pairing: kvs --fsync $kvs_fsync (io $backend) vs redis --appendfsync $redis_fsync"
  printf '%-16s %10s %10s %9s %8s %8s %8s %9s %8s %9s\n' test "kvs rps" "redis rps" kvs/redis \
    "kvs ±" "redis ±" "kvs p50" "redis p50" "kvs p99" "redis p99"
  for test in SET GET "MSET (10 keys)"; do
    col() { awk -F, -v s="$1" -v t="$test" -v c="$2" '$1 == s && $2 == t { print $c }' "$results" | "$3"; }
    krps=$(col kvs 3 median); rrps=$(col redis 3 median)
    printf '%-16s %10.0f %10.0f %9.2f %8s %8s %8s %9s %8s %9s\n' "$test" "$krps" "$rrps" \
      "$(awk -v a="$krps" -v b="$rrps" 'BEGIN { print (b > 0 ? a / b : 0) }')" \
      "$(col kvs 3 spread)" "$(col redis 3 spread)" \
      "$(col kvs 4 median)" "$(col redis 4 median)" "$(col kvs 5 median)" "$(col redis 5 median)"
  done
  if [[ -n ${RESP_BENCH_RAW:-} ]]; then
    sed "s/^/$pairing,/" "$results" >>"$RESP_BENCH_RAW"
  fi
done
echo
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# rps: requests per second, median of $rounds rounds; ±: (max - min) / median of rps over the rounds"
echo "# p50/p99: latency in ms, median of $rounds rounds"
