#!/usr/bin/env bash
#
# install-bats.sh [prefix]: installs bats-core below PREFIX (default /opt),
# so the provisioner's validation (validate.bats) prints a readable report.
# Flatcar has no package manager, hence a release tarball:
#   BATS_VERSION  (1.8.2)
#   BATS_URL      (bats-core's release tarball of that version on GitHub)
#   BATS_SHA256   checked when set
# Does nothing when PREFIX/bin/bats already runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/env.sh"

[ $# -le 1 ] || {
  echo "usage: ${0##*/} [prefix]" >&2
  exit 2
}
prefix=${1:-/opt}
version=${BATS_VERSION:-1.8.2}
url=${BATS_URL:-https://github.com/bats-core/bats-core/archive/refs/tags/v$version.tar.gz}

if "$prefix/bin/bats" --version >/dev/null 2>&1; then
  say "bats is already installed: $("$prefix/bin/bats" --version)"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT
say "fetching $url"
curl --fail --location --silent --show-error --retry 3 -o "$work/bats.tar.gz" -- "$url" ||
  die "cannot download $url"
if [ -n "${BATS_SHA256:-}" ]; then
  echo "$BATS_SHA256  $work/bats.tar.gz" | sha256sum -c --quiet - || die "bats tarball: sha256 mismatch"
else
  say "BATS_SHA256 not set: the tarball is not checked against a digest"
fi
mkdir "$work/src"
tar -xzf "$work/bats.tar.gz" -C "$work/src" --strip-components=1
[ -x "$work/src/install.sh" ] || die "the tarball has no install.sh"
mkdir -p "$prefix"
"$work/src/install.sh" "$prefix" >/dev/null
"$prefix/bin/bats" --version >/dev/null || die "bats does not run after installation"
say "installed $("$prefix/bin/bats" --version) into $prefix"
