#!/usr/bin/env bats
#
# The systemd units, checked with systemd-analyze verify. verify insists
# that every ExecStart binary and every required unit exists; docker and an
# installed mayu do not here, so the copies verified point at stand-in
# executables and a stand-in docker.service. Nothing is started.

setup() {
  load helpers
  require_cmd systemd-analyze systemd
  U=$BATS_TEST_TMPDIR/units
  mkdir -p "$U/bin"
  printf '#!/bin/sh\nexit 0\n' >"$U/bin/docker"
  cp "$U/bin/docker" "$U/bin/mayu"
  chmod +x "$U/bin/docker" "$U/bin/mayu"
  printf '[Unit]\nDescription=stand-in for docker.service\n[Service]\nExecStart=%s/bin/docker\n' "$U" >"$U/docker.service"
  sed "s|/usr/bin/docker|$U/bin/docker|g" "$REPO_DIR/contrib/systemd/mayu.service" >"$U/mayu.service"
  sed "s|/usr/bin/mayu|$U/bin/mayu|g" "$REPO_DIR/contrib/systemd/mayu-native.service" >"$U/mayu-native.service"
}

# verify UNIT passes only when systemd-analyze has nothing to say: it exits
# 0 on unknown keys and merely prints them.
verify() {
  run systemd-analyze verify "$U/$1"
  echo "$output"
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "mayu.service verifies and runs the container as the walkthrough does" {
  verify mayu.service
  local unit=$REPO_DIR/contrib/systemd/mayu.service
  grep -q -- '--net=host --cap-add=NET_ADMIN' "$unit"
  grep -q -- '-v /var/lib/mayu/cluster:/var/lib/mayu ' "$unit"
  grep -q -- '-v /var/lib/mayu/images:/usr/lib/mayu/images ' "$unit"
  grep -q -- '-v /var/lib/mayu/yochu:/usr/lib/mayu/yochu ' "$unit"
  grep -qx 'Restart=on-failure' "$unit"
}

@test "mayu-native.service verifies, runs /usr/bin/mayu from /usr/lib/mayu with only the network capabilities" {
  verify mayu-native.service
  local unit=$REPO_DIR/contrib/systemd/mayu-native.service
  grep -q '^ExecStart=/usr/bin/mayu --config=/etc/mayu/config.yaml ' "$unit"
  grep -qx 'WorkingDirectory=/usr/lib/mayu' "$unit"
  grep -qx 'AmbientCapabilities=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit"
  grep -qx 'CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit"
  grep -qx 'Restart=on-failure' "$unit"
}

@test "a misspelt key is caught (the check above can fail)" {
  sed 's/^Restart=on-failure$/Restrat=on-failure/' "$U/mayu.service" >"$U/typo.service"
  run systemd-analyze verify "$U/typo.service"
  [[ $output == *"Unknown key"*"Restrat"* ]]
}

@test "the flags both units pass are flags mayu knows" {
  [ -x "$REPO_DIR/bin/mayu" ] || {
    echo "bin/mayu is missing: make build first" >&2
    return 1
  }
  local args default
  # ExecStart of the native unit, continuation lines joined, $MAYU_ARGS
  # replaced by its default.
  args=$(sed -e :a -e '/\\$/N; s/\\\n//; ta' "$REPO_DIR/contrib/systemd/mayu-native.service" |
    sed -n 's/^ExecStart=\/usr\/bin\/mayu //p')
  default=$(sed -n 's/^Environment="MAYU_ARGS=\(.*\)"$/\1/p' "$REPO_DIR/contrib/systemd/mayu-native.service")
  # shellcheck disable=SC2086 # a list of flags
  run "$REPO_DIR/bin/mayu" ${args//\$MAYU_ARGS/$default} --help
  echo "$output" | head -n 3
  [ "$status" -eq 0 ]
  default=$(sed -n 's/^Environment="MAYU_ARGS=\(.*\)"$/\1/p' "$REPO_DIR/contrib/systemd/mayu.service")
  # shellcheck disable=SC2086 # a list of flags
  run "$REPO_DIR/bin/mayu" --cluster-directory=/var/lib/mayu $default --help
  [ "$status" -eq 0 ]
}
