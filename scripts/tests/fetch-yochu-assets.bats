#!/usr/bin/env bats
#
# fetch-yochu-assets against a loopback mirror in Yochu's layout.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  MIRROR=$BATS_TEST_TMPDIR/mirror
  WORK=$BATS_TEST_TMPDIR/work
  mkdir -p "$MIRROR" "$WORK"
  export GNUPGHOME=$BATS_TEST_TMPDIR/gnupg
  mkdir -m 700 "$GNUPGHOME"
  unset YOCHU_DIR FETCH_TOOL FETCH_ALLOW_UNVERIFIED FETCH_REQUIRE_SIGNATURE
  export YOCHU_VERSION=0.19.1 ETCD_VERSION=v2.2.5-gs-1 FLEET_VERSION=v0.11.5-gs-grpc-1
  export DOCKER_VERSION=1.10.3 RKT_VERSION=v1.3.0 K8S_VERSION=v1.2.2
  local entry
  for entry in yochu/0.19.1/yochu etcd/v2.2.5-gs-1/etcd etcd/v2.2.5-gs-1/etcdctl \
    fleet/v0.11.5-gs-grpc-1/fleetd fleet/v0.11.5-gs-grpc-1/fleetctl docker/1.10.3/docker \
    rkt/v1.3.0/rkt k8s/v1.2.2/kubectl; do
    mkdir -p "$MIRROR/${entry%/*}"
    head -c 5000 /dev/urandom >"$MIRROR/$entry"
    (cd "$MIRROR/${entry%/*}" && sha256sum "${entry##*/}" >"${entry##*/}.sha256")
  done
  start_httpd "$MIRROR"
  export YOCHU_BASE_URL=$HTTPD_URL
  cd "$WORK" || return 1
}

teardown() {
  stop_httpd
}

ALL="docker/1.10.3/docker etcd/v2.2.5-gs-1/etcd etcd/v2.2.5-gs-1/etcdctl fleet/v0.11.5-gs-grpc-1/fleetctl fleet/v0.11.5-gs-grpc-1/fleetd k8s/v1.2.2/kubectl rkt/v1.3.0/rkt yochu/0.19.1/yochu "

listing() {
  (cd "$WORK/yochu" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ')
}

@test "fetch-yochu-assets: fetches every component into yochu/<component>/<version>/<binary>" {
  run "$SCRIPTS_DIR/fetch-yochu-assets"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(listing)" = "$ALL" ]
  local f
  for f in $ALL; do
    cmp "$WORK/yochu/$f" "$MIRROR/$f"
    [ -x "$WORK/yochu/$f" ]
  done
  [[ $output == *"etcdctl: sha256 digest ok"* ]]
  assert_no_leftovers "$WORK"
}

@test "fetch-yochu-assets: named components only, and present versions are left alone" {
  run "$SCRIPTS_DIR/fetch-yochu-assets" etcd
  [ "$status" -eq 0 ]
  [ "$(listing)" = "etcd/v2.2.5-gs-1/etcd etcd/v2.2.5-gs-1/etcdctl " ]
  : >"$HTTPD_LOG"
  run "$SCRIPTS_DIR/fetch-yochu-assets" etcd fleet
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"etcd v2.2.5-gs-1 is already in"* ]]
  run ! grep -q ' /etcd/' "$HTTPD_LOG"
  grep -q 'GET /fleet/v0.11.5-gs-grpc-1/fleetd 200' "$HTTPD_LOG"
}

@test "fetch-yochu-assets: one missing binary (404) fails and nothing appears" {
  rm "$MIRROR/rkt/v1.3.0/rkt"
  run "$SCRIPTS_DIR/fetch-yochu-assets"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"could not download rkt"* ]]
  [ -z "$(listing 2>/dev/null)" ]
  assert_no_leftovers "$WORK"
}

@test "fetch-yochu-assets: a digest mismatch fails and nothing appears" {
  echo "0000000000000000000000000000000000000000000000000000000000000000  kubectl" >"$MIRROR/k8s/v1.2.2/kubectl.sha256"
  run "$SCRIPTS_DIR/fetch-yochu-assets"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"kubectl: sha256 digest mismatch"* ]]
  [ -z "$(listing 2>/dev/null)" ]
  assert_no_leftovers "$WORK"
}

@test "fetch-yochu-assets: an interrupted download fails and nothing appears" {
  echo /docker/1.10.3/docker >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-yochu-assets"
  echo "$output"
  [ "$status" -ne 0 ]
  [ -z "$(listing 2>/dev/null)" ]
  assert_no_leftovers "$WORK"
}

@test "fetch-yochu-assets: wrong arguments and unsafe versions" {
  run "$SCRIPTS_DIR/fetch-yochu-assets" etcd bogus
  [ "$status" -eq 2 ]
  [[ $output == *"unknown component 'bogus'"* ]]
  [[ $output == *"usage: fetch-yochu-assets [component...]"* ]]
  run "$SCRIPTS_DIR/fetch-yochu-assets" --force
  [ "$status" -eq 2 ]
  ETCD_VERSION=../../etc run "$SCRIPTS_DIR/fetch-yochu-assets" etcd
  [ "$status" -ne 0 ]
  [[ $output == *"is not a plain version string"* ]]
  [ ! -s "$HTTPD_LOG" ]
  [ -z "$(listing 2>/dev/null)" ]
}
