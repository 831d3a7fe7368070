#!/usr/bin/env bash
# CI step "package" (make test-package, as root): the .deb that `make deb` built is installed
# with dpkg, the demo runs against the installed files (/usr/bin/ctok, ctok.so from OpenSSL's
# modules directory, no -provider-path), then the package is removed and purged, and every
# file it listed must be gone; only /etc/ctok (the admin's) may stay. The package is removed
# however the test ends: it never stays installed.
#   tests/package_test.sh [DEB_DIR]   (default build-deb)
set -euo pipefail
cd "$(dirname "$0")/.."
debdir=${1:-build-deb}
fail() {
    echo "package test: $*" >&2
    exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
version=$(sed -n 's/^project(ctok VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
debs=("$debdir"/ctok_"$version"-*_"$(dpkg --print-architecture)".deb)
[ -f "${debs[0]}" ] || fail "no ctok_$version-*.deb in $debdir (make deb)"
deb=${debs[-1]}
installed() { dpkg-query -W -f='${Status}' ctok 2>/dev/null | grep -q ' installed$'; }
! installed || fail "ctok is installed on this machine already: not replacing it"

trap 'dpkg -P ctok >/dev/null 2>&1 || true' EXIT
echo "=== package test: dpkg -i $deb"
if ! dpkg -i "$deb"; then
    echo "=== package test: dependencies through apt-get install -f"
    DEBIAN_FRONTEND=noninteractive apt-get install -f -y -qq
fi
installed || fail "dpkg -i did not leave ctok installed"

modules=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"$/\1/p')
files=$(dpkg -L ctok)
for f in /usr/bin/ctok "$modules/ctok.so" /usr/share/ctok/ctok.cnf /usr/share/ctok/ctok-debian.cnf \
    /usr/share/man/man1/ctok.1.gz /usr/share/man/man7/ctok-provider.7.gz \
    /usr/share/bash-completion/completions/ctok /etc/ctok; do
    grep -qx "$f" <<<"$files" || fail "the package does not install $f"
done
[ "$(stat -c '%a %U:%G' /etc/ctok)" = "755 root:root" ] ||
    fail "/etc/ctok is $(stat -c '%a %U:%G' /etc/ctok), not 755 root:root"
[ -z "$(ls -A /etc/ctok)" ] || fail "the package ships files in /etc/ctok: $(ls -A /etc/ctok)"
[ -z "$(dpkg-query -W -f='${Conffiles}' ctok)" ] || fail "the package ships conffiles"
got=$(/usr/bin/ctok --version)
[[ $got == "ctok $version "* ]] || fail "/usr/bin/ctok --version says '$got', not ctok $version"

echo "=== package test: the demo against the installed files"
bash tests/demo.sh --installed

echo "=== package test: dpkg -r ctok, dpkg -P ctok"
dpkg -r ctok
# without conffiles dpkg -r leaves nothing to purge; with them the package is "config-files"
if dpkg-query -W -f='${Status}' ctok 2>/dev/null | grep -q config-files; then dpkg -P ctok; fi
! installed || fail "ctok is still installed after dpkg -r"
# Files must be gone; a directory may stay only if another package owns it too or something
# else keeps it non-empty (dpkg removes the empty directories that were ctok's alone).
left=()
while IFS= read -r f; do
    [ "$f" = /. ] && continue
    case $f in /etc/ctok | /etc/ctok/*) continue ;; esac
    if [ -d "$f" ] && [ ! -L "$f" ]; then
        if [ -z "$(ls -A "$f")" ] && ! dpkg -S "$f" >/dev/null 2>&1; then left+=("$f/"); fi
    elif [ -e "$f" ] || [ -L "$f" ]; then
        left+=("$f")
    fi
done <<<"$files"
[ ${#left[@]} = 0 ] || fail "left behind after removal: ${left[*]}"
[ ! -e "$modules/ctok.so" ] || fail "$modules/ctok.so is still there"
echo "=== package test passed: $(wc -l <<<"$files") paths installed, all removed"
