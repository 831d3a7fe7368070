"""bench/run.py's markdown (--markdown, make bench: bench/results.md, pasted into README.md by
bench/paste_results.py): the machine (CPU, versions, whether it was otherwise idle during the
run) and every section's table with a MISSED mark on each missed target."""

import os
import resource
import subprocess
import time

from benchlib import (CLK_TCK, CLOUD_ADDED_P50_US, FLAT_TARGET, HSM_TARGET, IDLE_CPU_SHARE,
                      THROUGHPUT_TARGET, fmt_span, missed)
from sect_cloud import fmt_us_span
from sect_oneshot import MEMORY_SIDE_DESC, flat_missed


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
        f"ctok-p11.so as a pass-through module: bare `C_Sign` through it over a ctok pkcs11 "
        f"token vs the same loop on SoftHSM's module, the faster of the token object and a "
        f"session copy, the three sides in one process taking 20 ms slices in turn (ops/s; "
        f"{results.get('hsm_rounds')} rounds × {results.get('hsm_seconds')} s a side; ratio: "
        f"the median of the rounds' own ratios):",
        ["key", "signature", "threads", "ctok-p11.so", "limit", "ratio", "spread",
         "ctok-p11.so runs", "limit runs", "target", ""],
        [[r["key"], r["alg"], r["threads"], f"{r['p11mod']:.0f}",
          f"{r['limit']:.0f} ({r['limit_side']})", f"{r['ratio']:.2f}",
          fmt_span((r["pair_ratio_min"], r["pair_ratio_max"])), fmt_span(r["p11mod_spread"]),
          fmt_span(r["limit_spread"]), *md_verdict(r["ratio"], HSM_TARGET, True)]
         for r in results.get("p11mod", [])])
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
