#!/usr/bin/env bash
# kvs and Redis side by side: builds release, starts kvs-server and redis-server on loopback
# (one at a time, each pinned to CPU 0), drives each with kvs-bench pinned to CPU 1 over RESP,
# runs the standard workloads interleaved (kvs, Redis, kvs, Redis, ...) for several rounds,
# and writes the medians into BENCHMARKS.md (its own section, between markers) and an SVG
# chart. Each run waits for a quiet machine first and records whether it got one.
#
#   bash ci/bench.sh [--rounds N] [--duration S] [--warmup S] [--only W2,W5] [--smoke]
#                    [--kvs-protocol resp|native] [--note TEXT]
#
# --smoke is a tiny run for CI (1 round, 1 s per workload); it prints the tables instead of
# writing BENCHMARKS.md. --note adds a paragraph to the section (e.g. about the machine).
# A full run also keeps every run's result in docs/bench/kvs-vs-redis-runs.jsonl, from which
# `kvs-bench summarize` can redo the tables.
#
# Environment: KVS_BENCH_QUIET_BUSY (percent of all CPUs busy over one second that still
# counts as quiet, default 25) and KVS_BENCH_QUIET_TIMEOUT (seconds to wait for quiet before
# running anyway, default 60).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "ci/bench.sh: $*" >&2; }
die() { say "$*"; exit 1; }

rounds=3
duration=5
warmup=1
only=""
smoke=false
kvs_protocol=resp
user_notes=()
quiet_busy_max=${KVS_BENCH_QUIET_BUSY:-25}
quiet_timeout=${KVS_BENCH_QUIET_TIMEOUT:-60}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --smoke) smoke=true; shift ;;
    --kvs-protocol) kvs_protocol=$2; shift 2 ;;
    --note) user_notes+=(--note "$2"); shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
if $smoke; then
  rounds=1
  duration=1
  warmup=0.2
  quiet_timeout=${KVS_BENCH_QUIET_TIMEOUT:-5}
fi
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive integer"
if $smoke; then
  invocation="bash ci/bench.sh --smoke"
else
  invocation="bash ci/bench.sh --rounds $rounds --duration $duration --warmup $warmup"
fi
[[ -z $only ]] || invocation+=" --only $only"
[[ $kvs_protocol == resp ]] || invocation+=" --kvs-protocol $kvs_protocol"
[[ $kvs_protocol == resp || $kvs_protocol == native ]] || die "--kvs-protocol is resp or native"

# The standard workloads. Fields: name | title | kvs-bench flags | kvs-server flags |
# redis-server flags | whether kvs-server is pinned with taskset.
workloads=(
  "W1|GET/SET 90/10, 100 B, pipeline 1|-c 50 -P 1 --read-ratio 0.9 --value-size 100 --prefill|--cores 1 --fsync never||pinned"
  "W2|GET/SET 90/10, 100 B, pipeline 16|-c 50 -P 16 --read-ratio 0.9 --value-size 100 --prefill|--cores 1 --fsync never||pinned"
  "W3|SET 100 B, pipeline 16, durable|-c 50 -P 16 --read-ratio 0 --value-size 100|--cores 1 --fsync always|--appendonly yes --appendfsync always|pinned"
  "W4|GET 4 KiB, pipeline 16|-c 50 -P 16 --read-ratio 1 --value-size 4096 --prefill|--cores 1 --fsync never||pinned"
  "W5|1 connection, pipeline 1 (round trip)|-c 1 -P 1 --read-ratio 0.9 --value-size 100 --prefill|--cores 1 --fsync never||pinned"
  "W6|W2 with kvs on --io blocking|-c 50 -P 16 --read-ratio 0.9 --value-size 100 --prefill|--cores 1 --fsync never --io blocking||pinned"
  "W7|W2 with kvs on 2 cores, unpinned|-c 50 -P 16 --read-ratio 0.9 --value-size 100 --prefill|--cores 2 --fsync never --no-pin||unpinned"
)
selected=()
for w in "${workloads[@]}"; do
  name=${w%%|*}
  # Each workload names its fsync policy: the server's default (always) is not W2's (never).
  IFS='|' read -r _ _ _ kvs_flags _ <<<"$w"
  [[ $kvs_flags == *"--fsync "* ]] || die "workload $name: its kvs-server flags name no --fsync"
  if [[ -z $only || ",$only," == *",$name,"* ]]; then
    selected+=("$w")
  fi
done
[[ ${#selected[@]} -gt 0 ]] || die "--only '$only' names no workload (W1 to W7)"

locked=()
if [[ "${CI:-}" == "true" ]]; then
  locked=(--locked)
fi
say "cargo build ${locked[*]} --release --bins"
cargo build "${locked[@]}" --release --bins
bench=target/release/kvs-bench
kvs_server=target/release/kvs-server

if ! command -v redis-server >/dev/null 2>&1; then
  bash ci/install-deps.sh >&2
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server is not installed and could not be; nothing to compare with"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed to pin the servers and the client"

if [[ $(nproc) -ge 2 ]]; then
  server_cpu=0
  client_cpu=1
else
  server_cpu=0
  client_cpu=0
  say "only one CPU: the servers and the client share it, so the numbers say little"
fi

work=$(mktemp -d)
results="$work/runs.jsonl"
server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A TCP port nobody uses, below the kernel's ephemeral range (a port some connection on the
# machine uses as its local end cannot be listened on, and those come from that range).
ephemeral_low=$(cut -f 1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % (ephemeral_low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

# Waits until 127.0.0.1:$1 accepts connections, while process $2 lives, for up to 20 s.
wait_listening() {
  local port=$1 pid=$2 deadline=$((SECONDS + 20))
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || return 1
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# Percent of all CPUs busy over one second, from /proc/stat (iowait counts as idle).
busy_percent() {
  local a b
  read -r -a a </proc/stat
  sleep 1
  read -r -a b </proc/stat
  local total=0 i
  for ((i = 1; i < ${#a[@]}; i++)); do
    total=$((total + b[i] - a[i]))
  done
  local idle=$((b[4] - a[4] + b[5] - a[5]))
  ((total > 0)) || { echo 0; return; }
  echo $((100 * (total - idle) / total))
}

# Waits for a quiet machine; prints "yes" or "busy N%" (what the run started with).
wait_quiet() {
  local deadline=$((SECONDS + quiet_timeout)) busy
  while true; do
    busy=$(busy_percent)
    if ((busy <= quiet_busy_max)); then
      echo "yes"
      return
    fi
    if ((SECONDS >= deadline)); then
      echo "busy ${busy}%"
      return
    fi
  done
}

# Stops the server started last: SIGTERM, then SIGKILL after 10 s.
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while kill -0 "$server_pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.05
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}

failures=0
busy_starts=0
attempts=0
# One run: workload fields in $1, server (kvs or redis) in $2, round in $3.
run_one() {
  local name title client_flags kvs_flags redis_flags pinning
  IFS='|' read -r name title client_flags kvs_flags redis_flags pinning <<<"$1"
  local server=$2 round=$3
  local quiet port dir protocol
  quiet=$(wait_quiet)
  attempts=$((attempts + 1))
  [[ $quiet == yes ]] || busy_starts=$((busy_starts + 1))
  dir="$work/data-$server-$name-$round"
  local log="$work/$server-$name-$round.log" try
  # A port that looked free can still be taken by the time the server binds it: try again.
  for try in 1 2 3; do
    port=$(free_port)
    rm -rf "$dir"
    mkdir -p "$dir"
    if [[ $server == kvs ]]; then
      protocol=$kvs_protocol
      local pin=(taskset -c "$server_cpu")
      [[ $pinning == pinned ]] || pin=()
      # shellcheck disable=SC2086 # flags are space-separated on purpose
      "${pin[@]}" "$kvs_server" --addr "127.0.0.1:$port" --dir "$dir" $kvs_flags >"$log" 2>&1 &
    else
      protocol=resp
      # shellcheck disable=SC2086
      taskset -c "$server_cpu" redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --save '' --appendonly no $redis_flags --logfile "$log" &
    fi
    server_pid=$!
    if wait_listening "$port" "$server_pid"; then
      break
    fi
    say "round $round $name $server: the server did not start (try $try of 3); its log:"
    tail -n 5 "$log" >&2 || true
    stop_server
    if [[ $try -eq 3 ]]; then
      failures=$((failures + 1))
      return
    fi
  done
  local out="$work/run.json" status=0
  # shellcheck disable=SC2086
  "$bench" --addr "127.0.0.1:$port" --protocol "$protocol" --keys 100000 --key-size 16 \
    $client_flags --duration "$duration" --warmup "$warmup" --seed 1 --cpu "$client_cpu" \
    --server-pid "$server_pid" --json --no-progress \
    --tag "workload=$name" --tag "title=$title" --tag "server=$server" \
    --tag "round=$round" --tag "quiet=$quiet" >"$out" 2>"$work/bench.err" || status=$?
  stop_server
  rm -rf "$dir"
  if [[ -s $out ]]; then
    cat "$out" >>"$results"
    local ops p99
    ops=$(sed -n 's/.*"ops_per_sec":\([0-9.]*\).*/\1/p' "$out")
    p99=$(sed -n 's/.*"latency_us":{[^}]*"p99":\([0-9.]*\).*/\1/p' "$out")
    say "round $round/$rounds $name $server: ${ops%.*} ops/s, p99 ${p99%.*} µs (quiet: $quiet)"
  fi
  if [[ $status -ne 0 ]]; then
    failures=$((failures + 1))
    say "round $round $name $server: kvs-bench exited with $status:"
    tail -n 5 "$work/bench.err" >&2 || true
  fi
}

say "${#selected[@]} workload(s) x 2 servers x $rounds round(s), ${duration} s each after ${warmup} s warm-up"
for ((round = 1; round <= rounds; round++)); do
  for w in "${selected[@]}"; do
    # Alternate which server goes first, so a drift in the machine's speed does not always
    # favour the same one.
    if ((round % 2 == 1)); then
      run_one "$w" kvs "$round"
      run_one "$w" redis "$round"
    else
      run_one "$w" redis "$round"
      run_one "$w" kvs "$round"
    fi
  done
done

[[ -s $results ]] || die "no run produced a result"

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
  commit="$commit (with uncommitted changes)"
fi
redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
meta=(
  --meta "CPU=$cpu_model, $(nproc) CPUs"
  --meta "Kernel=$(uname -r)"
  --meta "Commit=$commit"
  --meta "Redis=$redis_version (redis-server from the distribution)"
  --meta "Date=$(date -u +%Y-%m-%d)"
  --meta "Settings=$rounds round(s) interleaved, ${duration} s measured after ${warmup} s warm-up per run, closed loop; 16-byte keys drawn uniformly from 100,000 (seed 1); 50 connections (W5: 1); kvs-bench over ${kvs_protocol} to kvs and RESP to Redis, pinned to CPU $client_cpu; each server started fresh per run and pinned to CPU $server_cpu with taskset (W7: kvs unpinned); kvs with --fsync never and Redis with --save '' --appendonly no, except W3: kvs --fsync always against Redis --appendonly yes --appendfsync always; GET workloads write every key first (--prefill)"
  --meta "Quiet machine=$((attempts - busy_starts)) of $attempts run(s) started with at most ${quiet_busy_max}% of the CPUs busy; the rest waited ${quiet_timeout} s and ran anyway"
)
notes=(
  --note "Generated by \`$invocation\`. The first column names each workload; the script defines them. Numbers move from machine to machine and hour to hour; compare the two servers within one run of the script, not across runs."
)
notes+=("${user_notes[@]}")
if [[ $failures -gt 0 ]]; then
  notes+=(--note "$failures run(s) failed (see the errors column); their medians are missing or include the failure.")
fi

if $smoke; then
  "$bench" summarize "$results" "${meta[@]}" "${notes[@]}"
else
  mkdir -p docs/bench
  cp "$results" docs/bench/kvs-vs-redis-runs.jsonl
  "$bench" summarize "$results" --markdown BENCHMARKS.md --svg docs/bench/kvs-vs-redis.svg \
    --svg-link docs/bench/kvs-vs-redis.svg "${meta[@]}" "${notes[@]}"
  say "wrote BENCHMARKS.md (section \"Server: kvs vs Redis (kvs-bench)\"), docs/bench/kvs-vs-redis.svg and the runs in docs/bench/kvs-vs-redis-runs.jsonl"
fi
if [[ $failures -gt 0 ]]; then
  die "$failures run(s) failed"
fi
