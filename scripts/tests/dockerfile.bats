#!/usr/bin/env bats
#
# The Dockerfile read without an engine: every path it copies exists in both
# build contexts (the source tree and an unpacked release) and survives
# .dockerignore, the stages are in the order the classic builder needs, the
# entrypoint's flags parse, and mayu runs from the layout the Dockerfile's
# COPY lines produce. The image itself is built by `make image` and run by
# `make e2e-docker` (tests/e2e/sandbox-e2e docker). Run through
# `make test-dist` (MAYU_DIST_DIR names the release tree).

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  if [ -z "${MAYU_DIST_DIR:-}" ] || [ ! -d "$MAYU_DIST_DIR" ]; then
    echo "MAYU_DIST_DIR must name the release tree: run this through make test-dist" >&2
    return 1
  fi
  DOCKERFILE=$REPO_DIR/Dockerfile
}

teardown() {
  stop_mayu || true
}

# instructions prints the Dockerfile one instruction per line, continuation
# lines joined and comments dropped, each prefixed with its stage name (an
# unnamed stage is "final").
instructions() {
  sed -e '/^[[:space:]]*#/d' -e :a -e '/\\$/N; s/\\\n//; ta' "$DOCKERFILE" |
    awk 'BEGIN { stage = "" }
      toupper($1) == "FROM" { stage = (toupper($3) == "AS") ? $4 : "final" }
      NF > 0 { print (stage == "" ? "global" : stage) "\t" $0 }'
}

# copies STAGE... prints "FROM<TAB>SRC<TAB>DEST" for each source of each COPY
# in those stages (FROM is "-" for the build context).
copies() {
  local want=" $* " stage line from args dest i
  while IFS=$'\t' read -r stage line; do
    [[ $want == *" $stage "* ]] || continue
    read -ra args <<<"$line"
    [ "${args[0]^^}" = COPY ] || continue
    [[ ${args[1]} != \[* ]] || {
      echo "JSON-form COPY is not understood by this test: $line" >&2
      return 1
    }
    from=-
    args=("${args[@]:1}")
    while [[ ${args[0]} == --* ]]; do
      [[ ${args[0]} == --from=* ]] && from=${args[0]#--from=}
      args=("${args[@]:1}")
    done
    dest=${args[-1]}
    for ((i = 0; i < ${#args[@]} - 1; i++)); do
      printf '%s\t%s\t%s\n' "$from" "${args[i]}" "$dest"
    done
  done < <(instructions)
}

# json_instruction NAME prints the JSON array of ENTRYPOINT/CMD/VOLUME, one
# element per line.
json_instruction() {
  instructions | awk -F'\t' -v n="$1" 'toupper(substr($2, 1, length(n) + 1)) == n " " { sub("^[^ ]* ", "", $2); print $2 }' |
    tail -n1 | python3 -c 'import json, sys; [print(x) for x in json.load(sys.stdin)]'
}

ignored() {
  local path=${1%/} pattern
  while read -r pattern; do
    [ -z "$pattern" ] || [[ $pattern == \#* ]] && continue
    pattern=${pattern#\*\*/}
    # shellcheck disable=SC2053 # the pattern is a glob on purpose
    [[ $path == $pattern || ${path%%/*} == $pattern || ${path##*/} == $pattern ]] && return 0
  done <"$REPO_DIR/.dockerignore"
  return 1
}

# check_context DIR STAGE... fails unless every context COPY source of those
# stages matches something in DIR that .dockerignore lets through.
check_context() {
  local dir=$1 from src dest n=0
  shift
  while IFS=$'\t' read -r from src dest; do
    [ "$from" = - ] || continue
    n=$((n + 1))
    # shellcheck disable=SC2086 # sources may be globs
    compgen -G "$dir/${src%/}" >/dev/null || {
      echo "COPY source $src does not exist in $dir" >&2
      return 1
    }
    ! ignored "$src" || {
      echo "COPY source $src is excluded by .dockerignore" >&2
      return 1
    }
  done < <(copies "$@")
  [ "$n" -gt 0 ]
}

# stages prints the stage names in the Dockerfile's order.
stages() {
  instructions | awk -F'\t' '$2 ~ /^FROM / && !seen[$1]++ { print $1 }'
}

@test "every COPY source of the source build exists in the tree and passes .dockerignore" {
  check_context "$REPO_DIR" certs runtime builder source
  # Each module of the workspace reaches the builder.
  local m
  while read -r m; do
    copies builder | grep -q "^-	$m/	" || {
      echo "go.work uses ./$m but the Dockerfile does not copy $m/" >&2
      return 1
    }
  done < <(sed -n 's|^[[:space:]]*\./\([A-Za-z0-9_-]*\)$|\1|p' "$REPO_DIR/go.work")
}

@test "every COPY source of the release build exists in the release tree and passes .dockerignore" {
  check_context "$MAYU_DIST_DIR" certs runtime release
  cmp "$MAYU_DIST_DIR/Dockerfile" "$DOCKERFILE"
  cmp "$MAYU_DIST_DIR/.dockerignore" "$REPO_DIR/.dockerignore"
}

@test "the source and the release build put the same binaries in the same places" {
  local from src dest built released pattern
  built=$(instructions | grep -o 'for t in [^;]*;' | sed 's/for t in //; s/;//' | tr ' ' '\n' | cut -d: -f1 | sort | tr '\n' ' ')
  [ "$built" = "arm64/infopusher arm64/mayuctl infopusher mayu mayuctl " ]
  while IFS=$'\t' read -r from src dest; do
    [ "$from" = builder ] || {
      echo "the source stage copies $src from $from, not from the builder" >&2
      return 1
    }
    # A file is one the builder makes; a directory (arm64/) holds some.
    if [[ $src == */ ]]; then pattern=" ${src#/out/}*"; else pattern=" ${src#/out/} "; fi
    # shellcheck disable=SC2053 # the pattern is meant to match
    [[ " $built " == *$pattern* ]] || {
      echo "the source stage copies $src, which the builder does not make" >&2
      return 1
    }
  done < <(copies source)
  released=$(copies release | awk -F'\t' '{ n = split($2, p, "/"); print $3 p[n] }' | sort | tr '\n' ' ')
  [ "$released" = "$(copies source | awk -F'\t' '{ n = split($2, p, "/"); print $3 p[n] }' | sort | tr '\n' ' ')" ]
  [ "$released" = "/usr/bin/mayu /usr/lib/mayu/static_html/arm64/ /usr/lib/mayu/static_html/infopusher /usr/lib/mayu/static_html/mayuctl " ]
}

@test "the stages are in the order the classic builder and a plain docker build need" {
  # The classic builder (no BuildKit, as on an engine without buildx) builds
  # every stage up to --target: release must come before the builder, whose
  # Go image may not be pullable. A plain docker build makes the last stage:
  # the source build.
  [ "$(stages | tr '\n' ' ')" = "certs runtime release builder source " ]
  instructions | grep -qP '^release\tFROM runtime AS release$'
  instructions | grep -qP '^source\tFROM runtime AS source$'
  # No BuildKit-only syntax before the builder stage.
  run ! bash -c "sed -e '/^[[:space:]]*#/d' -e '/ AS builder\$/,\$d' '$DOCKERFILE' | grep -e '--mount' -e '<<'"
}

@test "the runtime image: dnsmasq-base, the CA bundle, iPXE's boot files, no git, no config; volumes, ports, health check" {
  local install
  install=$(instructions | grep -P '^runtime\tRUN ' | grep -o 'apt-get install [^&]*')
  [[ $install == *dnsmasq-base* && $install == *" ipxe"* ]]
  [[ $install != *" git"* ]]
  instructions | grep -P '^runtime\tRUN ' | grep -qF 'apt-get purge -y --auto-remove ipxe'
  instructions | grep -P '^certs\tRUN ' | grep -qF 'apt-get install -y --no-install-recommends ca-certificates'
  copies runtime | grep -qxP 'certs\t/etc/ssl/certs/ca-certificates.crt\t/etc/ssl/certs/'
  instructions | grep -qF 'cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi /usr/lib/mayu/tftproot/'
  instructions | grep -qF 'apt-get download shim-signed grub-efi-amd64-signed'
  instructions | grep -qF 'cp usr/lib/shim/shimx64.efi.signed /usr/lib/mayu/tftproot/shimx64.efi'
  instructions | grep -qF 'cp usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed /usr/lib/mayu/tftproot/grubx64.efi'
  instructions | grep -qF 'apt-get download grub-efi-arm64-signed:arm64 shim-signed:arm64'
  instructions | grep -qF 'cp usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed /usr/lib/mayu/tftproot/grubaa64.efi'
  instructions | grep -qF 'cp usr/lib/shim/shimaa64.efi.signed /usr/lib/mayu/tftproot/shimaa64.efi'
  instructions | grep -qF 'dpkg --remove-architecture arm64'
  copies release | grep -qxP -- '-\tstatic_html/arm64/\t/usr/lib/mayu/static_html/arm64/'
  copies source | grep -qxP 'builder\t/out/arm64/\t/usr/lib/mayu/static_html/arm64/'
  # A config at the wrong path must not be hidden by one in the image.
  run ! grep -E '^COPY .*[[:space:]]/etc/mayu/' "$DOCKERFILE"
  [ "$(json_instruction VOLUME | tr '\n' ' ')" = "/var/lib/mayu /usr/lib/mayu/images /usr/lib/mayu/yochu " ]
  [ "$(instructions | awk -F'\t' '$1 == "runtime" && $2 ~ /^EXPOSE / { sub("^EXPOSE ", "", $2); print $2 }')" = "4080 67/udp 69/udp 53/udp 53/tcp" ]
  [ "$(instructions | awk -F'\t' '$1 == "runtime" && $2 ~ /^WORKDIR / { print $2 }')" = "WORKDIR /usr/lib/mayu" ]
  [ "$(instructions | awk -F'\t' '$1 == "runtime" && $2 ~ /^HEALTHCHECK / { print $2 }' | grep -o 'CMD .*')" = 'CMD ["/usr/lib/mayu/healthcheck"]' ]
  copies runtime | grep -qxP -- '-\tcontrib/docker/healthcheck\t/usr/lib/mayu/healthcheck'
  [ -x "$REPO_DIR/contrib/docker/healthcheck" ]
  [ "$(json_instruction ENTRYPOINT | tr '\n' ' ')" = "mayu --cluster-directory=/var/lib/mayu " ]
  for p in images yochu cluster .git dist bin; do
    ignored "$p" || {
      echo ".dockerignore lets $p into the build context" >&2
      return 1
    }
  done
}

@test "the entrypoint and default command parse: mayu <entrypoint> <cmd> --help" {
  local -a entry cmd
  mapfile -t entry < <(json_instruction ENTRYPOINT)
  mapfile -t cmd < <(json_instruction CMD)
  [ "${#cmd[@]}" -gt 0 ]
  run "$REPO_DIR/bin/${entry[0]}" "${entry[@]:1}" "${cmd[@]}" --help
  echo "$output" | head -n 5
  [ "$status" -eq 0 ]
  [[ $output == *"--cluster-directory"* ]]
  # An unknown flag does fail, so the exit status above means something.
  run "$REPO_DIR/bin/${entry[0]}" "${entry[@]:1}" --no-such-flag --help
  [ "$status" -ne 0 ]
}

# image_root ROOT lays out what the release image's COPY lines (and its
# tftproot and mayuctl RUN lines) produce, from the release tree, under ROOT.
image_root() {
  local root=$1 from src dest
  mkdir -p "$root/usr/lib/mayu/tftproot" "$root/usr/bin" "$root/var/lib/mayu" "$root/etc/mayu"
  cp /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi "$root/usr/lib/mayu/tftproot/"
  cp /usr/lib/shim/shimx64.efi.signed "$root/usr/lib/mayu/tftproot/shimx64.efi"
  cp /usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed "$root/usr/lib/mayu/tftproot/grubx64.efi"
  instructions | grep -P '^runtime\tRUN ' | grep -qF 'ln -s /usr/lib/mayu/static_html/mayuctl /usr/bin/mayuctl'
  ln -s "$root/usr/lib/mayu/static_html/mayuctl" "$root/usr/bin/mayuctl"
  while IFS=$'\t' read -r from src dest; do
    case $from in
      certs) continue ;; # the CA bundle: not needed to run here
      -) src=$MAYU_DIST_DIR/${src%/} ;;
      *)
        echo "unexpected COPY --from=$from" >&2
        return 1
        ;;
    esac
    if [[ $dest == */ ]]; then
      mkdir -p "$root$dest"
      if [ -d "$src" ]; then
        cp -R "$src/." "$root$dest"
      else
        cp "$src" "$root$dest"
      fi
    else
      mkdir -p "$(dirname "$root$dest")"
      cp -R "$src" "$root$dest"
    fi
  done < <(copies runtime release)
}

@test "mayu runs from the image's /usr/lib/mayu layout: --show-templates and a short start" {
  local root=$BATS_TEST_TMPDIR/image workdir
  local -a entry cmd
  image_root "$root"
  for f in usr/bin/mayu usr/bin/mayuctl usr/lib/mayu/static_html/mayuctl usr/lib/mayu/static_html/infopusher \
    usr/lib/mayu/templates/dnsmasq_template.conf \
    usr/lib/mayu/template_snippets/cloudconfig usr/lib/mayu/tftproot/undionly.kpxe usr/lib/mayu/healthcheck \
    usr/share/doc/mayu/config.yaml.example; do
    [ -e "$root/$f" ] || {
      echo "the image would lack /$f" >&2
      return 1
    }
  done
  workdir=$root$(instructions | awk -F'\t' '$1 == "runtime" && $2 ~ /^WORKDIR / { print $2 }' | cut -d' ' -f2)
  mapfile -t entry < <(json_instruction ENTRYPOINT)
  mapfile -t cmd < <(json_instruction CMD)
  # No chroot: absolute paths the container would see move under ROOT, and
  # the config mayu reads by default is named explicitly.
  entry=("${entry[@]//=\//=$root/}")
  entry[0]=$root/usr/bin/${entry[0]}
  cd "$workdir" || return 1
  # Without a mounted config mayu refuses to start, naming the path.
  run "${entry[@]}" "${cmd[@]}" --config="$root/etc/mayu/config.yaml"
  [ "$status" -ne 0 ]
  [[ $output == *"config $root/etc/mayu/config.yaml does not exist"* ]]
  # The config the user mounts: here the example the image carries.
  cp "$root/usr/share/doc/mayu/config.yaml.example" "$root/etc/mayu/config.yaml"
  run "${entry[@]}" --config="$root/etc/mayu/config.yaml" --show-templates
  echo "$output" | head -n 20
  [ "$status" -eq 0 ]
  start_mayu "$workdir" "${entry[@]}" "${cmd[@]}" --config="$root/etc/mayu/config.yaml"
  # The dashboard is built into mayu.
  curl -fsS "$MAYU_URL/index.html" | grep -q '<title>Mayu</title>'
  curl -fsS "$MAYU_URL/hostinfo-helper" | cmp - "$root/usr/lib/mayu/static_html/infopusher"
  stop_mayu
  [ -f "$root/var/lib/mayu/cluster.json" ]
}

@test "the builder stage builds every binary (and the arm64 ones for arm64) from exactly what its COPY lines bring in" {
  # The source stage replayed on this machine: its COPY lines into a fresh
  # directory, its RUN lines with /src and /out moved there. The module
  # proxy is the local module cache (no network), so a module or go.sum
  # entry the COPY lines miss fails here as it would in docker build.
  local t=$BATS_TEST_TMPDIR/builder from src dest stage line cmd modcache
  modcache=$(go env GOMODCACHE)
  mkdir -p "$t/src" "$t/out"
  while IFS=$'\t' read -r from src dest; do
    [ "$from" = - ] || continue
    # shellcheck disable=SC2086 # sources may be globs
    for s in $(cd "$REPO_DIR" && compgen -G "${src%/}"); do
      if [[ $dest == */ || $dest == . || $dest == ./ ]]; then
        mkdir -p "$t/src/$dest"
        if [ -d "$REPO_DIR/$s" ]; then cp -R "$REPO_DIR/$s/." "$t/src/$dest"; else cp "$REPO_DIR/$s" "$t/src/$dest"; fi
      else
        mkdir -p "$(dirname "$t/src/$dest")"
        cp -R "$REPO_DIR/$s" "$t/src/$dest"
      fi
    done
  done < <(copies builder)
  instructions | awk -F'\t' '$1 == "builder" && $2 ~ /^WORKDIR / { print $2 }' | grep -qx 'WORKDIR /src'
  while IFS=$'\t' read -r stage line; do
    [ "$stage" = builder ] && [[ $line == RUN\ * ]] || continue
    cmd=${line#RUN }
    # BuildKit's cache mounts have no meaning outside a build.
    while [[ $cmd == --mount=* ]]; do cmd=${cmd#--mount=* }; done
    cmd=${cmd//\/out\//$t/out/}
    (cd "$t/src" && env -u GOWORK -u GOFLAGS GOPROXY="file://$modcache/cache/download" GOSUMDB=off bash -ec "$cmd") || {
      echo "builder step failed: $cmd" >&2
      return 1
    }
  done < <(instructions)
  local b
  for b in mayu mayuctl infopusher arm64/mayuctl arm64/infopusher; do
    [ -x "$t/out/$b" ] || {
      echo "the builder made no /out/$b" >&2
      return 1
    }
  done
  for b in mayuctl infopusher; do
    file -b "$t/out/arm64/$b" | grep -q 'ARM aarch64.*statically linked' || {
      echo "/out/arm64/$b is not a static aarch64 program: $(file -b "$t/out/arm64/$b")" >&2
      return 1
    }
  done
  run "$t/out/mayu" --version
  [ "$status" -eq 0 ]
  [[ $output == *"$(cat "$REPO_DIR/VERSION")"* ]]
}
