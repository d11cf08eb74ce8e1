#!/usr/bin/env bash
# demo.sh: a two-host IPIP tunnel on network namespaces, end to end (`npm run demo`).
#
#    pod A 198.51.100.10                                                   pod B 203.0.113.10
#        |                                                                        |
#   host A [ipip0 198.51.100.0/32]  ipipd  ul0 192.0.2.1 ==== 192.0.2.2 ul0  ipipd  [ipip0 203.0.113.0/32] host B
#                                     (IPIP, protocol 4, over a veth pair)
#
# Builds the topology with scripts/netns-setup.sh, starts one `ipipd run` per host, shows a ping
# and a TCP transfer (checked by SHA-256) from pod A to pod B and back, prints the daemons'
# counters, stops them with SIGTERM, checks that they removed what they created, and deletes
# everything: on success, on failure and on Ctrl-C. Needs root, Node.js and iproute2 only
# (uses `ping` when it is installed, a Node UDP echo otherwise).
#
# With --hosts N and/or --bgp mesh|rr it runs the cluster demo instead (tools/netns/cluster-demo.ts,
# built to dist/): N hosts with ipipd and BIRD each, as Calico runs tunl0 and BIRD, a host joining
# and a block withdrawn, with the time routes took to converge (`npm run demo:cluster`).
#
# Usage: npm run demo [-- --bytes N] [--keep-logs]
#        npm run demo -- --hosts N --bgp mesh|rr [--underlay switch|router]
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BYTES=$((16 * 1024 * 1024))
KEEP_LOGS=0
usage() {
  cat <<'EOF_USAGE'
Usage: npm run demo [-- OPTIONS]     (or: sudo scripts/demo.sh [OPTIONS])
       npm run demo -- --hosts N --bgp mesh|rr [--underlay switch|router]

A two-host IPIP tunnel on network namespaces, end to end: one `ipipd run` per host, a ping and
a TCP transfer (checked by SHA-256) between a pod on each, the daemons' counters, then a clean
stop, a check that they removed what they created, and everything deleted. Needs root, Node.js,
iproute2 and a built tree (`npm ci`).

Options:
  --bytes N      bytes of the TCP transfer (default 16777216)
  --keep-logs    keep the daemons' logs and configs (the directory is printed)
  -h, --help     this text

Cluster demo (npm run demo:cluster is --hosts 8 --bgp mesh): N hosts (2-31) with one pod each,
ipipd (routes.source: kernel) and BIRD on every host, a full iBGP mesh or a route reflector;
every pod pings every other, host N+1 joins, one host withdraws its block and announces it
again, and the time until every host's routes showed each change is printed. Needs bird2 too.
  --hosts N               hosts at the start (default 8)
  --bgp mesh|rr           full mesh (default) or one route reflector
  --underlay switch|router  one underlay subnet (default), or two (Calico's cross-subnet mode)
EOF_USAGE
}
CLUSTER=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts|--bgp|--underlay) [ $# -ge 2 ] || { echo "demo: $1 needs a value" >&2; exit 2; }; CLUSTER+=("$1" "$2"); shift 2 ;;
    --bytes) BYTES="$2"; shift 2 ;;
    --keep-logs) KEEP_LOGS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "demo: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

# Bold headings on a terminal only: a log file or a pipe gets no escape sequences.
if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
die() { echo "demo: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, TUN devices, raw sockets)"
[ -c /dev/net/tun ] || die "/dev/net/tun is missing"
command -v ip >/dev/null || die "iproute2 (ip) is missing: apt-get install -y iproute2"
[ -f "$ROOT/build/Release/ipipd_native.node" ] && [ -f "$ROOT/dist/src/daemon/cli.js" ] \
  || die "not built: run 'npm ci' first (it builds the native addon and the TypeScript)"

if [ ${#CLUSTER[@]} -gt 0 ]; then
  for tool in bird birdc ping; do
    command -v "$tool" >/dev/null || die "$tool is missing: scripts/install-deps.sh installs it (bird2, iputils-ping)"
  done
  # Its own clean-up on every exit path (tools/netns/safety-net.ts); exec, so Ctrl-C reaches it.
  exec node "$ROOT/dist/tools/netns/cluster-demo.js" "${CLUSTER[@]}"
fi

PREFIX="demo$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/ipipd-demo.XXXXXX")"
IPIPD=(node "$ROOT/bin/ipipd.js")
TRAFFIC=(node "$ROOT/dist/test/fixtures/traffic.js")
PIDS=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$ROOT/scripts/netns-setup.sh" down --prefix "$PREFIX" >/dev/null 2>&1 || true
  if [ "$rc" != 0 ] && [ -d "$OUT" ]; then
    echo "demo: failed (exit $rc); daemon logs:" >&2
    for f in "$OUT"/h*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
  fi
  if [ "$KEEP_LOGS" = 1 ]; then echo "logs kept in $OUT"; else rm -rf "$OUT"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

step "1. topology: two hosts with one pod each, prefix $PREFIX"
"$ROOT/scripts/netns-setup.sh" up --prefix "$PREFIX" --out "$OUT"
# shellcheck disable=SC1091
. "$OUT/topology.env"

step "2. start one ipipd per host"
for h in 1 2; do
  ns_var="H${h}_NS"
  "${IPIPD[@]}" check --config "$OUT/h$h.yaml"
  # Not through in_ns: $! must be the daemon itself (ip netns exec execs it), not a subshell.
  ip netns exec "${!ns_var}" "${IPIPD[@]}" run --config "$OUT/h$h.yaml" 2>"$OUT/h$h.log" &
  PIDS+=($!)
done
for h in 1 2; do
  for _ in $(seq 1 100); do
    "${IPIPD[@]}" status --socket "$OUT/h$h.sock" >/dev/null 2>&1 && break
    kill -0 "${PIDS[$((h - 1))]}" 2>/dev/null || die "ipipd on h$h exited during start-up"
    sleep 0.1
  done
  "${IPIPD[@]}" status --socket "$OUT/h$h.sock" >/dev/null || die "ipipd on h$h did not come up"
done
echo "both daemons up; host A's tunnel device and routes:"
in_ns "$H1_NS" ip -brief addr show dev ipip0
in_ns "$H1_NS" ip route show dev ipip0

ping_pod() {
  local from_ns="$1" to="$2"
  if command -v ping >/dev/null; then
    in_ns "$from_ns" ping -c 3 -i 0.2 -W 2 "$to"
  else
    echo "(no ping binary: UDP echo with Node instead)"
    local to_ns="$3" ready="$OUT/echo.ready"
    rm -f "$ready"
    in_ns "$to_ns" "${TRAFFIC[@]}" udp-echo --bind "$to" --port 7 --ready-file "$ready" --timeout 20 >/dev/null &
    local echo_pid=$!
    for _ in $(seq 1 50); do [ -f "$ready" ] && break; sleep 0.1; done
    in_ns "$from_ns" "${TRAFFIC[@]}" udp-ping --to "$to" --port 7 --count 3 --interval-ms 200 --timeout 10
    kill "$echo_pid" 2>/dev/null || true
    wait "$echo_pid" 2>/dev/null || true
  fi
}

step "3. ping pod A ($H1_P1_ADDR) -> pod B ($H2_P1_ADDR), and back"
ping_pod "$H1_P1_NS" "$H2_P1_ADDR" "$H2_P1_NS"
ping_pod "$H2_P1_NS" "$H1_P1_ADDR" "$H1_P1_NS"

transfer() {
  local from_ns="$1" to_ns="$2" to="$3" seed="$4" ready="$OUT/sink.ready"
  rm -f "$ready"
  in_ns "$to_ns" "${TRAFFIC[@]}" tcp-sink --bind "$to" --port 5001 --ready-file "$ready" --timeout 60 >"$OUT/sink.json" &
  local sink_pid=$!
  for _ in $(seq 1 50); do [ -f "$ready" ] && break; sleep 0.1; done
  in_ns "$from_ns" "${TRAFFIC[@]}" tcp-send --to "$to" --port 5001 --bytes "$BYTES" --seed "$seed" --timeout 60 >"$OUT/send.json"
  wait "$sink_pid"
  node -e '
    const [send, sink] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8")));
    const ok = send.sha256 === sink.sha256 && send.bytes === sink.bytes;
    console.log(`sent ${send.bytes} bytes in ${send.seconds.toFixed(2)} s (${send.mbps.toFixed(0)} Mb/s); received ${sink.bytes} bytes; sha256 ${ok ? "matches" : "DIFFERS"} (${sink.sha256.slice(0, 16)}...)`);
    process.exit(ok ? 0 : 1);
  ' "$OUT/send.json" "$OUT/sink.json"
}

step "4. TCP transfer of $BYTES bytes pod A -> pod B, then pod B -> pod A"
transfer "$H1_P1_NS" "$H2_P1_NS" "$H2_P1_ADDR" 1
transfer "$H2_P1_NS" "$H1_P1_NS" "$H1_P1_ADDR" 2

step "5. the daemons' counters (ipipd status)"
for h in 1 2; do
  echo "--- host h$h"
  "${IPIPD[@]}" status --socket "$OUT/h$h.sock"
done

step "6. stop the daemons (SIGTERM) and check that they cleaned up"
for pid in "${PIDS[@]}"; do kill -TERM "$pid"; done
for pid in "${PIDS[@]}"; do wait "$pid" || die "ipipd (pid $pid) exited with status $?"; done
PIDS=()
for h in 1 2; do
  ns_var="H${h}_NS"
  if in_ns "${!ns_var}" ip link show ipip0 >/dev/null 2>&1; then die "ipip0 still exists on h$h"; fi
  if in_ns "${!ns_var}" ip route | grep -q ipip0; then die "routes via ipip0 left on h$h"; fi
  grep -q '"msg":"closed: final counters"' "$OUT/h$h.log" || die "h$h logged no final counters"
  echo "h$h: device, address and routes removed; final counters logged"
done

step "done: tearing the namespaces down"
