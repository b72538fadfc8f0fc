#!/usr/bin/env bats
#
# The provisioner's own check, run by the Vagrantfile's last provisioning
# step (/opt/bin/bats ~/share/scripts/vagrant/validate.bats): the gateway is
# set up, mayu and its dnsmasq serve the private network. Runs inside the
# core-provisioner VM only.

setup() {
  # shellcheck source-path=SCRIPTDIR source=env.sh
  . "$BATS_TEST_DIRNAME/env.sh"
}

@test "IP forwarding is on" {
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = 1 ]
}

@test "the private network is masqueraded out of the NAT interface" {
  iptables -t nat -C POSTROUTING -s "$PRIVATE_NET" -o "$NAT_IF" -j MASQUERADE
}

@test "the mayu container runs" {
  [ "$(docker inspect --format '{{.State.Running}}' mayu)" = true ]
}

@test "mayu answers on the private network" {
  run curl -fsS "$MAYU_URL/"
  [ "$status" -eq 0 ]
  [[ $output == *Mayu* ]]
  run curl -fsS "$MAYU_URL/ipxebootscript"
  [ "$status" -eq 0 ]
  [[ ${lines[0]} == "#!ipxe" ]]
}

@test "dnsmasq listens for DHCP and TFTP" {
  run ss -lnup
  [[ $output == *":67 "* ]]
  [[ $output == *"$MAYU_BIND_ADDR:69 "* ]]
}

@test "mayuctl lists the cluster" {
  # The container wrote the admin token into the cluster volume at its first start.
  run "$MAYU_RELEASE_DIR/mayuctl" --no-tls --host="$MAYU_BIND_ADDR" --token-file="$MAYU_RELEASE_DIR/cluster/.admin-tokens" list
  [ "$status" -eq 0 ]
  [[ ${lines[0]} == "IP  SERIAL  PROFILE"* ]]
}

@test "the cluster directory is a git repository with its first commit" {
  run git -C "$MAYU_RELEASE_DIR/cluster" log --format=%s
  [ "$status" -eq 0 ]
  [[ $output == *"initial commit"* ]]
}
