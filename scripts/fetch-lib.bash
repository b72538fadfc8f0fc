# shellcheck shell=bash
#
# Shared by the fetch-* scripts; sourced, never run. Every file they fetch is
# downloaded into a staging directory next to its final place, checked against
# the digests the release server publishes (and its detached signature when
# the signing key is in the keyring), and only then renamed into place, so a
# failed or interrupted run leaves nothing half-written where mayu would serve
# it.
#
# Environment understood by every fetch script:
#   FETCH_TOOL               curl or wget (default: curl when installed, else wget)
#   FETCH_ALLOW_UNVERIFIED=1 accept files for which the server publishes no digest
#   FETCH_REQUIRE_SIGNATURE=1 fail unless every file has a good signature
#   GNUPGHOME                the keyring gpg checks signatures against

FETCH_PROG=${FETCH_PROG:-${0##*/}}
# Digest files are tried in this order next to each download: CoreOS and
# Flatcar publish <file>.DIGESTS, other mirrors usually a sha256sum file.
FETCH_DIGEST_SUFFIXES=${FETCH_DIGEST_SUFFIXES:-.DIGESTS .sha512 .sha256}
_FETCH_STAGES=()

fetch::die() {
  printf '%s: error: %s\n' "$FETCH_PROG" "$*" >&2
  exit 1
}

fetch::warn() {
  printf '%s: warning: %s\n' "$FETCH_PROG" "$*" >&2
}

fetch::info() {
  printf '%s: %s\n' "$FETCH_PROG" "$*" >&2
}

# fetch::usage_error prints the caller's usage text and exits 2, the
# conventional status for a wrong command line.
fetch::usage_error() {
  local usage=$1
  shift
  [ $# -gt 0 ] && printf '%s: %s\n' "$FETCH_PROG" "$*" >&2
  printf '%s\n' "$usage" >&2
  exit 2
}

fetch::need() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || fetch::die "$cmd is needed but not installed"
  done
}

fetch::tool() {
  local tool=${FETCH_TOOL:-}
  if [ -z "$tool" ]; then
    if command -v curl >/dev/null 2>&1; then
      tool=curl
    elif command -v wget >/dev/null 2>&1; then
      tool=wget
    else
      fetch::die "neither curl nor wget is installed"
    fi
  fi
  case $tool in
    curl | wget) fetch::need "$tool" ;;
    *) fetch::die "FETCH_TOOL must be curl or wget, not '$tool'" ;;
  esac
  printf '%s\n' "$tool"
}

# fetch::download URL DEST downloads URL to DEST, with a progress bar when
# stderr is a terminal. Any failure (HTTP error, dropped connection, short
# body) removes DEST and returns non-zero.
fetch::download() {
  local url=$1 dest=$2 tool rc=0
  tool=$(fetch::tool) || exit 1
  fetch::info "fetching $url"
  if [ "$tool" = curl ]; then
    local progress=(--silent --show-error)
    [ -t 2 ] && progress=(--progress-bar)
    curl --fail --location --retry 3 --connect-timeout 30 "${progress[@]}" -o "$dest" -- "$url" || rc=$?
  else
    local progress=(--no-verbose)
    [ -t 2 ] && progress=(--quiet --show-progress --progress=bar:force)
    wget --tries=3 --timeout=30 "${progress[@]}" -O "$dest" -- "$url" || rc=$?
  fi
  if [ "$rc" -ne 0 ]; then
    rm -f -- "$dest"
    fetch::warn "download of $url failed ($tool exit status $rc)"
    return 1
  fi
}

# fetch::download_optional URL DEST fetches a small companion file (digests,
# signature). Returns 0 when fetched, 3 when the server has no such file, 1
# on any other failure.
fetch::download_optional() {
  local url=$1 dest=$2 tool code rc=0
  tool=$(fetch::tool) || exit 1
  if [ "$tool" = curl ]; then
    code=$(curl --silent --show-error --location --retry 3 --connect-timeout 30 \
      --write-out '%{http_code}' -o "$dest" -- "$url") || rc=$?
    if [ "$rc" -eq 0 ] && [ "$code" = 200 ]; then
      return 0
    fi
    rm -f -- "$dest"
    case $code in
      404 | 410) return 3 ;;
    esac
    fetch::warn "fetching $url failed (HTTP status ${code:-none}, curl exit status $rc)"
    return 1
  fi
  wget --quiet --tries=3 --timeout=30 -O "$dest" -- "$url" || rc=$?
  [ "$rc" -eq 0 ] && return 0
  rm -f -- "$dest"
  # wget reports every HTTP error answer as 8; the digest and signature
  # checks that follow treat "missing" strictly enough for this to be safe.
  [ "$rc" -eq 8 ] && return 3
  fetch::warn "fetching $url failed (wget exit status $rc)"
  return 1
}

# fetch::expected_digest DIGESTS NAME prints "<algorithm> <hex>" for the
# strongest digest DIGESTS lists for NAME. Understands CoreOS/Flatcar
# .DIGESTS files ("# SHA512 HASH" sections) and plain sha*sum output.
fetch::expected_digest() {
  local digests=$1 name=$2 hex
  hex=$(awk -v name="$name" '
    NF >= 2 && $1 ~ /^[0-9A-Fa-f]+$/ {
      file = $2; sub(/^\*/, "", file); sub(/^\.\//, "", file)
      if (file == name && length($1) > length(best)) best = $1
    }
    NF == 1 && $1 ~ /^[0-9A-Fa-f]+$/ && single == "" { single = $1 }
    END { if (best != "") print best; else if (single != "") print single }
  ' "$digests")
  case ${#hex} in
    128) printf 'sha512 %s\n' "${hex,,}" ;;
    64) printf 'sha256 %s\n' "${hex,,}" ;;
    40) printf 'sha1 %s\n' "${hex,,}" ;;
    0) return 1 ;;
    *)
      fetch::warn "only a weak or unknown digest (${#hex} hex digits) is published for $name"
      return 1
      ;;
  esac
}

# fetch::verify_digest FILE NAME DIGESTS checks FILE against NAME's entry.
fetch::verify_digest() {
  local file=$1 name=$2 digests=$3 algo want got
  read -r algo want < <(fetch::expected_digest "$digests" "$name") ||
    fetch::die "no usable digest for $name in ${digests##*/}"
  fetch::need "${algo}sum"
  got=$("${algo}sum" -- "$file" | awk '{print $1}')
  if [ "$got" != "$want" ]; then
    fetch::die "$name: ${algo} digest mismatch (expected $want, got $got); the download is corrupt or was tampered with"
  fi
  fetch::info "$name: ${algo} digest ok"
}

# fetch::verify_signature FILE SIG NAME checks a detached signature. A
# missing key is a warning (most operators have not imported the vendor's
# key) unless FETCH_REQUIRE_SIGNATURE=1; a bad signature always fails.
fetch::verify_signature() {
  local file=$1 sig=$2 name=$3 status
  if ! command -v gpg >/dev/null 2>&1; then
    fetch::unverified_signature "$name" "gpg is not installed"
    return 0
  fi
  status=$(gpg --batch --no-tty --status-fd 1 --verify -- "$sig" "$file" 2>/dev/null) || true
  if grep -q '^\[GNUPG:\] BADSIG' <<<"$status"; then
    fetch::die "$name: BAD signature; the download was tampered with or is corrupt"
  elif grep -q '^\[GNUPG:\] REVKEYSIG' <<<"$status"; then
    fetch::die "$name: signed by a revoked key"
  elif grep -q '^\[GNUPG:\] GOODSIG' <<<"$status" && grep -q '^\[GNUPG:\] VALIDSIG' <<<"$status"; then
    fetch::info "$name: good signature from $(sed -n 's/^\[GNUPG:\] GOODSIG [0-9A-F]* //p' <<<"$status")"
  elif grep -q '^\[GNUPG:\] EXPKEYSIG' <<<"$status"; then
    # Old releases were signed with subkeys that have since expired; the
    # signature still proves the file is the one the vendor published.
    fetch::warn "$name: good signature from a key that has since expired"
  elif grep -q '^\[GNUPG:\] NO_PUBKEY' <<<"$status"; then
    fetch::unverified_signature "$name" "the signing key $(sed -n 's/^\[GNUPG:\] NO_PUBKEY //p' <<<"$status" | head -n1) is not in the keyring (import the vendor's image signing key to check it)"
  else
    fetch::die "$name: signature check failed: $(tr '\n' ' ' <<<"$status")"
  fi
}

fetch::unverified_signature() {
  if [ "${FETCH_REQUIRE_SIGNATURE:-0}" = 1 ]; then
    fetch::die "$1: signature not checked: $2 (FETCH_REQUIRE_SIGNATURE=1)"
  fi
  fetch::warn "$1: signature not checked: $2"
}

# fetch::verified URL DEST downloads URL to DEST and checks it against the
# digests and signature the server publishes next to it. DEST must be inside
# a staging directory: on failure the script exits and the stage goes away.
fetch::verified() {
  local url=$1 dest=$2 name=${1##*/} aux suffix rc found=0
  aux="$dest.verify"
  fetch::download "$url" "$dest" || fetch::die "could not download $name"
  for suffix in $FETCH_DIGEST_SUFFIXES; do
    rc=0
    fetch::download_optional "$url$suffix" "$aux" || rc=$?
    case $rc in
      0)
        fetch::verify_digest "$dest" "$name" "$aux"
        found=1
        break
        ;;
      3) ;;
      *) fetch::die "could not fetch the digests of $name" ;;
    esac
  done
  rm -f -- "$aux"
  if [ "$found" = 0 ]; then
    if [ "${FETCH_ALLOW_UNVERIFIED:-0}" = 1 ]; then
      fetch::warn "$name: the server publishes no digest; keeping it unverified (FETCH_ALLOW_UNVERIFIED=1)"
    else
      fetch::die "$name: the server publishes no digest ($FETCH_DIGEST_SUFFIXES) for it; set FETCH_ALLOW_UNVERIFIED=1 to accept it anyway"
    fi
  fi
  rc=0
  fetch::download_optional "$url.sig" "$aux" || rc=$?
  case $rc in
    0) fetch::verify_signature "$dest" "$aux" "$name" ;;
    3) fetch::unverified_signature "$name" "the server publishes no signature" ;;
    *) fetch::die "could not fetch the signature of $name" ;;
  esac
  rm -f -- "$aux"
}

# fetch::stage PARENT creates a staging directory inside PARENT (so the final
# rename stays on one file system), names it in FETCH_STAGE, and removes it
# when the script exits, however it exits. Not for use in $(...): the trap
# and the list of stages must live in the script's own shell.
fetch::stage() {
  local parent=$1
  mkdir -p -- "$parent" || fetch::die "cannot create $parent"
  FETCH_STAGE=$(mktemp -d "$parent/.fetch.XXXXXX") || fetch::die "cannot create a staging directory in $parent"
  chmod 0755 "$FETCH_STAGE"
  _FETCH_STAGES+=("$FETCH_STAGE")
  if [ "${#_FETCH_STAGES[@]}" -eq 1 ]; then
    trap fetch::_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
  fi
}

fetch::_cleanup() {
  local dir
  for dir in "${_FETCH_STAGES[@]}"; do
    [ -n "$dir" ] && rm -rf -- "$dir"
  done
}

# fetch::commit STAGE TARGET moves a complete staging directory into place:
# one rename when TARGET is new, else one rename per file over the old ones.
fetch::commit() {
  local stage=$1 target=$2 entry
  if [ ! -e "$target" ]; then
    mkdir -p -- "$(dirname -- "$target")"
    mv -T -- "$stage" "$target" || fetch::die "cannot move the downloads into $target"
    return 0
  fi
  [ -d "$target" ] || fetch::die "$target exists and is not a directory"
  for entry in "$stage"/* "$stage"/.[!.]*; do
    [ -e "$entry" ] || continue
    mv -f -T -- "$entry" "$target/${entry##*/}" || fetch::die "cannot move ${entry##*/} into $target"
  done
  rmdir -- "$stage"
}

# fetch::check_version VERSION USAGE accepts release numbers and "current";
# anything else could escape the images directory, so it is a usage error.
fetch::check_version() {
  [[ $1 =~ ^([0-9]+\.[0-9]+\.[0-9]+|current)$ ]] ||
    fetch::usage_error "$2" "'$1' is not a release version (like 3815.2.5) or 'current'"
}

fetch::check_channel() {
  [[ $1 =~ ^(alpha|beta|stable|lts|edge)$ ]] ||
    fetch::usage_error "$2" "'$1' is not a channel (alpha, beta, stable, lts)"
}

# fetch::resolve_version BASE VERSION turns "current" into the number the
# server's version.txt names, since mayu looks images up by number.
fetch::resolve_version() {
  local base=$1 version=$2 tmp resolved
  if [ "$version" != current ]; then
    printf '%s\n' "$version"
    return 0
  fi
  tmp=$(mktemp) || fetch::die "cannot create a temporary file"
  if ! fetch::download "$base/current/version.txt" "$tmp"; then
    rm -f -- "$tmp"
    fetch::die "cannot find out which release is current"
  fi
  resolved=$(sed -n 's/^\(FLATCAR\|COREOS\)_VERSION=\([0-9.]*\)$/\2/p' "$tmp" | head -n1)
  rm -f -- "$tmp"
  [[ $resolved =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fetch::die "version.txt names no release version"
  fetch::info "current release is $resolved"
  printf '%s\n' "$resolved"
}

# fetch::append_oem_cloudconfig INITRD CLOUDCONFIG appends a newc cpio
# member usr/share/oem/cloud-config.yml to a gzip'd initrd. The kernel
# unpacks concatenated gzip'd archives in order, so this is how CoreOS's own
# documentation adds an OEM cloud-config to the PXE image.
fetch::append_oem_cloudconfig() {
  local initrd=$1 cloudconfig=$2 work
  fetch::need cpio gzip find
  work=$(mktemp -d "${initrd%/*}/.oem.XXXXXX") || fetch::die "cannot create a work directory"
  mkdir -p "$work/usr/share/oem"
  install -m 0644 -- "$cloudconfig" "$work/usr/share/oem/cloud-config.yml"
  (cd "$work" && find usr | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -9 >>"$initrd" ||
    fetch::die "cannot append the cloud-config to ${initrd##*/}"
  rm -rf -- "$work"
}

# fetch::extract_member ARCHIVE NAME DESTDIR extracts NAME from an
# uncompressed newc stream. GNU cpio stops at the first trailer, and PXE
# initrds are often several archives back to back, so find NAME's header
# ourselves and start cpio there.
fetch::extract_member() {
  local archive=$1 name=$2 destdir=$3 off start prefix hdr namesize want
  fetch::need cpio dd grep
  archive=$(readlink -f -- "$archive") # cpio runs in destdir
  while IFS=: read -r off _; do
    for prefix in "" "./"; do
      start=$((off - 110 - ${#prefix}))
      [ "$start" -ge 0 ] || continue
      # A real header is 110 ASCII bytes; NULs only turn up in false hits.
      hdr=$(dd if="$archive" bs=1 skip="$start" count=$((110 + ${#prefix})) 2>/dev/null | tr -d '\0')
      namesize=${hdr:94:8}
      printf -v want '%08X' $((${#prefix} + ${#name} + 1))
      [[ ${hdr:0:6} == 07070[12] && ${namesize^^} == "$want" && ${hdr:110} == "$prefix" ]] || continue
      (cd "$destdir" && tail -c "+$((start + 1))" "$archive" |
        cpio --quiet -i --no-absolute-filenames -- "$name" "./$name") ||
        fetch::die "cannot extract $name"
      [ -f "$destdir/$name" ] && return 0
    done
  done < <(LC_ALL=C grep -obaF -- "$name" "$archive")
  return 1
}

# fetch::flatcar_base CHANNEL names Flatcar's release server for a channel.
fetch::flatcar_base() {
  printf 'https://%s.release.flatcar-linux.net/amd64-usr\n' "$1"
}

# fetch::pxe_images BASE PREFIX VERSION fetches the PXE kernel, PXE initrd
# and install image of VERSION into $IMAGES_DIR/VERSION under the names mayu
# serves, and bakes the first-stage cloud-config into the initrd.
fetch::pxe_images() {
  local base=$1 prefix=$2 version=$3 images_dir cloudconfig stage remote
  images_dir=${IMAGES_DIR:-./images}
  cloudconfig=${FIRST_STAGE_CLOUDCONFIG:-./templates/first_stage_cloudconfig.yaml}
  [ -r "$cloudconfig" ] ||
    fetch::die "$cloudconfig not found: run this from the mayu release directory or set FIRST_STAGE_CLOUDCONFIG"
  fetch::need cpio gzip
  version=$(fetch::resolve_version "$base" "$version") || exit 1
  fetch::stage "$images_dir"
  stage=$FETCH_STAGE
  for remote in pxe.vmlinuz pxe_image.cpio.gz image.bin.bz2; do
    fetch::verified "$base/$version/${prefix}_$remote" "$stage/coreos_production_$remote"
  done
  fetch::append_oem_cloudconfig "$stage/coreos_production_pxe_image.cpio.gz" "$cloudconfig"
  printf '%s\n' "$version" >"$stage/coreos-version"
  fetch::commit "$stage" "$images_dir/$version"
  fetch::info "images for $version are in $images_dir/$version"
}

# fetch::qemu_images BASE PREFIX VERSION fetches the PXE kernel and the /usr
# squashfs (taken out of the PXE initrd) into $IMAGES_DIR/qemu/VERSION, each
# with a .sha256 file in sha256sum format.
fetch::qemu_images() {
  local base=$1 prefix=$2 version=$3 images_dir stage kernel usr
  images_dir=${IMAGES_DIR:-./images}
  fetch::need cpio gzip sha256sum
  version=$(fetch::resolve_version "$base" "$version") || exit 1
  fetch::stage "$images_dir"
  stage=$FETCH_STAGE
  kernel=coreos_production_qemu.vmlinuz
  usr=coreos_production_qemu_usr_image.squashfs
  fetch::verified "$base/$version/${prefix}_pxe.vmlinuz" "$stage/$kernel"
  fetch::verified "$base/$version/${prefix}_pxe_image.cpio.gz" "$stage/initrd.cpio.gz"
  gzip -dc "$stage/initrd.cpio.gz" >"$stage/initrd.cpio" || fetch::die "the PXE initrd is not valid gzip"
  rm -f -- "$stage/initrd.cpio.gz"
  mkdir "$stage/x"
  fetch::extract_member "$stage/initrd.cpio" usr.squashfs "$stage/x" ||
    fetch::die "the PXE initrd of $version holds no usr.squashfs"
  mv -- "$stage/x/usr.squashfs" "$stage/$usr"
  rm -rf -- "$stage/x" "$stage/initrd.cpio"
  chmod 0644 "$stage/$usr"
  (cd "$stage" && sha256sum -- "$kernel" >"$kernel.sha256" && sha256sum -- "$usr" >"$usr.sha256") ||
    fetch::die "cannot write the .sha256 files"
  fetch::commit "$stage" "$images_dir/qemu/$version"
  fetch::info "qemu images for $version are in $images_dir/qemu/$version"
}
