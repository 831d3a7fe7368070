#!/usr/bin/env bash
# make demo: a soft PKCS#12 crypto token, a key in it, a signature made through
# `openssl ... -provider ctok` and verified by OpenSSL's default provider alone.
#   demo.sh [BUILD_DIR]   the build's ctok and ctok.so (default: build)
#   demo.sh --installed   the installed ones: /usr/bin/ctok, and ctok.so from OpenSSL's own
#                         modules directory (no -provider-path; tests/package_test.sh)
set -euo pipefail
if [ "${1:-}" = --installed ]; then
    unset OPENSSL_MODULES # OpenSSL's compiled-in modules directory, nothing else
    ctok=/usr/bin/ctok
    prov=(-provider ctok -provider default)
else
    build=$(readlink -f "${1:-build}")
    ctok=$build/ctok
    prov=(-provider-path "$build" -provider ctok -provider default)
fi
work=$(mktemp -d /tmp/ctok-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
export CTOK_CONFIG="$work/tokens.json"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

umask 077
head -c 18 /dev/urandom | base64 > auth-code          # the token's authentication code
step "$ctok" token create --type pkcs12 --name demo --keystore "$work/demo.p12" \
     --auth-file "$work/auth-code"
step "$ctok" key generate demo signer ec:P-256
step "$ctok" key list demo
step openssl req "${prov[@]}" -new -x509 -key 'ctok:token=demo;object=signer' \
     -subj /CN=ctok-demo -days 30 -out signer.pem
step "$ctok" cert import demo signer signer.pem
echo "ctok signs this" > message.txt
step openssl pkeyutl "${prov[@]}" -sign -rawin -digest sha256 \
     -inkey 'ctok:token=demo;object=signer' -in message.txt -out message.sig
step openssl pkeyutl -verify -rawin -digest sha256 -certin -inkey signer.pem \
     -in message.txt -sigfile message.sig
step openssl storeutl "${prov[@]}" -certs 'ctok:token=demo'
printf '\nDemo passed: the key never left the token, and OpenSSL verified its signature.\n'
