#!/bin/bash
# Mayu first-stage install script. mayu renders it for each machine at
# GET /first-stage-script/<serial>; the PXE image (first_stage_cloudconfig.yaml,
# or the sandbox's stand-in /init) downloads and runs it with bash.
#
# It asks mayu for this machine's final config through the host-info helper
# (which also registers the machine's NICs and moves it to "installing"),
# writes the install image to the disk, puts the final config, machine-id
# and mayu-env on the new system, tells mayu the machine is installed and
# reboots into it. Every step is announced; a failure names the step.
#
# Every request about this machine carries its credential (MACHINE_TOKEN,
# issued with this script) and, with TLS, checks mayu's certificate against
# mayu's CA (MAYU_CA_CERT_B64, base64 of the PEM: one shell word); both go
# to curl through a config file, and the credential
# ends in /etc/mayu-env (mode 0600) for mayuctl boot-complete.
set -Eeuo pipefail

# mayu's values, each quoted as one shell word by the template's shq.
# shellcheck disable=SC1083,SC2288 # these are template actions, not shell
{
	MAYU_URL={{shq .MayuURL}}
	MAYU_VERSION={{shq .MayuVersion}}
	MACHINE_ID={{shq .MachineID}}
	HOST_INFO_HELPER_URL={{shq .HostInfoHelperURL}}
	CLOUD_CONFIG_URL={{shq .CloudConfigURL}}
	IGNITION_CONFIG_URL={{shq .IgnitionConfigURL}}
	INSTALL_IMAGE_URL={{shq .InstallImageURL}}
	SET_INSTALLED_URL={{shq .SetInstalledURL}}
	MACHINE_TOKEN={{shq .MachineToken}}
	MAYU_CA_CERT_B64={{shq .CACertBase64}}
}

# The disk to install to. A whole disk, never a partition; overridable for
# machines whose first disk is not sda (and for tests).
DEVICE="${MAYU_INSTALL_DEVICE:-/dev/sda}"

STEP="start"
step() {
	STEP="$*"
	echo "mayu-first-stage: $STEP"
}
failed() {
	local rc=$?
	echo "mayu-first-stage: FAILED: ${STEP} (exit status ${rc})" >&2
	exit "$rc"
}
trap failed ERR

WORKDIR=""
cleanup() {
	[ -n "$WORKDIR" ] || return 0
	local m
	for m in "$WORKDIR/oemfs" "$WORKDIR/rootfs"; do
		if mountpoint -q "$m" 2>/dev/null; then umount "$m" || true; fi
	done
	rm -rf "$WORKDIR"
}
trap cleanup EXIT

cmdline_arg() {
	local word cmdline
	read -r cmdline </proc/cmdline
	for word in $cmdline; do
		case "$word" in
			"$1"=*) echo "${word#*=}"; return 0 ;;
		esac
	done
	return 0
}

step "checking the tools this script needs"
for tool in curl bzip2 dd blkid lsblk blockdev mount umount mountpoint mktemp sync; do
	command -v "$tool" >/dev/null || { echo "mayu-first-stage: missing $tool" >&2; false; }
done

channel=$(cmdline_arg maybe-install-coreos)
case "$channel" in
	alpha | beta | stable | lts) ;;
	*)
		echo "mayu-first-stage: maybe-install-coreos='$channel' is not a channel: not installing"
		exit 0
		;;
esac

umask 077
WORKDIR=$(mktemp -d /tmp/mayu-install.XXXXXX)

# curl reads the CA and the credential from here (-K): neither is on a
# command line.
CURL_CONFIG=$WORKDIR/curl.conf
CA_FILE=""
: >"$CURL_CONFIG"
if [ -n "$MAYU_CA_CERT_B64" ]; then
	step "writing mayu's CA (the certificate every request here checks mayu by)"
	CA_FILE=$WORKDIR/mayu-ca.pem
	printf '%s' "$MAYU_CA_CERT_B64" | base64 -d >"$CA_FILE"
	printf 'cacert = "%s"\n' "$CA_FILE" >>"$CURL_CONFIG"
fi
if [ -n "$MACHINE_TOKEN" ]; then
	printf 'header = "Mayu-Machine-Token: %s"\n' "$MACHINE_TOKEN" >>"$CURL_CONFIG"
fi
mayu_curl() { curl -K "$CURL_CONFIG" "$@"; }

step "waiting for mayu at $MAYU_URL"
for i in $(seq 1 60); do
	mayu_curl -fsS -o /dev/null --max-time 5 "$MAYU_URL" && break
	[ "$i" -lt 60 ]
	sleep 2
done

# The serial comes from mayu's own rule (GET /machine-serial.sh), the one the
# PXE image used to ask for this script and the one mayu checks serials by.
step "fetching mayu's serial rule from $MAYU_URL/machine-serial.sh"
mayu_curl -fsS --retry 3 -o "$WORKDIR/machine-serial.sh" "$MAYU_URL/machine-serial.sh"
# shellcheck source=/dev/null # pkg/host/machine-serial.sh, fetched at run time
. "$WORKDIR/machine-serial.sh"
step "reading the machine's serial"
serial=$(mayu_machine_serial)
echo "mayu-first-stage: serial $serial, installing $channel to $DEVICE"

# The helper and the install image are of the machine's architecture: mayu
# serves the arm64 ones for ?arch=arm64 (images/<version>/arm64/).
case "$(uname -m)" in
	aarch64)
		HOST_INFO_HELPER_URL="$HOST_INFO_HELPER_URL?arch=arm64"
		INSTALL_IMAGE_URL="$INSTALL_IMAGE_URL?arch=arm64"
		;;
esac
step "downloading the host-info helper from $HOST_INFO_HELPER_URL"
mayu_curl -fsS --retry 3 -o "$WORKDIR/helper" "$HOST_INFO_HELPER_URL"
chmod 700 "$WORKDIR/helper"

final=""
if [ -n "$CLOUD_CONFIG_URL" ]; then
	step "fetching the final cloud-config from $CLOUD_CONFIG_URL"
	final=$WORKDIR/final-cloud-config.yaml
	MAYU_MACHINE_TOKEN=$MACHINE_TOKEN "$WORKDIR/helper" -serial="$serial" ${CA_FILE:+"-ca-file=$CA_FILE"} -post-url="$CLOUD_CONFIG_URL" >"$final"
elif [ -n "$IGNITION_CONFIG_URL" ]; then
	step "fetching the final Ignition config from $IGNITION_CONFIG_URL"
	final=$WORKDIR/final-ignition-config.json
	MAYU_MACHINE_TOKEN=$MACHINE_TOKEN "$WORKDIR/helper" -serial="$serial" ${CA_FILE:+"-ca-file=$CA_FILE"} -post-url="$IGNITION_CONFIG_URL" >"$final"
else
	step "choosing a final config (mayu gave neither a cloud-config nor an Ignition URL)"
	false
fi
step "checking the final config is not empty"
[ -s "$final" ]

step "checking $DEVICE is a writable whole disk"
[ -b "$DEVICE" ]
[[ $(lsblk -n -d -o TYPE "$DEVICE") =~ ^(disk|loop)$ ]]
[ -w "$DEVICE" ]

step "writing $INSTALL_IMAGE_URL to $DEVICE"
if ! mayu_curl -fsS --retry 3 "$INSTALL_IMAGE_URL" | bzip2 -dc | dd of="$DEVICE" bs=1M conv=fsync status=none; then
	# A half-written disk must not boot: wipe the partition table.
	if command -v wipefs >/dev/null; then wipefs --all "$DEVICE" >/dev/null 2>&1 || true; fi
	false
fi
sync

step "re-reading the partition table of $DEVICE"
blockdev --rereadpt "$DEVICE" || partx -u "$DEVICE" || partprobe "$DEVICE"
if command -v udevadm >/dev/null; then udevadm settle || true; fi

# find_partition LABEL: the partition of $DEVICE carrying that filesystem
# label. Only this disk's partitions are searched (another disk may carry
# the same labels), and the kernel may take a moment to create the nodes.
find_partition() {
	local i dev
	for i in $(seq 1 50); do
		# shellcheck disable=SC2086 # the glob lists the disk's partitions
		dev=$(blkid -c /dev/null -t "LABEL=$1" -o device ${DEVICE}?* 2>/dev/null | head -n 1 || true)
		if [ -n "$dev" ]; then
			echo "$dev"
			return 0
		fi
		sleep 0.2
	done
	return 1
}

step "finding the ROOT partition on $DEVICE"
root_dev=$(find_partition ROOT)
mkdir -p "$WORKDIR/rootfs"
step "mounting ROOT ($root_dev)"
case $(blkid -c /dev/null -o value -s TYPE "$root_dev") in
	btrfs) mount -t btrfs -o subvol=root "$root_dev" "$WORKDIR/rootfs" ;;
	*) mount "$root_dev" "$WORKDIR/rootfs" ;;
esac

if [ -n "$CLOUD_CONFIG_URL" ]; then
	step "installing the cloud-config as /var/lib/coreos-install/user_data"
	mkdir -p "$WORKDIR/rootfs/var/lib/coreos-install"
	cp "$final" "$WORKDIR/rootfs/var/lib/coreos-install/user_data"
fi

step "writing /etc/machine-id and /etc/mayu-env"
mkdir -p "$WORKDIR/rootfs/etc"
echo "$MACHINE_ID" >"$WORKDIR/rootfs/etc/machine-id"
chmod 444 "$WORKDIR/rootfs/etc/machine-id"
printf 'SERIAL=%s\nMAYU_VERSION=%s\n' "$serial" "$MAYU_VERSION" >"$WORKDIR/rootfs/etc/mayu-env"
if [ -n "$MACHINE_TOKEN" ]; then
	printf 'MAYU_MACHINE_TOKEN=%s\n' "$MACHINE_TOKEN" >>"$WORKDIR/rootfs/etc/mayu-env"
	chmod 600 "$WORKDIR/rootfs/etc/mayu-env"
else
	chmod 644 "$WORKDIR/rootfs/etc/mayu-env"
fi
if [ -n "$CA_FILE" ]; then
	# What the installed system trusts mayu by (its final config writes the
	# same file).
	mkdir -p "$WORKDIR/rootfs/etc/ssl/certs"
	cp "$CA_FILE" "$WORKDIR/rootfs/etc/ssl/certs/mayu-ca.pem"
	chmod 644 "$WORKDIR/rootfs/etc/ssl/certs/mayu-ca.pem"
fi

step "unmounting ROOT"
umount "$WORKDIR/rootfs"

if [ -n "$IGNITION_CONFIG_URL" ]; then
	step "finding the OEM partition on $DEVICE"
	oem_dev=$(find_partition OEM)
	mkdir -p "$WORKDIR/oemfs"
	step "mounting OEM ($oem_dev)"
	mount "$oem_dev" "$WORKDIR/oemfs"
	step "installing the Ignition config as OEM:/config.ign"
	cp "$final" "$WORKDIR/oemfs/config.ign"
	# Point first boot's Ignition at it (Flatcar sources the OEM grub.cfg).
	# shellcheck disable=SC2016 # $linux_append is grub's, not ours
	echo 'set linux_append="$linux_append ignition.config.url=oem:///config.ign"' >"$WORKDIR/oemfs/grub.cfg"
	step "unmounting OEM"
	umount "$WORKDIR/oemfs"
fi
sync

step "telling mayu that $serial is installed"
mayu_curl -fsS --retry 3 -X PUT -H "Content-Length: 0" "${SET_INSTALLED_URL//__SERIAL__/"$serial"}" >/dev/null

step "rebooting into the installed system"
cleanup
WORKDIR=""
reboot
