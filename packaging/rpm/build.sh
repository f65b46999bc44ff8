#!/usr/bin/env bash
# Builds the statically linked release binary and the RPM that ships it, then
# checks the package: the binary is static, the payload lists the expected
# files, rpmlint reports no errors, and systemd accepts the unit.
#
#   packaging/rpm/build.sh                 build the binary, then the RPM
#   packaging/rpm/build.sh --binary PATH   package an already built binary
#
# The RPM lands in target/rpm/. Needs cargo (the pinned toolchain) and the
# Debian packages rpm, rpmlint, file, cpio and systemd (for systemd-analyze).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    *) echo "usage: $0 [--binary PATH]" >&2; exit 2 ;;
  esac
done

target=x86_64-unknown-linux-gnu
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
spec_version="$(sed -n 's/^Version:[[:space:]]*//p' "$here/openchami.spec")"
if [ "$version" != "$spec_version" ]; then
  echo "Cargo.toml version $version differs from the spec's Version $spec_version" >&2
  exit 1
fi

step() { printf '== %s\n' "$*"; }

if [ -z "$binary" ]; then
  # glibc's static C runtime with the stable toolchain alone: no musl target
  # to install. Host names are resolved by hickory (pure Rust), never by
  # glibc's NSS, which a static binary would have to dlopen from the host.
  # getrandom 0.3+ finds glibc's getrandom() with dlsym, which finds nothing
  # in a static binary, and then needs /dev/urandom; the cfg makes it call
  # getrandom() directly, so randomness never depends on /dev.
  step "static release build (cargo build --release --target $target, crt-static)"
  start=$SECONDS
  RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"" \
  CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-thin}" \
    cargo build --locked --release --target "$target" --bin openchami
  echo "static build took $((SECONDS - start)) s"
  binary="target/$target/release/openchami"
fi

step "the binary is statically linked"
desc="$(file -b "$binary")"
echo "$desc"
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "not a static executable: $binary" >&2; exit 1 ;;
esac
if ldd "$binary" 2>&1 | grep -q '=>'; then
  ldd "$binary" >&2
  echo "ldd lists shared libraries for $binary" >&2
  exit 1
fi
if readelf -d "$binary" 2>/dev/null | grep -q NEEDED || readelf -l "$binary" | grep -q INTERP; then
  echo "$binary has an ELF interpreter or needs shared libraries" >&2
  exit 1
fi
echo "size: $(stat -c %s "$binary") bytes"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step "rpmbuild"
mkdir -p "$tmp/SOURCES" "$tmp/rpmbuild"
install -m 0755 "$binary" "$tmp/SOURCES/openchami"
cp "$here/openchami.service" "$here/openchami.firewalld.xml" "$here/openchami.sysusers" \
   README.md "$tmp/SOURCES/"
cp examples/config.toml "$tmp/SOURCES/config.toml"
rpmbuild_args=(-bb --quiet --define "_topdir $tmp/rpmbuild" --define "_sourcedir $tmp/SOURCES")
if [ -r /etc/debian_version ]; then
  # --nodeps: Debian's rpm database is empty, so EL build requirements such
  # as systemd-rpm-macros cannot be satisfied; the spec falls back to its own
  # definitions of the macros they provide. Documentation goes to
  # /usr/share/doc/openchami as on EL. Debian's brp-compress is a bash script
  # started as /bin/sh (dash), which leaves man pages uncompressed: run the
  # same post-install steps, with that one under bash.
  rpmbuild_args+=(--nodeps --define "_docdir_fmt %{NAME}"
    --define "__os_install_post bash /usr/lib/rpm/brp-compress %{_prefix}; /usr/lib/rpm/brp-elfperms; /usr/lib/rpm/brp-strip %{__strip}")
fi
rpmbuild "${rpmbuild_args[@]}" "$here/openchami.spec"
mkdir -p target/rpm
rpm_file="target/rpm/openchami-$version-1.x86_64.rpm"
cp "$tmp/rpmbuild/RPMS/x86_64/openchami-$version-1.x86_64.rpm" "$rpm_file"
echo "built $rpm_file ($(stat -c %s "$rpm_file") bytes)"

step "package contents (rpm -qpl)"
rpm -qpl "$rpm_file" > "$tmp/files"
cat "$tmp/files"
expected=(
  /usr/bin/openchami
  /usr/lib/systemd/system/openchami.service
  /usr/lib/sysusers.d/openchami.conf
  /usr/lib/firewalld/services/openchami.xml
  /etc/openchami
  /etc/openchami/config.toml
  /var/lib/openchami
  /usr/share/man/man1/openchami.1.gz
  /usr/share/man/man1/openchami-serve.1.gz
  /usr/share/bash-completion/completions/openchami
  /usr/share/zsh/site-functions/_openchami
  /usr/share/fish/vendor_completions.d/openchami.fish
  /usr/share/doc/openchami/README.md
)
for f in "${expected[@]}"; do
  grep -qx "$f" "$tmp/files" || { echo "missing from the package: $f" >&2; exit 1; }
done
rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" \
  > "$tmp/attrs"
grep -qE '^-rw-r--r-- root:root cn /etc/openchami/config.toml$' "$tmp/attrs" \
  || { grep config.toml "$tmp/attrs" >&2; echo "config.toml is not %config(noreplace) 0644" >&2; exit 1; }
grep -qE '^drwx------ openchami:openchami +/var/lib/openchami$' "$tmp/attrs" \
  || { grep /var/lib "$tmp/attrs" >&2; echo "/var/lib/openchami is not 0700 openchami" >&2; exit 1; }
rpm -qp --requires --recommends "$rpm_file" > "$tmp/deps"
grep -q '(ipxe-bootimgs-x86 or ipxe-bootimgs)' "$tmp/deps" \
  || { cat "$tmp/deps" >&2; echo "no Recommends on the iPXE images" >&2; exit 1; }
if grep -E '^lib|\.so' "$tmp/deps"; then
  echo "the package requires shared libraries" >&2
  exit 1
fi

step "rpmlint"
# Errors fail the build; warnings are printed. rpmlint.toml filters only the
# findings that are wrong for this package (each is explained there).
if ! rpmlint -c "$here/rpmlint.toml" "$rpm_file" "$here/openchami.spec" | tee "$tmp/rpmlint"; then
  echo "rpmlint reported errors" >&2
  exit 1
fi
grep -q ' 0 errors' "$tmp/rpmlint" || { echo "rpmlint reported errors" >&2; exit 1; }

step "systemd-analyze verify"
# Verify the packaged unit with ExecStart pointing at the packaged binary and
# MANPATH at the packaged man pages (Documentation= is checked with man).
# Verifying loads the unit into an offline manager; nothing is started.
mkdir -p "$tmp/root"
rpm2cpio "$rpm_file" | (cd "$tmp/root" && cpio -idm --quiet)
mkdir -p "$tmp/units"
sed "s|^ExecStart=/usr/bin/openchami|ExecStart=$tmp/root/usr/bin/openchami|" \
  "$tmp/root/usr/lib/systemd/system/openchami.service" > "$tmp/units/openchami.service"
MANPATH="$tmp/root/usr/share/man" SYSTEMD_LOG_LEVEL=notice \
  systemd-analyze verify "$tmp/units/openchami.service" 2>&1 | tee "$tmp/verify"
# It exits 0 on unknown keys and unparsable values, and only prints them.
if [ -s "$tmp/verify" ]; then
  echo "systemd-analyze verify reported problems with the unit" >&2
  exit 1
fi

echo "package ok: $rpm_file"
