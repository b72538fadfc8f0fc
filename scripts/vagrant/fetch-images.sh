#!/usr/bin/env bash
#
# fetch-images.sh: fetches the OS images the nodes install into the release
# directory with the release's own fetch script, as the walkthrough does
# with ./fetch-coreos-image, and writes the release's config.yaml with that
# version as default_coreos_version. CoreOS is end-of-life, so the images
# are Flatcar's (FLATCAR_VERSION, default "current"; FLATCAR_CHANNEL,
# default stable). With FETCH_YOCHU=1 the Yochu assets are fetched too.
#
# Runs inside the core-provisioner VM.
set -euo pipefail
here=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$here/env.sh"

[ $# -eq 0 ] || {
  echo "usage: ${0##*/} (settings from FLATCAR_VERSION, FLATCAR_CHANNEL, FETCH_YOCHU)" >&2
  exit 2
}
[ -x "$MAYU_RELEASE_DIR/fetch-flatcar-image" ] || die "$MAYU_RELEASE_DIR is not an unpacked release: run fetch-mayu.sh first"
cd "$MAYU_RELEASE_DIR"

# "current" becomes a number only on the server: the coreos-version file
# the fetch writes names it.
marker=$(mktemp)
trap 'rm -f -- "$marker"' EXIT
./fetch-flatcar-image "${FLATCAR_VERSION:-current}" "${FLATCAR_CHANNEL:-stable}"
written=$(find images -mindepth 2 -maxdepth 2 -name coreos-version -newer "$marker")
if [ -z "$written" ] || [ "$(wc -l <<<"$written")" -ne 1 ]; then die "cannot tell which version was fetched"; fi
version=$(cat "$written")
say "images for $version are in $MAYU_RELEASE_DIR/images/$version"

if [ "${FETCH_YOCHU:-0}" = 1 ]; then
  ./fetch-yochu-assets
fi

"$here/make-config.sh" "$version"
