#!/usr/bin/env bats
#
# fetch-coreos-image, fetch-flatcar-image and fetch-coreos-qemu-image against
# a loopback mirror this test builds: good downloads, every failure the
# scripts must survive without leaving anything behind, and the cloud-config
# that ends up in the PXE initrd.

setup() {
  load helpers
  MIRROR=$BATS_TEST_TMPDIR/mirror
  WORK=$BATS_TEST_TMPDIR/work
  mkdir -p "$MIRROR" "$WORK/templates"
  # The real first-stage cloud-config when the tree has it, else a stand-in.
  if [ -f "$REPO_DIR/templates/first_stage_cloudconfig.yaml" ]; then
    cp "$REPO_DIR/templates/first_stage_cloudconfig.yaml" "$WORK/templates/"
  else
    cp "$FIXTURES/first_stage_cloudconfig.yaml" "$WORK/templates/"
  fi
  # An empty keyring of our own: the user's keys must not decide the outcome.
  export GNUPGHOME=$BATS_TEST_TMPDIR/gnupg
  mkdir -m 700 "$GNUPGHOME"
  unset COREOS_BASE_URL FLATCAR_BASE_URL COREOS_IMAGE_PREFIX IMAGES_DIR FIRST_STAGE_CLOUDCONFIG
  unset FETCH_TOOL FETCH_ALLOW_UNVERIFIED FETCH_REQUIRE_SIGNATURE
  start_httpd "$MIRROR"
  cd "$WORK" || return 1
}

teardown() {
  stop_httpd
  gpgconf --kill gpg-agent 2>/dev/null || true
}

V=1068.6.0

coreos_mirror() {
  make_release "$MIRROR/amd64-usr" "$V" coreos_production
  export COREOS_BASE_URL=$HTTPD_URL/amd64-usr
}

assert_no_images() {
  [ ! -e "$WORK/images/$V" ] || {
    echo "images/$V exists after a failure:" >&2
    ls -la "$WORK/images/$V" >&2
    return 1
  }
  assert_no_leftovers "$WORK"
}

# assert_pxe_images DIR SRC PREFIX checks a fetched images/<version> against
# the mirror's files.
assert_pxe_images() {
  local dir=$1 src=$2 prefix=$3 size
  [ "$(cat "$dir/coreos-version")" = "${dir##*/}" ]
  cmp "$dir/coreos_production_pxe.vmlinuz" "$src/${prefix}_pxe.vmlinuz"
  cmp "$dir/coreos_production_image.bin.bz2" "$src/${prefix}_image.bin.bz2"
  # The initrd is the vendor's, byte for byte, followed by our archive.
  size=$(stat -c %s "$src/${prefix}_pxe_image.cpio.gz")
  cmp -n "$size" "$dir/coreos_production_pxe_image.cpio.gz" "$src/${prefix}_pxe_image.cpio.gz"
  [ "$(stat -c %s "$dir/coreos_production_pxe_image.cpio.gz")" -gt "$size" ]
  gzip -t "$dir/coreos_production_pxe_image.cpio.gz"
  # Everything the kernel will unpack, in order: the vendor's members, then ours.
  run python3 "$FIXTURES/newc-list.py" "$dir/coreos_production_pxe_image.cpio.gz"
  [ "$status" -eq 0 ]
  [ "${lines[0]}" = init ]
  [[ " ${lines[*]} " == *" usr.squashfs "* ]]
  [ "${lines[-1]}" = usr/share/oem/cloud-config.yml ]
  python3 "$FIXTURES/newc-list.py" "$dir/coreos_production_pxe_image.cpio.gz" \
    --cat usr/share/oem/cloud-config.yml | cmp - "$WORK/templates/first_stage_cloudconfig.yaml"
  # cpio itself lists the appended archive, which starts where the
  # vendor's uncompressed stream ends.
  size=$(gzip -dc "$src/${prefix}_pxe_image.cpio.gz" | wc -c)
  run bash -c "gzip -dc '$dir/coreos_production_pxe_image.cpio.gz' | tail -c +$((size + 1)) | cpio -t --quiet"
  [ "$status" -eq 0 ]
  [ "${lines[-1]}" = usr/share/oem/cloud-config.yml ]
  [ "$(stat -c %a "$dir")" = 755 ]
}

@test "fetch-coreos-image: wrong arguments print the usage and exit 2" {
  for args in "" "1.2.3 stable extra" "../../etc" "1068.6" "1068.6.0 nightly" "-x"; do
    # shellcheck disable=SC2086 # word splitting is the point
    run "$SCRIPTS_DIR/fetch-coreos-image" $args
    echo "args '$args': status $status: $output"
    [ "$status" -eq 2 ]
    [[ $output == *"usage: fetch-coreos-image <version> [channel]"* ]]
  done
  [ ! -e images ]
  [ ! -s "$HTTPD_LOG" ]
}

@test "fetch-coreos-image --help prints the usage and exits 0" {
  run "$SCRIPTS_DIR/fetch-coreos-image" --help
  [ "$status" -eq 0 ]
  [[ $output == *"usage: fetch-coreos-image"* ]]
}

@test "fetch-coreos-image: downloads, verifies and bakes the first-stage cloud-config into the initrd" {
  coreos_mirror
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"coreos_production_pxe.vmlinuz: sha512 digest ok"* ]]
  [[ $output == *"coreos_production_pxe_image.cpio.gz: sha512 digest ok"* ]]
  [[ $output == *"coreos_production_image.bin.bz2: sha512 digest ok"* ]]
  assert_pxe_images "$WORK/images/$V" "$MIRROR/amd64-usr/$V" coreos_production
  [ "$(find "$WORK/images/$V" -mindepth 1 -printf "%f\n" | LC_ALL=C sort | tr '\n' ' ')" = "coreos-version coreos_production_image.bin.bz2 coreos_production_pxe.vmlinuz coreos_production_pxe_image.cpio.gz " ]
  assert_no_leftovers "$WORK"
}

@test "fetch-flatcar-image: stores Flatcar's files under the names mayu serves" {
  make_release "$MIRROR/amd64-usr" 3815.2.5 flatcar_production
  FLATCAR_BASE_URL=$HTTPD_URL/amd64-usr run "$SCRIPTS_DIR/fetch-flatcar-image" 3815.2.5 stable
  echo "$output"
  [ "$status" -eq 0 ]
  assert_pxe_images "$WORK/images/3815.2.5" "$MIRROR/amd64-usr/3815.2.5" flatcar_production
  assert_no_leftovers "$WORK"
}

@test "fetch-flatcar-image: wrong arguments print the usage and exit 2" {
  for args in "" "a.b.c" "1.2.3 stable more" "1.2.3 main"; do
    # shellcheck disable=SC2086 # word splitting is the point
    run "$SCRIPTS_DIR/fetch-flatcar-image" $args
    [ "$status" -eq 2 ]
    [[ $output == *"usage: fetch-flatcar-image <version> [channel]"* ]]
  done
  [ ! -s "$HTTPD_LOG" ]
}

@test "fetch-coreos-image current: resolves the release number from version.txt" {
  coreos_mirror
  mkdir -p "$MIRROR/amd64-usr/current"
  printf 'COREOS_BUILD=1068\nCOREOS_VERSION=%s\nCOREOS_VERSION_ID=%s\n' "$V" "$V" >"$MIRROR/amd64-usr/current/version.txt"
  run "$SCRIPTS_DIR/fetch-coreos-image" current
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$(cat "$WORK/images/$V/coreos-version")" = "$V" ]
  [ ! -e "$WORK/images/current" ]
}

@test "fetch-coreos-image: a digest mismatch fails and leaves nothing behind" {
  coreos_mirror
  # Publish the digests of a different file under the install image's name.
  head -c 100 /dev/urandom >"$BATS_TEST_TMPDIR/other"
  sed -i "s/^[0-9a-f]\{128\} /$(sha512sum "$BATS_TEST_TMPDIR/other" | cut -d' ' -f1) /" \
    "$MIRROR/amd64-usr/$V/coreos_production_image.bin.bz2.DIGESTS"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"coreos_production_image.bin.bz2: sha512 digest mismatch"* ]]
  assert_no_images
}

@test "fetch-coreos-image: a missing file (404) fails and leaves nothing behind" {
  coreos_mirror
  rm "$MIRROR/amd64-usr/$V/coreos_production_image.bin.bz2"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"could not download coreos_production_image.bin.bz2"* ]]
  grep -q "GET /amd64-usr/$V/coreos_production_image.bin.bz2 404" "$HTTPD_LOG"
  assert_no_images
}

@test "fetch-coreos-image: an interrupted download fails and leaves nothing behind" {
  coreos_mirror
  echo "/amd64-usr/$V/coreos_production_pxe_image.cpio.gz" >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"could not download coreos_production_pxe_image.cpio.gz"* ]]
  assert_no_images
}

@test "fetch-coreos-image with wget: good download, 404 and interrupted download" {
  require_cmd wget wget
  coreos_mirror
  export FETCH_TOOL=wget
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  assert_pxe_images "$WORK/images/$V" "$MIRROR/amd64-usr/$V" coreos_production
  rm -rf "$WORK/images"

  echo "/amd64-usr/$V/coreos_production_pxe.vmlinuz" >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  assert_no_images

  : >"$HTTPD_TRUNCATE"
  rm "$MIRROR/amd64-usr/$V/coreos_production_image.bin.bz2"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  assert_no_images
}

@test "fetch-coreos-image: no published digest fails unless FETCH_ALLOW_UNVERIFIED=1" {
  coreos_mirror
  rm "$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz.DIGESTS"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"coreos_production_pxe.vmlinuz: the server publishes no digest"* ]]
  assert_no_images

  FETCH_ALLOW_UNVERIFIED=1 run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"keeping it unverified"* ]]
  [ -f "$WORK/images/$V/coreos_production_pxe.vmlinuz" ]
}

@test "fetch-coreos-image: a plain sha256sum file is accepted as the digest" {
  coreos_mirror
  (cd "$MIRROR/amd64-usr/$V" && rm coreos_production_pxe.vmlinuz.DIGESTS &&
    sha256sum coreos_production_pxe.vmlinuz >coreos_production_pxe.vmlinuz.sha256)
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"coreos_production_pxe.vmlinuz: sha256 digest ok"* ]]
}

@test "fetch-coreos-image: without the first-stage cloud-config it stops before downloading" {
  coreos_mirror
  rm "$WORK/templates/first_stage_cloudconfig.yaml"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"first_stage_cloudconfig.yaml not found"* ]]
  [ ! -s "$HTTPD_LOG" ]
  assert_no_images
}

@test "fetch-coreos-image: a failed re-fetch keeps the previous images intact" {
  coreos_mirror
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  [ "$status" -eq 0 ]
  cp -a "$WORK/images/$V" "$BATS_TEST_TMPDIR/before"
  echo "/amd64-usr/$V/coreos_production_image.bin.bz2" >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  [ "$status" -ne 0 ]
  diff -r "$BATS_TEST_TMPDIR/before" "$WORK/images/$V"
  assert_no_leftovers "$WORK"
  # A good re-fetch replaces the files and appends the cloud-config once.
  : >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  [ "$status" -eq 0 ]
  assert_pxe_images "$WORK/images/$V" "$MIRROR/amd64-usr/$V" coreos_production
  [ "$(python3 "$FIXTURES/newc-list.py" "$WORK/images/$V/coreos_production_pxe_image.cpio.gz" | grep -c cloud-config.yml)" -eq 1 ]
}

# sign_release creates a signing key in the test's own keyring and signs every
# release file with it.
sign_release() {
  gpg --batch --quiet --passphrase '' --quick-gen-key 'Mayu Test Signer <signer@example.invalid>' ed25519 sign 1d
  local f
  for f in "$MIRROR/amd64-usr/$V"/*.vmlinuz "$MIRROR/amd64-usr/$V"/*.gz "$MIRROR/amd64-usr/$V"/*.bz2; do
    gpg --batch --quiet --yes --pinentry-mode loopback --passphrase '' --detach-sign -o "$f.sig" "$f"
  done
}

@test "fetch-coreos-image: good signatures are checked when the key is in the keyring" {
  require_cmd gpg gpg
  coreos_mirror
  sign_release
  FETCH_REQUIRE_SIGNATURE=1 run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"coreos_production_image.bin.bz2: good signature from"*"Mayu Test Signer"* ]]
}

@test "fetch-coreos-image: a bad signature fails and leaves nothing behind" {
  require_cmd gpg gpg
  coreos_mirror
  sign_release
  # A genuine signature, but of another file.
  cp "$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz.sig" "$MIRROR/amd64-usr/$V/coreos_production_image.bin.bz2.sig"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"coreos_production_image.bin.bz2: BAD signature"* ]]
  assert_no_images
}

@test "fetch-coreos-image: without the signing key it warns, and fails when signatures are required" {
  require_cmd gpg gpg
  coreos_mirror
  sign_release
  # Same signatures, fresh keyring without the key.
  gpgconf --kill gpg-agent
  export GNUPGHOME=$BATS_TEST_TMPDIR/gnupg-empty
  mkdir -m 700 "$GNUPGHOME"
  run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"signature not checked: the signing key"*"is not in the keyring"* ]]
  rm -rf "$WORK/images"
  FETCH_REQUIRE_SIGNATURE=1 run "$SCRIPTS_DIR/fetch-coreos-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  assert_no_images
}

@test "fetch-coreos-qemu-image: kernel and /usr squashfs with .sha256 files" {
  coreos_mirror
  run "$SCRIPTS_DIR/fetch-coreos-qemu-image" "$V" stable
  echo "$output"
  [ "$status" -eq 0 ]
  local dir=$WORK/images/qemu/$V
  [ "$(find "$dir" -mindepth 1 -printf "%f\n" | LC_ALL=C sort | tr '\n' ' ')" = "coreos_production_qemu.vmlinuz coreos_production_qemu.vmlinuz.sha256 coreos_production_qemu_usr_image.squashfs coreos_production_qemu_usr_image.squashfs.sha256 " ]
  cmp "$dir/coreos_production_qemu.vmlinuz" "$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz"
  # The squashfs sits in the initrd's second archive, behind a false hit.
  cmp "$dir/coreos_production_qemu_usr_image.squashfs" "$MIRROR/amd64-usr/$V.usr.squashfs"
  (cd "$dir" && sha256sum -c coreos_production_qemu.vmlinuz.sha256 coreos_production_qemu_usr_image.squashfs.sha256)
  assert_no_leftovers "$WORK"
}

@test "fetch-coreos-qemu-image: an initrd without usr.squashfs fails and leaves nothing behind" {
  mkdir -p "$MIRROR/amd64-usr/$V" "$BATS_TEST_TMPDIR/i"
  head -c 1000 /dev/urandom >"$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz"
  echo 'usr.squashfs is mentioned, not included' >"$BATS_TEST_TMPDIR/i/init"
  (cd "$BATS_TEST_TMPDIR/i" && echo init | cpio --quiet -o -H newc) | gzip >"$MIRROR/amd64-usr/$V/coreos_production_pxe_image.cpio.gz"
  write_digests "$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz" "$MIRROR/amd64-usr/$V/coreos_production_pxe_image.cpio.gz"
  COREOS_BASE_URL=$HTTPD_URL/amd64-usr run "$SCRIPTS_DIR/fetch-coreos-qemu-image" "$V"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"holds no usr.squashfs"* ]]
  [ ! -e "$WORK/images/qemu/$V" ]
  assert_no_leftovers "$WORK"
}

@test "fetch-coreos-qemu-image: 404, interrupted download and wrong arguments" {
  coreos_mirror
  echo "/amd64-usr/$V/coreos_production_pxe_image.cpio.gz" >"$HTTPD_TRUNCATE"
  run "$SCRIPTS_DIR/fetch-coreos-qemu-image" "$V"
  [ "$status" -ne 0 ]
  [ ! -e "$WORK/images/qemu/$V" ]
  : >"$HTTPD_TRUNCATE"
  rm "$MIRROR/amd64-usr/$V/coreos_production_pxe.vmlinuz"
  run "$SCRIPTS_DIR/fetch-coreos-qemu-image" "$V"
  [ "$status" -ne 0 ]
  [ ! -e "$WORK/images/qemu/$V" ]
  assert_no_leftovers "$WORK"
  run "$SCRIPTS_DIR/fetch-coreos-qemu-image"
  [ "$status" -eq 2 ]
  [[ $output == *"usage: fetch-coreos-qemu-image <version> [channel]"* ]]
}
