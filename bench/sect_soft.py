"""bench/run.py's soft and hsm sections: sign ops/s of a key in a ctok soft token against the
same key in a PEM file with OpenSSL's default provider, and of the same key in SoftHSM through
ctok against bare C_SignInit/C_Sign (run.py's docstring says what each measures)."""

import statistics

from benchlib import (HSM_KEYS, HSM_TARGET, HSM_TOKEN_LABEL, KEYS, THROUGHPUT_TARGET, bench_once,
                      check_same_key, digest_file, fmt_span, hsm_uri, paired, parse_ops,
                      progress, rel_span, rule, run, span, verdict)


# ---- soft token ------------------------------------------------------------------------------

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


# ---- SoftHSM ---------------------------------------------------------------------------------

# ctok: a fresh EVP_PKEY_CTX per signature, as a TLS server makes one per handshake;
# ctok-reuse: one initialized context per thread, EVP_PKEY_sign per signature: what the
# provider itself adds, without OpenSSL's per-context setup that raw C_Sign never pays
HSM_SIDES = ["raw-token", "raw-copy", "ctok", "ctok-reuse"]


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
