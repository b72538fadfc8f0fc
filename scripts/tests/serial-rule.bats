#!/usr/bin/env bats
#
# mayu's serial rule lives in one file, pkg/host/machine-serial.sh (served
# by mayu at GET /machine-serial.sh); every shipped script that names a
# machine sources it instead of reading DMI itself. The rule's own cases run
# in Go (pkg/hostinfo TestSerialRuleSharedVectors, under busybox, dash and
# bash); here: that no script has a rule of its own, and that the PXE
# image's run-first-stage (from first_stage_cloudconfig.yaml) names a machine
# with a placeholder serial and spaces by that rule, end to end against a
# loopback server.

setup() {
  load helpers
  W=$BATS_TEST_TMPDIR/w
  MIRROR=$BATS_TEST_TMPDIR/mirror
  mkdir -p "$W/tmp" "$W/sys/devices/virtual/dmi/id" "$MIRROR/first-stage-script"
  cp "$REPO_DIR/pkg/host/machine-serial.sh" "$MIRROR/machine-serial.sh"
  start_httpd "$MIRROR"
}

teardown() {
  stop_httpd
}

# dmi FILE CONTENT writes one DMI file of the fake /sys.
dmi() {
  printf '%s' "$2" >"$W/sys/devices/virtual/dmi/id/$1"
}

# run_first_stage_unit extracts /opt/mayu/run-first-stage from the PXE
# cloud-config and runs it with its absolute paths moved into $W (/tmp
# first: $W itself is under /tmp): the kernel
# command line comes from a stub cmdline-arg, /sys from MAYU_SYSFS_ROOT.
run_first_stage_unit() {
  local f
  # run-first-stage downloads through mayu-curl (the pin check, which a
  # command line without mayu-pin= skips): both are extracted.
  for f in run-first-stage mayu-curl; do
    awk -v path="/opt/mayu/$f" '$0 == "- path: " path {f = 1; next}
         f && /^  content: \|$/ {c = 1; next}
         c && /^[^ ]/ {exit}
         c {sub(/^    /, ""); print}' "$REPO_DIR/templates/first_stage_cloudconfig.yaml" |
      sed -e "s|/tmp/|$W/tmp/|g" -e "s|/opt/mayu/cmdline-arg|$W/cmdline-arg|g" \
        -e "s|/opt/mayu/mayu-curl|$W/mayu-curl|g" >"$W/$f"
    [ -s "$W/$f" ]
  done
  chmod +x "$W/mayu-curl"
  cat >"$W/cmdline-arg" <<EOF
#!/bin/bash
case \$1 in
  mayu) echo "$HTTPD_URL" ;;
  next-script) echo "$HTTPD_URL/first-stage-script/__SERIAL__" ;;
  *) exit 1 ;;
esac
EOF
  chmod +x "$W/cmdline-arg"
  run env MAYU_SYSFS_ROOT="$W/sys" bash "$W/run-first-stage"
  echo "$output"
}

@test "no shipped script reads DMI itself: the rule is only in pkg/host/machine-serial.sh" {
  run grep -rlE 'dmi/id|product_serial|chassis_serial|board_serial|product_uuid' \
    "$REPO_DIR/templates" "$REPO_DIR/template_snippets" "$REPO_DIR/pkg/api/dashboard" "$REPO_DIR/scripts" \
    --exclude-dir=tests
  echo "$output"
  [ "$status" -eq 1 ]
  [ -z "$output" ]
}

@test "every script that names the machine sources mayu's serial rule" {
  for f in templates/first_stage_script.sh templates/first_stage_cloudconfig.yaml \
    scripts/sandbox-assets/pxe-init scripts/sandbox-assets/installed-init; do
    grep -q 'machine-serial\.sh' "$REPO_DIR/$f" || { echo "$f does not source machine-serial.sh"; return 1; }
    # shellcheck disable=SC2016 # the literal assignment is searched for
    grep -q 'serial=$(mayu_machine_serial)' "$REPO_DIR/$f" || { echo "$f does not call mayu_machine_serial"; return 1; }
  done
  grep -q 'pkg/host/machine-serial.sh.*/usr/lib/mayu/machine-serial.sh' "$REPO_DIR/scripts/build-sandbox-assets"
}

@test "run-first-stage skips a placeholder, trims and dashes the next serial, and fetches that script" {
  dmi product_serial $'To be filled by O.E.M.\n'
  dmi chassis_serial $'  CZ J 4021 7X \n'
  printf '#!/bin/bash\necho "first-stage script ran"\n' >"$MIRROR/first-stage-script/CZ-J-4021-7X"
  run_first_stage_unit
  [ "$status" -eq 0 ]
  [[ $output == *"machine-serial: using chassis_serial; skipped product_serial 'To be filled by O.E.M.' (a placeholder)"* ]]
  [[ $output == *"mayu: serial CZ-J-4021-7X, fetching $HTTPD_URL/first-stage-script/CZ-J-4021-7X"* ]]
  [[ $output == *"first-stage script ran"* ]]
  grep -qx 'GET /machine-serial.sh 200' "$HTTPD_LOG"
  grep -qx 'GET /first-stage-script/CZ-J-4021-7X 200' "$HTTPD_LOG"
}

@test "run-first-stage falls back to the system UUID and stops when there is nothing usable" {
  dmi product_serial $'Default string\n'
  dmi board_serial $'0123456789\n'
  dmi product_uuid $'4c4c4544-0042-3510-8052-b4c04f4b4e31\n'
  printf '#!/bin/bash\necho "first-stage script ran"\n' >"$MIRROR/first-stage-script/4c4c4544-0042-3510-8052-b4c04f4b4e31"
  run_first_stage_unit
  [ "$status" -eq 0 ]
  [[ $output == *"mayu: serial 4c4c4544-0042-3510-8052-b4c04f4b4e31,"* ]]

  dmi product_uuid $'00000000-0000-0000-0000-000000000000\n'
  : >"$HTTPD_LOG"
  run_first_stage_unit
  [ "$status" -eq 1 ]
  [[ $output == *"machine-serial: no usable serial in $W/sys/devices/virtual/dmi/id: product_serial 'Default string' (a placeholder), chassis_serial unreadable, board_serial '0123456789' (a placeholder), product_uuid '00000000-0000-0000-0000-000000000000' (a placeholder)"* ]]
  [[ $output == *"mayu: no usable serial"* ]]
  [ "$(grep -c first-stage-script "$HTTPD_LOG")" -eq 0 ]
}
