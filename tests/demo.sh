#!/usr/bin/env bash
# make demo: a soft PKCS#12 crypto token, a key in it, a signature made through
# `openssl ... -provider ctok` and verified by OpenSSL's default provider alone.
set -euo pipefail
build=$(readlink -f "${1:-build}")
work=$(mktemp -d /tmp/ctok-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
export CTOK_CONFIG="$work/tokens.json"
prov=(-provider-path "$build" -provider ctok -provider default)
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

umask 077
head -c 18 /dev/urandom | base64 > auth-code          # the token's authentication code
step "$build/ctok" token create --type pkcs12 --name demo --keystore "$work/demo.p12" \
     --auth-file "$work/auth-code"
step "$build/ctok" key generate demo signer ec:P-256
step "$build/ctok" key list demo
step openssl req "${prov[@]}" -new -x509 -key 'ctok:token=demo;object=signer' \
     -subj /CN=ctok-demo -days 30 -out signer.pem
step "$build/ctok" cert import demo signer signer.pem
echo "ctok signs this" > message.txt
step openssl pkeyutl "${prov[@]}" -sign -rawin -digest sha256 \
     -inkey 'ctok:token=demo;object=signer' -in message.txt -out message.sig
step openssl pkeyutl -verify -rawin -digest sha256 -certin -inkey signer.pem \
     -in message.txt -sigfile message.sig
step openssl storeutl "${prov[@]}" -certs 'ctok:token=demo'
printf '\nDemo passed: the key never left the token, and OpenSSL verified its signature.\n'
