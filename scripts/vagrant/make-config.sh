#!/usr/bin/env bash
#
# make-config.sh <coreos-version>: writes the release's config.yaml for the
# sandbox from its config.yaml.example (which already describes the
# walkthrough's network: eth1, 192.168.2.2, ranges .21-.99 and .100-.200),
# with default_coreos_version set to the fetched images and the SSH keys
# that reach the provisioner (Vagrant's insecure key) as the nodes' keys, so
# `vagrant ssh core-01` works once they are installed. An existing
# config.yaml only gets its default_coreos_version updated.
#
# Runs inside the core-provisioner VM. AUTHORIZED_KEYS names the key file
# (default ~core/.ssh/authorized_keys).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/env.sh"

if [ $# -ne 1 ] || [[ ! $1 =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "usage: ${0##*/} <coreos-version>" >&2
  exit 2
fi
version=$1
config=$MAYU_RELEASE_DIR/config.yaml
keys=${AUTHORIZED_KEYS:-/home/core/.ssh/authorized_keys}

if [ ! -f "$config" ]; then
  [ -f "$MAYU_RELEASE_DIR/config.yaml.example" ] || die "$MAYU_RELEASE_DIR has no config.yaml.example"
  [ -s "$keys" ] || die "$keys is empty: no SSH key to give the nodes"
  tmp=$(mktemp "$config.XXXXXX")
  trap 'rm -f -- "$tmp"' EXIT
  # The example's placeholder key line becomes one line per authorized key.
  awk -v keys="$keys" '
    /replace-with-your-public-key/ {
      indent = $0; sub(/-.*/, "", indent)
      while ((getline key < keys) > 0) {
        if (key ~ /^(ssh|ecdsa)-/) { gsub(/"/, "", key); print indent "- \"" key "\"" }
      }
      next
    }
    { print }
  ' "$MAYU_RELEASE_DIR/config.yaml.example" >"$tmp"
  grep -q '^    - "ssh-' "$tmp" || die "no usable SSH key in $keys"
  chmod 0644 "$tmp"
  mv -- "$tmp" "$config"
  say "wrote $config"
fi
sed -i "s/^default_coreos_version:.*/default_coreos_version: $version/" "$config"
say "default_coreos_version: $version"
