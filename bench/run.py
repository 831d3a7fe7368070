#!/usr/bin/python3
"""ctok benchmarks (make bench): a ctok soft-token key against the same key in a PEM file.

Builds throwaway keys and soft PKCS#12 tokens in a temp dir, then measures, interleaved
(file, ctok, file, ctok, ...), medians of several rounds (see ../shared/BENCHMARKS.md):

  * sign ops/s with ctok-bench-sign: RSA-2048 PKCS#1 and PSS, ECDSA P-256, 1 and 2 threads;
    target ctok/file >= 0.95;
  * start-up: one-shot `openssl pkeyutl -sign` wall time, ctok URI vs file key (<= 1.2x),
    and ctok loaded but unused vs not loaded (<= 1.05x).

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


def find_bench_bin(build, explicit):
    if explicit:
        return os.path.abspath(explicit)
    for c in (os.path.join(build, "bench", "ctok-bench-sign"),
              os.path.join(build, "ctok-bench-sign")):
        if os.access(c, os.X_OK):
            return c
    sys.exit(f"run.py: ctok-bench-sign not found under {build} (build it: cmake --build {build})")


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


def bench_once(bench, key, alg, threads, seconds, providers, build, env, env_extra):
    cmd = [bench, "--key", key, "--alg", alg, "--threads", str(threads),
           "--seconds", str(seconds)]
    if build is not None:
        cmd += ["--provider-path", build]
    for p in providers:
        cmd += ["--provider", p]
    out = run(cmd, env, env_extra)
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "ops_per_sec" not in fields or "sigs" not in fields:
        raise RunFailed(f"no ops_per_sec in output of:\n  {fmt_cmd(cmd, env_extra)}\n{out}")
    sigs = int(fields["sigs"])
    cpu_us = 1e6 * float(fields.get("cpu_s", "nan")) / sigs if sigs else float("nan")
    return float(fields["ops_per_sec"]), cpu_us


def timed(cmd, env, env_extra):
    t0 = time.perf_counter()
    run(cmd, env, env_extra, capture=False)
    return time.perf_counter() - t0


def verdict(ratio, target, higher_is_better):
    ok = ratio >= target if higher_is_better else ratio <= target
    sign = ">=" if higher_is_better else "<="
    return f"{sign} {target:.2f}  " + ("ok" if ok else "MISSED")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True, help="CMake build dir holding ctok.so")
    ap.add_argument("--bench-bin", help="ctok-bench-sign (default: <build>/bench/ctok-bench-sign)")
    ap.add_argument("--file-only", action="store_true",
                    help="measure only the PEM-file side (no ctok.so needed)")
    ap.add_argument("--seconds", type=float, default=1.5, help="seconds per throughput run")
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds per configuration (>= 3)")
    ap.add_argument("--startup-runs", type=int, default=10, help="one-shot runs per side")
    ap.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    ap.add_argument("--openssl", default=shutil.which("openssl") or "/usr/bin/openssl")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = ap.parse_args()

    build = os.path.abspath(args.build)
    bench = find_bench_bin(build, args.bench_bin)
    module = os.path.join(build, "ctok.so")
    if not args.file_only and not os.path.exists(module):
        sys.exit(f"run.py: {module} not found (build ctok first, or use --file-only)")
    threads = [int(t) for t in args.threads.split(",")]
    if args.rounds < 1 or args.startup_runs < 1:
        sys.exit("run.py: --rounds and --startup-runs must be >= 1")
    openssl = args.openssl

    os.umask(0o077)
    tmp = tempfile.mkdtemp(prefix="ctok-bench-")
    env = dict(os.environ)
    results = {"throughput": [], "startup": []}
    failed = False
    t_start = time.monotonic()
    try:
        fixtures, config = make_fixtures(tmp, openssl, env)
        env["CTOK_CONFIG"] = config
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

        # ---- sign throughput -------------------------------------------------------------
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

        # ---- start-up --------------------------------------------------------------------
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
    except RunFailed as e:
        print(f"run.py: {e}", file=sys.stderr)
        failed = True
    finally:
        if args.keep or failed:
            print(f"run.py: fixtures kept in {tmp} (CTOK_CONFIG={os.path.join(tmp, 'tokens.json')})",
                  file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        return 1

    # ---- report ----------------------------------------------------------------------------
    elapsed = time.monotonic() - t_start
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
    print(f"\n(total {elapsed:.0f} s)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
