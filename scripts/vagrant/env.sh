# shellcheck shell=bash
#
# Settings shared by the provisioning scripts of the Vagrant sandbox (they
# run inside the core-provisioner VM, see ../../Vagrantfile). Every value
# can be overridden from the environment.

# Where the Vagrantfile rsyncs this repository (scripts, VERSION, dist/).
MAYU_SHARE=${MAYU_SHARE:-/home/core/share}
MAYU_VERSION=${MAYU_VERSION:-$(cat "$MAYU_SHARE/VERSION" 2>/dev/null || echo unknown)}
MAYU_RELEASE_NAME=mayu.$MAYU_VERSION-linux-amd64
# Releases are unpacked below MAYU_HOME, one directory per version, as in
# the walkthrough (~/giantswarm-mayu/mayu.0.11.1-linux-amd64 there).
MAYU_HOME=${MAYU_HOME:-/home/core/mayu}
MAYU_RELEASE_DIR=${MAYU_RELEASE_DIR:-$MAYU_HOME/$MAYU_RELEASE_NAME}
# The provisioner's interfaces: eth0 is VirtualBox's NAT, eth1 the private
# network the nodes boot from.
PRIVATE_IF=${PRIVATE_IF:-eth1}
NAT_IF=${NAT_IF:-eth0}
PRIVATE_NET=${PRIVATE_NET:-192.168.2.0/24}
MAYU_BIND_ADDR=${MAYU_BIND_ADDR:-192.168.2.2}
MAYU_URL=${MAYU_URL:-http://$MAYU_BIND_ADDR:4080}

say() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
}

die() {
  printf '%s: error: %s\n' "${0##*/}" "$*" >&2
  exit 1
}
