#!/usr/bin/env bash
# The lab, end to end: time from `openchami lab up` to the marker of every
# node (NODES=2, one BIOS and one UEFI, TCG), the per-step timings from the
# appliance's own boot-step records, and the same BIOS VM booted by the
# dnsmasq + python http.server stand-in of ../shared/lab/netboot-lab.sh, in
# one run, with the ratios. Targets: lab up to all markers < 60 s; the BIOS
# node's qemu start to phone-home <= 1.0 x the stand-in's.
#
# What is compared with what. Both VMs are the same: qemu 7.2 TCG, 1 vCPU,
# SeaBIOS + the iPXE virtio ROM, the same Debian kernel and a busybox
# initramfs that loads virtio_net, runs udhcpc and calls the server over
# HTTP. The stand-in's /init prints its marker (NETBOOT-OK) before it touches
# the network; the lab's prints its marker after DHCP and the cloud-init
# meta-data fetch. So "to phone-home" (the stand-in's PHONEHOME-ACK, the
# lab's phone-home step in the boot-step records) is the like-for-like
# figure; "to marker" is printed for both, as measured.
#
# Needs root. The stand-in runs in its own namespaces (nblb-srv, nblb-node)
# one after the lab, so the two never share the CPUs.
#
#   bench/lab.sh
#   OPENCHAMI_BIN=target/debug/openchami bench/lab.sh
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-2}
DIR=${DIR:-/var/tmp/openchami-lab-bench}
CACHE=${CACHE:-/var/tmp/openchami-lab-cache}
STANDIN=${STANDIN:-}
for c in "$STANDIN" ../shared/lab/netboot-lab.sh ../../shared/lab/netboot-lab.sh /work/shared/lab/netboot-lab.sh; do
  [ -n "$c" ] && [ -x "$c" ] && { STANDIN=$c; break; }
done

[ "$(id -u)" = 0 ] || { echo "bench/lab.sh: needs root (network namespaces, taps)" >&2; exit 2; }
[ -x "$STANDIN" ] || { echo "bench/lab.sh: cannot find netboot-lab.sh (set STANDIN)" >&2; exit 2; }
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v dnsmasq >/dev/null || need+=(dnsmasq)
command -v jq >/dev/null || need+=(jq)
command -v bc >/dev/null || need+=(bc)
[ -e /usr/share/OVMF/OVMF_CODE_4M.fd ] || need+=(ovmf)
[ -e /usr/lib/ipxe/qemu/efi-virtio.rom ] || need+=(ipxe-qemu)
[ ${#need[@]} -eq 0 ] || { echo "bench/lab.sh: apt-get install ${need[*]}" >&2; exit 2; }

if [ -z "${OPENCHAMI_BIN:-}" ]; then
  echo "== building (release)"
  nice -n 10 cargo build --release --bin openchami 2>&1 | grep -v '^\s*Compiling' || true
fi
OC=${OPENCHAMI_BIN:-target/release/openchami}
[ -x "$OC" ] || { echo "bench/lab.sh: no binary at $OC" >&2; exit 1; }

cleanup() { "$OC" lab down --dir "$DIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

# Warm the image cache first, so the timed run measures booting, not the
# kernel download (a first `lab up` downloads and builds once).
echo "== boot image (cached in $CACHE)"
"$OC" lab up --nodes 1 --no-power-on --dir "$DIR" --cache "$CACHE" --name ocl-bench >/dev/null
"$OC" lab down --dir "$DIR" >/dev/null

echo "== openchami lab up --nodes $NODES --mixed --wait"
T0=$(date +%s.%N)
"$OC" lab up --nodes "$NODES" --mixed --dir "$DIR" --cache "$CACHE" --name ocl-bench --wait 10m | tee "$DIR.up.log"
T1=$(date +%s.%N)
UP_TOTAL=$(echo "$T1 - $T0" | bc)
# Let the last phone-home land in the records.
sleep 2
"$OC" lab status --dir "$DIR"
STATUS=$("$OC" lab status --dir "$DIR" -o json)

echo
echo "== per-step timings from the appliance's boot-step records (s after the node's first DHCP request)"
printf '%-15s %-5s' node fw
for s in dhcp tftp script kernel initrd meta-data phone-home; do printf ' %10s' "$s"; done
echo
echo "$STATUS" | jq -r '.[] | [.xname, .firmware, (.record.boot_started_ms) as $b |
  (["dhcp","tftp","script","kernel","initrd","meta-data","phone-home"][] as $s |
   (.record.steps[$s].first_ms // null) | if . == null then "-" else ((. - $b) / 1000 | tostring | .[0:5]) end)] | @tsv' |
  while IFS=$'\t' read -r x fw rest; do printf '%-15s %-5s' "$x" "$fw"; for v in $rest; do printf ' %10s' "$v"; done; echo; done

"$OC" lab down --dir "$DIR" >/dev/null

# The BIOS VM alone (as the stand-in boots it): qemu start (its console's
# power-on line) to marker (meta-data step) and to phone-home (boot-step
# records).
echo
echo "== openchami lab up --nodes 1 --bios --wait (the BIOS VM alone)"
"$OC" lab up --nodes 1 --bios --dir "$DIR" --cache "$CACHE" --name ocl-bench --wait 10m | tail -1
sleep 2
STATUS1=$("$OC" lab status --dir "$DIR" -o json)
BIOS=$(echo "$STATUS1" | jq -r '.[0].xname')
SERIAL="$DIR/nodes/$BIOS/serial.log"
START_ISO=$(grep -a -o 'power on [^ ]* at [^ ]*' "$SERIAL" | tail -1 | awk '{print $5}')
START=$(date -d "$START_ISO" +%s.%N)
PH_MS=$(echo "$STATUS1" | jq -r '.[0].record.steps["phone-home"].first_ms')
MD_MS=$(echo "$STATUS1" | jq -r '.[0].record.steps["meta-data"].first_ms')
LAB_PH=$(echo "scale=2; $PH_MS / 1000 - $START" | bc)
LAB_MK=$(echo "scale=2; $MD_MS / 1000 - $START" | bc)
"$OC" lab down --dir "$DIR" >/dev/null

echo
echo "== stand-in: $STANDIN (MODE=bios, dnsmasq + http.server)"
SOUT=$(MODE=bios WORK=/var/tmp/nbl-bench NS_SRV=nblb-srv NS_NODE=nblb-node TIMEOUT=300 "$STANDIN" 2>&1) || {
  echo "$SOUT" | tail -30; echo "bench/lab.sh: the stand-in failed" >&2; exit 1; }
echo "$SOUT" | grep -E '^\[' || true
ST_MK=$(echo "$SOUT" | awk -F'[][s]' '/kernel printed NETBOOT-OK/{gsub(/ /,"",$2); print $2; exit}')
ST_PH=$(echo "$SOUT" | awk -F'[][s]' '/phone-home round trip/{gsub(/ /,"",$2); print $2; exit}')

echo
echo "== results"
printf '%-52s %8s %10s %8s\n' "" openchami stand-in ratio
printf '%-52s %7.1fs %10s %8s\n' "lab up to all markers ($NODES nodes, mixed; target < 60 s)" "$UP_TOTAL" "-" "-"
printf '%-52s %7.1fs %9.1fs %8.2f\n' "BIOS VM: qemu start to phone-home (target <= 1.0)" "$LAB_PH" "$ST_PH" "$(echo "scale=3; $LAB_PH / $ST_PH" | bc)"
printf '%-52s %7.1fs %9.1fs %8.2f\n' "BIOS VM: qemu start to marker (not like for like)" "$LAB_MK" "$ST_MK" "$(echo "scale=3; $LAB_MK / $ST_MK" | bc)"
