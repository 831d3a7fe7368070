#!/bin/bash
# Runs the libFuzzer targets: `run.sh BUILD fuzz` fuzzes each for $FUZZ_SECONDS (default 60,
# times the target's factor below), `run.sh BUILD regress` runs every committed input
# once. Fails if any target crashes, leaks, times out (10 s an input) or passes 2 GB.
# Prints executions and executions per second per target. $FUZZ_TARGETS picks targets.
set -u
build=$(cd "$1" && pwd)
mode=$2
here=$(cd "$(dirname "$0")" && pwd)
bin=$build/tests/fuzz
secs=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"ctok_uri pkcs11_uri config keyref_pem keyref_der auth_stored pkcs12 p11_attrs p11prov_pem"}
# the AWS KMS response parsers
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" kms_list_aliases kms_get_public_key kms_sign kms_create_key kms_schedule_deletion"
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" kms_error kms_imds_creds"
# the Azure Key Vault response parsers
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" az_jwk az_list az_bundle"
# the Azure AD token response and the Key Vault / Azure AD error bodies
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" az_token az_error"
# an Azure Key Vault token's config entry, certificate binding files, the file reader's checks
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" az_config certbind fileutil"
# ctok-p11.so: application templates and attribute requests, mechanisms and their parameters
[ -z "${FUZZ_TARGETS:-}" ] && targets+=" p11mod_tmpl p11mod_mech"

# Time factors: a full run (60 s) should give each target a million executions. Rates seen
# with seven other builds on the 2-core machine (tests/fuzz/README.md): pkcs12 2,400/s,
# keyref_der 3,600/s, config 7,800/s, p11_attrs 10,900/s, keyref_pem 16,600/s; p11mod_tmpl
# and p11mod_mech 7,700/s (load 9); certbind ~1,000/s (each input two certificate parses,
# allocation-heavy in libcrypto under ASan).
factor() {
    case $1 in
    pkcs12) echo 8 ;;
    keyref_der) echo 5 ;;
    certbind) echo 4 ;;
    config) echo 3 ;;
    keyref_pem | p11prov_pem | p11_attrs | p11mod_tmpl | p11mod_mech) echo 2 ;;
    *) echo 1 ;;
    esac
}
# Longest input: the PEM decoder's body bound (8192 bytes) must be reachable.
max_len() {
    case $1 in
    keyref_pem | p11prov_pem) echo 16384 ;;
    pkcs12) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

failed=()
summary=()
for t in $targets; do
    exe=$bin/fuzz_$t
    if [ ! -x "$exe" ]; then
        echo "fuzz: $exe is missing (build with -DCTOK_FUZZ=ON)" >&2
        exit 2
    fi
    dirs=("$here/corpus/$t")
    [ -d "$here/regressions/$t" ] && dirs+=("$here/regressions/$t")
    art=$build/fuzz-artifacts/$t/
    log=$build/fuzz-logs/$t.log
    mkdir -p "$art" "$(dirname "$log")"
    common=(-timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")" -print_final_stats=1
            -artifact_prefix="$art")
    if [ "$mode" = regress ]; then
        "$exe" "${common[@]}" -runs=0 "${dirs[@]}" >"$log" 2>&1
    else
        # new inputs go to the build tree's own corpus, never into the committed one
        work=$build/fuzz-corpus/$t
        mkdir -p "$work"
        s=$((secs * $(factor "$t")))
        echo "fuzz_$t: ${s}s ..."
        "$exe" "${common[@]}" -max_total_time="$s" "$work" "${dirs[@]}" >"$log" 2>&1
    fi
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    verdict=$([ $rc -eq 0 ] && echo ok || echo FAIL)
    if [ "$mode" = regress ]; then
        line=$(printf '%-18s %-6s %6s inputs' "fuzz_$t" "$verdict" "${execs:-?}")
    else
        line=$(printf '%-18s %-6s %10s execs %7s execs/s' "fuzz_$t" "$verdict" "${execs:-?}" \
            "${rate:-?}")
    fi
    summary+=("$line")
    if [ $rc -ne 0 ]; then
        failed+=("fuzz_$t")
        echo "fuzz_$t failed (exit $rc); its log: $log" >&2
        grep -E '^(==[0-9]+== ?ERROR|SUMMARY|Base64:|artifact_prefix|Test unit written)' "$log" >&2
    fi
done
# The PEM decoder's writes happen inside libcrypto, which is not instrumented: ASan cannot
# see them overflow ctok's buffer (OPENSSL-PITFALLS.md 26). Its inputs also go through the
# real openssl CLI and ctok.so under valgrind, where $CTOK_BUILD_DIR names a normal build.
if [ "$mode" = regress ] && [ -n "${CTOK_BUILD_DIR:-}" ] && [[ " $targets " == *" keyref_pem "* ]]; then
    so=$(cd "$CTOK_BUILD_DIR" && pwd)
    scratch=$(mktemp -d)
    echo '{"tokens": []}' >"$scratch/tokens.json"
    chmod 600 "$scratch/tokens.json"
    n=0
    bad=()
    for f in "$here"/corpus/keyref_pem/* "$here"/regressions/keyref_pem/*; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        CTOK_CONFIG=$scratch/tokens.json OPENSSL_CONF=/dev/null timeout 120 \
            valgrind -q --error-exitcode=99 openssl pkey -provider-path "$so" -provider ctok \
            -provider default -in "$f" -noout >"$scratch/out" 2>&1
        vrc=$? # 1: not a key, as expected; 99: valgrind found an error; 124+: hang or crash
        if [ $vrc -eq 99 ] || [ $vrc -ge 124 ]; then
            bad+=("$f")
            grep -E '^==[0-9]+== (Invalid|  *(at|by) .*decoder\.c)' "$scratch/out" | head -4 >&2
        fi
    done
    rm -rf "$scratch"
    verdict=$([ ${#bad[@]} -eq 0 ] && echo ok || echo FAIL)
    summary+=("$(printf '%-18s %-6s %6s inputs (openssl + ctok.so under valgrind)' \
        "valgrind_pem" "$verdict" "$n")")
    [ ${#bad[@]} -gt 0 ] && failed+=("valgrind keyref_pem: ${bad[*]}")
fi

echo
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reproduce: tests/fuzz/README.md)" >&2
    exit 1
fi
