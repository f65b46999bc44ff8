#!/usr/bin/env bash
# CI check of the release artefact: builds the static binary and the RPM
# (build.sh checks the package itself), then runs the packaged binary from
# the RPM's payload unpacked into an otherwise empty root, with chroot:
#
#  - `openchami --version` and `serve --check-config` on the shipped config;
#  - `serve` as an unprivileged user: the first start creates the CA and says
#    where it is and how to get a token, a second start does not repeat that;
#  - the CLI reaches the appliance by host name (localhost, and a name from
#    /etc/hosts) although the root has no libnss and its nsswitch.conf names
#    a module that does not exist: names are resolved without glibc.
#
# Only loopback addresses are used. Needs root (chroot).
#   packaging/rpm/check.sh [--binary PATH]   (PATH: skip the cargo build)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ "$(id -u)" != 0 ]; then
  echo "check.sh runs the packaged binary under chroot: run it as root" >&2
  exit 1
fi
started=$SECONDS
bash "$here/build.sh" "$@"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
rpm_file="target/rpm/openchami-$version-1.x86_64.rpm"

passed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
fail() { echo "FAIL - $*" >&2; echo "packaging: $passed passed, 1 failed"; exit 1; }

root="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$root"
}
trap cleanup EXIT

echo "== run the packaged binary in a root made only of the RPM payload"
rpm2cpio "$rpm_file" | (cd "$root" && cpio -idm --quiet)
chmod 0755 "$root"
# Nothing but the payload: no libc, no loader, no NSS modules, no shell.
if find "$root" \( -name 'ld-linux*' -o -name 'lib*.so*' -o -name sh \) | grep -q .; then
  fail "the payload ships shared libraries or a shell"
fi
# Runs the packaged binary as root inside the root.
oc() { chroot "$root" /usr/bin/openchami "$@"; }

out="$(oc --version)"
[ "$out" = "openchami $version" ] || fail "--version printed: $out"
ok "openchami --version: $out"

out="$(oc serve --check-config --config /etc/openchami/config.toml)"
[ "$out" = "configuration is valid" ] || fail "--check-config printed: $out"
ok "serve --check-config on the shipped /etc/openchami/config.toml"

printf '[api]\nlisten = "127.0.0.1:8443"\n' > "$root/etc/openchami/bad.toml"
printf 'bogus_key = 1\n' >> "$root/etc/openchami/bad.toml"
if oc serve --check-config --config /etc/openchami/bad.toml 2>"$root/err"; then
  fail "--check-config accepted an unknown key"
fi
grep -q bogus_key "$root/err" || fail "--check-config did not name the unknown key: $(cat "$root/err")"
ok "serve --check-config rejects an unknown key by name"

# The service's view of the world: its own user, the state dir it owns, the
# shipped config with loopback listeners on ports the kernel picks.
svc_uid=64123
chown "$svc_uid:$svc_uid" "$root/var/lib/openchami"
cat > "$root/etc/openchami/check.toml" <<'EOF'
[api]
listen = "127.0.0.1:0"
names = ["head.openchami.test"]
[node]
listen = "127.0.0.1:0"
EOF
# Host names: a file-only hosts database, and a name server on loopback so a
# query that missed would never leave the machine. nsswitch.conf names a
# module that does not exist, so a lookup through glibc could not succeed.
printf '127.0.0.1 head.openchami.test\n::1 head.openchami.test\n' > "$root/etc/hosts"
printf 'nameserver 127.0.0.1\n' > "$root/etc/resolv.conf"
printf 'hosts: openchami_check_no_such_module\n' > "$root/etc/nsswitch.conf"

start_appliance() { # $1: log file
  : > "$1"
  chroot --userspec="$svc_uid:$svc_uid" "$root" \
    /usr/bin/openchami serve --config /etc/openchami/check.toml >"$1" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q 'appliance ready' "$1" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$1" >&2; fail "the appliance exited at start"; }
    sleep 0.1
  done
  cat "$1" >&2
  fail "the appliance did not become ready in 30 s"
}
stop_appliance() {
  kill -TERM "$pid"
  wait "$pid" || fail "the appliance did not exit 0 on SIGTERM"
  pid=""
}

start_appliance "$root/first.log"
cat "$root/first.log"
grep -q 'created root CA' "$root/first.log" || fail "first start did not create the CA"
grep -q 'root=/var/lib/openchami/ca/root.crt' "$root/first.log" \
  || fail "first start did not say where the root certificate is"
grep -q 'openchami token issue' "$root/first.log" || fail "first start did not say how to get a token"
ok "first start as an unprivileged user creates the CA and says where it is and how to get a token"

port="$(sed -n 's/.*listening for api (https) on 127.0.0.1:\([0-9]*\).*/\1/p' "$root/first.log")"
[ -n "$port" ] || fail "no API port in the log"
out="$(oc --config /etc/openchami/check.toml \
  --url "https://localhost:$port" -o json group list)" || fail "CLI via https://localhost failed"
ok "CLI reaches https://localhost:$port (token minted from the state dir): $out"
out="$(oc --config /etc/openchami/check.toml \
  --url "https://head.openchami.test:$port" -o json group list)" \
  || fail "CLI via a name from /etc/hosts failed"
ok "CLI reaches https://head.openchami.test:$port through /etc/hosts without NSS: $out"
stop_appliance

start_appliance "$root/second.log"
stop_appliance
cat "$root/second.log"
if grep -E 'created|issuing server certificate|openchami token issue' "$root/second.log"; then
  fail "second start repeated first-start messages"
fi
ok "second start is quiet"

echo "packaging check took $((SECONDS - started)) s"
echo "packaging: $passed passed, 0 failed"
