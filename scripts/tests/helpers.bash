# shellcheck shell=bash disable=SC2034 # the globals set here are for the .bats files
#
# Shared by the bats files: a loopback HTTP server the test owns, and fake
# release trees with correct (or deliberately wrong) digests.

SCRIPTS_DIR=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
REPO_DIR=$(cd "$SCRIPTS_DIR/.." && pwd)
FIXTURES=$BATS_TEST_DIRNAME/fixtures

# start_httpd DIR serves DIR on 127.0.0.1 at a free port: sets HTTPD_PID,
# HTTPD_URL, HTTPD_LOG (one "METHOD PATH STATUS" line per request) and
# HTTPD_TRUNCATE (paths listed there are cut off mid-body).
start_httpd() {
  local dir=$1 portfile=$BATS_TEST_TMPDIR/httpd.port i
  HTTPD_LOG=$BATS_TEST_TMPDIR/httpd.log
  HTTPD_TRUNCATE=$BATS_TEST_TMPDIR/httpd.truncate
  : >"$HTTPD_LOG"
  : >"$HTTPD_TRUNCATE"
  rm -f "$portfile"
  python3 "$FIXTURES/httpd.py" --dir "$dir" --port-file "$portfile" \
    --truncate-list "$HTTPD_TRUNCATE" --log "$HTTPD_LOG" 3>&- &
  HTTPD_PID=$!
  for ((i = 0; i < 100; i++)); do
    [ -s "$portfile" ] && break
    kill -0 "$HTTPD_PID" 2>/dev/null || {
      echo "httpd.py died at start" >&2
      return 1
    }
    sleep 0.1
  done
  [ -s "$portfile" ] || {
    echo "httpd.py did not start within 10s" >&2
    return 1
  }
  HTTPD_URL="http://127.0.0.1:$(cat "$portfile")"
}

stop_httpd() {
  [ -n "${HTTPD_PID:-}" ] || return 0
  kill "$HTTPD_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    kill -0 "$HTTPD_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$HTTPD_PID" 2>/dev/null || true
  wait "$HTTPD_PID" 2>/dev/null || true
  HTTPD_PID=
}

# write_digests FILE... writes FILE.DIGESTS next to each FILE in the format
# CoreOS and Flatcar publish (MD5, SHA1 and SHA512 sections).
write_digests() {
  local f name dir algo
  for f in "$@"; do
    name=${f##*/}
    dir=${f%/*}
    {
      for algo in md5 sha1 sha512; do
        printf '# %s HASH\n' "${algo^^}"
        (cd "$dir" && "${algo}sum" "$name")
      done
    } >"$f.DIGESTS"
  done
}

# make_initrd OUT writes a gzip'd initrd made of two newc archives, like a
# real PXE initrd: the first holds an init that mentions usr.squashfs (a
# false hit for anyone grepping for it), the second the squashfs itself.
make_initrd() {
  local out=$1 work
  work=$(mktemp -d "$BATS_TEST_TMPDIR/initrd.XXXXXX")
  mkdir -p "$work/a/etc" "$work/b"
  printf '#!/bin/sh\n# mounts usr.squashfs on /usr\nexec /sbin/init\n' >"$work/a/init"
  echo fixture >"$work/a/etc/os-release"
  head -c 20000 /dev/urandom >"$work/b/usr.squashfs"
  (cd "$work/a" && printf '%s\n' init etc etc/os-release | cpio --quiet -o -H newc -R 0:0) | gzip >"$out"
  (cd "$work/b" && echo usr.squashfs | cpio --quiet -o -H newc -R 0:0) | gzip >>"$out"
  cp "$work/b/usr.squashfs" "$out.usr.squashfs"
  rm -rf "$work"
}

# make_release ROOT VERSION PREFIX builds ROOT/VERSION/ with the three PXE
# files of a release (names PREFIX_pxe.vmlinuz, ...) and their .DIGESTS.
make_release() {
  local root=$1 version=$2 prefix=$3 dir=$1/$2
  mkdir -p "$dir"
  head -c 30000 /dev/urandom >"$dir/${prefix}_pxe.vmlinuz"
  make_initrd "$dir/${prefix}_pxe_image.cpio.gz"
  mv "$dir/${prefix}_pxe_image.cpio.gz.usr.squashfs" "$root/$version.usr.squashfs"
  head -c 50000 /dev/urandom | bzip2 >"$dir/${prefix}_image.bin.bz2"
  write_digests "$dir/${prefix}_pxe.vmlinuz" "$dir/${prefix}_pxe_image.cpio.gz" "$dir/${prefix}_image.bin.bz2"
}

# assert_no_leftovers DIR fails when a staging directory survived in DIR.
assert_no_leftovers() {
  local left
  left=$(find "$1" -name '.fetch.*' -o -name '.oem.*' -o -name '*.verify' 2>/dev/null || true)
  if [ -n "$left" ]; then
    echo "left behind in $1:" >&2
    echo "$left" >&2
    return 1
  fi
}

# require_cmd CMD PACKAGE skips the test loudly when CMD is missing, and
# fails it instead when MAYU_E2E=required (as in CI).
require_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${MAYU_E2E:-}" = required ]; then
    echo "$1 is missing (Debian package $2) and MAYU_E2E=required" >&2
    return 1
  fi
  skip "$1 is missing: install the Debian package $2 to run this test"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_mayu DIR ARGS... runs mayu from DIR (its working directory) on
# loopback without dnsmasq; sets MAYU_PID, MAYU_PORT, MAYU_URL, MAYU_LOG.
start_mayu() {
  local dir=$1 bin=$2
  shift 2
  MAYU_PORT=$(free_port)
  MAYU_URL=http://127.0.0.1:$MAYU_PORT
  MAYU_LOG=$BATS_TEST_TMPDIR/mayu.log
  (cd "$dir" && exec "$bin" "$@" --no-dnsmasq --http-bind-address=127.0.0.1 --http-port="$MAYU_PORT" \
    --runtime-dir="$BATS_TEST_TMPDIR/run" >"$MAYU_LOG" 2>&1 3>&-) &
  MAYU_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    curl -fsS -o /dev/null "$MAYU_URL/" 2>/dev/null && return 0
    if ! kill -0 "$MAYU_PID" 2>/dev/null; then
      echo "mayu exited at start:" >&2
      cat "$MAYU_LOG" >&2
      MAYU_PID=
      return 1
    fi
    sleep 0.1
  done
  echo "mayu did not answer on $MAYU_URL within 20s:" >&2
  cat "$MAYU_LOG" >&2
  return 1
}

# stop_mayu sends SIGTERM to the mayu start_mayu started, waits up to 20s,
# and returns its exit status (SIGKILL and failure after that).
stop_mayu() {
  [ -n "${MAYU_PID:-}" ] || return 0
  local pid=$MAYU_PID i rc=0
  MAYU_PID=
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "mayu (pid $pid) did not stop within 20s of SIGTERM" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    return 1
  fi
  wait "$pid" || rc=$?
  return "$rc"
}

# admin_token FILE prints the token of the first admin line of mayu's
# token file (lines "name role token"; # starts a comment).
admin_token() {
  awk '!/^[[:space:]]*#/ && $2 == "admin" {print $3; exit}' "$1"
}
