#!/bin/sh
# install-deps.sh: the one list of the Debian packages ipipd needs, and the one step that installs
# them (as root). The README's quick start, .ci/run and the Dockerfile all use it, so that a
# fresh machine that ran it passes `npm test` with nothing skipped.
#
# Usage: scripts/install-deps.sh [GROUP...]      install the groups (default: build run test)
#        scripts/install-deps.sh --list [GROUP...] print the packages, one a line, install nothing
#
# Groups:
#   build      the native addon (node-gyp): python3 make g++
#   run        the daemon and the namespaces it is tested in: iproute2 (ip, ss), procps (sysctl),
#              util-linux (setpriv: the least-privilege test runs ipipd with two capabilities)
#   test       the tests' tools: ethtool (underlay GRO), tcpdump and tshark (captures),
#              python3-scapy (RFC 2003 conformance), iputils-ping, iptables (and its arptables:
#              the AF_PACKET sending test), libcap2-bin (capsh: the missing-capability tests),
#              systemd (systemd-analyze verify of packaging/ipipd.service; nothing is started),
#              bird2 (the BGP cluster test and demo: BIRD per host namespace, Calico-style),
#              qemu-system-x86 and xz-utils (the kernel interop test boots Debian's kernel,
#              uncompressed with xz, as ipipd's peer; that kernel and busybox-static it fetches
#              itself with apt-get download)
#   container  .ci/run's container check only: podman runc debootstrap
set -eu

group() {
  case "$1" in
    build) echo python3 make g++ ;;
    run) echo iproute2 procps util-linux ca-certificates ;;
    test) echo ethtool tcpdump tshark python3-scapy iputils-ping iptables libcap2-bin systemd bird2 qemu-system-x86 xz-utils ;;
    container) echo podman runc debootstrap ;;
    *) echo "install-deps.sh: unknown group '$1' (build, run, test, container)" >&2; exit 2 ;;
  esac
}

LIST=0
if [ "${1:-}" = "--list" ]; then LIST=1; shift; fi
case "${1:-}" in -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
[ $# -gt 0 ] || set -- build run test
PKGS=""
for g in "$@"; do PKGS="$PKGS $(group "$g")"; done

if [ "$LIST" = 1 ]; then
  for p in $PKGS; do echo "$p"; done
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (apt-get install)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086 # one word per package
apt-get install -y -q --no-install-recommends $PKGS
