#!/usr/bin/env bats
#
# The release tarball as an operator uses it: unpack it into a directory,
# fetch images with its scripts, run mayu and mayuctl from it. Run through
# `make test-dist`, which builds the tarball and names it in MAYU_DIST_TAR
# (and the tree it was made from in MAYU_DIST_DIR).

bats_require_minimum_version 1.5.0

setup_file() {
  if [ -z "${MAYU_DIST_TAR:-}" ] || [ ! -f "$MAYU_DIST_TAR" ] || [ ! -d "${MAYU_DIST_DIR:-}" ]; then
    echo "MAYU_DIST_TAR and MAYU_DIST_DIR must name the release: run this through make test-dist" >&2
    return 1
  fi
  export REL=$BATS_FILE_TMPDIR/mayu-release
  mkdir -p "$REL"
  tar -xzf "$MAYU_DIST_TAR" -C "$REL"
}

setup() {
  load helpers
  unset COREOS_BASE_URL FLATCAR_BASE_URL IMAGES_DIR FIRST_STAGE_CLOUDCONFIG FETCH_TOOL
  export GNUPGHOME=$BATS_TEST_TMPDIR/gnupg
  mkdir -m 700 "$GNUPGHOME"
}

teardown() {
  stop_mayu || true
  stop_httpd
}

@test "the tarball holds the release tree, at its top level, owned by root" {
  # Every entry at the top: unpack it into a directory of your own.
  run ! bash -c "tar -tzf '$MAYU_DIST_TAR' | grep -v '^[^/]*/\{0,1\}$' | grep -v -e '^templates/' -e '^template_snippets/' -e '^tftproot/' -e '^static_html/' -e '^contrib/'"
  [ "$(tar -tvzf "$MAYU_DIST_TAR" | awk '{print $2}' | sort -u)" = "0/0" ]
  diff <(cd "$MAYU_DIST_DIR" && find . | LC_ALL=C sort) <(cd "$REL" && find . | LC_ALL=C sort)
  local f
  for f in mayu mayuctl config.yaml.example Dockerfile .dockerignore VERSION \
    fetch-coreos-image fetch-coreos-qemu-image fetch-flatcar-image fetch-yochu-assets fetch-lib.bash \
    templates/dnsmasq_template.conf templates/first_stage_script.sh templates/first_stage_cloudconfig.yaml \
    templates/last_stage_cloudconfig.yaml templates/ignition/gs_install.yaml \
    template_snippets/cloudconfig template_snippets/ignition \
    tftproot/undionly.kpxe tftproot/ipxe.efi tftproot/snponly.efi tftproot/shimx64.efi tftproot/grubx64.efi \
    tftproot/grubaa64.efi tftproot/shimaa64.efi static_html/arm64/infopusher static_html/arm64/mayuctl \
    static_html/mayuctl static_html/infopusher \
    contrib/systemd/mayu.service contrib/systemd/mayu-native.service contrib/mayu.init contrib/docker/healthcheck; do
    [ -e "$REL/$f" ] || {
      echo "missing from the release: $f" >&2
      return 1
    }
  done
  for f in mayu mayuctl static_html/mayuctl static_html/infopusher static_html/arm64/infopusher static_html/arm64/mayuctl fetch-coreos-image \
    fetch-coreos-qemu-image fetch-flatcar-image fetch-yochu-assets contrib/mayu.init contrib/docker/healthcheck; do
    [ -x "$REL/$f" ] || {
      echo "not executable: $f" >&2
      return 1
    }
  done
  cmp "$REL/tftproot/undionly.kpxe" /usr/lib/ipxe/undionly.kpxe
  cmp "$REL/tftproot/ipxe.efi" /usr/lib/ipxe/ipxe.efi
  cmp "$REL/tftproot/snponly.efi" /usr/lib/ipxe/snponly.efi
  cmp "$REL/tftproot/shimx64.efi" /usr/lib/shim/shimx64.efi.signed
  cmp "$REL/tftproot/grubx64.efi" /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed
  cmp "$REL/static_html/mayuctl" "$REL/mayuctl"
  cmp "$REL/tftproot/grubaa64.efi" "$BATS_TEST_DIRNAME/../../tftproot/grubaa64.efi"
  cmp "$REL/tftproot/shimaa64.efi" "$BATS_TEST_DIRNAME/../../tftproot/shimaa64.efi"
  file -b "$REL/static_html/arm64/infopusher" | grep -q 'ARM aarch64.*statically linked'
}

@test "the binaries are static and report the VERSION file's version" {
  local b
  for b in mayu mayuctl static_html/infopusher; do
    run ldd "$REL/$b"
    [[ $output == *"not a dynamic executable"* ]] || {
      echo "$b is dynamically linked: $output" >&2
      return 1
    }
  done
  run "$REL/mayu" --version
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"$(cat "$REL/VERSION")"* ]]
}

@test "./mayu --show-templates --config=config.yaml.example runs from the release directory" {
  cd "$REL" || return 1
  run ./mayu --show-templates --config=config.yaml.example --cluster-directory="$BATS_TEST_TMPDIR/cluster"
  echo "$output" | head -n 40
  [ "$status" -eq 0 ]
  [[ $output == *"#cloud-config"* ]]
}

@test "fetch images with the release's script, then mayu serves them, the dashboard and the helper" {
  # The operator's flow: fetch into images/ of the release directory...
  local v rel=$BATS_TEST_TMPDIR/rel
  v=$(awk '/^default_coreos_version:/ {print $2}' "$REL/config.yaml.example")
  cp -a "$REL" "$rel"
  mkdir -p "$BATS_TEST_TMPDIR/mirror"
  make_release "$BATS_TEST_TMPDIR/mirror" "$v" coreos_production
  start_httpd "$BATS_TEST_TMPDIR/mirror"
  (cd "$rel" && COREOS_BASE_URL=$HTTPD_URL ./fetch-coreos-image "$v")
  [ -f "$rel/images/$v/coreos_production_pxe_image.cpio.gz" ]

  # ... then start mayu there, plain HTTP, no git, on loopback.
  start_mayu "$rel" ./mayu --config=config.yaml.example --cluster-directory="$BATS_TEST_TMPDIR/cluster" --no-tls --no-git
  curl -fsS "$MAYU_URL/images/vmlinuz" | cmp - "$rel/images/$v/coreos_production_pxe.vmlinuz"
  curl -fsS "$MAYU_URL/images/initrd.cpio.gz" | cmp - "$rel/images/$v/coreos_production_pxe_image.cpio.gz"
  curl -fsS "$MAYU_URL/index.html" | grep -q '<title>Mayu</title>'
  curl -fsS "$MAYU_URL/hostinfo-helper" | cmp - "$rel/static_html/infopusher"
  # The admin API needs the token mayu wrote at its first start.
  local tokens=$BATS_TEST_TMPDIR/cluster/.admin-tokens
  [ "$(curl -sS -o /dev/null -w '%{http_code}' "$MAYU_URL/admin/hosts")" = 401 ]
  [ "$(curl -fsS -H "Authorization: Bearer $(admin_token "$tokens")" "$MAYU_URL/admin/hosts")" = "[]" ]
  run "$rel/mayuctl" --no-tls --host=127.0.0.1 --port="$MAYU_PORT" --token-file="$tokens" list
  echo "$output"
  [ "$status" -eq 0 ]
  [[ ${lines[0]} == "IP  SERIAL  PROFILE  IPMIADDR  PROVIDERID  ETCDTOKEN  METADATA  COREOS  STATE  LASTBOOT" ]]

  # SIGTERM stops it cleanly.
  stop_mayu
  [ -f "$BATS_TEST_TMPDIR/cluster/cluster.json" ]
}

@test "contrib/mayu.init starts, reports and stops the release's mayu" {
  require_cmd start-stop-daemon dpkg
  local port
  port=$(free_port)
  export MAYU_DEFAULTS=/nonexistent DAEMON=$REL/mayu MAYU_DIR=$REL
  export PIDFILE=$BATS_TEST_TMPDIR/mayu.pid LOGFILE=$BATS_TEST_TMPDIR/mayu.log STOP_TIMEOUT=20
  export MAYU_ARGS="--config=config.yaml.example --cluster-directory=$BATS_TEST_TMPDIR/cluster --no-tls --no-git --no-dnsmasq --http-bind-address=127.0.0.1 --http-port=$port --runtime-dir=$BATS_TEST_TMPDIR/run"
  run "$REL/contrib/mayu.init" status
  [ "$status" -eq 3 ]
  run "$REL/contrib/mayu.init" start
  echo "$output"
  [ "$status" -eq 0 ]
  local pid i
  pid=$(cat "$PIDFILE")
  for ((i = 0; i < 100; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
  curl -fsS -H "Authorization: Bearer $(admin_token "$BATS_TEST_TMPDIR/cluster/.admin-tokens")" "http://127.0.0.1:$port/admin/hosts"
  run "$REL/contrib/mayu.init" status
  [ "$status" -eq 0 ]
  [[ $output == *"running (pid $pid)"* ]]
  run "$REL/contrib/mayu.init" stop
  echo "$output"
  [ "$status" -eq 0 ]
  # Gone, or a zombie its new parent (init) has not reaped yet.
  run ! bash -c "ps -o stat= -p $pid | grep -qv '^Z'"
  [ ! -e "$PIDFILE" ]
  run "$REL/contrib/mayu.init" status
  [ "$status" -eq 3 ]
  # A flag mayu refuses is reported at start, not hidden behind "started".
  MAYU_ARGS="--config=config.yaml.example --http-port=0 --no-tls" run "$REL/contrib/mayu.init" start
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"failed to start"* ]]
  run "$REL/contrib/mayu.init" bogus
  [ "$status" -eq 2 ]
}

@test "make dist without Debian's ipxe files says so and leaves the last release alone" {
  run make -C "$REPO_DIR" --no-print-directory dist IPXE_DIR="$BATS_TEST_TMPDIR/no-ipxe"
  echo "$output" | tail -n 3
  [ "$status" -ne 0 ]
  [[ $output == *"$BATS_TEST_TMPDIR/no-ipxe/undionly.kpxe is missing: install Debian's ipxe package"* ]]
  [ -x "$MAYU_DIST_DIR/mayu" ]
  [ -f "$MAYU_DIST_TAR" ]
}
