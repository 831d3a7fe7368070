#!/usr/bin/python3
"""ctok benchmarks (make bench): ctok keys against the limits of the same keys without ctok.

Builds throwaway keys and tokens in a temp dir, then measures, interleaved (A, B, A, B, ...),
medians of several rounds (see ../shared/BENCHMARKS.md):

Soft token (--only soft): a ctok soft-token key against the same key in a PEM file.
  * sign ops/s with ctok-bench-sign: RSA-2048 PKCS#1 and PSS, ECDSA P-256, 1 and 2 threads;
    target ctok/file >= 0.95;
  * start-up: one-shot `openssl pkeyutl -sign` wall time, ctok URI vs file key (<= 1.2x),
    and ctok loaded but unused vs not loaded (<= 1.05x).

SoftHSM (--only hsm): a SoftHSM2 token in the temp dir (SOFTHSM2_CONF), keys made with
`ctok key generate` on a ctok pkcs11 token, so they are what ctok users get.
  * sign ops/s, RSA-2048 PKCS#1 and PSS, ECDSA P-256, 1 and 2 threads: ctok-bench-sign with
    the ctok: URI against ctok-bench-p11 (bare C_SignInit/C_Sign, one session per thread) on
    the token object and on per-thread session copies of the key; the limit is the faster
    of the two raw medians; target ctok/limit >= 0.95.

Exits non-zero when a run fails; a missed target is printed as MISSED, not an error.
Standard library only.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

THROUGHPUT_TARGET = 0.95
STARTUP_TARGET = 1.2
IDLE_TARGET = 1.05
HSM_TARGET = 0.95

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_TOKEN_LABEL = "bench"  # the SoftHSM token label
HSM_TOKEN_NAME = "hsm"  # the ctok token name
HSM_USER_PIN = "1234"
HSM_SO_PIN = "5678"
# key name -> ctok key spec; the alias is the key name (CKA_LABEL on the token)
HSM_KEYS = {"rsa": "rsa:2048", "ec": "ec:P-256"}
HSM_SIDES = ["raw-token", "raw-copy", "ctok"]

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
        fixtures[name] = {"key": key, "pub": pub, "cert": cert, "p12": p12,
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


def bench_once(bench, key, alg, threads, seconds, providers, build, env, env_extra):
    cmd = [bench, "--key", key, "--alg", alg, "--threads", str(threads),
           "--seconds", str(seconds)]
    if build is not None:
        cmd += ["--provider-path", build]
    for p in providers:
        cmd += ["--provider", p]
    return parse_ops(cmd, run(cmd, env, env_extra), env_extra)


def timed(cmd, env, env_extra):
    t0 = time.perf_counter()
    run(cmd, env, env_extra, capture=False)
    return time.perf_counter() - t0


def verdict(ratio, target, higher_is_better):
    ok = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    return f"{sign} {target:.2f}  " + ("ok" if ok else "MISSED")


# ---- soft token ------------------------------------------------------------------------------

def soft_section(args, tmp, env, build, bench, results):
    openssl = args.openssl
    threads = args.thread_list
    fixtures, config = make_fixtures(tmp, openssl, env)
    env = dict(env, CTOK_CONFIG=config)
    env_extra = {"CTOK_CONFIG": config}
    ctok_prov = ["-provider-path", build, "-provider", "ctok", "-provider", "default"]
    dgst = os.path.join(tmp, "dgst.bin")
    with open(dgst, "wb") as f:
        f.write(bytes(range(32)))

    sides = ["file"] if args.file_only else ["file", "ctok"]

    # Sanity: ctok signs through the CLI and the signature verifies with the file's
    # public key, so both sides below sign with the same key.
    if not args.file_only:
        for name, fx in fixtures.items():
            sig = os.path.join(tmp, f"{name}.sig")
            run([openssl, "pkeyutl", *ctok_prov, "-sign", "-in", dgst, "-inkey", fx["uri"],
                 "-pkeyopt", "digest:sha256", "-out", sig], env, env_extra)
            run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", fx["pub"], "-in", dgst,
                 "-sigfile", sig, "-pkeyopt", "digest:sha256"], env, env_extra)

    # ---- sign throughput -----------------------------------------------------------------
    for name, fx in fixtures.items():
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
                row = {"key": KEYS[name]["desc"], "alg": alg, "threads": n,
                       "runs": runs, "cpu_us_per_sig": cpu,
                       "file": statistics.median(runs["file"])}
                if "ctok" in runs:
                    row["ctok"] = statistics.median(runs["ctok"])
                    row["ratio"] = row["ctok"] / row["file"]
                    pairs = [c / f for f, c in zip(runs["file"], runs["ctok"])]
                    row["pair_ratio_min"], row["pair_ratio_max"] = min(pairs), max(pairs)
                    row["cpu_ratio"] = (statistics.median(cpu["file"])
                                        / statistics.median(cpu["ctok"]))
                results["throughput"].append(row)

    # ---- start-up ------------------------------------------------------------------------
    def pkeyutl(inkey, prov):
        return [openssl, "pkeyutl", *prov, "-sign", "-in", dgst, "-inkey", inkey,
                "-pkeyopt", "digest:sha256", "-out", os.devnull]

    plain_prov = ["-provider", "default"]
    for name, fx in fixtures.items():
        pairs = [("ctok key vs file key", STARTUP_TARGET,
                  pkeyutl(fx["key"], plain_prov), pkeyutl(fx["uri"], ctok_prov)),
                 ("ctok loaded, file key vs plain", IDLE_TARGET,
                  pkeyutl(fx["key"], plain_prov), pkeyutl(fx["key"], ctok_prov))]
        for what, target, base_cmd, ctok_cmd in pairs:
            if args.file_only:
                cmds = {"base": base_cmd}
            else:
                cmds = {"base": base_cmd, "ctok": ctok_cmd}
            for c in cmds.values():  # warm the page cache; not measured
                timed(c, env, env_extra)
            times = {s: [] for s in cmds}
            for _ in range(args.startup_runs):
                for s, c in cmds.items():
                    times[s].append(timed(c, env, env_extra))
            row = {"key": KEYS[name]["desc"], "what": what, "target": target,
                   "base_ms": 1000 * statistics.median(times["base"])}
            if "ctok" in times:
                row["ctok_ms"] = 1000 * statistics.median(times["ctok"])
                row["ratio"] = row["ctok_ms"] / row["base_ms"]
            results["startup"].append(row)


def soft_report(args, results):
    print(f"\nctok sign throughput: ctok soft token (PKCS#12) vs default provider, same key in a "
          f"PEM file\nmedians of {args.rounds} interleaved rounds x {args.seconds:g} s; "
          f"ratio = median ctok ops/s / median file ops/s (the target);\n"
          f"pairs = range of per-round ctok/file (noise); cpu = file/ctok CPU time per signature\n")
    hdr = f"{'path':24} {'key':8} {'alg':9} {'thr':>3} {'file ops/s':>10} {'ctok ops/s':>10} " \
          f"{'ratio':>6} {'target':15} {'pairs':>11} {'cpu':>5}"
    print(hdr)
    print("-" * len(hdr))
    for r in results["throughput"]:
        line = f"{'soft pkcs12 vs PEM file':24} {r['key']:8} {r['alg']:9} {r['threads']:>3} " \
               f"{r['file']:10.1f}"
        if "ctok" in r:
            line += f" {r['ctok']:10.1f} {r['ratio']:6.3f} " \
                    f"{verdict(r['ratio'], THROUGHPUT_TARGET, True):15} " \
                    f"{r['pair_ratio_min']:5.2f}-{r['pair_ratio_max']:<5.2f} {r['cpu_ratio']:5.2f}"
        print(line)

    print(f"\none-shot `openssl pkeyutl -sign` wall time, medians of {args.startup_runs} "
          f"interleaved runs\n")
    hdr = f"{'comparison':32} {'key':9} {'base ms':>8} {'ctok ms':>8} {'ratio':>6}  target"
    print(hdr)
    print("-" * len(hdr))
    for r in results["startup"]:
        line = f"{r['what']:32} {r['key']:9} {r['base_ms']:8.2f}"
        if "ctok_ms" in r:
            line += f" {r['ctok_ms']:8.2f} {r['ratio']:6.3f}  " \
                    + verdict(r["ratio"], r["target"], False)
        print(line)


# ---- SoftHSM ---------------------------------------------------------------------------------

def hsm_fixtures(args, tmp, env, build):
    """A SoftHSM token in tmp, a ctok pkcs11 token on it, and the keys generated by ctok.
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
    ctok = [tool, "--config", config]
    run([*ctok, "token", "create", "--type", "pkcs11", "--name", HSM_TOKEN_NAME,
         "--library", args.softhsm_module, "--ref-type", "label", "--ref", HSM_TOKEN_LABEL,
         "--auth-file", pin], env, env_extra)
    for alias, spec in HSM_KEYS.items():
        run([*ctok, "key", "generate", HSM_TOKEN_NAME, alias, spec], env, env_extra)
    return env, env_extra, pin


def hsm_section(args, tmp, env, build, bench, p11bench, results):
    env, env_extra, pin = hsm_fixtures(args, tmp, env, build)
    sides = HSM_SIDES[:2] if args.file_only else HSM_SIDES
    seconds = args.hsm_seconds
    for name in HSM_KEYS:
        uri = f"ctok:token={HSM_TOKEN_NAME};object={name};type=private"
        for alg in KEYS[name]["algs"]:
            for n in args.thread_list:
                raw = [p11bench, "--module", args.softhsm_module, "--token", HSM_TOKEN_LABEL,
                       "--pin", f"file:{pin}", "--label", name, "--mech", alg,
                       "--threads", str(n), "--seconds", str(seconds)]
                runs = {s: [] for s in sides}
                cpu = {s: [] for s in sides}
                for r in range(args.hsm_rounds):
                    for side in sides:
                        if side == "ctok":
                            ops, us = bench_once(bench, uri, alg, n, seconds,
                                                 ["ctok", "default"], build, env, env_extra)
                        else:
                            cmd = raw + (["--session-copy"] if side == "raw-copy" else [])
                            ops, us = parse_ops(cmd, run(cmd, env, env_extra), env_extra)
                        runs[side].append(ops)
                        cpu[side].append(us)
                        if args.verbose:
                            print(f"  hsm {alg:9} t={n} round {r + 1} {side:9} {ops:10.1f} "
                                  f"ops/s {us:8.1f} cpu-us/sig", flush=True)
                row = {"key": KEYS[name]["desc"], "alg": alg, "threads": n,
                       "runs": runs, "cpu_us_per_sig": cpu}
                for side in sides:
                    row[side] = statistics.median(runs[side])
                limit_side = max(("raw-token", "raw-copy"), key=lambda s: row[s])
                row["limit_side"] = limit_side
                row["limit"] = row[limit_side]
                if "ctok" in runs:
                    row["ratio"] = row["ctok"] / row["limit"]
                    pairs = [c / max(t, k) for t, k, c in
                             zip(runs["raw-token"], runs["raw-copy"], runs["ctok"])]
                    row["pair_ratio_min"], row["pair_ratio_max"] = min(pairs), max(pairs)
                    row["cpu_ratio"] = (statistics.median(cpu[limit_side])
                                        / statistics.median(cpu["ctok"]))
                results["hsm"].append(row)


def hsm_report(args, results):
    print(f"\nctok sign throughput: ctok pkcs11 token on SoftHSM2 vs bare C_SignInit/C_Sign on the "
          f"same key\n(ctok-bench-p11, one session per thread) on the token object (raw-token) "
          f"and on per-thread\nsession copies (raw-copy); medians of {args.hsm_rounds} "
          f"interleaved rounds x {args.hsm_seconds:g} s;\nlimit = the faster raw median "
          f"(marked *); ratio = median ctok ops/s / limit (the target);\npairs = range of "
          f"per-round ctok/limit (noise); cpu = limit/ctok CPU time per signature\n")
    hdr = f"{'path':24} {'key':8} {'alg':9} {'thr':>3} {'raw-token':>10} {'raw-copy':>10} " \
          f"{'ctok ops/s':>10} {'ratio':>6} {'target':15} {'pairs':>11} {'cpu':>5}"
    print(hdr)
    print("-" * len(hdr))
    for r in results["hsm"]:
        mark = {s: "*" if s == r["limit_side"] else " " for s in ("raw-token", "raw-copy")}
        line = f"{'softhsm vs raw C_Sign':24} {r['key']:8} {r['alg']:9} {r['threads']:>3} " \
               f"{r['raw-token']:9.1f}{mark['raw-token']} {r['raw-copy']:9.1f}{mark['raw-copy']}"
        if "ctok" in r:
            line += f" {r['ctok']:10.1f} {r['ratio']:6.3f} " \
                    f"{verdict(r['ratio'], HSM_TARGET, True):15} " \
                    f"{r['pair_ratio_min']:5.2f}-{r['pair_ratio_max']:<5.2f} {r['cpu_ratio']:5.2f}"
        print(line)


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="CMake build dir holding ctok.so")
    ap.add_argument("--bench-bin", help="ctok-bench-sign (default: <build>/bench/ctok-bench-sign)")
    ap.add_argument("--p11-bench-bin",
                    help="ctok-bench-p11 (default: <build>/bench/ctok-bench-p11)")
    ap.add_argument("--only", choices=["soft", "hsm"],
                    help="run only the soft-token or only the SoftHSM section")
    ap.add_argument("--file-only", action="store_true",
                    help="measure only the side without ctok (no ctok.so needed)")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds per configuration (>= 3)")
    ap.add_argument("--hsm-seconds", type=float,
                    help="seconds per SoftHSM throughput run (default: --seconds)")
    ap.add_argument("--hsm-rounds", type=int, default=3,
                    help="interleaved rounds per SoftHSM configuration (>= 3)")
    ap.add_argument("--softhsm-module", default=SOFTHSM_MODULE, help="the SoftHSM2 module")
    ap.add_argument("--startup-runs", type=int, default=10, help="one-shot runs per side")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--openssl", default=shutil.which("openssl") or "/usr/bin/openssl")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    bench = find_bench_bin(build, args.bench_bin)
    do_soft = args.only in (None, "soft")
    do_hsm = args.only in (None, "hsm")
    p11bench = find_bench_bin(build, args.p11_bench_bin, "ctok-bench-p11") if do_hsm else None
    module = os.path.join(build, "ctok.so")
    if not args.file_only and not os.path.exists(module):
        sys.exit(f"run.py: {module} not found (build ctok first, or use --file-only)")
    args.thread_list = [int(t) for t in args.threads.split(",")]
    if args.rounds < 1 or args.startup_runs < 1 or args.hsm_rounds < 1:
        sys.exit("run.py: --rounds, --hsm-rounds and --startup-runs must be >= 1")
    if args.hsm_seconds is None:
        args.hsm_seconds = args.seconds

    os.umask(0o077)
    tmp = tempfile.mkdtemp(prefix="ctok-bench-")
    env = dict(os.environ)
    # every subprocess sees the bench's own SoftHSM configuration, never the system's
    env["SOFTHSM2_CONF"] = os.path.join(tmp, "softhsm2.conf")
    results = {"throughput": [], "startup": []}
    if do_hsm:
        results.update({"hsm": [], "hsm_rounds": args.hsm_rounds,
                        "hsm_seconds": args.hsm_seconds})
    failed = []
    t_start = time.monotonic()
    try:
        if do_soft:
            try:
                soft_section(args, tmp, env, build, bench, results)
            except RunFailed as e:
                print(f"run.py: soft-token section: {e}", file=sys.stderr)
                failed.append("soft")
        if do_hsm:
            try:
                hsm_section(args, tmp, env, build, bench, p11bench, results)
            except RunFailed as e:
                print(f"run.py: SoftHSM section: {e}", file=sys.stderr)
                failed.append("hsm")
    finally:
        if args.keep or failed:
            print(f"run.py: fixtures kept in {tmp} (CTOK_CONFIG={os.path.join(tmp, 'tokens.json')}"
                  f" or {os.path.join(tmp, 'hsm-tokens.json')}, "
                  f"SOFTHSM2_CONF={env['SOFTHSM2_CONF']})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # ---- report ----------------------------------------------------------------------------
    elapsed = time.monotonic() - t_start
    if do_soft and "soft" not in failed:
        soft_report(args, results)
    if do_hsm and "hsm" not in failed:
        hsm_report(args, results)
    if failed:
        print(f"\nrun.py: FAILED: {', '.join(failed)} section (see the errors above)",
              file=sys.stderr)
    print(f"\n(total {elapsed:.0f} s)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
