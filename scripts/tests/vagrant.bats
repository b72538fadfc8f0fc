#!/usr/bin/env bats
#
# The Vagrant flavour of the sandbox cannot run here (no VirtualBox), so
# this checks what can be checked: the Vagrantfile's Ruby and the topology
# it declares (loaded against a recording stand-in for Vagrant's DSL), and
# the provisioning scripts, each run against a temporary tree, a loopback
# server and recorders standing in for iptables, sysctl and docker. Nothing
# here touches the machine's network configuration or a Docker engine.

bats_require_minimum_version 1.5.0

setup() {
  load helpers
  V=$SCRIPTS_DIR/vagrant
  export MAYU_SHARE=$BATS_TEST_TMPDIR/share MAYU_HOME=$BATS_TEST_TMPDIR/home MAYU_VERSION=9.8.7
  export MAYU_RELEASE_DIR=$MAYU_HOME/mayu.9.8.7-linux-amd64
  unset MAYU_RELEASE_URL MAYU_URL FETCH_YOCHU FLATCAR_VERSION FLATCAR_CHANNEL BATS_URL BATS_SHA256
  mkdir -p "$MAYU_SHARE" "$MAYU_HOME"
  STUBS=$BATS_TEST_TMPDIR/stubs
  mkdir -p "$STUBS"
  CALLS=$BATS_TEST_TMPDIR/calls
  : >"$CALLS"
}

teardown() {
  stop_httpd
}

@test "Vagrantfile: valid Ruby with the walkthrough's topology and existing provisioning scripts" {
  require_cmd ruby ruby
  run ruby -c "$REPO_DIR/Vagrantfile"
  [ "$status" -eq 0 ]
  run ruby "$FIXTURES/vagrantfile-test.rb" "$REPO_DIR"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "vagrantfile ok" ]
}

# stub_iptables makes a recorder that keeps rules in a file: -C looks a rule
# up, -A appends it.
stub_iptables() {
  RULES=$BATS_TEST_TMPDIR/rules
  : >"$RULES"
  cat >"$STUBS/iptables" <<STUB
#!/usr/bin/env bash
echo "iptables \$*" >>"$CALLS"
table=filter
if [ "\$1" = -t ]; then table=\$2; shift 2; fi
op=\$1 chain=\$2
shift 2
rule="\$table \$chain \$*"
case \$op in
  -C) grep -qxF -- "\$rule" "$RULES" ;;
  -A) echo "\$rule" >>"$RULES" ;;
  *) exit 2 ;;
esac
STUB
  printf '#!/bin/sh\necho "sysctl $*" >>"%s"\n' "$CALLS" >"$STUBS/sysctl"
  printf '#!/bin/sh\necho "modprobe $*" >>"%s"\nexit 1\n' "$CALLS" >"$STUBS/modprobe"
  chmod +x "$STUBS"/*
  export IPTABLES=$STUBS/iptables SYSCTL=$STUBS/sysctl MODPROBE=$STUBS/modprobe
}

@test "setup-gateway.sh: forwarding on, private network forwarded and masqueraded, once" {
  stub_iptables
  run "$V/setup-gateway.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  grep -qx 'sysctl -q -w net.ipv4.ip_forward=1' "$CALLS"
  [ "$(sort "$RULES")" = "$(printf '%s\n' \
    'filter FORWARD -i eth1 -s 192.168.2.0/24 -j ACCEPT' \
    'filter FORWARD -o eth1 -d 192.168.2.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT' \
    'nat POSTROUTING -s 192.168.2.0/24 -o eth0 -j MASQUERADE' | sort)" ]
  # A missing iptable_nat module is tolerated (NAT may be built in).
  [[ $output == *"modprobe iptable_nat failed"* ]]
  # Provisioning again adds nothing.
  run "$V/setup-gateway.sh"
  [ "$status" -eq 0 ]
  [ "$(wc -l <"$RULES")" -eq 3 ]
  [[ $output == *"present:   -t nat POSTROUTING"* || $output == *"present: -t nat POSTROUTING"* ]]
  # Other interfaces through the environment.
  : >"$RULES"
  PRIVATE_IF=enp0s8 NAT_IF=enp0s3 run "$V/setup-gateway.sh"
  grep -qx 'nat POSTROUTING -s 192.168.2.0/24 -o enp0s3 -j MASQUERADE' "$RULES"
  run "$V/setup-gateway.sh" extra
  [ "$status" -eq 2 ]
}

@test "setup-gateway.sh: a rule iptables refuses fails the step" {
  stub_iptables
  # shellcheck disable=SC2016 # $* is the stub's
  printf '#!/bin/sh\necho "iptables $*" >>"%s"\nexit 1\n' "$CALLS" >"$STUBS/iptables"
  run "$V/setup-gateway.sh"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"cannot add"* ]]
}

# make_bats_tarball DIR VERSION writes a bats-core-like source tarball.
make_bats_tarball() {
  local src=$BATS_TEST_TMPDIR/bats-core-$2
  mkdir -p "$src/libexec"
  # shellcheck disable=SC2016 # $1 is install.sh's
  printf '#!/bin/sh\nmkdir -p "$1/bin"\nprintf "#!/bin/sh\\necho Bats %s\\n" >"$1/bin/bats"\nchmod +x "$1/bin/bats"\n' "$2" >"$src/install.sh"
  chmod +x "$src/install.sh"
  tar -czf "$1/bats.tar.gz" -C "$BATS_TEST_TMPDIR" "bats-core-$2"
}

@test "install-bats.sh: installs from the tarball, checks BATS_SHA256, and is idempotent" {
  mkdir -p "$BATS_TEST_TMPDIR/www"
  make_bats_tarball "$BATS_TEST_TMPDIR/www" 9.9.9
  start_httpd "$BATS_TEST_TMPDIR/www"
  export BATS_URL=$HTTPD_URL/bats.tar.gz
  local prefix=$BATS_TEST_TMPDIR/opt
  BATS_SHA256=0000000000000000000000000000000000000000000000000000000000000000 run "$V/install-bats.sh" "$prefix"
  [ "$status" -ne 0 ]
  [[ $output == *"sha256 mismatch"* ]]
  [ ! -e "$prefix/bin/bats" ]
  BATS_SHA256=$(sha256sum "$BATS_TEST_TMPDIR/www/bats.tar.gz" | cut -d' ' -f1) run "$V/install-bats.sh" "$prefix"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$("$prefix/bin/bats")" = "Bats 9.9.9" ]
  : >"$HTTPD_LOG"
  run "$V/install-bats.sh" "$prefix"
  [ "$status" -eq 0 ]
  [[ $output == *"already installed"* ]]
  [ ! -s "$HTTPD_LOG" ]
  BATS_URL=$HTTPD_URL/missing.tar.gz run "$V/install-bats.sh" "$BATS_TEST_TMPDIR/opt2"
  [ "$status" -ne 0 ]
  [ ! -e "$BATS_TEST_TMPDIR/opt2/bin/bats" ]
  run "$V/install-bats.sh" a b
  [ "$status" -eq 2 ]
}

# make_mayu_tarball OUT CONTENT writes a stand-in release tarball.
make_mayu_tarball() {
  local src=$BATS_TEST_TMPDIR/rel-src
  rm -rf "$src"
  mkdir -p "$src"
  printf '#!/bin/sh\necho %s\n' "$2" >"$src/mayu"
  chmod +x "$src/mayu"
  echo "FROM scratch" >"$src/Dockerfile"
  mkdir -p "$(dirname "$1")"
  tar -czf "$1" -C "$src" mayu Dockerfile
}

@test "fetch-mayu.sh: unpacks the shared release, keeping images, cluster and config of an earlier one" {
  run "$V/fetch-mayu.sh"
  [ "$status" -ne 0 ]
  [[ $output == *"run 'make dist' on the host"* ]]
  make_mayu_tarball "$MAYU_SHARE/dist/mayu.9.8.7-linux-amd64.tar.gz" first
  run "$V/fetch-mayu.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$("$MAYU_RELEASE_DIR/mayu")" = first ]
  mkdir -p "$MAYU_RELEASE_DIR/images/1.2.3" "$MAYU_RELEASE_DIR/cluster"
  echo kept >"$MAYU_RELEASE_DIR/config.yaml"
  make_mayu_tarball "$MAYU_SHARE/dist/mayu.9.8.7-linux-amd64.tar.gz" second
  run "$V/fetch-mayu.sh"
  [ "$status" -eq 0 ]
  [ "$("$MAYU_RELEASE_DIR/mayu")" = second ]
  [ -d "$MAYU_RELEASE_DIR/images/1.2.3" ] && [ -d "$MAYU_RELEASE_DIR/cluster" ]
  [ "$(cat "$MAYU_RELEASE_DIR/config.yaml")" = kept ]
  [ -z "$(find "$MAYU_HOME" -maxdepth 1 -name '.fetch-mayu.*')" ]
}

@test "fetch-mayu.sh: from MAYU_RELEASE_URL, with its .sha256; a mismatch changes nothing" {
  mkdir -p "$BATS_TEST_TMPDIR/www"
  make_mayu_tarball "$BATS_TEST_TMPDIR/www/mayu.9.8.7-linux-amd64.tar.gz" fromurl
  (cd "$BATS_TEST_TMPDIR/www" && sha256sum mayu.9.8.7-linux-amd64.tar.gz >mayu.9.8.7-linux-amd64.tar.gz.sha256)
  start_httpd "$BATS_TEST_TMPDIR/www"
  MAYU_RELEASE_URL=$HTTPD_URL run "$V/fetch-mayu.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"sha256 ok"* ]]
  [ "$("$MAYU_RELEASE_DIR/mayu")" = fromurl ]
  make_mayu_tarball "$BATS_TEST_TMPDIR/www/mayu.9.8.7-linux-amd64.tar.gz" tampered
  MAYU_RELEASE_URL=$HTTPD_URL run "$V/fetch-mayu.sh"
  [ "$status" -ne 0 ]
  [[ $output == *"sha256 mismatch"* ]]
  [ "$("$MAYU_RELEASE_DIR/mayu")" = fromurl ]
  MAYU_VERSION=../x run "$V/fetch-mayu.sh"
  [ "$status" -ne 0 ]
}

@test "make-config.sh: the example config with the provisioner's keys and the fetched version; mayu accepts it" {
  mkdir -p "$MAYU_RELEASE_DIR"
  cp "$REPO_DIR/config.yaml.example" "$MAYU_RELEASE_DIR/"
  printf '%s\n' 'ssh-rsa AAAAB3first vagrant insecure public key' '# a comment' 'ssh-ed25519 AAAAC3second other' >"$BATS_TEST_TMPDIR/keys"
  AUTHORIZED_KEYS=$BATS_TEST_TMPDIR/keys run "$V/make-config.sh" 3815.2.5
  echo "$output"
  [ "$status" -eq 0 ]
  local cfg=$MAYU_RELEASE_DIR/config.yaml
  grep -qx 'default_coreos_version: 3815.2.5' "$cfg"
  grep -qx '    - "ssh-rsa AAAAB3first vagrant insecure public key"' "$cfg"
  grep -qx '    - "ssh-ed25519 AAAAC3second other"' "$cfg"
  run ! grep -q replace-with-your-public-key "$cfg"
  # The daemon itself reads and validates it.
  [ -x "$REPO_DIR/bin/mayu" ]
  (cd "$REPO_DIR" && bin/mayu --show-templates --config="$cfg" --cluster-directory="$BATS_TEST_TMPDIR/cluster" >/dev/null)
  # An existing config keeps everything but the version.
  sed -i 's/^  dns: .*/  dns: [9.9.9.9]/' "$cfg"
  AUTHORIZED_KEYS=/nonexistent run "$V/make-config.sh" 3900.0.0
  [ "$status" -eq 0 ]
  grep -qx 'default_coreos_version: 3900.0.0' "$cfg"
  grep -qx '  dns: \[9.9.9.9\]' "$cfg"
  run "$V/make-config.sh" current
  [ "$status" -eq 2 ]
}

@test "fetch-images.sh: the release's fetch-flatcar-image resolves 'current', then the config names it" {
  mkdir -p "$MAYU_RELEASE_DIR/templates" "$BATS_TEST_TMPDIR/mirror"
  cp "$SCRIPTS_DIR/fetch-flatcar-image" "$SCRIPTS_DIR/fetch-lib.bash" "$REPO_DIR/config.yaml.example" "$MAYU_RELEASE_DIR/"
  cp "$FIXTURES/first_stage_cloudconfig.yaml" "$MAYU_RELEASE_DIR/templates/"
  make_release "$BATS_TEST_TMPDIR/mirror" 3815.2.5 flatcar_production
  mkdir -p "$BATS_TEST_TMPDIR/mirror/current"
  printf 'FLATCAR_VERSION=3815.2.5\n' >"$BATS_TEST_TMPDIR/mirror/current/version.txt"
  start_httpd "$BATS_TEST_TMPDIR/mirror"
  echo 'ssh-rsa AAAAB3key vagrant' >"$BATS_TEST_TMPDIR/keys"
  export GNUPGHOME=$BATS_TEST_TMPDIR/gnupg
  mkdir -m 700 "$GNUPGHOME"
  FLATCAR_BASE_URL=$HTTPD_URL AUTHORIZED_KEYS=$BATS_TEST_TMPDIR/keys run "$V/fetch-images.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  [ -f "$MAYU_RELEASE_DIR/images/3815.2.5/coreos_production_pxe_image.cpio.gz" ]
  grep -qx 'default_coreos_version: 3815.2.5' "$MAYU_RELEASE_DIR/config.yaml"
  # A failed fetch stops the step.
  rm "$BATS_TEST_TMPDIR/mirror/3815.2.5/flatcar_production_pxe.vmlinuz"
  FLATCAR_BASE_URL=$HTTPD_URL FLATCAR_VERSION=3815.2.5 run "$V/fetch-images.sh"
  [ "$status" -ne 0 ]
}

# stub_docker makes a docker recorder: `image inspect` fails until `build`
# ran, everything else succeeds.
stub_docker() {
  cat >"$STUBS/docker" <<STUB
#!/bin/sh
echo "docker \$*" >>"$CALLS"
case "\$1 \$2" in
  "image inspect") [ -e "$STUBS/built" ] ;;
  "build "*) touch "$STUBS/built" ;;
esac
STUB
  chmod +x "$STUBS/docker"
  export DOCKER=$STUBS/docker ALLOW_NON_ROOT=1
}

@test "run-mayu.sh: builds the image from the release once, runs it like the walkthrough, waits for HTTP" {
  stub_docker
  mkdir -p "$MAYU_RELEASE_DIR" "$BATS_TEST_TMPDIR/www"
  echo 'default_coreos_version: 1.2.3' >"$MAYU_RELEASE_DIR/config.yaml"
  echo "Welcome to Mayu" >"$BATS_TEST_TMPDIR/www/index.html"
  start_httpd "$BATS_TEST_TMPDIR/www"
  MAYU_URL=$HTTPD_URL run "$V/run-mayu.sh"
  echo "$output"
  [ "$status" -eq 0 ]
  local d=$MAYU_RELEASE_DIR
  grep -qx "docker build --target release -t mayu:9.8.7 $d" "$CALLS"
  grep -qx "docker rm --force mayu" "$CALLS"
  grep -qx "docker run --detach --name=mayu --restart=unless-stopped --cap-add=NET_ADMIN --net=host -v $d/cluster:/var/lib/mayu -v $d/images:/usr/lib/mayu/images -v $d/yochu:/usr/lib/mayu/yochu -v $d/config.yaml:/etc/mayu/config.yaml:ro mayu:9.8.7 -v=12 --no-tls" "$CALLS"
  [ -d "$d/cluster" ] && [ -d "$d/images" ] && [ -d "$d/yochu" ]
  # The image is there now: no second build.
  : >"$CALLS"
  MAYU_URL=$HTTPD_URL run "$V/run-mayu.sh"
  [ "$status" -eq 0 ]
  run ! grep -q "docker build" "$CALLS"
}

@test "run-mayu.sh: no config, or mayu never answering, fails with the container's log" {
  stub_docker
  mkdir -p "$MAYU_RELEASE_DIR"
  run "$V/run-mayu.sh"
  [ "$status" -ne 0 ]
  [[ $output == *"config.yaml is missing"* ]]
  echo 'default_coreos_version: 1.2.3' >"$MAYU_RELEASE_DIR/config.yaml"
  MAYU_URL=http://127.0.0.1:$(free_port) WAIT_SECONDS=2 run "$V/run-mayu.sh"
  echo "$output"
  [ "$status" -ne 0 ]
  [[ $output == *"did not answer"* ]]
  grep -q "docker logs --tail 20 mayu" "$CALLS"
}
