#!/usr/bin/env bash
#
# run-mayu.sh: runs mayu's container on the provisioner as the walkthrough's
# 3-run-mayu-docker.sh does: host networking and NET_ADMIN for dnsmasq, the
# cluster directory, images, Yochu assets and config.yaml of the release
# directory as volumes. The image (MAYU_IMAGE, default mayu:<version>) is
# built from the release directory's Dockerfile when Docker does not have it.
# Waits (bounded) until mayu answers on MAYU_URL.
#
# Runs inside the core-provisioner VM, as root. DOCKER names the docker
# command (the tests substitute a recorder); MAYU_ARGS the flags
# (default: -v=12 --no-tls).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=env.sh
. "$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")/env.sh"

DOCKER=${DOCKER:-docker}
MAYU_IMAGE=${MAYU_IMAGE:-mayu:$MAYU_VERSION}
MAYU_ARGS=${MAYU_ARGS:--v=12 --no-tls}
WAIT_SECONDS=${WAIT_SECONDS:-60}

[ $# -eq 0 ] || {
  echo "usage: ${0##*/} (settings from MAYU_IMAGE, MAYU_ARGS)" >&2
  exit 2
}
[ "$(id -u)" = 0 ] || [ -n "${ALLOW_NON_ROOT:-}" ] || die "run as root: the container needs NET_ADMIN and host networking"
[ -f "$MAYU_RELEASE_DIR/config.yaml" ] || die "$MAYU_RELEASE_DIR/config.yaml is missing: run fetch-images.sh first"
for d in cluster images yochu; do
  mkdir -p "$MAYU_RELEASE_DIR/$d"
done

if ! "$DOCKER" image inspect "$MAYU_IMAGE" >/dev/null 2>&1; then
  say "building $MAYU_IMAGE from $MAYU_RELEASE_DIR"
  "$DOCKER" build --target release -t "$MAYU_IMAGE" "$MAYU_RELEASE_DIR" ||
    die "cannot build $MAYU_IMAGE"
fi

"$DOCKER" rm --force mayu >/dev/null 2>&1 || true
# shellcheck disable=SC2086 # MAYU_ARGS is a list of flags
"$DOCKER" run --detach --name=mayu --restart=unless-stopped \
  --cap-add=NET_ADMIN --net=host \
  -v "$MAYU_RELEASE_DIR/cluster:/var/lib/mayu" \
  -v "$MAYU_RELEASE_DIR/images:/usr/lib/mayu/images" \
  -v "$MAYU_RELEASE_DIR/yochu:/usr/lib/mayu/yochu" \
  -v "$MAYU_RELEASE_DIR/config.yaml:/etc/mayu/config.yaml:ro" \
  "$MAYU_IMAGE" $MAYU_ARGS >/dev/null || die "docker run failed"

for ((i = 0; i < WAIT_SECONDS; i++)); do
  if curl --fail --silent --output /dev/null --max-time 2 -- "$MAYU_URL/"; then
    say "mayu answers on $MAYU_URL; follow it with: docker logs -f mayu"
    exit 0
  fi
  sleep 1
done
"$DOCKER" logs --tail 20 mayu >&2 || true
die "mayu did not answer on $MAYU_URL within ${WAIT_SECONDS}s"
