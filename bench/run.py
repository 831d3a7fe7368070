#!/usr/bin/python3
#!/usr/bin/python3
"""ctok benchmarks (make bench): ctok keys against the limits of the same keys without ctok.

Builds throwaway keys and tokens in a temp dir: an RSA-2048 and a P-256 key as PEM files,
each also in a ctok soft token (PKCS#12) and imported into one SoftHSM2 token, so every ratio
compares one key material. Then measures, interleaved (A, B, A, B, ...), medians of several
rounds (see ../shared/BENCHMARKS.md), and prints a progress line on stderr as each round
finishes (-q: none). Each ratio comes with its spread: the lowest and highest of the
per-round paired ratios (A/B of the same round). Sections (--only SECTION[,SECTION...]):

Soft token (soft): sign ops/s with ctok-bench-sign (a fresh context per signature), RSA-2048
  PKCS#1 and PSS, ECDSA P-256, 1 and 2 threads, the ctok soft-token key against the same key
  in a PEM file with OpenSSL's default provider; target ctok/file >= 0.95.

SoftHSM (hsm): sign ops/s, same algorithms and threads: ctok-bench-sign with the ctok: URI
  (ctok: a fresh EVP_PKEY_CTX per signature, as a TLS server makes one per handshake;
  ctok-reuse: one context per thread) against ctok-bench-p11 (bare C_SignInit/C_Sign, one
  session per thread) on the token object (raw-token) and on per-thread session copies
  (raw-copy); the limit is the faster of the two raw medians; target ctok/limit >= 0.95.
  Also each side's own spread (its rounds' lowest and highest over its median), so that
  "ctok's spread no wider than the bare loop's" can be read. Default 5 rounds x 2 s.

PKCS#11 pass-through (p11mod): the bare loop of the hsm section (ctok-bench-p11) on
  build/ctok-p11.so over the ctok pkcs11 token naming the SoftHSM token, against the same loop
  on SoftHSM's own module (raw-token, raw-copy; the limit is the faster), same algorithms and
  threads, interleaved; target p11mod/limit >= 0.95 (issue 14). --hsm-rounds, --hsm-seconds.

One-shot (oneshot): `openssl pkeyutl -sign` of one digest, whole process wall time, per key
  --startup-runs (21) rounds of seven processes: the PEM file (-provider default); the
  SoftHSM key and the soft-token key by ctok: URI (ctok by -provider-path/-provider flags);
  the .p12 read by openssl itself (-inkey x.p12 -passin file:...); the PEM file with ctok
  loaded but unused by flags, and by OPENSSL_CONF=openssl.cnf.d/ctok.cnf against the same
  file with ctok's line dropped. Targets: SoftHSM/PEM <= 1.5, soft/own .p12 <= 1.05, unused
  (flags, cnf) <= 1.05; soft/PEM is shown. In the same rounds, the peak RSS (GNU time's %M)
  of the PEM, soft and SoftHSM processes: ctok/PEM <= 1.1.

Memory (memory): ctok-bench-sign --count N --rss-at K (one thread, a fresh context per
  signature, ECDSA P-256) with the soft-token key, the SoftHSM key and, for comparison, the
  PEM file: the resident set after K (1,000) and after N (100,000) signatures; target:
  within +-5 %.

TLS (tls): Debian's nginx, one worker process (run as root: no permission setup),
TLS 1.3 only, no session tickets or cache, serving "ok"; ctok-bench-tls makes new full
handshakes (one GET each, no session reuse) from N threads. For RSA-2048 and P-256, three
nginx instances run side by side and are loaded in turn (file, soft, hsm, file, ...):
  * file: the key as a plain PEM file, nginx without ctok (its own openssl.cnf untouched);
  * soft: the same key imported into a ctok soft token (PKCS#12), nginx given a key-reference
    PEM (`ctok ref`) and ctok activated through OPENSSL_CONF (openssl.cnf.d/ctok.cnf);
  * hsm: the same key imported into a SoftHSM2 token, same nginx setup.
  Reported: client handshakes/s and the nginx worker's CPU time (utime+stime from
  /proc/<pid>/stat) per handshake; target: ctok/file server CPU per handshake <= 1.05 for
  the soft token and <= 1.10 for SoftHSM.

AWS KMS (kms): tests/kms_emulator.py served standalone on 127.0.0.1 (a Python KMS
over TLS with SigV4 checked on every request), an ECDSA P-256 and an RSA-2048 key made in it,
an awskms token on it. For ECDSA_SHA_256 and RSASSA_PKCS1_V1_5_SHA_256, 1 and 4 threads,
interleaved: ctok-bench-sign --latency with the ctok: URI, and ctok-bench-kms-bare, the bare
libcurl loop sending the same Sign request, SigV4-signed afresh each time, over one kept-alive
connection per thread. The emulator's own time dominates both, so what ctok adds per signature
is ctok p50 - bare p50 (target <= 100 us; spread: the range of the per-round
differences). Bounded: about 45 s, the emulator is stopped after.

Azure Key Vault (akv): tests/akv_emulator.py served standalone (Key Vault and Azure AD
over TLS, a bearer token checked on every request), an EC P-256 and an RSA-2048 key made in
it, an app registration with a client secret, an azurekv token on it. For ES256 and RS256,
1 and 4 threads, interleaved: ctok-bench-sign --latency with the ctok: URI, and
ctok-bench-akv-bare, the bare libcurl loop that gets one access token, reads the key's
current version and sends the same sign request with the bearer token over one kept-alive
connection per thread. Added per signature: ctok p50 - bare p50 (target <= 100 us). Same
bounds as the KMS section (--cloud-seconds, --cloud-rounds, --cloud-threads serve both).

The markdown (--markdown, make bench: bench/results.md) starts with the machine: CPU, cores,
kernel, OpenSSL and SoftHSM versions, the load average at the start and the end of the run,
and the share of the CPUs other processes kept busy meanwhile (/proc/stat minus this run's
own CPU time): a run on a machine that was not otherwise idle says so.
All sections at the defaults take about 10 minutes on 2 cores; the options shorten them.

Exits non-zero when a run fails; a missed target is printed as MISSED, not an error.
Standard library only.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

# the sections live in modules beside this file; put them on the path also when this file is
# loaded by its path rather than run (tests/test_bench_report.py)
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

from benchlib import (PROGRESS, SOFTHSM_MODULE, Fixtures, RunFailed,  # noqa: E402
                      find_bench_bin)
from report import IdleProbe, machine_info, markdown_report  # noqa: E402
from sect_cloud import akv_report, akv_section, kms_report, kms_section  # noqa: E402
from sect_oneshot import (memory_report, memory_section, oneshot_report,  # noqa: E402
                          oneshot_section)
from sect_soft import hsm_report, hsm_section, soft_report, soft_section  # noqa: E402
from sect_tls import tls_report, tls_section  # noqa: E402
from sect_p11mod import p11mod_report, p11mod_section  # noqa: E402

# what tests/test_bench_report.py reads as run.<name>, besides markdown_report
from benchlib import (RSS_TARGET, STARTUP_HSM_TARGET, STARTUP_OWN_P12_TARGET,  # noqa: E402,F401
                      TLS_CPU_TARGET, TLS_HSM_CPU_TARGET, missed, paired, rel_span, span)
from sect_oneshot import flat_missed  # noqa: E402,F401


SECTIONS = ["soft", "hsm", "oneshot", "memory", "tls", "kms", "akv", "p11mod"]


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="CMake build dir holding ctok.so")
    ap.add_argument("--bench-bin", help="ctok-bench-sign (default: <build>/bench/ctok-bench-sign)")
    ap.add_argument("--p11-bench-bin",
                    help="ctok-bench-p11 (default: <build>/bench/ctok-bench-p11)")
    ap.add_argument("--tls-bench-bin",
                    help="ctok-bench-tls (default: <build>/bench/ctok-bench-tls)")
    ap.add_argument("--only", metavar="SECTION[,SECTION...]",
                    help="run only these sections: " + ", ".join(SECTIONS) + " (default: all)")
    ap.add_argument("--file-only", action="store_true",
                    help="measure only the side without ctok (no ctok.so needed)")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds per configuration (>= 3)")
    ap.add_argument("--hsm-seconds", type=float, default=2.0,
                    help="seconds per SoftHSM throughput run")
    ap.add_argument("--hsm-rounds", type=int, default=5,
                    help="interleaved rounds per SoftHSM configuration (>= 3)")
    ap.add_argument("--softhsm-module", default=SOFTHSM_MODULE, help="the SoftHSM2 module")
    ap.add_argument("--tls-seconds", type=float, default=3.0,
                    help="seconds per nginx TLS handshake run")
    ap.add_argument("--tls-rounds", type=int, default=3,
                    help="interleaved rounds per nginx TLS configuration (>= 3)")
    ap.add_argument("--tls-threads", type=int, default=2,
                    help="client threads making TLS handshakes")
    ap.add_argument("--nginx", help="the nginx binary (default: nginx in /usr/sbin)")
    ap.add_argument("--cloud-seconds", "--kms-seconds", type=float, default=1.0,
                    help="seconds per KMS and Key Vault run")
    ap.add_argument("--cloud-rounds", "--kms-rounds", type=int, default=5,
                    help="interleaved rounds per KMS and Key Vault configuration (>= 3)")
    ap.add_argument("--cloud-threads", "--kms-threads", default="1,4",
                    help="KMS and Key Vault thread counts, comma-separated")
    ap.add_argument("--kms-bench-bin",
                    help="ctok-bench-kms-bare (default: <build>/bench/ctok-bench-kms-bare)")
    ap.add_argument("--akv-bench-bin",
                    help="ctok-bench-akv-bare (default: <build>/bench/ctok-bench-akv-bare)")
    ap.add_argument("--startup-runs", type=int, default=21,
                    help="interleaved one-shot rounds (every process once per round)")
    ap.add_argument("--memory-count", type=int, default=100000,
                    help="signatures of the long run whose resident set is read")
    ap.add_argument("--memory-rss-at", type=int, default=1000,
                    help="the long run's first resident-set reading, after this many signatures")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--openssl", default=shutil.which("openssl") or "/usr/bin/openssl")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--markdown",
                    help="also write the tables as markdown here (make bench: bench/results.md; "
                         "make bench-readme pastes it into README.md)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="no progress lines on stderr (one per measurement as it finishes)")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    only = SECTIONS if args.only is None else args.only.split(",")
    unknown = [x for x in only if x not in SECTIONS]
    if unknown:
        sys.exit(f"run.py: --only: no section {', '.join(unknown)} (sections: "
                 f"{', '.join(SECTIONS)})")
    do_soft, do_hsm, do_oneshot, do_memory, do_tls, do_kms, do_akv, do_p11mod = (
        x in only for x in SECTIONS)
    PROGRESS["quiet"] = args.quiet
    bench = find_bench_bin(build, args.bench_bin) \
        if do_soft or do_hsm or do_memory or do_kms or do_akv else None
    kms_bare = find_bench_bin(build, args.kms_bench_bin, "ctok-bench-kms-bare") if do_kms \
        else None
    akv_bare = find_bench_bin(build, args.akv_bench_bin, "ctok-bench-akv-bare") if do_akv \
        else None
    tls_client_bin = find_bench_bin(build, args.tls_bench_bin, "ctok-bench-tls") if do_tls \
        else None
    p11bench = find_bench_bin(build, args.p11_bench_bin, "ctok-bench-p11") \
        if do_hsm or do_p11mod else None
    module = os.path.join(build, "ctok.so")
    if not args.file_only and not os.path.exists(module):
        sys.exit(f"run.py: {module} not found (build ctok first, or use --file-only)")
    args.thread_list = [int(t) for t in args.threads.split(",")]
    args.cloud_thread_list = [int(t) for t in args.cloud_threads.split(",")]
    if args.rounds < 1 or args.startup_runs < 1 or args.hsm_rounds < 1 or args.tls_rounds < 1 \
            or args.cloud_rounds < 1:
        sys.exit("run.py: --rounds, --hsm-rounds, --tls-rounds, --cloud-rounds and --startup-runs "
                 "must be >= 1")
    if not 1 <= args.memory_rss_at <= args.memory_count:
        sys.exit("run.py: --memory-rss-at must be between 1 and --memory-count")
    if args.tls_threads < 1 or args.tls_seconds <= 0:
        sys.exit("run.py: --tls-threads must be >= 1 and --tls-seconds > 0")

    os.umask(0o077)
    tmp = tempfile.mkdtemp(prefix="ctok-bench-")
    env = dict(os.environ)
    # every subprocess sees the bench's own SoftHSM configuration, never the system's
    env["SOFTHSM2_CONF"] = os.path.join(tmp, "softhsm2.conf")
    results = {"throughput": [], "startup": [], "rss": [], "memory": []}
    if do_hsm:
        results.update({"hsm": [], "hsm_rounds": args.hsm_rounds,
                        "hsm_seconds": args.hsm_seconds})
    if do_p11mod:
        results.update({"p11mod": [], "hsm_rounds": args.hsm_rounds,
                        "hsm_seconds": args.hsm_seconds})
    if do_tls:
        results.update({"tls": [], "tls_errors": [], "tls_rounds": args.tls_rounds,
                        "tls_seconds": args.tls_seconds, "tls_threads": args.tls_threads,
                        "tls_worker_user": "root"})
    if do_kms:
        results.update({"kms": [], "kms_rounds": args.cloud_rounds,
                        "kms_seconds": args.cloud_seconds})
    if do_akv:
        results.update({"akv": [], "akv_rounds": args.cloud_rounds,
                        "akv_seconds": args.cloud_seconds})
    failed = []
    t_start = time.monotonic()
    PROGRESS["t0"] = t_start
    idle = IdleProbe()
    fixtures = Fixtures(args, tmp, env, build)
    try:
        for do, section, what, fn in (
                (do_soft, "soft", "soft-token",
                 lambda: soft_section(args, fixtures, env, build, bench, results)),
                (do_hsm, "hsm", "SoftHSM",
                 lambda: hsm_section(args, fixtures, env, build, bench, p11bench, results)),
                (do_oneshot, "oneshot", "one-shot",
                 lambda: oneshot_section(args, fixtures, env, build, results)),
                (do_memory, "memory", "memory",
                 lambda: memory_section(args, fixtures, env, build, bench, results)),
                (do_p11mod, "p11mod", "ctok-p11.so pass-through",
                 lambda: p11mod_section(args, fixtures, build, p11bench, results))):
            if not do:
                continue
            try:
                fn()
            except RunFailed as e:
                print(f"run.py: {what} section: {e}", file=sys.stderr)
                failed.append(section)
        if do_tls:
            try:
                tls_section(args, tmp, env, build, tls_client_bin, results)
            except RunFailed as e:
                print(f"run.py: TLS section: {e}", file=sys.stderr)
                failed.append("tls")
            for e in results["tls_errors"]:
                print(f"run.py: TLS section, left out: {e}", file=sys.stderr)
            if results["tls_errors"] and "tls" not in failed:
                failed.append("tls")
        if do_kms:
            try:
                kms_section(args, tmp, env, build, bench, kms_bare, results)
            except RunFailed as e:
                print(f"run.py: KMS section: {e}", file=sys.stderr)
                failed.append("kms")
        if do_akv:
            try:
                akv_section(args, tmp, env, build, bench, akv_bare, results)
            except RunFailed as e:
                print(f"run.py: Key Vault section: {e}", file=sys.stderr)
                failed.append("akv")
    finally:
        if args.keep or failed:
            print(f"run.py: fixtures kept in {tmp} (CTOK_CONFIG={os.path.join(tmp, 'tokens.json')}"
                  f" or {os.path.join(tmp, 'hsm-tokens.json')}, "
                  f"SOFTHSM2_CONF={env['SOFTHSM2_CONF']}; TLS section: "
                  f"{os.path.join(tmp, 'tls')})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- report ----------------------------------------------------------------------------
    elapsed = time.monotonic() - t_start
    if do_soft and "soft" not in failed:
        soft_report(args, results)
    if do_hsm and "hsm" not in failed:
        hsm_report(args, results)
    if do_oneshot and "oneshot" not in failed:
        oneshot_report(args, results)
    if do_memory and "memory" not in failed:
        memory_report(args, results)
    if do_p11mod and "p11mod" not in failed:
        p11mod_report(args, results)
    if do_tls and results["tls"]:
        tls_report(args, results)
    if do_kms and results["kms"]:
        kms_report(args, results)
    if do_akv and results["akv"]:
        akv_report(args, results)
    if failed:
        print(f"\nrun.py: FAILED: {', '.join(failed)} section (see the errors above)",
              file=sys.stderr)
    print(f"\n(total {elapsed:.0f} s)")

    results["machine"] = machine_info(args.openssl, idle.finish())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.markdown and not failed and not args.file_only:
        with open(args.markdown, "w") as f:
            f.write(markdown_report(args, results, results["machine"]))
        print(f"run.py: tables written to {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
