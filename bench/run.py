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
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

# The targets of issue 13 (see ../shared/BENCHMARKS.md)
THROUGHPUT_TARGET = 0.95  # soft token / OpenSSL's default provider, same key, ops/s
HSM_TARGET = 0.95  # ctok on SoftHSM / bare C_Sign (faster of token object, session copy)
STARTUP_HSM_TARGET = 1.5  # one-shot, SoftHSM key via ctok / the same key as a PEM file
STARTUP_OWN_P12_TARGET = 1.05  # one-shot, soft-token key / openssl reading the same .p12
IDLE_TARGET = 1.05  # one-shot, ctok loaded (by ctok.cnf, by -provider flags) but unused / plain
RSS_TARGET = 1.1  # peak RSS of a one-shot signature, ctok key / the same key as a PEM file
FLAT_TARGET = 0.05  # RSS after N signatures within ±5 % of RSS after the first K
TLS_CPU_TARGET = 1.05  # nginx CPU per handshake, soft-token key / the same key as a PEM file
TLS_HSM_CPU_TARGET = 1.10  # nginx CPU per handshake, SoftHSM key / the same key as a PEM file
IDLE_CPU_SHARE = 0.05  # "otherwise idle": others kept at most 5 % of the CPUs busy
CLOUD_ADDED_P50_US = 100.0  # at most this much added per cloud signature by ctok (p50)

# key name -> (KMS key spec, ctok-bench-sign --alg, KMS SigningAlgorithm, description)
KMS_KEYS = {
    "bench-ec": ("ECC_NIST_P256", "ecdsa", "ECDSA_SHA_256", "P-256"),
    "bench-rsa": ("RSA_2048", "rsa-pkcs1", "RSASSA_PKCS1_V1_5_SHA_256", "RSA-2048"),
}
KMS_EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                            "kms_emulator.py")
# key name -> (akv_emulator --key KTY:SIZE|CRV, ctok-bench-sign --alg, Key Vault alg, description)
AKV_KEYS = {
    "bench-ec": ("EC:P-256", "ecdsa", "ES256", "P-256"),
    "bench-rsa": ("RSA:2048", "rsa-pkcs1", "RS256", "RSA-2048"),
}
AKV_EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                            "akv_emulator.py")

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_TOKEN_LABEL = "bench"  # the SoftHSM token label
HSM_TOKEN_NAME = "hsm"  # the ctok token name
HSM_USER_PIN = "1234"
HSM_SO_PIN = "5678"
# key name -> ctok key spec; the alias is the key name (CKA_LABEL on the token)
HSM_KEYS = {"rsa": "rsa:2048", "ec": "ec:P-256"}
# ctok: a fresh EVP_PKEY_CTX per signature, as a TLS server makes one per handshake;
# ctok-reuse: one initialized context per thread, EVP_PKEY_sign per signature: what the
# provider itself adds, without OpenSSL's per-context setup that raw C_Sign never pays
HSM_SIDES = ["raw-token", "raw-copy", "ctok", "ctok-reuse"]

# key name -> genpkey options, alias in the keystore, token name, algorithms measured
KEYS = {
    "rsa": {
        "desc": "RSA-2048",
        "genpkey": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "alias": "bench-rsa2048",
        "token": "bench-rsa",
        "token_id": "bench-0001",
        "algs": ["rsa-pkcs1", "rsa-pss"],
    },
    "ec": {
        "desc": "P-256",
        "genpkey": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "alias": "bench-p256",
        "token": "bench-ec",
        "token_id": "bench-0002",
        "algs": ["ecdsa"],
    },
}


class RunFailed(Exception):
    pass


# ---- progress and spreads --------------------------------------------------------------------

PROGRESS = {"t0": time.monotonic(), "quiet": False}


def progress(section, text):
    """One line per measurement as it finishes (stderr, flushed): the run takes minutes."""
    if not PROGRESS["quiet"]:
        print(f"[{time.monotonic() - PROGRESS['t0']:4.0f}s] [{section}] {text}", file=sys.stderr,
              flush=True)


def rule(hdr):
    """A report table's header line and the rule under it."""
    print(hdr)
    print("-" * len(hdr))


def paired(base, other):
    """Per-round ratios other/base of two interleaved series."""
    return [o / b for b, o in zip(base, other)]


def span(values):
    return min(values), max(values)


def rel_span(values):
    """A series' own spread: its lowest and highest value over its median."""
    m = statistics.median(values)
    return min(values) / m, max(values) / m


def fmt_span(lo_hi):
    return f"{lo_hi[0]:.2f}–{lo_hi[1]:.2f}"


def fmt_cmd(cmd, env_extra=None):
    pre = " ".join(f"{k}={v}" for k, v in (env_extra or {}).items())
    body = " ".join(a if a and all(c not in a for c in " ;'\"$&|<>") else "'" + a + "'" for a in cmd)
    return (pre + " " + body).strip()


def run(cmd, env, env_extra=None, capture=True):
    """Runs cmd; raises RunFailed with the exact command and its stderr on failure."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RunFailed(f"command failed (exit {p.returncode}):\n  {fmt_cmd(cmd, env_extra)}\n"
                        + p.stderr.decode(errors="replace").rstrip())
    return p.stdout.decode(errors="replace") if capture else ""


def write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(path, 0o600)


def find_bench_bin(build, explicit, name="ctok-bench-sign"):
    if explicit:
        return os.path.abspath(explicit)
    for c in (os.path.join(build, "bench", name), os.path.join(build, name)):
        if os.access(c, os.X_OK):
            return c
    sys.exit(f"run.py: {name} not found under {build} (build it: cmake --build {build})")


def make_fixtures(tmp, openssl, env):
    """Keys, certificates, one PKCS#12 soft token per key, tokens.json. Returns dict per key."""
    fixtures = {}
    tokens = []
    for name, k in KEYS.items():
        key = os.path.join(tmp, f"{name}-key.pem")
        pub = os.path.join(tmp, f"{name}-pub.pem")
        cert = os.path.join(tmp, f"{name}-cert.pem")
        p12 = os.path.join(tmp, f"{name}.p12")
        pin = os.path.join(tmp, f"{name}.pin")
        write_private(pin, f"bench-{name}-{os.urandom(6).hex()}\n")
        run([openssl, "genpkey", *k["genpkey"], "-out", key], env)
        run([openssl, "pkey", "-in", key, "-pubout", "-out", pub], env)
        run([openssl, "req", "-new", "-x509", "-key", key, "-subj", f"/CN={k['alias']}",
             "-days", "30", "-sha256", "-out", cert], env)
        run([openssl, "pkcs12", "-export", "-inkey", key, "-in", cert, "-name", k["alias"],
             "-passout", f"file:{pin}", "-out", p12], env)
        os.chmod(p12, 0o600)
        tokens.append({"name": k["token"], "id": k["token_id"], "type": "pkcs12",
                       "keystore": p12, "auth": {"file": pin}})
        fixtures[name] = {"key": key, "pub": pub, "cert": cert, "p12": p12, "pin": pin,
                          "uri": f"ctok:token={k['token']};object={k['alias']};type=private"}
    config = os.path.join(tmp, "tokens.json")
    write_private(config, json.dumps({"tokens": tokens}, indent=2) + "\n")
    return fixtures, config


def parse_ops(cmd, out, env_extra):
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "ops_per_sec" not in fields or "sigs" not in fields:
        raise RunFailed(f"no ops_per_sec in output of:\n  {fmt_cmd(cmd, env_extra)}\n{out}")
    sigs = int(fields["sigs"])
    cpu_us = 1e6 * float(fields.get("cpu_s", "nan")) / sigs if sigs else float("nan")
    return float(fields["ops_per_sec"]), cpu_us


def bench_once(bench, key, alg, threads, seconds, providers, build, env, env_extra, extra=()):
    cmd = [bench, "--key", key, "--alg", alg, "--threads", str(threads),
           "--seconds", str(seconds), *extra]
    if build is not None:
        cmd += ["--provider-path", build]
    for p in providers:
        cmd += ["--provider", p]
    return parse_ops(cmd, run(cmd, env, env_extra), env_extra)


def missed(ratio, target, higher_is_better):
    return not (ratio >= target if higher_is_better else ratio <= target)


def verdict(ratio, target, higher_is_better):
    sign = ">=" if higher_is_better else "<="
    return f"{sign} {target:.2f}  " + ("MISSED" if missed(ratio, target, higher_is_better)
                                       else "ok")


# ---- soft token ------------------------------------------------------------------------------

class Fixtures:
    """The keys the soft, SoftHSM, one-shot and memory sections sign with, made once per run:
    a PEM file per key, a soft token (PKCS#12) holding it (config tokens.json), and the very
    same key imported into one SoftHSM token (config hsm-tokens.json): every ratio compares
    one key material."""

    def __init__(self, args, tmp, env, build):
        self.args, self.tmp, self.env, self.build = args, tmp, env, build
        self._soft = self._hsm = None

    def soft(self):
        """(per-key fixtures, soft tokens config)"""
        if self._soft is None:
            progress("setup", "keys, certificates and soft tokens")
            self._soft = make_fixtures(self.tmp, self.args.openssl, self.env)
        return self._soft

    def hsm(self):
        """(env, env_extra, pin file) of the SoftHSM token holding the same keys"""
        if self._hsm is None:
            keys, _ = self.soft()
            progress("setup", "SoftHSM token, the PEM keys imported into it")
            self._hsm = hsm_fixtures(self.args, self.tmp, self.env, self.build, keys)
        return self._hsm


def soft_section(args, fixtures, env, build, bench, results):
    openssl = args.openssl
    threads = args.thread_list
    keys, config = fixtures.soft()
    tmp = fixtures.tmp
    env = dict(env, CTOK_CONFIG=config)
    env_extra = {"CTOK_CONFIG": config}
    ctok_prov = ["-provider-path", build, "-provider", "ctok", "-provider", "default"]
    dgst = digest_file(tmp)
    sides = ["file"] if args.file_only else ["file", "ctok"]

    # Sanity: ctok signs through the CLI and the signature verifies with the file's
    # public key, so both sides below sign with the same key.
    if not args.file_only:
        for name, fx in keys.items():
            check_same_key(openssl, fx, fx["uri"], ctok_prov, dgst, tmp, env, env_extra)

    for name, fx in keys.items():
        for alg in KEYS[name]["algs"]:
            for n in threads:
                runs = {s: [] for s in sides}
                cpu = {s: [] for s in sides}
                for r in range(args.rounds):
                    for side in sides:
                        if side == "file":
                            ops, us = bench_once(bench, fx["key"], alg, n, args.seconds,
                                                 ["default"], None, env, env_extra)
                        else:
                            ops, us = bench_once(bench, fx["uri"], alg, n, args.seconds,
                                                 ["ctok", "default"], build, env, env_extra)
                        runs[side].append(ops)
                        cpu[side].append(us)
                        if args.verbose:
                            print(f"  {alg:9} t={n} round {r + 1} {side:4} {ops:10.1f} "
                                  f"ops/s {us:8.1f} cpu-us/sig", flush=True)
                    line = "  ".join(f"{s} {runs[s][-1]:.0f}/s" for s in sides)
                    if "ctok" in runs:
                        line += f"  ctok/file {runs['ctok'][-1] / runs['file'][-1]:.2f}"
                    progress("soft", f"{KEYS[name]['desc']} {alg} {n} thr  round "
                                     f"{r + 1}/{args.rounds}  {line}")
                row = {"key": KEYS[name]["desc"], "alg": alg, "threads": n,
                       "runs": runs, "cpu_us_per_sig": cpu,
                       "file": statistics.median(runs["file"]),
                       "file_spread": rel_span(runs["file"])}
                if "ctok" in runs:
                    row["ctok"] = statistics.median(runs["ctok"])
                    row["ratio"] = row["ctok"] / row["file"]
                    row["pair_ratio_min"], row["pair_ratio_max"] = span(
                        paired(runs["file"], runs["ctok"]))
                    row["cpu_ratio"] = (statistics.median(cpu["file"])
                                        / statistics.median(cpu["ctok"]))
                results["throughput"].append(row)


def soft_report(args, results):
    print(f"\nctok sign throughput: ctok soft token (PKCS#12) vs default provider, same key in a "
          f"PEM file\nmedians of {args.rounds} interleaved rounds x {args.seconds:g} s; "
          f"ratio = median ctok ops/s / median file ops/s (the target);\n"
          f"pairs = range of per-round ctok/file (the spread); file runs = range of the file "
          f"runs / their median;\ncpu = file/ctok CPU time per signature\n")
    hdr = f"{'path':24} {'key':8} {'alg':9} {'thr':>3} {'file ops/s':>10} {'ctok ops/s':>10} " \
          f"{'ratio':>6} {'target':15} {'pairs':>11} {'file runs':>11} {'cpu':>5}"
    rule(hdr)
    for r in results["throughput"]:
        line = f"{'soft pkcs12 vs PEM file':24} {r['key']:8} {r['alg']:9} {r['threads']:>3} " \
               f"{r['file']:10.1f}"
        if "ctok" in r:
            line += f" {r['ctok']:10.1f} {r['ratio']:6.3f} " \
                    f"{verdict(r['ratio'], THROUGHPUT_TARGET, True):15} " \
                    f"{fmt_span((r['pair_ratio_min'], r['pair_ratio_max'])):>11} " \
                    f"{fmt_span(r['file_spread']):>11} {r['cpu_ratio']:5.2f}"
        print(line)


def digest_file(tmp):
    """The 32 bytes every one-shot signature signs (a SHA-256 sized input)."""
    dgst = os.path.join(tmp, "dgst.bin")
    with open(dgst, "wb") as f:
        f.write(bytes(range(32)))
    return dgst


def check_same_key(openssl, fx, uri, prov, dgst, tmp, env, env_extra):
    """ctok signs with uri through the CLI and the signature verifies with the PEM key's public
    half: the ctok side and the file side of a ratio sign with the same key."""
    sig = os.path.join(tmp, "check.sig")
    run([openssl, "pkeyutl", *prov, "-sign", "-in", dgst, "-inkey", uri,
         "-pkeyopt", "digest:sha256", "-out", sig], env, env_extra)
    run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", fx["pub"], "-in", dgst,
         "-sigfile", sig, "-pkeyopt", "digest:sha256"], env, env_extra)


# ---- SoftHSM ---------------------------------------------------------------------------------

def hsm_uri(name):
    return f"ctok:token={HSM_TOKEN_NAME};object={name};type=private"


def hsm_fixtures(args, tmp, env, build, keys):
    """A SoftHSM token in tmp holding the PEM keys of keys (make_fixtures), imported with
    softhsm2-util (label = the key name), and a ctok pkcs11 token on it.
    Returns (env, env_extra, pin file) for the runs."""
    softhsm_util = shutil.which("softhsm2-util")
    if softhsm_util is None:
        raise RunFailed("softhsm2-util not found (Debian: apt-get install softhsm2)")
    if not os.path.exists(args.softhsm_module):
        raise RunFailed(f"{args.softhsm_module} not found (Debian: apt-get install softhsm2)")
    tool = os.path.join(build, "ctok")
    if not os.access(tool, os.X_OK):
        raise RunFailed(f"{tool} (the ctok tool) not found (build it: cmake --build {build})")
    tokendir = os.path.join(tmp, "tokens")
    os.mkdir(tokendir, 0o700)
    conf = os.path.join(tmp, "softhsm2.conf")
    write_private(conf, f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
                        f"log.level = ERROR\n")
    config = os.path.join(tmp, "hsm-tokens.json")
    pin = os.path.join(tmp, "hsm.pin")
    write_private(pin, HSM_USER_PIN + "\n")
    env = dict(env, SOFTHSM2_CONF=conf, CTOK_CONFIG=config)
    env_extra = {"SOFTHSM2_CONF": conf, "CTOK_CONFIG": config}
    run([softhsm_util, "--init-token", "--free", "--label", HSM_TOKEN_LABEL,
         "--pin", HSM_USER_PIN, "--so-pin", HSM_SO_PIN], env, env_extra)
    for i, (name, fx) in enumerate(keys.items()):
        p8 = os.path.join(tmp, f"{name}.p8")  # softhsm2-util imports PKCS#8 only
        run([args.openssl, "pkcs8", "-topk8", "-nocrypt", "-in", fx["key"], "-out", p8], env,
            env_extra)
        run([softhsm_util, "--import", p8, "--token", HSM_TOKEN_LABEL, "--label", name,
             "--id", f"{i + 1:02x}", "--pin", HSM_USER_PIN], env, env_extra)
        os.unlink(p8)
    run([tool, "--config", config, "token", "create", "--type", "pkcs11", "--name",
         HSM_TOKEN_NAME, "--library", args.softhsm_module, "--ref-type", "label", "--ref",
         HSM_TOKEN_LABEL, "--auth-file", pin], env, env_extra)
    ctok_prov = ["-provider-path", build, "-provider", "ctok", "-provider", "default"]
    dgst = digest_file(tmp)
    for name, fx in keys.items():
        check_same_key(args.openssl, fx, hsm_uri(name), ctok_prov, dgst, tmp, env, env_extra)
    return env, env_extra, pin


def hsm_section(args, fixtures, env, build, bench, p11bench, results):
    env, env_extra, pin = fixtures.hsm()
    sides = HSM_SIDES[:2] if args.file_only else HSM_SIDES
    seconds = args.hsm_seconds
    for name in HSM_KEYS:
        uri = hsm_uri(name)
        for alg in KEYS[name]["algs"]:
            for n in args.thread_list:
                raw = [p11bench, "--module", args.softhsm_module, "--token", HSM_TOKEN_LABEL,
                       "--pin", f"file:{pin}", "--label", name, "--mech", alg,
                       "--threads", str(n), "--seconds", str(seconds)]
                runs = {s: [] for s in sides}
                cpu = {s: [] for s in sides}
                for r in range(args.hsm_rounds):
                    for side in sides:
                        if side in ("ctok", "ctok-reuse"):
                            ops, us = bench_once(bench, uri, alg, n, seconds,
                                                 ["ctok", "default"], build, env, env_extra,
                                                 ["--reuse-ctx"] if side == "ctok-reuse" else [])
                        else:
                            cmd = raw + (["--session-copy"] if side == "raw-copy" else [])
                            ops, us = parse_ops(cmd, run(cmd, env, env_extra), env_extra)
                        runs[side].append(ops)
                        cpu[side].append(us)
                        if args.verbose:
                            print(f"  hsm {alg:9} t={n} round {r + 1} {side:9} {ops:10.1f} "
                                  f"ops/s {us:8.1f} cpu-us/sig", flush=True)
                    line = "  ".join(f"{s} {runs[s][-1]:.0f}/s" for s in sides)
                    if "ctok" in runs:
                        limit = max(runs["raw-token"][-1], runs["raw-copy"][-1])
                        line += f"  ctok/limit {runs['ctok'][-1] / limit:.2f}"
                    progress("hsm", f"{KEYS[name]['desc']} {alg} {n} thr  round "
                                    f"{r + 1}/{args.hsm_rounds}  {line}")
                row = {"key": KEYS[name]["desc"], "alg": alg, "threads": n,
                       "runs": runs, "cpu_us_per_sig": cpu}
                for side in sides:
                    row[side] = statistics.median(runs[side])
                limit_side = max(("raw-token", "raw-copy"), key=lambda s: row[s])
                row["limit_side"] = limit_side
                row["limit"] = row[limit_side]
                # the bare loop's own spread: how far its rounds stray from their median
                row["limit_spread"] = rel_span(runs[limit_side])
                if "ctok" in runs:
                    row["ratio"] = row["ctok"] / row["limit"]
                    row["ratio_reuse"] = row["ctok-reuse"] / row["limit"]
                    row["ctok_spread"] = rel_span(runs["ctok"])
                    pairs = [c / max(t, k) for t, k, c in
                             zip(runs["raw-token"], runs["raw-copy"], runs["ctok"])]
                    row["pair_ratio_min"], row["pair_ratio_max"] = span(pairs)
                    row["cpu_ratio"] = (statistics.median(cpu[limit_side])
                                        / statistics.median(cpu["ctok"]))
                results["hsm"].append(row)


def hsm_report(args, results):
    print(f"\nctok sign throughput: ctok pkcs11 token on SoftHSM2 vs bare C_SignInit/C_Sign on the "
          f"same key\n(ctok-bench-p11, one session per thread) on the token object (raw-token) "
          f"and on per-thread\nsession copies (raw-copy); medians of {args.hsm_rounds} "
          f"interleaved rounds x {args.hsm_seconds:g} s;\nlimit = the faster raw median "
          f"(marked *); ratio = median ctok ops/s / limit (the target);\npairs = range of "
          f"per-round ctok/limit (the spread); ctok runs, limit runs = range of each side's\n"
          f"rounds / its median (the spread should be no wider than the bare loop's);\n"
          f"cpu = limit/ctok CPU time per signature\n"
          f"ctok: a fresh EVP_PKEY_CTX per signature (as TLS servers do); reuse: one context\n"
          f"per thread, EVP_PKEY_sign per signature: the provider's own cost, without OpenSSL's\n"
          f"per-context setup, which raw C_Sign does not pay\n")
    hdr = f"{'key':8} {'alg':9} {'thr':>3} {'raw-token':>10} {'raw-copy':>10} " \
          f"{'ctok ops/s':>10} {'ratio':>6} {'target':15} {'pairs':>11} {'ctok runs':>11} " \
          f"{'limit runs':>11} {'cpu':>5} {'reuse ops/s':>11} {'ratio':>6} {'target':15}"
    rule(hdr)
    for r in results["hsm"]:
        mark = {s: "*" if s == r["limit_side"] else " " for s in ("raw-token", "raw-copy")}
        line = f"{r['key']:8} {r['alg']:9} {r['threads']:>3} " \
               f"{r['raw-token']:9.1f}{mark['raw-token']} {r['raw-copy']:9.1f}{mark['raw-copy']}"
        if "ctok" in r:
            line += f" {r['ctok']:10.1f} {r['ratio']:6.3f} " \
                    f"{verdict(r['ratio'], HSM_TARGET, True):15} " \
                    f"{fmt_span((r['pair_ratio_min'], r['pair_ratio_max'])):>11} " \
                    f"{fmt_span(r['ctok_spread']):>11} {fmt_span(r['limit_spread']):>11} " \
                    f"{r['cpu_ratio']:5.2f} {r['ctok-reuse']:11.1f} {r['ratio_reuse']:6.3f} " \
                    f"{verdict(r['ratio_reuse'], HSM_TARGET, True):15}"
        else:
            line += f" {'':10} {'':6} {'':15} {'':11} {'':11} {fmt_span(r['limit_spread']):>11}"
        print(line)


# ---- one-shot processes: start-up, ctok loaded but unused, peak RSS ---------------------------

# side -> what runs: `openssl pkeyutl -sign` of one 32-byte digest, whole process
ONESHOT_SIDES = {
    "pem": "the key as a PEM file, -provider default",
    "hsm": "the same key in SoftHSM, a ctok: URI, -provider-path … -provider ctok "
           "-provider default",
    "soft": "the same key in a ctok soft token (PKCS#12), a ctok: URI, ctok by -provider flags",
    "p12": "the soft token's .p12 file read by openssl itself (-inkey x.p12 -passin file:…)",
    "flags": "the PEM file, ctok loaded by -provider flags but unused",
    "cnf-plain": "the PEM file, OPENSSL_CONF = ctok.cnf without ctok (default provider only)",
    "cnf": "the PEM file, OPENSSL_CONF = openssl.cnf.d/ctok.cnf: ctok active but unused",
}
# (numerator side, denominator side, target or None, what the ratio says)
ONESHOT_RATIOS = [
    ("hsm", "pem", STARTUP_HSM_TARGET, "SoftHSM key via ctok vs the same key as a PEM file"),
    ("soft", "pem", None, "soft-token key vs the same key as a PEM file"),
    ("soft", "p12", STARTUP_OWN_P12_TARGET, "soft-token key vs openssl reading the same .p12"),
    ("flags", "pem", IDLE_TARGET, "ctok loaded by -provider flags, unused, vs plain"),
    ("cnf", "cnf-plain", IDLE_TARGET, "ctok loaded by ctok.cnf, unused, vs plain"),
]
RSS_RATIOS = [
    ("soft", "pem", RSS_TARGET, "soft-token key vs the same key as a PEM file"),
    ("hsm", "pem", RSS_TARGET, "SoftHSM key via ctok vs the same key as a PEM file"),
]


def timed(cmd, env, env_extra):
    """Runs cmd; its wall time in s."""
    t0 = time.perf_counter()
    run(cmd, env, env_extra, capture=False)
    return time.perf_counter() - t0


TIME_BIN = "/usr/bin/time"  # GNU time (Debian: apt-get install time)


def peak_rss_kb(cmd, env, env_extra, tmp):
    """Runs cmd under GNU time; the process's peak RSS in KiB. Not os.wait4 on a child of this
    script: Linux carries the forking process's RSS high-water mark across exec into the
    child's ru_maxrss, so every openssl run would read as big as this Python process."""
    out = os.path.join(tmp, "time.out")
    run([TIME_BIN, "-f", "%M", "-o", out, *cmd], env, env_extra, capture=False)
    with open(out) as f:
        text = f.read().split()
    if not text or not text[-1].isdigit():
        raise RunFailed(f"no peak RSS from {TIME_BIN} for:\n  {fmt_cmd(cmd, env_extra)}")
    return int(text[-1])


def plain_cnf(cnf, path):
    """cnf (a ctok.cnf rewritten by ctok_cnf) without ctok: the same file, default only."""
    with open(cnf) as f:
        text = f.read()
    text, n = re.subn(r"(?m)^ctok\s*=\s*ctok_sect\s*$", "", text)
    if n != 1:
        raise RunFailed(f"{cnf} has no 'ctok = ctok_sect' line to drop")
    write_private(path, text)
    return path


def oneshot_section(args, fixtures, env, build, results):
    """Interleaved rounds of every ONESHOT_SIDES process per key; ratios of medians and the
    spread of the per-round paired ratios; in each round also the peak RSS of the pem, soft and
    hsm processes (runs of their own, under GNU time)."""
    openssl = args.openssl
    keys, soft_config = fixtures.soft()
    henv, henv_extra, _ = fixtures.hsm()
    tmp = fixtures.tmp
    dgst = digest_file(tmp)
    hsm_config = henv["CTOK_CONFIG"]
    base = {k: v for k, v in henv.items() if k != "OPENSSL_CONF"}
    cnf = ctok_cnf(build, hsm_config, os.path.join(tmp, "ctok-oneshot.cnf"))
    plain = plain_cnf(cnf, os.path.join(tmp, "plain-oneshot.cnf"))
    flags = ["-provider-path", build, "-provider", "ctok", "-provider", "default"]
    default = ["-provider", "default"]

    def pkeyutl(inkey, prov, extra=()):
        return [openssl, "pkeyutl", *prov, "-sign", "-in", dgst, "-inkey", inkey, *extra,
                "-pkeyopt", "digest:sha256", "-out", os.devnull]

    for name, fx in keys.items():
        desc = KEYS[name]["desc"]
        soft_env = dict(base, CTOK_CONFIG=soft_config)
        cmds = {  # side -> (argv, env, the environment a reader needs to rerun it)
            "pem": (pkeyutl(fx["key"], default), base, henv_extra),
            "hsm": (pkeyutl(hsm_uri(name), flags), base, henv_extra),
            "soft": (pkeyutl(fx["uri"], flags), soft_env, {"CTOK_CONFIG": soft_config}),
            "p12": (pkeyutl(fx["p12"], default, ["-passin", f"file:{fx['pin']}"]), base, {}),
            "flags": (pkeyutl(fx["key"], flags), base, henv_extra),
            "cnf-plain": (pkeyutl(fx["key"], []), dict(base, OPENSSL_CONF=plain),
                          {"OPENSSL_CONF": plain}),
            "cnf": (pkeyutl(fx["key"], []), dict(base, OPENSSL_CONF=cnf),
                    dict(henv_extra, OPENSSL_CONF=cnf)),
        }
        if args.file_only:
            cmds = {s: cmds[s] for s in ("pem", "p12")}
        for c, e, x in cmds.values():  # warm the page cache; not measured
            timed(c, e, x)
        times = {s: [] for s in cmds}
        rss = {s: [] for s in ("pem", "soft", "hsm") if s in cmds}
        for r in range(args.startup_runs):
            for side, (c, e, x) in cmds.items():
                times[side].append(timed(c, e, x))
            for side in rss:  # separate runs: GNU time's own fork and exec are not timed
                c, e, x = cmds[side]
                rss[side].append(peak_rss_kb(c, e, x, tmp))
            line = "  ".join(f"{num}/{den} {times[num][-1] / times[den][-1]:.2f}"
                             for num, den, *_ in ONESHOT_RATIOS if num in cmds and den in cmds)
            progress("oneshot", f"{desc} round {r + 1}/{args.startup_runs}  pem "
                                f"{1000 * times['pem'][-1]:.1f} ms  {line}")
        results["startup"] += paired_rows(desc, ONESHOT_RATIOS, times, 1000, "ms")
        results["rss"] += paired_rows(desc, RSS_RATIOS, rss, 1, "kb")


def paired_rows(desc, ratios, series, scale, unit):
    """A row per (numerator, denominator, target, what) of ratios whose two sides were measured
    (series: side -> per-round values): the medians (times scale, as ctok_<unit> and
    base_<unit>), their ratio, and the spread of the per-round paired ratios."""
    rows = []
    for num, den, target, what in ratios:
        if num not in series or den not in series:
            continue
        a, b = statistics.median(series[num]), statistics.median(series[den])
        pairs = paired(series[den], series[num])
        rows.append({"key": desc, "what": what, "num": num, "den": den, "target": target,
                     f"ctok_{unit}": scale * a, f"base_{unit}": scale * b, "ratio": a / b,
                     "pair_median": statistics.median(pairs), "spread": span(pairs),
                     "runs": {num: series[num], den: series[den]}})
    return rows


def oneshot_report(args, results):
    paired_report(f"\none-shot `openssl pkeyutl -sign`, whole process wall time, medians of "
                  f"{args.startup_runs} interleaved rounds\n(every side once per round); spread "
                  f"= range of the per-round paired ratios\n", results["startup"], "ms", 2)
    paired_report("\npeak RSS of the same one-shot processes (KiB, medians; runs of their own "
                  "under GNU time)\n", results["rss"], "kb", 0)


def paired_report(title, rows, unit, digits):
    """A table of paired_rows: the two medians, their ratio, the spread and the verdict."""
    print(title)
    label = {"ms": "ms", "kb": "KiB"}[unit]
    rule(f"{'comparison':50} {'key':8} {'ctok ' + label:>8} {'base ' + label:>8} {'ratio':>6} "
         f"{'spread':>11}  target")
    for r in rows:
        tgt = verdict(r["ratio"], r["target"], False) if r["target"] else "(shown)"
        print(f"{r['what']:50} {r['key']:8} {r['ctok_' + unit]:8.{digits}f} "
              f"{r['base_' + unit]:8.{digits}f} {r['ratio']:6.3f} {fmt_span(r['spread']):>11}  "
              f"{tgt}")


# ---- memory over a long run ------------------------------------------------------------------

def memory_section(args, fixtures, env, build, bench, results):
    """ctok-bench-sign --count N --rss-at K with the P-256 key as a PEM file (for comparison),
    in the soft token and in SoftHSM: the resident set after K and after N signatures."""
    keys, soft_config = fixtures.soft()
    henv, henv_extra, _ = fixtures.hsm()
    fx = keys["ec"]
    sides = {"pem": (fx["key"], ["default"], None, henv, henv_extra),
             "soft": (fx["uri"], ["ctok", "default"], build, dict(henv, CTOK_CONFIG=soft_config),
                      {"CTOK_CONFIG": soft_config}),
             "hsm": (hsm_uri("ec"), ["ctok", "default"], build, henv, henv_extra)}
    if args.file_only:
        sides = {"pem": sides["pem"]}
    n, k = args.memory_count, args.memory_rss_at
    for side, (key, provs, path, e, x) in sides.items():
        cmd = [bench, "--key", key, "--alg", "ecdsa", "--count", str(n), "--rss-at", str(k)]
        if path is not None:
            cmd += ["--provider-path", path]
        for p in provs:
            cmd += ["--provider", p]
        progress("memory", f"{KEYS['ec']['desc']} {side}: {n:,} signatures ...")
        out = run(cmd, e, x)
        fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
        try:
            first, last = int(fields[f"rss_kb_at_{k}"]), int(fields[f"rss_kb_at_{n}"])
        except (KeyError, ValueError):
            raise RunFailed(f"no rss_kb_at_{k}/rss_kb_at_{n} in output of:\n  "
                            f"{fmt_cmd(cmd, x)}\n{out}")
        row = {"key": KEYS["ec"]["desc"], "side": side, "count": n, "at": k,
               "first_kb": first, "last_kb": last, "growth": (last - first) / first}
        results["memory"].append(row)
        progress("memory", f"{row['key']} {side}: RSS {first} KiB after {k} signatures, {last} "
                           f"KiB after {n} ({100 * row['growth']:+.1f} %)")


def memory_report(args, results):
    print(f"\nresident set over a long run: ctok-bench-sign --count {args.memory_count} "
          f"--rss-at {args.memory_rss_at}, ECDSA P-256,\none thread, a fresh context per "
          f"signature; target: growth within ±{100 * FLAT_TARGET:.0f} %\n")
    hdr = f"{'key':8} {'side':5} {'RSS after K':>12} {'RSS after N':>12} {'growth':>8}  target"
    rule(hdr)
    for r in results["memory"]:
        print(f"{r['key']:8} {r['side']:5} {r['first_kb']:9d} KiB {r['last_kb']:9d} KiB "
              f"{100 * r['growth']:+7.1f}%  " + ("MISSED" if flat_missed(r["growth"]) else "ok"))


MEMORY_SIDE_DESC = {"pem": "PEM file (OpenSSL alone)", "soft": "soft token via ctok",
                    "hsm": "SoftHSM via ctok"}


def flat_missed(growth):
    return abs(growth) > FLAT_TARGET


# ---- AWS KMS ---------------------------------------------------------------------------------

def start_emulator(cmd, port_file, what, env):
    """Starts a cloud emulator standalone (it stops by itself after --max-seconds; the caller
    stops it sooner) and returns (process, the JSON of its port file)."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RunFailed(f"the {what} emulator did not start:\n" +
                            proc.communicate()[1].decode(errors="replace")[-2000:])
        time.sleep(0.1)
    time.sleep(0.1)  # the file is written whole, but let the writer close it
    with open(port_file) as f:
        return proc, json.load(f)


def stop_emulator(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def kms_fixtures(args, tmp, env, build):
    """The emulator (standalone, stopped by the caller) with the bench keys and a throwaway
    credential, and an awskms token on it. Returns (process, info, env, env_extra, akid,
    secret file)."""
    kdir = os.path.join(tmp, "kms")
    os.mkdir(kdir, 0o700)
    akid = "AKIA" + os.urandom(8).hex().upper()
    secret = os.urandom(24).hex()
    secret_file = os.path.join(kdir, "secret")
    write_private(secret_file, secret + "\n")
    port_file = os.path.join(kdir, "port.json")
    cmd = [sys.executable, KMS_EMULATOR, "--workdir", kdir, "--credential", f"{akid}:{secret}",
           "--port-file", port_file, "--max-seconds", "300"]
    for alias, (spec, *_rest) in KMS_KEYS.items():
        cmd += ["--key", f"{spec}:{alias}"]
    proc, info = start_emulator(cmd, port_file, "KMS", env)
    config = os.path.join(tmp, "kms-tokens.json")
    write_private(config, json.dumps({"tokens": [{
        "name": "kms", "type": "awskms", "region": info["region"], "auth_method": "keys",
        "access_key_id": akid, "endpoint": info["url"], "ca_file": info["ca_file"],
        "auth": {"file": secret_file}}]}, indent=2))
    env_extra = {"CTOK_CONFIG": config}
    return proc, info, dict(env, **env_extra), env_extra, akid, secret_file


def akv_fixtures(args, tmp, env, build):
    """The Key Vault + Azure AD emulator (standalone, stopped by the caller) with the bench keys
    and a throwaway app registration (client secret), and an azurekv token on it. Returns
    (process, info, env, env_extra, client id, secret file)."""
    adir = os.path.join(tmp, "akv")
    os.mkdir(adir, 0o700)
    client_id = str(uuid_from(os.urandom(16)))
    secret = os.urandom(24).hex()
    secret_file = os.path.join(adir, "secret")
    write_private(secret_file, secret + "\n")
    client_file = os.path.join(adir, "clients")
    write_private(client_file, f"{client_id}:{secret}\n")  # a file: no secret in argv
    port_file = os.path.join(adir, "port.json")
    cmd = [sys.executable, AKV_EMULATOR, "--workdir", adir, "--client-file", client_file,
           "--port-file", port_file, "--max-seconds", "300"]
    for alias, (spec, *_rest) in AKV_KEYS.items():
        cmd += ["--key", f"{alias}:{spec}"]
    proc, info = start_emulator(cmd, port_file, "Key Vault", env)
    config = os.path.join(tmp, "akv-tokens.json")
    write_private(config, json.dumps({"tokens": [{
        "name": "akv", "type": "azurekv", "vault_url": info["vault_url"],
        "tenant_id": info["tenant_id"], "client_id": client_id, "auth_method": "secret",
        "login_url": info["authority"], "ca_file": info["ca_file"],
        "auth": {"file": secret_file}}]}, indent=2))
    env_extra = {"CTOK_CONFIG": config}
    return proc, info, dict(env, **env_extra), env_extra, client_id, secret_file


def uuid_from(b):
    """A UUID-shaped client id (as Azure app registrations have) from 16 random bytes."""
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def parse_latency(cmd, out, env_extra):
    ops, _ = parse_ops(cmd, out, env_extra)
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "p50_us" not in fields or "p99_us" not in fields:
        raise RunFailed(f"no p50_us/p99_us in output of:\n  {fmt_cmd(cmd, env_extra)}\n{out}")
    return ops, float(fields["p50_us"]), float(fields["p99_us"])


def cloud_rounds(args, section, env, env_extra, desc, cloud_alg, n, cmds):
    """Interleaved rounds of the bare loop and ctok-bench-sign --latency (cmds: side -> argv)
    for one key and thread count; the row of medians with added_p50_us = ctok - bare."""
    sides = ["bare"] if args.file_only else ["bare", "ctok"]
    runs = {s: [] for s in sides}
    for r in range(args.cloud_rounds):
        for side in sides:
            got = parse_latency(cmds[side], run(cmds[side], env, env_extra), env_extra)
            runs[side].append(got)
            if args.verbose:
                print(f"  {section} {cloud_alg:9} t={n} round {r + 1} {side:5} {got[0]:8.1f} "
                      f"sig/s p50 {got[1]:8.1f} us p99 {got[2]:8.1f} us", flush=True)
        line = "  ".join(f"{s} {runs[s][-1][0]:.0f}/s p50 {runs[s][-1][1]:.0f} us" for s in sides)
        if "ctok" in runs:
            line += f"  added {runs['ctok'][-1][1] - runs['bare'][-1][1]:.0f} us"
        progress(section, f"{desc} {cloud_alg} {n} thr  round {r + 1}/{args.cloud_rounds}  "
                          f"{line}")
    row = {"key": desc, "alg": cloud_alg, "threads": n, "runs": runs}
    for side in sides:
        for i, what in enumerate(("ops", "p50_us", "p99_us")):
            row[f"{side}_{what}"] = statistics.median(x[i] for x in runs[side])
    if "ctok" in runs:
        row["added_p50_us"] = row["ctok_p50_us"] - row["bare_p50_us"]
        # the spread: the range of the per-round differences
        row["added_p50_spread"] = span([c[1] - b[1] for b, c in zip(runs["bare"],
                                                                    runs["ctok"])])
    return row


def ctok_latency_cmd(args, bench, build, uri, alg, n):
    return [bench, "--key", uri, "--alg", alg, "--threads", str(n), "--seconds",
            str(args.cloud_seconds), "--latency", "--provider-path", build, "--provider", "ctok",
            "--provider", "default"]


def cloud_section(args, section, keys, token, started, bare_args, bench, build, results):
    """One cloud section: for each bench key and thread count, interleaved rounds of the bare
    loop (argv from bare_args(alias, cloud alg)) and ctok on token; the emulator of started
    (process, env, env_extra) stopped after, whatever happens."""
    proc, env, env_extra = started
    try:
        for alias, (_spec, alg, cloud_alg, desc) in keys.items():
            uri = f"ctok:token={token};object={alias};type=private"
            for n in args.cloud_thread_list:
                cmds = {"bare": bare_args(alias, cloud_alg) +
                        ["--threads", str(n), "--seconds", str(args.cloud_seconds)],
                        "ctok": ctok_latency_cmd(args, bench, build, uri, alg, n)}
                results[section].append(cloud_rounds(args, section, env, env_extra, desc,
                                                     cloud_alg, n, cmds))
    finally:
        stop_emulator(proc)


def kms_section(args, tmp, env, build, bench, bare, results):
    proc, info, env, env_extra, akid, secret_file = kms_fixtures(args, tmp, env, build)
    cloud_section(args, "kms", KMS_KEYS, "kms", (proc, env, env_extra), lambda alias, alg: [
        bare, "--url", info["url"], "--ca-file", info["ca_file"], "--region", info["region"],
        "--akid", akid, "--secret-file", secret_file, "--key-id", info["keys"][alias], "--alg",
        alg], bench, build, results)


def akv_section(args, tmp, env, build, bench, bare, results):
    proc, info, env, env_extra, client_id, secret_file = akv_fixtures(args, tmp, env, build)
    cloud_section(args, "akv", AKV_KEYS, "akv", (proc, env, env_extra), lambda alias, alg: [
        bare, "--vault-url", info["vault_url"], "--authority", info["authority"], "--tenant",
        info["tenant_id"], "--client-id", client_id, "--secret-file", secret_file, "--ca-file",
        info["ca_file"], "--key", alias, "--alg", alg], bench, build, results)


def cloud_report(title, rows):
    print(title)
    hdr = f"{'key':8} {'alg':26} {'thr':>3} {'ctok sig/s':>10} {'bare sig/s':>10} " \
          f"{'ctok p50':>9} {'bare p50':>9} {'ctok p99':>9} {'bare p99':>9} {'added':>8} " \
          f"{'added spread':>14}"
    rule(hdr)
    for r in rows:
        line = f"{r['key']:8} {r['alg']:26} {r['threads']:>3} "
        if "ctok_ops" in r:
            line += f"{r['ctok_ops']:10.1f} {r['bare_ops']:10.1f} {r['ctok_p50_us']:9.1f} " \
                    f"{r['bare_p50_us']:9.1f} {r['ctok_p99_us']:9.1f} {r['bare_p99_us']:9.1f} " \
                    f"{r['added_p50_us']:8.1f} {fmt_us_span(r['added_p50_spread']):>14}  " + \
                    ("MISSED" if r["added_p50_us"] > CLOUD_ADDED_P50_US else "ok")
        else:
            line += f"{'':10} {r['bare_ops']:10.1f} {'':9} {r['bare_p50_us']:9.1f} {'':9} " \
                    f"{r['bare_p99_us']:9.1f}"
        print(line)


def fmt_us_span(lo_hi):
    """A range of µs differences, which may be negative: "-20 to 140"."""
    return f"{lo_hi[0]:.0f} to {lo_hi[1]:.0f}"


def kms_report(args, results):
    cloud_report(
        f"\nAWS KMS signing through the emulator (tests/kms_emulator.py): ctok (ctok-bench-sign, "
        f"a ctok: URI\nto a KMS key) vs the bare libcurl loop sending the same SigV4-signed Sign "
        f"request over a\nkept-alive connection (ctok-bench-kms-bare); medians of "
        f"{args.cloud_rounds} interleaved rounds x {args.cloud_seconds:g} s;\nthe emulator "
        f"dominates latency, so added = ctok p50 - bare p50 (target <= "
        f"{CLOUD_ADDED_P50_US:.0f} us)\n", results["kms"])


def akv_report(args, results):
    cloud_report(
        f"\nAzure Key Vault signing through the emulator (tests/akv_emulator.py): ctok "
        f"(ctok-bench-sign, a\nctok: URI to a vault key) vs the bare libcurl loop sending the "
        f"same sign request with a\nbearer token over a kept-alive connection "
        f"(ctok-bench-akv-bare); medians of {args.cloud_rounds}\ninterleaved rounds x "
        f"{args.cloud_seconds:g} s; added = ctok p50 - bare p50 (target <= "
        f"{CLOUD_ADDED_P50_US:.0f} us)\n", results["akv"])


# ---- TLS through nginx -----------------------------------------------------------------------

NGINX_BIN = "/usr/sbin/nginx"
NGINX_READY = "start worker processes"  # logged (notice) once the master has bound its socket
# the nginx configuration, the same for every side but for the certificate and key files;
# workers run as root so that they may read the SoftHSM token directory in the temp dir
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
env OPENSSL_CONF;
env SOFTHSM2_CONF;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
        location / {{ return 200 "ok"; }}
    }}
}}
"""
TLS_SIDES = ["file", "soft", "hsm"]
TLS_SIDE_DESC = {"soft": "soft pkcs12 vs PEM file", "hsm": "softhsm vs PEM file"}
TLS_TARGETS = {"soft": TLS_CPU_TARGET, "hsm": TLS_HSM_CPU_TARGET}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Nginx:
    """nginx in the foreground with a prefix of its own in the temp dir, one worker."""

    def __init__(self, nginx, prefix, cert, key, env, env_extra):
        self.nginx, self.prefix, self.cert, self.key = nginx, prefix, cert, key
        self.env, self.env_extra = env, env_extra
        self.conf = os.path.join(prefix, "nginx.conf")
        self.error_log = os.path.join(prefix, "error.log")
        self.proc = None
        self.port = None
        self.worker = None
        os.makedirs(prefix, exist_ok=True)

    def argv(self):
        return [self.nginx, "-p", self.prefix, "-c", self.conf, "-e", self.error_log]

    def log(self):
        text = ""
        for p in (self.error_log, os.path.join(self.prefix, "stdout.log")):
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    text += f.read()
        return text

    def failure(self, what):
        return RunFailed(f"{what}:\n  {fmt_cmd(self.argv(), self.env_extra)}\n"
                         "--- nginx error log and output ---\n" + self.log()[-4000:].rstrip())

    def start(self):
        for attempt in range(3):
            self.port = free_port()
            with open(self.conf, "w") as f:
                f.write(NGINX_CONF.format(prefix=self.prefix, port=self.port, cert=self.cert,
                                          key=self.key))
            if os.path.exists(self.error_log):
                os.unlink(self.error_log)
            with open(os.path.join(self.prefix, "stdout.log"), "wb") as out:
                self.proc = subprocess.Popen(self.argv(), env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            deadline = time.monotonic() + 20
            while self.proc.poll() is None and time.monotonic() < deadline:
                if NGINX_READY in self.log():
                    self.worker = self.worker_pid(deadline)
                    if self.worker is not None:
                        return self
                time.sleep(0.05)
            self.stop()
            if "Address already in use" not in self.log():
                break
        raise self.failure(f"nginx did not start (exit {self.proc.returncode})")

    def worker_pid(self, deadline):
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                kids = []
            if kids:
                return kids[0]
            time.sleep(0.05)
        return None

    def check_worker(self):
        """The worker is the one measured: it must not have died and been replaced."""
        if self.proc.poll() is not None or self.worker_pid(time.monotonic() + 1) != self.worker:
            raise self.failure(f"nginx worker {self.worker} died during the run")

    def maps(self):
        try:
            with open(f"/proc/{self.worker}/maps") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of its process group (the worker): ours, started above
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def ctok_cnf(build, config, path):
    """The repository's openssl.cnf.d/ctok.cnf pointing at this build and config."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openssl.cnf.d",
                       "ctok.cnf")
    with open(src) as f:
        text = f.read()
    text, n1 = re.subn(r"(?m)^module\s*=.*$", f"module = {os.path.join(build, 'ctok.so')}", text)
    # the shipped file sets no ctok-config (its commented line is the place for one)
    text, n2 = re.subn(r"(?m)^#?\s*ctok-config\s*=.*$", f"ctok-config = {config}", text)
    if n1 != 1 or n2 != 1:
        raise RunFailed(f"{src} has no 'module =' and 'ctok-config =' lines to rewrite")
    write_private(path, text)
    return path


def tls_client(client, port, threads, seconds=None, count=None, cafile=None):
    cmd = [client, "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    if seconds is not None:
        cmd += ["--seconds", str(seconds)]
    if count is not None:
        cmd += ["--count", str(count)]
    if cafile is not None:
        cmd += ["--cafile", cafile]
    return cmd


def parse_tls(cmd, out):
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "handshakes_per_sec" not in fields or "handshakes" not in fields:
        raise RunFailed(f"no handshakes_per_sec in output of:\n  {fmt_cmd(cmd)}\n{out}")
    return float(fields["handshakes_per_sec"]), int(fields["handshakes"])


def tls_fixtures(args, tmp, env, build, errors):
    """Keys and nginx sides per key name: {name: {side: (cert, key file, env, env_extra)}}.
    A ctok side whose fixtures fail is left out and its error recorded in errors."""
    openssl = args.openssl
    tool = os.path.join(build, "ctok")
    base = {k: v for k, v in env.items()
            if not k.startswith(("OPENSSL_", "CTOK_")) and k != "SOFTHSM2_CONF"}
    fixtures, config = make_fixtures(tmp, openssl, base)  # the PEM keys and their soft tokens
    sides = {name: {"file": (fx["cert"], fx["key"], base, {})} for name, fx in fixtures.items()}
    if args.file_only:
        return sides

    # (a) soft: the same PEM key in a PKCS#12 soft token
    try:
        cnf = ctok_cnf(build, config, os.path.join(tmp, "ctok-soft.cnf"))
        senv = dict(base, OPENSSL_CONF=cnf)
        for name, fx in fixtures.items():
            ref = os.path.join(tmp, f"soft-{name}.ref.pem")
            write_private(ref, run([tool, "--config", config, "ref", KEYS[name]["token"],
                                    KEYS[name]["alias"]], base))
            sides[name]["soft"] = (fx["cert"], ref, senv, {"OPENSSL_CONF": cnf})
    except RunFailed as e:
        errors.append(f"soft token fixtures: {e}")

    # (c) hsm: the same PEM keys imported into a SoftHSM token
    try:
        henv, henv_extra, _ = hsm_fixtures(args, tmp, base, build, fixtures)
        hconfig = henv["CTOK_CONFIG"]
        cnf = ctok_cnf(build, hconfig, os.path.join(tmp, "ctok-hsm.cnf"))
        nenv = dict(base, OPENSSL_CONF=cnf, SOFTHSM2_CONF=henv["SOFTHSM2_CONF"])
        for name, fx in fixtures.items():
            ref = os.path.join(tmp, f"hsm-{name}.ref.pem")
            write_private(ref, run([tool, "--config", hconfig, "ref", HSM_TOKEN_NAME, name],
                                   henv, henv_extra))
            sides[name]["hsm"] = (fx["cert"], ref, nenv,
                                  {"OPENSSL_CONF": cnf, "SOFTHSM2_CONF": henv["SOFTHSM2_CONF"]})
    except RunFailed as e:
        errors.append(f"SoftHSM fixtures: {e}")
    return sides


def tls_section(args, tmp, env, build, client, results):
    tmp = os.path.join(tmp, "tls")
    os.mkdir(tmp, 0o700)
    errors = results["tls_errors"]
    nginx = args.nginx or shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if nginx is None or not os.access(nginx, os.X_OK):
        raise RunFailed("nginx not found (Debian: apt-get install nginx)")
    key_sides = tls_fixtures(args, tmp, env, build, errors)
    seconds, threads = args.tls_seconds, args.tls_threads

    for name, sides in key_sides.items():
        servers = {}
        try:
            for side in TLS_SIDES:
                if side not in sides:
                    continue
                cert, key, nenv, extra = sides[side]
                srv = Nginx(nginx, os.path.join(tmp, f"nginx-{name}-{side}"), cert, key, nenv,
                            extra)
                try:
                    srv.start()
                    # sanity and warm-up, not measured: the chain verifies against the
                    # certificate and the server signs with the certificate's key
                    cmd = tls_client(client, srv.port, 1, count=20, cafile=cert)
                    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL)
                    if p.returncode != 0:
                        raise srv.failure(f"handshakes with nginx ({side} key) failed: "
                                          f"{fmt_cmd(cmd)}\n{p.stderr.decode(errors='replace')}")
                    if side != "file" and "ctok.so" not in srv.maps():
                        raise srv.failure(f"the nginx worker ({side} key) has no ctok.so mapped")
                    servers[side] = srv
                except RunFailed as e:
                    srv.stop()
                    if side == "file":
                        raise
                    errors.append(f"{KEYS[name]['desc']} {side}: {e}")

            runs = {s: [] for s in servers}
            cpu = {s: [] for s in servers}
            for r in range(args.tls_rounds):
                for side, srv in servers.items():
                    cmd = tls_client(client, srv.port, threads, seconds=seconds)
                    c0 = proc_cpu_s(srv.worker)
                    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       stdin=subprocess.DEVNULL)
                    c1 = proc_cpu_s(srv.worker)
                    srv.check_worker()
                    if p.returncode != 0:
                        raise srv.failure(f"command failed (exit {p.returncode}):\n  "
                                          f"{fmt_cmd(cmd)}\n"
                                          + p.stderr.decode(errors="replace").rstrip())
                    hs_s, n = parse_tls(cmd, p.stdout.decode(errors="replace"))
                    us = 1e6 * (c1 - c0) / n
                    runs[side].append(hs_s)
                    cpu[side].append(us)
                    if args.verbose:
                        print(f"  tls {KEYS[name]['desc']:8} round {r + 1} {side:4} "
                              f"{hs_s:9.1f} hs/s {us:8.1f} server cpu-us/hs", flush=True)
                line = "  ".join(f"{s} {runs[s][-1]:.0f} hs/s {cpu[s][-1]:.0f} cpu-us/hs"
                                 for s in servers)
                progress("tls", f"{KEYS[name]['desc']} round {r + 1}/{args.tls_rounds}  {line}")
        finally:
            for srv in servers.values():
                srv.stop()

        file_hs = statistics.median(runs["file"])
        file_cpu = statistics.median(cpu["file"])
        if len(servers) == 1:
            results["tls"].append({"key": KEYS[name]["desc"], "side": "file",
                                   "runs": runs, "cpu_us_per_hs": cpu,
                                   "file_hs_per_sec": file_hs, "file_cpu_us": file_cpu})
        for side in servers:
            if side == "file":
                continue
            row = {"key": KEYS[name]["desc"], "side": side,
                   "compared_with": "the same key as a PEM file",
                   "target": TLS_TARGETS[side],
                   "runs": {"file": runs["file"], "ctok": runs[side]},
                   "cpu_us_per_hs": {"file": cpu["file"], "ctok": cpu[side]},
                   "file_hs_per_sec": file_hs, "ctok_hs_per_sec": statistics.median(runs[side]),
                   "file_cpu_us": file_cpu, "ctok_cpu_us": statistics.median(cpu[side])}
            row["hs_ratio"] = row["ctok_hs_per_sec"] / file_hs
            row["cpu_ratio"] = row["ctok_cpu_us"] / file_cpu
            pairs = [c / f for f, c in zip(cpu["file"], cpu[side])]
            row["cpu_pair_ratio_min"], row["cpu_pair_ratio_max"] = min(pairs), max(pairs)
            row["cpu_pair_ratio_median"] = statistics.median(pairs)
            results["tls"].append(row)


def tls_report(args, results):
    print(f"\nnginx TLS 1.3 full handshakes: one worker process (run as root), no session "
          f"tickets/cache;\nctok-bench-tls, {args.tls_threads} client threads, a new connection "
          f"and one GET per handshake;\nmedians of {args.tls_rounds} interleaved rounds x "
          f"{args.tls_seconds:g} s (file, soft, hsm, file, ...);\nhs/s = client handshakes per "
          f"second; cpu us = nginx worker utime+stime per handshake;\nratios = ctok/file; target "
          f"on the cpu ratio; pairs = range of per-round cpu ratios (noise);\nfile = nginx "
          f"without ctok, key in a PEM file; ctok = nginx with ctok.cnf and a `ctok ref` "
          f"key file;\nsoft and hsm hold the very same key as the PEM file.\n")
    hdr = f"{'path':24} {'key':8} {'file hs/s':>9} {'ctok hs/s':>9} {'hs':>5} " \
          f"{'file cpu us':>11} {'ctok cpu us':>11} {'cpu':>6} {'target':15} {'pairs':>11}"
    rule(hdr)
    for r in results["tls"]:
        if r["side"] == "file":
            print(f"{'PEM file only':24} {r['key']:8} {r['file_hs_per_sec']:9.1f} {'':9} "
                  f"{'':5} {r['file_cpu_us']:11.1f}")
            continue
        tgt = verdict(r["cpu_ratio"], r["target"], False) if r["target"] else "n/a"
        print(f"{TLS_SIDE_DESC[r['side']]:24} {r['key']:8} {r['file_hs_per_sec']:9.1f} "
              f"{r['ctok_hs_per_sec']:9.1f} {r['hs_ratio']:5.2f} {r['file_cpu_us']:11.1f} "
              f"{r['ctok_cpu_us']:11.1f} {r['cpu_ratio']:6.3f} {tgt:15} "
              f"{r['cpu_pair_ratio_min']:5.2f}-{r['cpu_pair_ratio_max']:<5.2f}")


# ---- markdown (bench/results.md, pasted into README.md by bench/paste_results.py) -------------

def first_line(cmd):
    """The first output line of cmd, or 'unknown' (version probes must not fail a run)."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=10)
        lines = p.stdout.decode(errors="replace").strip().splitlines()
        return lines[0].strip() if p.returncode == 0 and lines else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def load_average():
    """The 1-minute load average (/proc/loadavg), or None."""
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_busy_s():
    """CPU seconds all CPUs spent busy since boot (/proc/stat: user, nice, system, irq,
    softirq; not idle, iowait or steal), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:8]]
        return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def own_cpu_s():
    """CPU seconds this run used: itself and every child it has waited for (nginx workers,
    emulators and benchmark programs included)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class IdleProbe:
    """Was the machine otherwise idle? The load average at the start and the end of the run,
    and the share of all CPUs that processes other than this run kept busy in between."""

    def __init__(self):
        self.load_start, self.busy0, self.own0 = load_average(), cpu_busy_s(), own_cpu_s()
        self.t0 = time.monotonic()

    def finish(self):
        wall = time.monotonic() - self.t0
        busy1, own1 = cpu_busy_s(), own_cpu_s()
        other = None
        if self.busy0 is not None and busy1 is not None and wall > 0:
            other = max(0.0, (busy1 - self.busy0) - (own1 - self.own0)) / (
                wall * (os.cpu_count() or 1))
        return {"load_start": self.load_start, "load_end": load_average(),
                "other_cpu_share": other}


def machine_info(openssl, idle=None):
    """What a reader needs to weigh the figures: date, CPUs, the versions measured, and
    whether the machine was otherwise idle (IdleProbe.finish())."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                       cpu)
    except OSError:
        pass
    info = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "nproc": os.cpu_count(), "cpu": cpu, "kernel": os.uname().release,
            "openssl": first_line([openssl, "version"]),
            "softhsm": first_line(["softhsm2-util", "--version"]),
            "nginx": first_line(["nginx", "-v"])}
    info.update(idle or {})
    return info


def idle_text(m):
    """How busy the machine was apart from the run, for the machine line."""
    def load(x):
        return "?" if x is None else f"{x:.2f}"
    if "load_start" not in m:
        return ""
    text = f" Load average (1 min) {load(m['load_start'])} at the start, " \
           f"{load(m.get('load_end'))} at the end (the run's own load included)"
    share = m.get("other_cpu_share")
    if share is None:
        return text + "."
    verdict_ = "otherwise idle" if share <= IDLE_CPU_SHARE else "**not idle**"
    return text + f"; other processes kept {100 * share:.0f} % of the CPUs busy during " \
                  f"the run: {verdict_}."


def md_verdict(ratio, target, higher_is_better):
    sign = "≥" if higher_is_better else "≤"
    return f"{sign} {target:.2f}", "**MISSED**" if missed(ratio, target, higher_is_better) else "ok"


def md_section(caption, header, rows):
    """A caption and its table (rows: lists of cells), or nothing when there are no rows."""
    if not rows:
        return []
    return [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(str(c) for c in r) + " |" for r in rows), ""]


CLOUD_HEADER = ["key", "signature", "threads", "ctok sig/s", "bare sig/s", "ctok p50", "bare p50",
                "ctok p99", "bare p99", "added p50", "spread", "target", ""]


def cloud_md_rows(rows):
    return [[r["key"], r["alg"], r["threads"], f"{r['ctok_ops']:.0f}", f"{r['bare_ops']:.0f}",
             f"{r['ctok_p50_us']:.0f}", f"{r['bare_p50_us']:.0f}", f"{r['ctok_p99_us']:.0f}",
             f"{r['bare_p99_us']:.0f}", f"{r['added_p50_us']:.0f}",
             fmt_us_span(r["added_p50_spread"]), f"≤ {CLOUD_ADDED_P50_US:.0f}",
             "**MISSED**" if r["added_p50_us"] > CLOUD_ADDED_P50_US else "ok"]
            for r in rows if "added_p50_us" in r]


def markdown_report(args, results, machine):
    """The tables of a run as markdown, with its date and machine and a MISSED mark on every
    ratio that misses its target (../shared/BENCHMARKS.md). A pure function of its inputs."""
    m = machine
    out = [f"Measured {m['date']} by `make bench` on {m['nproc']} × {m['cpu']} "
           f"(Linux {m['kernel']}), {m['openssl']}, SoftHSM {m['softhsm']}.{idle_text(m)} "
           f"Medians of interleaved runs; spread = the lowest and highest of the per-round "
           f"paired ratios; ratios, not absolute figures, carry across machines.", ""]
    out += md_section(
        f"Soft token signing vs OpenSSL's default provider with the same key in a PEM file "
        f"(ops/s; {args.rounds} rounds × {args.seconds:g} s, a fresh context per signature):",
        ["key", "signature", "threads", "ctok", "PEM file", "ratio", "spread", "target", ""],
        [[r["key"], r["alg"], r["threads"], f"{r['ctok']:.0f}", f"{r['file']:.0f}",
          f"{r['ratio']:.2f}", fmt_span((r["pair_ratio_min"], r["pair_ratio_max"])),
          *md_verdict(r["ratio"], THROUGHPUT_TARGET, True)]
         for r in results.get("throughput", []) if "ratio" in r])
    out += md_section(
        f"SoftHSM signing vs bare `C_Sign` on the same key, the faster of the token object and "
        f"a session copy (ops/s; {results.get('hsm_rounds')} rounds × "
        f"{results.get('hsm_seconds')} s); ctok with a fresh context per signature, and with "
        f"one context per thread (reuse). ctok runs and limit runs: each side's own rounds, "
        f"lowest and highest over its median (ctok's spread should be no wider than the bare "
        f"loop's):",
        ["key", "signature", "threads", "ctok", "limit", "ratio", "spread", "ctok runs",
         "limit runs", "target", "", "reuse ratio", ""],
        [[r["key"], r["alg"], r["threads"], f"{r['ctok']:.0f}",
          f"{r['limit']:.0f} ({r['limit_side']})", f"{r['ratio']:.2f}",
          fmt_span((r["pair_ratio_min"], r["pair_ratio_max"])), fmt_span(r["ctok_spread"]),
          fmt_span(r["limit_spread"]), *md_verdict(r["ratio"], HSM_TARGET, True),
          f"{r['ratio_reuse']:.2f}", md_verdict(r["ratio_reuse"], HSM_TARGET, True)[1]]
         for r in results.get("hsm", []) if "ratio" in r])
    out += md_section(
        f"One-shot `openssl pkeyutl -sign`, whole process wall time (ms; medians of "
        f"{args.startup_runs} interleaved rounds of every process):",
        ["comparison", "key", "ctok", "base", "ratio", "spread", "target", ""],
        [[r["what"], r["key"], f"{r['ctok_ms']:.1f}", f"{r['base_ms']:.1f}",
          f"{r['ratio']:.2f}", fmt_span(r["spread"]),
          *(md_verdict(r["ratio"], r["target"], False) if r["target"] else ("(shown)", ""))]
         for r in results.get("startup", []) if "ratio" in r])
    out += md_section(
        "Peak RSS of the same one-shot processes (KiB, medians; GNU time's %M):",
        ["comparison", "key", "ctok", "base", "ratio", "spread", "target", ""],
        [[r["what"], r["key"], f"{r['ctok_kb']:.0f}", f"{r['base_kb']:.0f}",
          f"{r['ratio']:.2f}", fmt_span(r["spread"]),
          *md_verdict(r["ratio"], r["target"], False)]
         for r in results.get("rss", [])])
    mem = results.get("memory", [])
    out += md_section(
        f"Resident set over a long run (KiB; ctok-bench-sign, one thread, a fresh context per "
        f"signature, {mem[0]['count'] if mem else 0:,} signatures):" if mem else "",
        ["key", "side", f"after {mem[0]['at'] if mem else 0:,}",
         f"after {mem[0]['count'] if mem else 0:,}", "growth", "target", ""],
        [[r["key"], MEMORY_SIDE_DESC[r["side"]], r["first_kb"], r["last_kb"],
          f"{100 * r['growth']:+.1f} %", f"± {100 * FLAT_TARGET:.0f} %",
          "**MISSED**" if flat_missed(r["growth"]) else "ok"] for r in mem])
    out += md_section(
        f"nginx TLS 1.3 full handshakes, server CPU per handshake (µs; "
        f"{results.get('tls_rounds')} rounds × {results.get('tls_seconds')} s, {m['nginx']}; "
        f"the same key in the PEM file, the soft token and SoftHSM):",
        ["key", "ctok key", "ctok", "PEM file", "ratio", "spread", "target", ""],
        [[r["key"], "soft token" if r["side"] == "soft" else "SoftHSM",
          f"{r['ctok_cpu_us']:.0f}", f"{r['file_cpu_us']:.0f}", f"{r['cpu_ratio']:.2f}",
          fmt_span((r["cpu_pair_ratio_min"], r["cpu_pair_ratio_max"])),
          *md_verdict(r["cpu_ratio"], r["target"], False)]
         for r in results.get("tls", []) if r.get("side") != "file"])
    out += [f"Left out: {e.splitlines()[0]}" for e in results.get("tls_errors", [])]
    if results.get("tls_errors"):
        out.append("")
    out += md_section(
        f"AWS KMS signing through the KMS emulator (tests/kms_emulator.py, Python, on this "
        f"machine): ctok with a `ctok:` URI vs a bare libcurl loop sending the same SigV4-signed "
        f"Sign request over a kept-alive connection per thread (sig/s and latency per signature "
        f"in µs; {results.get('kms_rounds')} rounds × {results.get('kms_seconds')} s). The "
        f"emulator dominates latency, so what ctok adds is ctok p50 − bare p50 (spread: the "
        f"range of the per-round differences):",
        CLOUD_HEADER, cloud_md_rows(results.get("kms", [])))
    out += md_section(
        f"Azure Key Vault signing through the Key Vault emulator (tests/akv_emulator.py, Python, "
        f"on this machine): ctok with a `ctok:` URI vs a bare libcurl loop sending the same "
        f"sign request with a bearer token over a kept-alive connection per thread (sig/s and "
        f"latency per signature in µs; {results.get('akv_rounds')} rounds × "
        f"{results.get('akv_seconds')} s). The emulator dominates latency, so what ctok adds "
        f"is ctok p50 − bare p50 (spread: the range of the per-round differences):",
        CLOUD_HEADER, cloud_md_rows(results.get("akv", [])))
    return "\n".join(out).rstrip() + "\n"


SECTIONS = ["soft", "hsm", "oneshot", "memory", "tls", "kms", "akv"]


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
    do_soft, do_hsm, do_oneshot, do_memory, do_tls, do_kms, do_akv = (
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
    p11bench = find_bench_bin(build, args.p11_bench_bin, "ctok-bench-p11") if do_hsm else None
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
                 lambda: memory_section(args, fixtures, env, build, bench, results))):
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
