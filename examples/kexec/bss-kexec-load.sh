#!/bin/sh
# bss-kexec-load.sh: load the kernel this node should run next, as the boot
# service says, so that `systemctl kexec` (or `kexec -e`) reboots straight
# into it without going through firmware.
#
#   bss-kexec-load.sh [--dry-run] [HEAD | URL]
#
# The node asks the head node's node listener for its own boot parameters
# (GET /boot/v1/bootparams; the head identifies the node by its address),
# downloads the kernel and initrd into a temporary directory and runs
#
#   kexec --load KERNEL --initrd=INITRD --command-line="PARAMS"
#
# The command line is exactly the one the head gives (never --reuse-cmdline),
# so the node comes up with its current configuration, not the one it booted.
#
# Where the head is:   BSS_URL (e.g. http://172.16.0.254:27778), else the
#                      argument: a host name or address (port 27778 is added)
#                      or a URL.
# Options:             --dry-run  download, then print the kexec command
#                                 instead of running it
# Environment:         BSS_URL     the node base URL of the head node
#                      KEXEC_DIR   download here and keep the files (default:
#                                  a temporary directory, removed on exit)
#                      CURL_OPTS   extra curl options, e.g. "--retry 5"
#
# Needs curl, jq and (unless --dry-run) kexec-tools. Exits non-zero with a
# one-line message on any failure.
set -eu

prog=${0##*/}
die() {
	echo "$prog: $*" >&2
	exit 1
}

dry_run=0
head_arg=
while [ $# -gt 0 ]; do
	case $1 in
	--dry-run | -n) dry_run=1 ;;
	-h | --help)
		sed -n '2,/^set -eu/p' "$0" | sed -e '/^set -eu/d' -e 's/^# \{0,1\}//'
		exit 0
		;;
	-*) die "unknown option $1 (usage: $prog [--dry-run] [HEAD | URL])" ;;
	*)
		[ -z "$head_arg" ] || die "one head node only (usage: $prog [--dry-run] [HEAD | URL])"
		head_arg=$1
		;;
	esac
	shift
done

if [ -z "${BSS_URL:-}" ]; then
	case $head_arg in
	*://*) BSS_URL=$head_arg ;;
	?*) BSS_URL=http://$head_arg:27778 ;;
	*) BSS_URL=http://HEAD-NODE-NOT-SET:27778 ;;
	esac
fi
BSS_URL=${BSS_URL%/}
case $BSS_URL in
*HEAD-NODE-NOT-SET*)
	die "no head node: set BSS_URL=http://<head>:27778 or pass the head node as the argument" ;;
http://* | https://*) ;;
*) die "BSS_URL must be an http:// or https:// URL, got '$BSS_URL'" ;;
esac

command -v curl >/dev/null 2>&1 || die "curl is not installed"
command -v jq >/dev/null 2>&1 || die "jq is not installed"
if [ "$dry_run" = 0 ]; then
	command -v kexec >/dev/null 2>&1 || die "kexec is not installed (package kexec-tools)"
fi

# shellcheck disable=SC2086 # CURL_OPTS is a list of options
fetch() {
	curl -sf ${CURL_OPTS:-} "$@"
}

url=$BSS_URL/boot/v1/bootparams
json=$(fetch "$url") ||
	die "cannot get $url (curl exit $?; is this node in the inventory, with an address and boot parameters?)"

field() {
	printf '%s\n' "$json" | jq -r "$1" 2>/dev/null ||
		die "the answer of $url is not the expected JSON array"
}
kernel_url=$(field '.[0].kernel.path')
initrd_url=$(field '.[0].initrd[0]')
params=$(field '.[0].params')
case $kernel_url in
'' | null) die "$url names no kernel" ;;
esac
case $initrd_url in
null) initrd_url= ;;
esac
case $params in
null) params= ;;
esac

if [ -n "${KEXEC_DIR:-}" ]; then
	dir=$KEXEC_DIR
	mkdir -p "$dir" || die "cannot create $dir"
else
	dir=$(mktemp -d "${TMPDIR:-/tmp}/bss-kexec.XXXXXX") || die "cannot create a temporary directory"
	trap 'rm -rf "$dir"' EXIT
	trap 'exit 1' HUP INT TERM
fi

kernel=$dir/kernel
fetch -o "$kernel" "$kernel_url" || die "cannot download the kernel $kernel_url (curl exit $?)"
[ -s "$kernel" ] || die "the kernel $kernel_url is empty"
initrd=
if [ -n "$initrd_url" ]; then
	initrd=$dir/initrd
	fetch -o "$initrd" "$initrd_url" || die "cannot download the initrd $initrd_url (curl exit $?)"
	[ -s "$initrd" ] || die "the initrd $initrd_url is empty"
fi

# Quotes one word for the shell: 'it'\''s'.
quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

if [ "$dry_run" = 1 ]; then
	if [ -n "$initrd" ]; then
		echo "kexec --load $(quote "$kernel") --initrd=$(quote "$initrd") --command-line=$(quote "$params")"
	else
		echo "kexec --load $(quote "$kernel") --command-line=$(quote "$params")"
	fi
	exit 0
fi

if [ -n "$initrd" ]; then
	kexec --load "$kernel" --initrd="$initrd" --command-line="$params" ||
		die "kexec --load failed (exit $?)"
else
	kexec --load "$kernel" --command-line="$params" ||
		die "kexec --load failed (exit $?)"
fi
echo "$prog: loaded $kernel_url; run 'systemctl kexec' to boot it"
