"""bench/run.py's p11mod section: ctok-p11.so as a pass-through PKCS#11 module (issue 14: for a
PKCS#11 token, not slower than the module underneath by more than 5 %). The same bare
C_SignInit/C_Sign loop (ctok-bench-p11, one session per thread, no OpenSSL in the loop) runs
on build/ctok-p11.so over the ctok pkcs11 token naming a SoftHSM token (p11mod), and on
SoftHSM's own module, on the token object (raw-token) and on per-thread session copies
(raw-copy), on the keys and threads of the hsm section. The three sides share one process
and its threads (ctok-bench-p11 --versus), taking 20 ms slices of wall time in turn: this
VM's speed drifts by 20-30 % over seconds, which separate processes run seconds apart read as
differences of that size, where slices a few ms apart see the same machine (two runs of one
side against itself read 0.995-1.000)."""

import os
import statistics

from benchlib import (HSM_KEYS, HSM_TARGET, HSM_TOKEN_LABEL, HSM_TOKEN_NAME, KEYS, RunFailed,
                      fmt_cmd, fmt_span, progress, rel_span, rule, run, span, verdict)

# in ctok-bench-p11's order: --module's side first, then the --versus sides
SIDES = ("p11mod", "raw-token", "raw-copy")


def parse_sides(cmd, out, env_extra):
    """Each side's ops/s from ctok-bench-p11's side=<k> lines."""
    ops = {}
    for line in out.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "side" in fields and "ops_per_sec" in fields:
            ops[int(fields["side"])] = float(fields["ops_per_sec"])
    if sorted(ops) != list(range(len(SIDES))) or min(ops.values()) <= 0:
        raise RunFailed(f"no ops_per_sec for every side in output of:\n  "
                        f"{fmt_cmd(cmd, env_extra)}\n{out}")
    return {side: ops[k] for k, side in enumerate(SIDES)}


def p11mod_section(args, fixtures, build, p11bench, results):
    env, env_extra, pin = fixtures.hsm()
    module = os.path.join(build, "ctok-p11.so")
    if not os.path.exists(module):
        raise RunFailed(f"{module} not found (build ctok first)")
    for name in HSM_KEYS:
        for alg in KEYS[name]["algs"]:
            for n in args.thread_list:
                raw = f"module={args.softhsm_module},token={HSM_TOKEN_LABEL}"
                # each side gets hsm_seconds of the run's wall time
                cmd = [p11bench, "--module", module, "--token", HSM_TOKEN_NAME, "--pin",
                       f"file:{pin}", "--label", name, "--mech", alg, "--threads", str(n),
                       "--seconds", str(len(SIDES) * args.hsm_seconds), "--versus", raw,
                       "--versus", raw + ",copy=session"]
                runs = {s: [] for s in SIDES}
                for r in range(args.hsm_rounds):
                    for side, ops in parse_sides(cmd, run(cmd, env, env_extra), env_extra).items():
                        runs[side].append(ops)
                    limit = max(runs["raw-token"][-1], runs["raw-copy"][-1])
                    progress("p11mod", f"{KEYS[name]['desc']} {alg} {n} thr  round "
                                       f"{r + 1}/{args.hsm_rounds}  "
                                       + "  ".join(f"{s} {runs[s][-1]:.0f}/s" for s in SIDES)
                                       + f"  p11mod/limit {runs['p11mod'][-1] / limit:.2f}")
                results["p11mod"].append(p11mod_row(KEYS[name]["desc"], alg, n, runs))


def p11mod_row(key, alg, threads, runs):
    """Medians, the limit (the faster raw side), the ratio, and the spreads of one row."""
    row = {"key": key, "alg": alg, "threads": threads, "runs": runs}
    for side in SIDES:
        row[side] = statistics.median(runs[side])
    row["limit_side"] = max(("raw-token", "raw-copy"), key=lambda s: row[s])
    row["limit"] = row[row["limit_side"]]
    # the sides of a round ran in the same seconds, the rounds not: the ratio is the median
    # of the rounds' own ratios, not a ratio of medians taken from different rounds
    pairs = [p / max(t, c) for t, c, p in zip(runs["raw-token"], runs["raw-copy"], runs["p11mod"])]
    row["ratio"] = statistics.median(pairs)
    row["pair_ratio_min"], row["pair_ratio_max"] = span(pairs)
    row["p11mod_spread"] = rel_span(runs["p11mod"])
    row["limit_spread"] = rel_span(runs[row["limit_side"]])
    return row


def p11mod_report(args, results):
    print(f"\nctok-p11.so pass-through: the bare C_SignInit/C_Sign loop (ctok-bench-p11) on "
          f"build/ctok-p11.so over\na ctok pkcs11 token against the same loop on SoftHSM's "
          f"module, same key, on the token object\n(raw-token) and on per-thread session copies "
          f"(raw-copy), the three in one process taking 20 ms slices\nin turn; medians of "
          f"{args.hsm_rounds} rounds x {args.hsm_seconds:g} s a side; limit = the faster raw "
          f"median (marked *); ratio = median of the\nrounds' p11mod/limit (the faster raw "
          f"side of the round); pairs = their range; runs = each side's "
          f"rounds, lowest and highest over its median\n")
    rule(" ".join([f"{'key':8} {'alg':9} {'thr':>3}",
                   *(f"{c:>10}" for c in ("raw-token", "raw-copy", "p11mod")),
                   f"{'ratio':>6} {'target':15}",
                   *(f"{c:>11}" for c in ("pairs", "p11mod runs", "limit runs"))]))
    for r in results["p11mod"]:
        raw = " ".join(f"{r[s]:9.1f}" + ("*" if s == r["limit_side"] else " ")
                       for s in ("raw-token", "raw-copy"))
        print(f"{r['key']:8} {r['alg']:9} {r['threads']:>3} {raw} {r['p11mod']:10.1f} "
              f"{r['ratio']:6.3f} {verdict(r['ratio'], HSM_TARGET, True):15} "
              f"{fmt_span((r['pair_ratio_min'], r['pair_ratio_max'])):>11} "
              f"{fmt_span(r['p11mod_spread']):>11} {fmt_span(r['limit_spread']):>11}")
