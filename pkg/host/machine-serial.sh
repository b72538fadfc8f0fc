# shellcheck shell=sh
# mayu's rule for "the machine's serial": the name a machine gives itself in
# every request to mayu. This file is the one place the rule and its lists
# live. mayu compiles it in and serves it at GET /machine-serial.sh; the PXE
# image's first-stage unit, the first-stage install script and the sandbox's
# stand-in images source it. The host-info helper and mayu's own checks
# (pkg/host/serial.go) implement the same rule in Go and read both lists
# below out of this file, so the lists exist once; a test runs both
# implementations on the same fake /sys trees.
#
# Usage (POSIX sh, busybox ash, dash or bash; set -e and an ERR trap are fine):
#
#	. machine-serial.sh
#	serial=$(mayu_machine_serial) || exit 1
#
# The serial is taken from the first file of MAYU_SERIAL_SOURCES, under
# ${MAYU_SYSFS_ROOT:-/sys}/devices/virtual/dmi/id, that can be read and does
# not hold a placeholder. Its surrounding whitespace is removed and every
# whitespace character left inside becomes "-" (" CZ J 4021 " -> "CZ-J-4021").
#
# A placeholder is what vendors write instead of a serial, the same on every
# board of a model: a value that, lower-cased, with each run of spaces, tabs,
# "-" and "_" made one space and trimmed, is a line of
# MAYU_SERIAL_PLACEHOLDERS; or a value that is empty, or only zeros, or four
# or more of only "f" or only "x", once spaces, tabs, ".", ":", "-" and "_"
# are removed ("0", "00000000-0000-...", "FFFFFFFF", "XXXXXXXX").
#
# mayu_machine_serial prints the serial on stdout and notes any skipped file
# on stderr; with no usable value it says what each file held, on stderr, and
# fails: such a machine cannot be told apart from its siblings, and mayu
# would refuse the placeholder anyway.

# The DMI files tried, in order. Read by pkg/host/serial.go: keep it one line.
MAYU_SERIAL_SOURCES='product_serial chassis_serial board_serial product_uuid'

# Placeholders, one per line, in the compared form (lower case, single spaces,
# no "-" or "_"). Read by pkg/host/serial.go: the list ends at a line holding
# only the closing quote.
MAYU_SERIAL_PLACEHOLDERS='
to be filled by o.e.m.
to be filled by oem
default string
default
system serial number
chassis serial number
base board serial number
serial number
0123456789
123456789
1234567890
none
not specified
not applicable
not available
n/a
unknown
invalid
empty
oem
o.e.m.
'

# mayu_serial_placeholder VALUE: succeeds when VALUE (already trimmed) is a
# placeholder. Like mayu_machine_serial, its body is a subshell: nothing leaks.
mayu_serial_placeholder() (
	c=$(printf '%s\n' "$1" | sed 's/[[:space:]_-]\{1,\}/ /g; s/^ //; s/ $//')
	# A here-document, not a pipe: under pipefail, grep -q quitting early
	# could fail the writer with SIGPIPE and hide the match.
	if grep -qixF -e "$c" <<EOF
$MAYU_SERIAL_PLACEHOLDERS
EOF
	then
		exit 0
	fi
	c=$(printf '%s\n' "$1" | sed 's/[[:space:]._:-]//g')
	case $c in
		"") exit 0 ;;
		*[!0]*) ;;
		*) exit 0 ;;
	esac
	[ ${#c} -ge 4 ] || exit 1
	case $c in
		*[!fF]*) ;;
		*) exit 0 ;;
	esac
	case $c in
		*[!xX]*) exit 1 ;;
		*) exit 0 ;;
	esac
)

# mayu_machine_serial: the machine's serial on stdout (see the top of this
# file), or a reason on stderr and a non-zero status. The body is a subshell,
# so its variables never leak into the caller's and exit leaves only it.
mayu_machine_serial() (
	dir=${MAYU_SYSFS_ROOT:-/sys}/devices/virtual/dmi/id
	skipped=""
	for f in $MAYU_SERIAL_SOURCES; do
		if ! raw=$(cat -- "$dir/$f" 2>/dev/null); then
			skipped="$skipped, $f unreadable"
			continue
		fi
		v=$(printf '%s\n' "$raw" | tr '\n' ' ' | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
		if mayu_serial_placeholder "$v"; then
			skipped="$skipped, $f '$v' (a placeholder)"
			continue
		fi
		[ -z "$skipped" ] || echo "machine-serial: using $f; skipped ${skipped#, }" >&2
		printf '%s\n' "$v" | sed 's/[[:space:]]/-/g'
		exit 0
	done
	echo "machine-serial: no usable serial in $dir: ${skipped#, }" >&2
	exit 1
)
