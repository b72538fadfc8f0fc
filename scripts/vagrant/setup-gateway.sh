#!/usr/bin/env bash
#
# setup-gateway.sh: makes the provisioner the private network's gateway, as
# the walkthrough's provisioner is: IP forwarding on, traffic from the
# private network (PRIVATE_IF, PRIVATE_NET) forwarded and masqueraded out of
# VirtualBox's NAT interface (NAT_IF), so installed nodes reach the
# internet. Idempotent: a rule already present is not added twice.
#
# Runs inside the core-provisioner VM only. IPTABLES, SYSCTL and MODPROBE
# name the commands (the tests substitute recorders).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/env.sh"

IPTABLES=${IPTABLES:-iptables}
SYSCTL=${SYSCTL:-sysctl}
MODPROBE=${MODPROBE:-modprobe}

[ $# -eq 0 ] || {
  echo "usage: ${0##*/} (settings from PRIVATE_IF, NAT_IF, PRIVATE_NET)" >&2
  exit 2
}

# rule TABLE CHAIN SPEC... appends the rule unless iptables -C finds it.
rule() {
  local table=$1 chain=$2
  shift 2
  if "$IPTABLES" -t "$table" -C "$chain" "$@" 2>/dev/null; then
    say "present: -t $table $chain $*"
  else
    "$IPTABLES" -t "$table" -A "$chain" "$@" || die "cannot add -t $table $chain $*"
    say "added:   -t $table $chain $*"
  fi
}

# Built into most kernels; a missing module is not an error by itself.
"$MODPROBE" iptable_nat 2>/dev/null || say "modprobe iptable_nat failed; relying on the kernel having NAT built in"
"$SYSCTL" -q -w net.ipv4.ip_forward=1 || die "cannot turn IP forwarding on"
rule filter FORWARD -i "$PRIVATE_IF" -s "$PRIVATE_NET" -j ACCEPT
rule filter FORWARD -o "$PRIVATE_IF" -d "$PRIVATE_NET" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
rule nat POSTROUTING -s "$PRIVATE_NET" -o "$NAT_IF" -j MASQUERADE
say "$PRIVATE_NET on $PRIVATE_IF is forwarded and masqueraded out of $NAT_IF"
