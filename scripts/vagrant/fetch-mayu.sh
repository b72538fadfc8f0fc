#!/usr/bin/env bash
#
# fetch-mayu.sh: unpacks the mayu release into MAYU_RELEASE_DIR
# (~/mayu/mayu.<version>-linux-amd64), as the walkthrough's 2-fetch-mayu.sh
# does. The tarball comes from the share (dist/ of this repository, built
# on the host with `make dist`) or, when MAYU_RELEASE_URL is set, from
# there (MAYU_RELEASE_URL/mayu.<version>-linux-amd64.tar.gz, checked
# against the .sha256 next to it when the server has one).
#
# Runs inside the core-provisioner VM. The release directory appears whole
# or not at all; an existing one is replaced, but its images/, yochu/,
# cluster/ and config.yaml are carried over.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/env.sh"

[ $# -eq 0 ] || {
  echo "usage: ${0##*/} (version from MAYU_VERSION or the share's VERSION file)" >&2
  exit 2
}
[[ $MAYU_VERSION =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "MAYU_VERSION '$MAYU_VERSION' is not a version"

mkdir -p "$MAYU_HOME"
work=$(mktemp -d "$MAYU_HOME/.fetch-mayu.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
tarball=$work/$MAYU_RELEASE_NAME.tar.gz

if [ -n "${MAYU_RELEASE_URL:-}" ]; then
  url=${MAYU_RELEASE_URL%/}/$MAYU_RELEASE_NAME.tar.gz
  say "fetching $url"
  curl --fail --location --silent --show-error --retry 3 -o "$tarball" -- "$url" || die "cannot download $url"
  if curl --fail --location --silent -o "$tarball.sha256" -- "$url.sha256"; then
    want=$(awk '{print $1; exit}' "$tarball.sha256")
    got=$(sha256sum "$tarball" | awk '{print $1}')
    [ "$want" = "$got" ] || die "$MAYU_RELEASE_NAME.tar.gz: sha256 mismatch (expected $want, got $got)"
    say "sha256 ok"
  else
    say "no $url.sha256: the tarball is not checked against a digest"
  fi
else
  src=$MAYU_SHARE/dist/$MAYU_RELEASE_NAME.tar.gz
  [ -f "$src" ] || die "$src is missing: run 'make dist' on the host, then 'vagrant rsync core-provisioner' (or set MAYU_RELEASE_URL)"
  cp -- "$src" "$tarball"
fi

mkdir "$work/release"
tar -xzf "$tarball" -C "$work/release" || die "cannot unpack $MAYU_RELEASE_NAME.tar.gz"
if [ ! -x "$work/release/mayu" ] || [ ! -f "$work/release/Dockerfile" ]; then
  die "$MAYU_RELEASE_NAME.tar.gz is not a mayu release"
fi

# State of an earlier installation of the same version survives.
if [ -d "$MAYU_RELEASE_DIR" ]; then
  for keep in images yochu cluster config.yaml; do
    [ -e "$MAYU_RELEASE_DIR/$keep" ] && mv -- "$MAYU_RELEASE_DIR/$keep" "$work/release/"
  done
  mv -T -- "$MAYU_RELEASE_DIR" "$work/old"
fi
mv -T -- "$work/release" "$MAYU_RELEASE_DIR"
say "mayu $MAYU_VERSION is in $MAYU_RELEASE_DIR"
