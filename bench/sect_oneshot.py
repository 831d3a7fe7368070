"""bench/run.py's oneshot and memory sections: whole-process wall time and peak RSS of one-shot
`openssl pkeyutl -sign` processes, and the resident set of ctok-bench-sign over a long run
(run.py's docstring says what each measures)."""

import os
import re
import statistics
import time

from benchlib import (FLAT_TARGET, IDLE_TARGET, KEYS, RSS_TARGET, STARTUP_HSM_TARGET,
                      STARTUP_OWN_P12_TARGET, RunFailed, ctok_cnf, digest_file, fmt_cmd, fmt_span,
                      hsm_uri, paired, progress, rule, run, span, verdict, write_private)


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
