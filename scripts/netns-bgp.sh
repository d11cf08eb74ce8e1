#!/usr/bin/env bash
# netns-bgp.sh: render the BIRD configurations of a topology made by `netns-setup.sh up --bgp`,
# from examples/bird/host.conf.template (one per host) and rr.conf.template (the route
# reflector's, with --bgp rr). What confd does for Calico: called again with more members when a
# host joins, after which the running BIRDs take the new files with `birdc configure`.
#
# Usage: scripts/netns-bgp.sh render --out DIR [--members K]
#
#   DIR        the directory netns-setup.sh wrote (its topology.env says who is where)
#   --members  hosts h1..hK are in the cluster (default: every host). Each host's file lists
#              the members but itself as peers (full mesh) or the route reflector alone (rr);
#              the reflector's lists the members as clients.
#
# Writes DIR/h<i>.bird.conf for every host of the topology and, with rr, DIR/rr.bird.conf, each
# through a temporary file and a rename (a BIRD reading it never sees half a file), and prints
# their paths. Needs bash only; the running of BIRD is the caller's (README, "A cluster with BIRD").
set -Eeuo pipefail

PROG=netns-bgp
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TEMPLATES="$ROOT/examples/bird"
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: "&" in a replacement is literal
AS=64512

die_usage() { echo "$PROG: $*" >&2; echo "Usage: scripts/netns-bgp.sh render --out DIR [--members K]" >&2; exit 2; }

[[ "${1:-}" == render ]] || die_usage "unknown command '${1:-}'"
shift
OUT="" MEMBERS=""
while (($# > 0)); do
  case "$1" in
    --out) (($# >= 2)) || die_usage "--out needs a value"; OUT="$2"; shift 2 ;;
    --members) (($# >= 2)) || die_usage "--members needs a value"; MEMBERS="$2"; shift 2 ;;
    *) die_usage "unknown argument '$1'" ;;
  esac
done
[[ -n "$OUT" && -f "$OUT/topology.env" ]] || die_usage "--out DIR must hold a topology.env"
# shellcheck disable=SC1091
. "$OUT/topology.env"
[[ "${BGP:-}" == mesh || "${BGP:-}" == rr ]] || die_usage "$OUT/topology.env: not made with --bgp"
MEMBERS="${MEMBERS:-$HOSTS}"
if ! [[ "$MEMBERS" =~ ^[0-9]{1,2}$ ]] || ((MEMBERS < 1 || MEMBERS > HOSTS)); then
  die_usage "--members must be 1..$HOSTS, got '$MEMBERS'"
fi

# ip_num A.B.C.D: the address as one number, to compare two.
ip_num() {
  local IFS=.
  # shellcheck disable=SC2086 # split on dots
  set -- $1
  echo $((($1 << 24) + ($2 << 16) + ($3 << 8) + $4))
}

# render TEMPLATE DEST NAME=VALUE...: TEMPLATE with every @NAME@ replaced, written to DEST.
render() {
  local template="$1" dest="$2" text kv
  shift 2
  text="$(<"$template")"
  for kv in "$@"; do text="${text//@${kv%%=*}@/${kv#*=}}"; done
  if [[ "$text" =~ @[A-Z_]+@ ]]; then echo "$PROG: $template: ${BASH_REMATCH[0]} left unreplaced" >&2; exit 1; fi
  printf '%s\n' "$text" >"$dest.tmp"
  mv -f -- "$dest.tmp" "$dest"
  echo "$dest"
}

pools_set() {
  local p out=""
  for p in $POOLS; do out+="${out:+, }$p+"; done
  echo "$out"
}

# The peers stanza of host i.
host_peers() {
  local i="$1" k ul mine out=""
  if [[ "$BGP" == rr ]]; then
    printf 'protocol bgp reflector from node {\n  neighbor %s as %d;\n}' "$RR_ADDRESS" "$AS"
    return
  fi
  mine="$(ip_num "$(hv "$i" UNDERLAY)")"
  for ((k = 1; k <= MEMBERS; k++)); do
    ((k != i)) || continue
    ul="$(hv "$k" UNDERLAY)"
    out+="protocol bgp h$k from node {"$'\n'"  neighbor $ul as $AS;"$'\n'
    if (($(ip_num "$ul") < mine)); then out+="  passive on;"$'\n'; fi
    out+="}"$'\n'
  done
  printf '%s' "${out%$'\n'}"
}

rr_clients() {
  local k out=""
  for ((k = 1; k <= MEMBERS; k++)); do
    out+="protocol bgp h$k from rr_client {"$'\n'"  neighbor $(hv "$k" UNDERLAY) as $AS;"$'\n'"}"$'\n'
  done
  printf '%s' "${out%$'\n'}"
}

# hv I FIELD: topology.env's H<I>_<FIELD>.
hv() {
  local v="H$1_$2"
  echo "${!v}"
}

cross=false
[[ "$IPIP_MODE" != cross-subnet ]] || cross=true
for ((i = 1; i <= HOSTS; i++)); do
  render "$TEMPLATES/host.conf.template" "$OUT/h$i.bird.conf" \
    LOG="$OUT_DIR/h$i.bird.log" ROUTER_ID="$(hv "$i" UNDERLAY)" BLOCK="$(hv "$i" BLOCK)" \
    POOLS="$(pools_set)" UNDERLAY_SUBNET="$(hv "$i" UNDERLAY_SUBNET)" CROSS_SUBNET="$cross" \
    UNDERLAY_DEV="$(hv "$i" UNDERLAY_DEV)" TUN=ipip0 AS="$AS" PEERS="$(host_peers "$i")"
done
if [[ "$BGP" == rr ]]; then
  devs=""
  for d in $RR_DEVS; do devs+="${devs:+, }\"$d\""; done
  render "$TEMPLATES/rr.conf.template" "$OUT/rr.bird.conf" \
    LOG="$OUT_DIR/rr.bird.log" ROUTER_ID="$RR_ADDRESS" POOLS="$(pools_set)" UNDERLAY_DEVS="$devs" \
    AS="$AS" CLIENTS="$(rr_clients)"
fi
