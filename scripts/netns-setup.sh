#!/usr/bin/env bash
# netns-setup.sh: build (or tear down) a test topology for ipipd out of network namespaces.
#
# Every namespace is named "<prefix>-...", so parallel runs with different prefixes never meet, and
# nothing is ever created in the root namespace (veths are born inside their namespaces).
#
#   Default (--underlay direct, 2 hosts, 1 pod each):
#
#    P-h1p1                 P-h1                                 P-h2                 P-h2p1
#   +---------------+      +-------------------------+          +-------------------------+      +---------------+
#   | eth0          |      | p1  198.51.100.1/32     |          | p1  203.0.113.1/32      |      | eth0          |
#   | 198.51.100.10 +------+ (ipip0 198.51.100.0/32) |   ul0    | (ipip0 203.0.113.0/32)  +------+ 203.0.113.10  |
#   | default via   |      |             192.0.2.1/24+----------+192.0.2.2/24             |      | default via   |
#   |  198.51.100.1 |      +-------------------------+          +-------------------------+      |  203.0.113.1  |
#   +---------------+                                                                           +---------------+
#
#   --underlay switch (2..32 hosts; the default above 2): every host's ul0 is 192.0.2.<i>/24 on a
#   bridge in P-sw.
#
#        P-h1 ul0 ---- h1 +------+ h3 ---- ul0 P-h3
#                         | P-sw |
#        P-h2 ul0 ---- h2 | br0  | h4 ---- ul0 P-h4      ... hN ---- ul0 P-hN
#                         +------+
#
#   --underlay router, 2 hosts: two /25s joined by a router, for path-MTU tests that lower b0's MTU.
#
#        P-h1 ul0 192.0.2.1/25 ---- a0 192.0.2.126/25 [P-r, ip_forward=1] b0 192.0.2.254/25 ---- ul0 192.0.2.129/25 P-h2
#        (h1: 192.0.2.128/25 via 192.0.2.126)                            (h2: 192.0.2.0/25 via 192.0.2.254)
#
#   --underlay router, 3..32 hosts: the same two subnets, a0 and b0 now bridges in P-r, so that some
#   peers share a subnet and some do not (Calico's cross-subnet case). The first half of the hosts
#   (K = ceil(N/2)) is on subnet a, the rest on subnet b:
#
#        P-h1 ul0 192.0.2.1/25   --+                                          +-- ul0 192.0.2.129/25 P-h<K+1>
#        ...                       +-- a0 192.0.2.126/25 [P-r] b0 192.0.2.254/25 --+  ...
#        P-hK ul0 192.0.2.K/25   --+   (bridges; ports h<i>)                  +-- ul0 192.0.2.(128+N-K)/25 P-hN
#
#   Pod address blocks (Calico-style node blocks), base B. Up to 4 hosts, /25s:
#     h1 198.51.100.0/25   h2 203.0.113.0/25   h3 198.51.100.128/25   h4 203.0.113.128/25
#   5..32 hosts, /28s in order: h1 198.51.100.0/28, h2 198.51.100.16/28, ... h16 198.51.100.240/28,
#     h17 203.0.113.0/28, ... h32 203.0.113.240/28 (the pools are 198.51.100.0/24 and 203.0.113.0/24).
#     B+0  tunnel address of the host's ipipd TUN (/32; added by the daemon, not by this script)
#     B+1  pod gateway, the same /32 on every host-side pod veth p<j>
#     B+9+j  pod j's eth0 (/32), routes "B+1 dev eth0 scope link" and "default via B+1";
#            the host has "B+9+j/32 dev p<j>".
#   Hosts get no default route: the underlay /24 (or /25 + route) is all they know.
#
#   --bgp mesh|rr: each host's ipipd config takes its peers from the kernel (routes.source:
#   kernel), and scripts/netns-bgp.sh writes one BIRD config per host (DIR/h<i>.bird.conf; README,
#   "A cluster with BIRD"): a full mesh, or sessions to one route reflector, P-rr on the switch
#   (ul0 192.0.2.250/24) or, on the router underlay, the router P-r itself (192.0.2.126). This
#   script starts no BIRD; "down --out DIR" kills those whose pid files are in DIR.
#
#        P-h1 ul0 ---- h1 +------+ rr ---- ul0 P-rr 192.0.2.250 (bird: rr client h1..hN)
#                         | P-sw |
#        P-h2 ul0 ---- h2 | br0  | hN ---- ul0 P-hN
#
# Usage:
#   scripts/netns-setup.sh up   [--prefix P] [--hosts N] [--pods M] [--underlay direct|switch|router]
#                               [--underlay-mtu MTU] [--pod-mtu MTU] [--out DIR]
#                               [--bgp mesh|rr [--bgp-members K] [--ipip-mode always|cross-subnet]]
#   scripts/netns-setup.sh down --prefix P [--out DIR]
#   scripts/netns-setup.sh --help
#
# Needs root, bash and iproute2 only.
set -Eeuo pipefail

PROG=netns-setup
MAX_HOSTS=32
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

usage() {
  cat <<'EOF'
Usage:
  scripts/netns-setup.sh up   [--prefix P] [--hosts N] [--pods M] [--underlay direct|switch|router]
                              [--underlay-mtu MTU] [--pod-mtu MTU] [--out DIR]
                              [--bgp mesh|rr [--bgp-members K] [--ipip-mode always|cross-subnet]]
  scripts/netns-setup.sh down --prefix P [--out DIR]

up     Create namespaces P-h1..P-hN (hosts) and P-h<i>p<j> (pods), the underlay (device ul0 in
       every host) and the pod veths; write DIR/topology.env, DIR/topology.json and one ipipd
       config per host, DIR/h<i>.yaml (with --bgp also DIR/h<i>.bird.conf, and DIR/rr.bird.conf
       with rr). All or nothing: on any failure everything made so far is deleted and the exit
       status is non-zero.
down   Kill processes still inside P-* namespaces, delete every namespace named P-*, and check that
       none is left. Idempotent. With --out DIR, first kill the BIRDs whose pid files
       (DIR/*.bird.pid) are there, and remove the files "up" wrote there.

Options:
  --prefix P          [a-z0-9]{1,8}. "up" generates one (ipd + 4 hex digits) if omitted.
  --hosts N           2..32 (default 2)
  --pods M            pods per host, 1..4 (default 1)
  --underlay KIND     direct (veth between two hosts; default for 2 hosts),
                      switch (bridge in P-sw; default for 3 or more hosts),
                      router (two /25 subnets joined by P-r: 2 hosts one on each, or N hosts, the
                      first ceil(N/2) on 192.0.2.0/25, the others on 192.0.2.128/25)
  --underlay-mtu MTU  MTU of every underlay link, 576..65535 (default 1500)
  --pod-mtu MTU       MTU of the pod veths, 576..65535 (default 1500)
  --out DIR           where to write the generated files (default ./netns-<P>)
  --bgp mesh|rr       ipipd configs with routes.source: kernel, and BIRD configs (DIR/h<i>.bird.conf,
                      from examples/bird/ by scripts/netns-bgp.sh): a full iBGP mesh, or one route
                      reflector (namespace P-rr at 192.0.2.250 on the switch; the router P-r itself
                      on the router underlay; not on direct). BIRDs are not started: run
                      "ip netns exec P-h<i> bird -c DIR/h<i>.bird.conf -s DIR/h<i>.bird.ctl -P DIR/h<i>.bird.pid"
  --bgp-members K     only h1..hK are in the BGP configs (default all), so h<K+1>.. can join later
                      (scripts/netns-bgp.sh render --out DIR --members K+1, then birdc configure)
  --ipip-mode MODE    always (every other host through the TUN) or cross-subnet (a host on the same
                      underlay subnet by a plain route via ul0); default cross-subnet on the router
                      underlay, always otherwise

Addresses: underlay 192.0.2.0/24; pod blocks, up to 4 hosts: h1 198.51.100.0/25, h2
203.0.113.0/25, h3 198.51.100.128/25, h4 203.0.113.128/25; 5..32 hosts: /28s in order,
198.51.100.0/28, .16/28, ... then 203.0.113.0/28, ... (B+0 tunnel, B+1 gateway, B+9+j pod j).

Testing hook: NETNS_SETUP_FAIL_AT=namespaces|underlay|pods|files makes "up" fail after that step,
to check that it rolls back.
EOF
}

die_usage() { echo "$PROG: $*" >&2; echo "Try '$0 --help'." >&2; exit 2; }
err() { echo "$PROG: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Helpers

# List the namespaces whose name starts with "$1-" (one per line).
list_prefixed() {
  local name _
  while read -r name _; do
    if [[ "$name" == "$1-"* ]]; then echo "$name"; fi
  done < <(ip netns list 2>/dev/null)
}

# Kill every process running inside the given namespaces: TERM, up to 2 s grace, then KILL.
kill_ns_procs() {
  local ns pids i
  ((${#} > 0)) || return 0
  pids="$(for ns in "$@"; do ip netns pids "$ns" 2>/dev/null || true; done)"
  [[ -n "$pids" ]] || return 0
  # shellcheck disable=SC2086 # word splitting of the pid list is intended
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    pids="$(for ns in "$@"; do ip netns pids "$ns" 2>/dev/null || true; done)"
    [[ -n "$pids" ]] || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
}

# Delete the given namespaces (processes first). Never fails: the caller checks what is left.
delete_namespaces() {
  local ns
  kill_ns_procs "$@"
  for ns in "$@"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Write net.* sysctls inside a namespace through /proc/sys (no dependence on procps' sysctl).
# Keys under a missing tree (e.g. IPv6 disabled at boot) are skipped.
ns_sysctl() {
  local ns="$1"
  shift
  # shellcheck disable=SC2016 # the inner script expands its own variables
  ip netns exec "$ns" bash -c '
    for kv in "$@"; do
      key="${kv%%=*}" val="${kv#*=}"
      f="/proc/sys/${key//.//}"
      if [[ -e "$f" ]]; then printf "%s\n" "$val" >"$f"; fi
    done' _ "$@"
}

HOST_SYSCTLS=(
  net.ipv4.ip_forward=1
  net.ipv4.conf.all.rp_filter=0
  net.ipv4.conf.default.rp_filter=0
  net.ipv6.conf.all.disable_ipv6=1
  net.ipv6.conf.default.disable_ipv6=1
)
LEAF_SYSCTLS=(
  net.ipv6.conf.all.disable_ipv6=1
  net.ipv6.conf.default.disable_ipv6=1
)

# Block base address of host i (1-based), for BLOCK_LEN 25 (up to 4 hosts) or 28 (5..32 hosts).
block_base() {
  if ((BLOCK_LEN == 28)); then
    local k=$(($1 - 1))
    if ((k < 16)); then echo "198.51.100.$((k * 16))"; else echo "203.0.113.$(((k - 16) * 16))"; fi
    return
  fi
  case "$1" in
    1) echo 198.51.100.0 ;;
    2) echo 203.0.113.0 ;;
    3) echo 198.51.100.128 ;;
    4) echo 203.0.113.128 ;;
  esac
}

# addr_plus A.B.C.D N: the address N above A.B.C.D (never crosses a /24 here).
addr_plus() {
  local a="$1" n="$2"
  echo "${a%.*}.$((${a##*.} + n))"
}

json_str() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  printf '"%s"' "$s"
}

yaml_str() {
  if [[ "$1" =~ ^[A-Za-z0-9_./-]+$ ]]; then printf '%s' "$1"; else json_str "$1"; fi
}

check_mtu() {
  if ! [[ "$2" =~ ^[0-9]{3,5}$ ]] || (($2 < 576 || $2 > 65535)); then
    die_usage "$1 must be 576..65535, got '$2'"
  fi
}

# ---------------------------------------------------------------------------------------------
# Arguments

CMD="${1:-}"
case "$CMD" in
  -h | --help | help) usage; exit 0 ;;
  up | down) shift ;;
  "") usage >&2; exit 2 ;;
  *) die_usage "unknown command '$CMD'" ;;
esac

PREFIX="" HOSTS=2 PODS=1 UNDERLAY="" UNDERLAY_MTU=1500 POD_MTU=1500 OUT="" BGP="" BGP_MEMBERS="" IPIP_MODE=""
while (($# > 0)); do
  opt="$1"
  if [[ "$opt" == --*=* ]]; then
    set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
    opt="$1"
  fi
  case "$opt" in
    -h | --help) usage; exit 0 ;;
    --prefix | --hosts | --pods | --underlay | --underlay-mtu | --pod-mtu | --out | --bgp | --bgp-members | --ipip-mode)
      (($# >= 2)) || die_usage "$opt needs a value"
      case "$opt" in
        --prefix) PREFIX="$2" ;;
        --hosts) HOSTS="$2" ;;
        --pods) PODS="$2" ;;
        --underlay) UNDERLAY="$2" ;;
        --underlay-mtu) UNDERLAY_MTU="$2" ;;
        --pod-mtu) POD_MTU="$2" ;;
        --out) OUT="$2" ;;
        --bgp) BGP="$2" ;;
        --bgp-members) BGP_MEMBERS="$2" ;;
        --ipip-mode) IPIP_MODE="$2" ;;
      esac
      shift 2
      ;;
    *) die_usage "unknown argument '$opt'" ;;
  esac
done

if [[ -n "$PREFIX" && ! "$PREFIX" =~ ^[a-z0-9]{1,8}$ ]]; then
  die_usage "--prefix must match [a-z0-9]{1,8}, got '$PREFIX'"
fi
((EUID == 0)) || { err "must run as root (network namespaces)"; exit 1; }
command -v ip >/dev/null || { err "iproute2 'ip' not found"; exit 1; }

# ---------------------------------------------------------------------------------------------
# down

# Files "up" writes into the output directory (the daemon's sockets are the caller's business),
# and those a BIRD started from its configs writes there.
generated_files() {
  local dir="$1" i n
  echo "$dir/topology.env"
  echo "$dir/topology.json"
  for ((i = 1; i <= MAX_HOSTS; i++)); do echo "$dir/h$i.yaml"; done
  for n in rr $(seq 1 "$MAX_HOSTS" | sed 's/^/h/'); do
    for f in conf ctl pid log; do echo "$dir/$n.bird.$f"; done
  done
}

# Kill (TERM, then KILL after 2 s) every BIRD whose pid file is in DIR and runs in a namespace
# of the prefix, by its pid.
kill_birds() {
  local dir="$1" f pid i
  local -a pids=()
  for f in "$dir"/*.bird.pid; do
    [[ -f "$f" ]] || continue
    pid="$(<"$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    if list_prefixed "$PREFIX" | grep -qxF "$(ip netns identify "$pid" 2>/dev/null)"; then pids+=("$pid"); fi
  done
  ((${#pids[@]} > 0)) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for ((i = 0; i < 20; i++)); do
    kill -0 "${pids[@]}" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}

if [[ "$CMD" == down ]]; then
  [[ -n "$PREFIX" ]] || die_usage "down needs --prefix"
  if [[ -n "$OUT" && -d "$OUT" ]]; then kill_birds "$OUT"; fi
  mapfile -t victims < <(list_prefixed "$PREFIX")
  delete_namespaces "${victims[@]}"
  if [[ -n "$OUT" && -d "$OUT" ]]; then
    while read -r f; do rm -f -- "$f"; done < <(generated_files "$OUT")
    rmdir -- "$OUT" 2>/dev/null || true
  fi
  mapfile -t left < <(list_prefixed "$PREFIX")
  if ((${#left[@]} > 0)); then
    err "namespaces still present after down: ${left[*]}"
    exit 1
  fi
  echo "$PROG: down prefix=$PREFIX (${#victims[@]} namespaces deleted)"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# up: validate everything before touching the system

if ! [[ "$HOSTS" =~ ^[0-9]{1,2}$ ]] || ((HOSTS < 2 || HOSTS > MAX_HOSTS)); then
  die_usage "--hosts must be 2..$MAX_HOSTS, got '$HOSTS'"
fi
if ! [[ "$PODS" =~ ^[1-4]$ ]]; then die_usage "--pods must be 1..4, got '$PODS'"; fi
if [[ -z "$UNDERLAY" ]]; then
  if ((HOSTS == 2)); then UNDERLAY=direct; else UNDERLAY=switch; fi
fi
case "$UNDERLAY" in
  direct) ((HOSTS == 2)) || die_usage "--underlay $UNDERLAY needs exactly 2 hosts (use switch)" ;;
  switch | router) ;;
  *) die_usage "--underlay must be direct, switch or router, got '$UNDERLAY'" ;;
esac
check_mtu --underlay-mtu "$UNDERLAY_MTU"
case "$BGP" in
  "") [[ -z "$BGP_MEMBERS$IPIP_MODE" ]] || die_usage "--bgp-members and --ipip-mode need --bgp" ;;
  mesh | rr)
    [[ "$BGP" != rr || "$UNDERLAY" != direct ]] || die_usage "--bgp rr needs --underlay switch or router"
    BGP_MEMBERS="${BGP_MEMBERS:-$HOSTS}"
    if ! [[ "$BGP_MEMBERS" =~ ^[0-9]{1,2}$ ]] || ((BGP_MEMBERS < 2 || BGP_MEMBERS > HOSTS)); then
      die_usage "--bgp-members must be 2..$HOSTS, got '$BGP_MEMBERS'"
    fi
    if [[ -z "$IPIP_MODE" ]]; then
      if [[ "$UNDERLAY" == router ]]; then IPIP_MODE=cross-subnet; else IPIP_MODE=always; fi
    fi
    [[ "$IPIP_MODE" == always || "$IPIP_MODE" == cross-subnet ]] || die_usage "--ipip-mode must be always or cross-subnet, got '$IPIP_MODE'"
    ;;
  *) die_usage "--bgp must be mesh or rr, got '$BGP'" ;;
esac
check_mtu --pod-mtu "$POD_MTU"
if [[ -z "$PREFIX" ]]; then
  PREFIX="ipd$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
  echo "$PROG: generated prefix $PREFIX"
fi
OUT="${OUT:-./netns-$PREFIX}"

# ---------------------------------------------------------------------------------------------
# up: rollback machinery. Everything made is recorded; on any non-zero exit it is undone.

CREATED_NS=()
CREATED_FILES=()
CREATED_OUT_DIR=0
COMMITTED=0
STARTED_MS=$(($(date +%s%N) / 1000000))

on_err() {
  err "failed (line $1): $2"
}
rollback() {
  local status=$?
  ((COMMITTED == 0)) || return 0
  trap - ERR
  set +e
  err "up failed (status $status); rolling back ${#CREATED_NS[@]} namespaces"
  delete_namespaces "${CREATED_NS[@]}"
  local f
  for f in "${CREATED_FILES[@]}"; do rm -f -- "$f"; done
  if ((CREATED_OUT_DIR)); then rmdir -- "$OUT" 2>/dev/null; fi
  exit "$((status == 0 ? 1 : status))"
}
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR
trap rollback EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_point() {
  if [[ "${NETNS_SETUP_FAIL_AT:-}" == "$1" ]]; then
    err "NETNS_SETUP_FAIL_AT=$1: failing on purpose"
    return 1
  fi
}

# Recorded before it exists: a signal is handled right after "ip netns add" returns, and must not
# leak the namespace. Forgotten again if the add fails (the name may belong to someone else).
add_ns() {
  CREATED_NS+=("$1")
  if ! ip netns add "$1"; then
    unset 'CREATED_NS[-1]'
    return 1
  fi
  ip -n "$1" link set lo up
}

# Address plan. On the router underlay, hosts 1..SUBNET_A are on subnet a (192.0.2.<i>/25), the
# others on subnet b (192.0.2.<128 + i - SUBNET_A>/25): for 2 hosts, 192.0.2.1 and 192.0.2.129.
BLOCK_LEN=25
((HOSTS <= 4)) || BLOCK_LEN=28
SUBNET_A=$(((HOSTS + 1) / 2))
declare -a H_NS H_UL H_ULLEN H_SUBNET H_BLOCK H_BASE H_TUN H_GW
for ((i = 1; i <= HOSTS; i++)); do
  H_NS[i]="$PREFIX-h$i"
  H_BASE[i]="$(block_base "$i")"
  H_BLOCK[i]="${H_BASE[i]}/$BLOCK_LEN"
  H_TUN[i]="${H_BASE[i]}"
  H_GW[i]="$(addr_plus "${H_BASE[i]}" 1)"
  if [[ "$UNDERLAY" != router ]]; then
    H_UL[i]="192.0.2.$i" H_ULLEN[i]=24 H_SUBNET[i]=192.0.2.0/24
  elif ((i <= SUBNET_A)); then
    H_UL[i]="192.0.2.$i" H_ULLEN[i]=25 H_SUBNET[i]=192.0.2.0/25
  else
    H_UL[i]="192.0.2.$((128 + i - SUBNET_A))" H_ULLEN[i]=25 H_SUBNET[i]=192.0.2.128/25
  fi
done
pod_ns() { echo "$PREFIX-h$1p$2"; }
pod_addr() { addr_plus "${H_BASE[$1]}" "$((9 + $2))"; }
SW_NS="$PREFIX-sw"
R_NS="$PREFIX-r"
# The route reflector (--bgp rr): its own namespace on the switch, the router on the router underlay.
RR_NS="" RR_ADDRESS="" RR_DEVS=""
if [[ "$BGP" == rr && "$UNDERLAY" == switch ]]; then RR_NS="$PREFIX-rr" RR_ADDRESS=192.0.2.250 RR_DEVS=ul0; fi
if [[ "$BGP" == rr && "$UNDERLAY" == router ]]; then RR_NS="$R_NS" RR_ADDRESS=192.0.2.126 RR_DEVS="a0 b0"; fi

# 1. Namespaces and sysctls (sysctl "default" values first, so that every device made later
#    inherits rp_filter=0 and disable_ipv6=1).
for ((i = 1; i <= HOSTS; i++)); do
  add_ns "${H_NS[i]}"
  ns_sysctl "${H_NS[i]}" "${HOST_SYSCTLS[@]}"
  for ((j = 1; j <= PODS; j++)); do
    add_ns "$(pod_ns "$i" "$j")"
    ns_sysctl "$(pod_ns "$i" "$j")" "${LEAF_SYSCTLS[@]}"
  done
done
case "$UNDERLAY" in
  switch)
    add_ns "$SW_NS"
    ns_sysctl "$SW_NS" "${LEAF_SYSCTLS[@]}"
    if [[ -n "$RR_NS" ]]; then
      add_ns "$RR_NS"
      ns_sysctl "$RR_NS" "${LEAF_SYSCTLS[@]}"
    fi
    ;;
  router)
    add_ns "$R_NS"
    ns_sysctl "$R_NS" "${HOST_SYSCTLS[@]}"
    ;;
esac
fail_point namespaces

# 2. Underlay.
ul_up() { # ns dev addr/len
  ip -n "$1" link set dev "$2" mtu "$UNDERLAY_MTU"
  ip -n "$1" addr add "$3" dev "$2"
  ip -n "$1" link set dev "$2" up
}
case "$UNDERLAY" in
  direct)
    ip link add ul0 netns "${H_NS[1]}" type veth peer name ul0 netns "${H_NS[2]}"
    ul_up "${H_NS[1]}" ul0 "${H_UL[1]}/24"
    ul_up "${H_NS[2]}" ul0 "${H_UL[2]}/24"
    ;;
  switch)
    ip -n "$SW_NS" link add br0 type bridge
    for ((i = 1; i <= HOSTS; i++)); do
      ip link add ul0 netns "${H_NS[i]}" type veth peer name "h$i" netns "$SW_NS"
      ip -n "$SW_NS" link set dev "h$i" mtu "$UNDERLAY_MTU" master br0 up
      ul_up "${H_NS[i]}" ul0 "${H_UL[i]}/24"
    done
    if [[ -n "$RR_NS" ]]; then
      ip link add ul0 netns "$RR_NS" type veth peer name rr netns "$SW_NS"
      ip -n "$SW_NS" link set dev rr mtu "$UNDERLAY_MTU" master br0 up
      ul_up "$RR_NS" ul0 "$RR_ADDRESS/24"
    fi
    ip -n "$SW_NS" link set dev br0 mtu "$UNDERLAY_MTU" up
    ;;
  router)
    if ((HOSTS == 2)); then
      # Two hosts: each one's veth ends in the router as a0 / b0 (the path-MTU tests lower b0's MTU).
      ip link add ul0 netns "${H_NS[1]}" type veth peer name a0 netns "$R_NS"
      ip link add ul0 netns "${H_NS[2]}" type veth peer name b0 netns "$R_NS"
    else
      # More: a0 and b0 are bridges, one per subnet, with the hosts' veths (h<i> in P-r) as ports.
      ip -n "$R_NS" link add a0 type bridge
      ip -n "$R_NS" link add b0 type bridge
      for ((i = 1; i <= HOSTS; i++)); do
        bridge=b0
        ((i > SUBNET_A)) || bridge=a0
        ip link add ul0 netns "${H_NS[i]}" type veth peer name "h$i" netns "$R_NS"
        ip -n "$R_NS" link set dev "h$i" mtu "$UNDERLAY_MTU" master "$bridge" up
      done
    fi
    ul_up "$R_NS" a0 192.0.2.126/25
    ul_up "$R_NS" b0 192.0.2.254/25
    for ((i = 1; i <= HOSTS; i++)); do
      ul_up "${H_NS[i]}" ul0 "${H_UL[i]}/25"
      if ((i <= SUBNET_A)); then
        ip -n "${H_NS[i]}" route add 192.0.2.128/25 via 192.0.2.126 dev ul0
      else
        ip -n "${H_NS[i]}" route add 192.0.2.0/25 via 192.0.2.254 dev ul0
      fi
    done
    ;;
esac
fail_point underlay

# 3. Pods.
for ((i = 1; i <= HOSTS; i++)); do
  for ((j = 1; j <= PODS; j++)); do
    pns="$(pod_ns "$i" "$j")"
    paddr="$(pod_addr "$i" "$j")"
    ip link add "p$j" netns "${H_NS[i]}" type veth peer name eth0 netns "$pns"
    ip -n "${H_NS[i]}" link set dev "p$j" mtu "$POD_MTU"
    ip -n "${H_NS[i]}" addr add "${H_GW[i]}/32" dev "p$j"
    ip -n "${H_NS[i]}" link set dev "p$j" up
    ip -n "${H_NS[i]}" route add "$paddr/32" dev "p$j"
    ip -n "$pns" link set dev eth0 mtu "$POD_MTU"
    ip -n "$pns" addr add "$paddr/32" dev eth0
    ip -n "$pns" link set dev eth0 up
    ip -n "$pns" route add "${H_GW[i]}" dev eth0 scope link
    ip -n "$pns" route add default via "${H_GW[i]}" dev eth0
  done
done
fail_point pods

# 4. Files.
if [[ ! -d "$OUT" ]]; then
  CREATED_OUT_DIR=1
  mkdir -p -- "$OUT"
fi
OUT_ABS="$(cd -- "$OUT" && pwd -P)"

# emit PATH FUNCTION [ARGS...]: write FUNCTION's output to PATH, recording PATH for rollback.
emit() {
  local path="$1"
  shift
  CREATED_FILES+=("$path")
  "$@" >"$path"
}

gen_env() {
  local i j
  echo "# ipipd test topology (generated by scripts/netns-setup.sh); source it from bash."
  echo "PREFIX=$PREFIX"
  echo "HOSTS=$HOSTS"
  echo "PODS=$PODS"
  echo "UNDERLAY=$UNDERLAY"
  echo "UNDERLAY_MTU=$UNDERLAY_MTU"
  echo "POD_MTU=$POD_MTU"
  echo "BLOCK_LEN=$BLOCK_LEN"
  echo "POOLS=\"198.51.100.0/24 203.0.113.0/24\""
  printf 'OUT_DIR=%q\n' "$OUT_ABS"
  [[ "$UNDERLAY" != switch ]] || echo "SWITCH_NS=$SW_NS"
  [[ "$UNDERLAY" != router ]] || echo "ROUTER_NS=$R_NS"
  if [[ -n "$BGP" ]]; then
    echo "BGP=$BGP"
    echo "BGP_MEMBERS=$BGP_MEMBERS"
    echo "IPIP_MODE=$IPIP_MODE"
  fi
  if [[ -n "$RR_NS" ]]; then
    echo "RR_NS=$RR_NS"
    echo "RR_ADDRESS=$RR_ADDRESS"
    echo "RR_DEVS=\"$RR_DEVS\""
  fi
  for ((i = 1; i <= HOSTS; i++)); do
    echo "H${i}_NS=${H_NS[i]}"
    echo "H${i}_UNDERLAY=${H_UL[i]}"
    echo "H${i}_UNDERLAY_DEV=ul0"
    echo "H${i}_UNDERLAY_SUBNET=${H_SUBNET[i]}"
    echo "H${i}_TUN_ADDR=${H_TUN[i]}"
    echo "H${i}_BLOCK=${H_BLOCK[i]}"
    echo "H${i}_GATEWAY=${H_GW[i]}"
    printf 'H%d_CONFIG=%q\n' "$i" "$OUT_ABS/h$i.yaml"
    printf 'H%d_SOCKET=%q\n' "$i" "$OUT_ABS/h$i.sock"
    for ((j = 1; j <= PODS; j++)); do
      echo "H${i}_P${j}_NS=$(pod_ns "$i" "$j")"
      echo "H${i}_P${j}_ADDR=$(pod_addr "$i" "$j")"
    done
  done
}

gen_json() {
  local i j sep
  printf '{\n  "prefix": "%s",\n  "underlay": "%s",\n  "underlayMtu": %d,\n  "podMtu": %d,\n' \
    "$PREFIX" "$UNDERLAY" "$UNDERLAY_MTU" "$POD_MTU"
  printf '  "blockLen": %d,\n  "pools": ["198.51.100.0/24", "203.0.113.0/24"],\n' "$BLOCK_LEN"
  printf '  "outDir": %s,\n  "hosts": [\n' "$(json_str "$OUT_ABS")"
  for ((i = 1; i <= HOSTS; i++)); do
    printf '    {\n      "name": "h%d",\n      "ns": "%s",\n' "$i" "${H_NS[i]}"
    printf '      "underlay": "%s",\n      "underlayDev": "ul0",\n      "underlayPrefixLen": %d,\n' \
      "${H_UL[i]}" "${H_ULLEN[i]}"
    printf '      "underlaySubnet": "%s",\n' "${H_SUBNET[i]}"
    printf '      "block": "%s",\n      "tunAddress": "%s",\n      "gateway": "%s",\n' \
      "${H_BLOCK[i]}" "${H_TUN[i]}" "${H_GW[i]}"
    printf '      "config": %s,\n      "socket": %s,\n' "$(json_str "$OUT_ABS/h$i.yaml")" "$(json_str "$OUT_ABS/h$i.sock")"
    [[ -z "$BGP" ]] || printf '      "bird": %s,\n' "$(bird_json "h$i")"
    printf '      "pods": [\n'
    for ((j = 1; j <= PODS; j++)); do
      sep=","
      ((j < PODS)) || sep=""
      printf '        { "name": "h%dp%d", "ns": "%s", "address": "%s", "gateway": "%s", "hostDev": "p%d" }%s\n' \
        "$i" "$j" "$(pod_ns "$i" "$j")" "$(pod_addr "$i" "$j")" "${H_GW[i]}" "$j" "$sep"
    done
    sep=","
    ((i < HOSTS)) || sep=""
    printf '      ]\n    }%s\n' "$sep"
  done
  printf '  ]'
  if [[ "$UNDERLAY" == switch ]]; then
    printf ',\n  "switch": { "ns": "%s", "bridge": "br0" }' "$SW_NS"
  fi
  if [[ "$UNDERLAY" == router ]]; then
    printf ',\n  "router": { "ns": "%s", "a0": "192.0.2.126", "b0": "192.0.2.254" }' "$R_NS"
  fi
  if [[ -n "$BGP" ]]; then
    printf ',\n  "bgp": { "mode": "%s", "members": %d, "ipipMode": "%s", "as": 64512' "$BGP" "$BGP_MEMBERS" "$IPIP_MODE"
    if [[ -n "$RR_NS" ]]; then
      printf ',\n    "rr": { "ns": "%s", "address": "%s", "bird": %s }' "$RR_NS" "$RR_ADDRESS" "$(bird_json rr)"
    fi
    printf ' }'
  fi
  printf '\n}\n'
}

# bird_json NAME: the BIRD files of host (or route reflector) NAME, as JSON.
bird_json() {
  printf '{ "config": %s, "socket": %s, "pidFile": %s, "log": %s }' "$(json_str "$OUT_ABS/$1.bird.conf")" \
    "$(json_str "$OUT_ABS/$1.bird.ctl")" "$(json_str "$OUT_ABS/$1.bird.pid")" "$(json_str "$OUT_ABS/$1.bird.log")"
}

gen_yaml() {
  local i="$1" k
  {
    echo "# ipipd config for host h$i (generated by scripts/netns-setup.sh)"
    echo "tun:"
    echo "  name: ipip0"
    echo "  address: ${H_TUN[i]}/32"
    echo "underlay:"
    echo "  address: ${H_UL[i]}"
    [[ -z "$BGP" ]] || echo "  allowed_endpoints: [192.0.2.0/24]"
    echo "encap:"
    echo "  ttl: 64"
    echo "  tos: inherit"
    echo "  df: inherit"
    if [[ -n "$BGP" ]]; then
      # The peers come from the routes BIRD puts into the kernel (README, "Live changes").
      echo "routes:"
      echo "  source: kernel"
    else
      echo "peers:"
      for ((k = 1; k <= HOSTS; k++)); do
        ((k != i)) || continue
        echo "  - name: h$k"
        echo "    endpoint: ${H_UL[k]}"
        echo "    prefixes: [${H_BLOCK[k]}]"
      done
    fi
    echo "control:"
    echo "  socket: $(yaml_str "$OUT_ABS/h$i.sock")"
    echo "log:"
    echo "  level: info"
  }
}

emit "$OUT/topology.env" gen_env
emit "$OUT/topology.json" gen_json
for ((i = 1; i <= HOSTS; i++)); do
  emit "$OUT/h$i.yaml" gen_yaml "$i"
done
if [[ -n "$BGP" ]]; then
  for ((i = 1; i <= HOSTS; i++)); do CREATED_FILES+=("$OUT/h$i.bird.conf"); done
  [[ -z "$RR_NS" ]] || CREATED_FILES+=("$OUT/rr.bird.conf")
  "$SCRIPT_DIR/netns-bgp.sh" render --out "$OUT" --members "$BGP_MEMBERS" >/dev/null
fi
fail_point files

COMMITTED=1
trap - EXIT INT TERM ERR

# ---------------------------------------------------------------------------------------------
# Summary

elapsed_ms=$(($(date +%s%N) / 1000000 - STARTED_MS))
echo "$PROG: up prefix=$PREFIX: $HOSTS hosts x $PODS pods, underlay $UNDERLAY (mtu $UNDERLAY_MTU), ${#CREATED_NS[@]} namespaces, ${elapsed_ms} ms"
for ((i = 1; i <= HOSTS; i++)); do
  printf '  %-14s ul0 %-17s block %-18s tun %s gw %s\n' \
    "${H_NS[i]}" "${H_UL[i]}/${H_ULLEN[i]}" "${H_BLOCK[i]}" "${H_TUN[i]}" "${H_GW[i]}"
  for ((j = 1; j <= PODS; j++)); do
    printf '    %-14s eth0 %s\n' "$(pod_ns "$i" "$j")" "$(pod_addr "$i" "$j")"
  done
done
[[ "$UNDERLAY" != switch ]] || echo "  $SW_NS (bridge br0)"
[[ "$UNDERLAY" != router ]] || echo "  $R_NS a0 192.0.2.126/25 b0 192.0.2.254/25"
if [[ -n "$BGP" ]]; then
  echo "  bgp $BGP (members h1..h$BGP_MEMBERS, ipip $IPIP_MODE): BIRD configs $OUT_ABS/h<i>.bird.conf${RR_NS:+, route reflector $RR_NS $RR_ADDRESS: rr.bird.conf}"
fi
echo "  files: $OUT_ABS/{topology.env,topology.json,h1..h$HOSTS.yaml}"
echo "  tear down: $SCRIPT_DIR/netns-setup.sh down --prefix $PREFIX"
