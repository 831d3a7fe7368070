"""The README's performance section comes from `make bench` output: bench/run.py writes its
tables as markdown with the run's date and machine and marks every ratio that misses its
target MISSED; bench/paste_results.py puts that file between the README's markers. Tested on
made-up results (the formatter only: a real run belongs on a quiet machine)."""

import argparse
import importlib.util
import subprocess
import sys

import pytest

from ctoktest import REPO


def load(name):
    spec = importlib.util.spec_from_file_location("bench_" + name, REPO / "bench" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run = load("run.py")
paste = load("paste_results.py")

MACHINE = {"date": "2026-11-29 04:00 UTC", "nproc": 2, "cpu": "AMD EPYC", "kernel": "6.1.0",
           "openssl": "OpenSSL 3.0.19", "softhsm": "2.6.1", "nginx": "nginx version: 1.22.1",
           "load_start": 0.12, "load_end": 1.95, "other_cpu_share": 0.01}
ARGS = argparse.Namespace(rounds=5, seconds=1.5, startup_runs=21)


def results():
    return {
        "throughput": [
            {"key": "RSA-2048", "alg": "rsa-pkcs1", "threads": 1, "file": 1000.0,
             "ctok": 990.0, "ratio": 0.99, "pair_ratio_min": 0.97, "pair_ratio_max": 1.02},
            {"key": "P-256", "alg": "ecdsa", "threads": 2, "file": 10000.0, "ctok": 9000.0,
             "ratio": 0.90, "pair_ratio_min": 0.85, "pair_ratio_max": 0.93},
        ],
        "startup": [
            {"key": "P-256", "what": "SoftHSM key vs PEM", "target": run.STARTUP_HSM_TARGET,
             "base_ms": 20.0, "ctok_ms": 31.0, "ratio": 1.55, "spread": (1.4, 1.7)},
            {"key": "P-256", "what": "soft key vs PEM", "target": None,
             "base_ms": 20.0, "ctok_ms": 40.0, "ratio": 2.0, "spread": (1.9, 2.1)},
            {"key": "P-256", "what": "soft key vs own p12", "target": run.STARTUP_OWN_P12_TARGET,
             "base_ms": 39.0, "ctok_ms": 40.0, "ratio": 1.03, "spread": (0.98, 1.08)},
        ],
        "rss": [
            {"key": "P-256", "what": "soft key vs PEM", "target": run.RSS_TARGET,
             "ctok_kb": 7000.0, "base_kb": 6500.0, "ratio": 7000 / 6500, "spread": (1.07, 1.08)},
            {"key": "P-256", "what": "SoftHSM key vs PEM", "target": run.RSS_TARGET,
             "ctok_kb": 14000.0, "base_kb": 6500.0, "ratio": 14000 / 6500,
             "spread": (2.1, 2.2)},
        ],
        "memory": [
            {"key": "P-256", "side": "soft", "count": 100000, "at": 1000, "first_kb": 10000,
             "last_kb": 10400, "growth": 0.04},
            {"key": "P-256", "side": "hsm", "count": 100000, "at": 1000, "first_kb": 10000,
             "last_kb": 10600, "growth": 0.06},
        ],
        "hsm": [
            {"key": "P-256", "alg": "ecdsa", "threads": 1, "ctok": 930.0, "limit": 1000.0,
             "limit_side": "raw-copy", "ratio": 0.93, "ratio_reuse": 0.99,
             "pair_ratio_min": 0.77, "pair_ratio_max": 0.95, "ctok_spread": (0.8, 1.1),
             "limit_spread": (0.97, 1.02)},
        ],
        "hsm_rounds": 3, "hsm_seconds": 1.5,
        "tls": [
            {"key": "P-256", "side": "soft", "target": run.TLS_CPU_TARGET, "ctok_cpu_us": 100.0,
             "file_cpu_us": 100.0, "cpu_ratio": 1.0, "cpu_pair_ratio_min": 0.9,
             "cpu_pair_ratio_max": 1.1},
            {"key": "P-256", "side": "hsm", "target": run.TLS_HSM_CPU_TARGET,
             "ctok_cpu_us": 300.0, "file_cpu_us": 100.0, "cpu_ratio": 3.0,
             "cpu_pair_ratio_min": 2.9, "cpu_pair_ratio_max": 3.2},
        ],
        "tls_rounds": 3, "tls_seconds": 3.0, "tls_errors": [],
        "kms": [
            {"key": "P-256", "alg": "ECDSA_SHA_256", "threads": 1, "ctok_ops": 900.0,
             "bare_ops": 1000.0, "ctok_p50_us": 1080.0, "bare_p50_us": 1000.0,
             "ctok_p99_us": 3000.0, "bare_p99_us": 2500.0, "added_p50_us": 80.0,
             "added_p50_spread": (-20.0, 140.0)},
            {"key": "P-256", "alg": "ECDSA_SHA_256", "threads": 4, "ctok_ops": 1500.0,
             "bare_ops": 2000.0, "ctok_p50_us": 2150.0, "bare_p50_us": 2000.0,
             "ctok_p99_us": 9000.0, "bare_p99_us": 8000.0, "added_p50_us": 150.0,
             "added_p50_spread": (100.0, 200.0)},
        ],
        "kms_rounds": 5, "kms_seconds": 1.0,
        "akv": [
            {"key": "RSA-2048", "alg": "RS256", "threads": 1, "ctok_ops": 400.0,
             "bare_ops": 420.0, "ctok_p50_us": 2100.0, "bare_p50_us": 2000.0,
             "ctok_p99_us": 5000.0, "bare_p99_us": 4000.0, "added_p50_us": 100.0,
             "added_p50_spread": (90.0, 110.0)},
            {"key": "RSA-2048", "alg": "RS256", "threads": 4, "ctok_ops": 500.0,
             "bare_ops": 600.0, "ctok_p50_us": 7101.0, "bare_p50_us": 7000.0,
             "ctok_p99_us": 9000.0, "bare_p99_us": 8000.0, "added_p50_us": 101.0,
             "added_p50_spread": (95.0, 120.0)},
            {"key": "P-256", "alg": "ES256", "threads": 1, "bare_ops": 700.0,
             "bare_p50_us": 1400.0, "bare_p99_us": 3000.0},  # --file-only: no ctok side
        ],
        "akv_rounds": 3, "akv_seconds": 2.0,
    }


def rows(md):
    return [[c.strip() for c in l.strip("|").split("|")] for l in md.splitlines()
            if l.startswith("| ") and not l.startswith("| key") and
            not l.startswith("| comparison")]


def test_markdown_names_the_date_and_the_machine():
    md = run.markdown_report(ARGS, results(), MACHINE)
    first = md.splitlines()[0]
    for what in ("2026-11-29 04:00 UTC", "2 × AMD EPYC", "Linux 6.1.0", "OpenSSL 3.0.19",
                 "SoftHSM 2.6.1", "0.12 at the start", "1.95 at the end", "otherwise idle"):
        assert what in first, first


def test_the_machine_line_says_when_the_machine_was_not_idle():
    busy = dict(MACHINE, other_cpu_share=0.4)
    first = run.markdown_report(ARGS, results(), busy).splitlines()[0]
    assert "40 % of the CPUs" in first and "**not idle**" in first, first
    assert "otherwise idle" not in first


def test_every_missed_target_is_marked_missed_and_only_those():
    md = run.markdown_report(ARGS, results(), MACHINE)
    by_first = {(r[0], r[1], r[2]): r for r in rows(md)}
    soft = by_first[("RSA-2048", "rsa-pkcs1", "1")]
    assert soft[5:] == ["0.99", "0.97–1.02", "≥ 0.95", "ok"], soft
    assert by_first[("P-256", "ecdsa", "2")][-1] == "**MISSED**"  # 0.90 < 0.95
    hsm = by_first[("P-256", "ecdsa", "1")]
    # ratio, paired spread, ctok's own spread, the bare loop's own spread, target
    assert hsm[5:11] == ["0.93", "0.77–0.95", "0.80–1.10", "0.97–1.02", "≥ 0.95",
                         "**MISSED**"], hsm
    assert hsm[-2:] == ["0.99", "ok"], hsm
    startup = by_first[("SoftHSM key vs PEM", "P-256", "31.0")]
    assert startup[4:] == ["1.55", "1.40–1.70", "≤ %.2f" % run.STARTUP_HSM_TARGET,
                           "**MISSED**"], startup
    shown = by_first[("soft key vs PEM", "P-256", "40.0")]
    assert shown[-2:] == ["(shown)", ""], shown  # no target: never MISSED
    own = by_first[("soft key vs own p12", "P-256", "40.0")]
    assert own[-2:] == ["≤ 1.05", "ok"], own
    assert by_first[("soft key vs PEM", "P-256", "7000")][-2:] == ["≤ 1.10", "ok"]
    assert by_first[("SoftHSM key vs PEM", "P-256", "14000")][-1] == "**MISSED**"
    flat_ok = by_first[("P-256", "soft token via ctok", "10000")]
    assert flat_ok[3:] == ["10400", "+4.0 %", "± 5 %", "ok"], flat_ok
    assert by_first[("P-256", "SoftHSM via ctok", "10000")][-1] == "**MISSED**"  # +6 %
    soft_tls = by_first[("P-256", "soft token", "100")]
    assert soft_tls[5:] == ["0.90–1.10", "≤ 1.05", "ok"], soft_tls
    hsm_tls = by_first[("P-256", "SoftHSM", "300")]
    assert hsm_tls[-2:] == ["≤ 1.10", "**MISSED**"], hsm_tls  # the same key: a target
    kms1, kms4 = by_first[("P-256", "ECDSA_SHA_256", "1")], by_first[("P-256", "ECDSA_SHA_256",
                                                                    "4")]
    assert kms1[-4:] == ["80", "-20 to 140", "≤ 100", "ok"], kms1  # within 100 µs
    assert kms4[-4:] == ["150", "100 to 200", "≤ 100", "**MISSED**"], kms4
    assert kms1[3:9] == ["900", "1000", "1080", "1000", "3000", "2500"], kms1
    akv1, akv4 = by_first[("RSA-2048", "RS256", "1")], by_first[("RSA-2048", "RS256", "4")]
    assert akv1[-4:] == ["100", "90 to 110", "≤ 100", "ok"], akv1  # on the target: not missed
    assert akv4[-4:] == ["101", "95 to 120", "≤ 100", "**MISSED**"], akv4
    assert akv1[3:9] == ["400", "420", "2100", "2000", "5000", "4000"], akv1
    assert ("P-256", "ES256", "1") not in by_first  # a row without a ctok side is left out
    assert md.count("MISSED") == 8


def test_every_table_has_a_spread_column():
    md = run.markdown_report(ARGS, results(), MACHINE)
    headers = [l for l in md.splitlines() if l.startswith("| key") or
               l.startswith("| comparison")]
    assert len(headers) == 8, headers  # soft, hsm, one-shot, RSS, memory, TLS, KMS, Key Vault
    for h in headers:
        assert "| spread |" in h or "| growth |" in h, h


def test_spreads_are_paired_per_round_and_relative_to_the_median():
    assert run.paired([100.0, 200.0], [90.0, 220.0]) == [0.9, 1.1]
    assert run.span([3, 1, 2]) == (1, 3)
    assert run.rel_span([90.0, 100.0, 110.0]) == (0.9, 1.1)
    assert not run.flat_missed(0.05) and not run.flat_missed(-0.05)
    assert run.flat_missed(0.051) and run.flat_missed(-0.051)


def test_the_kms_table_says_how_the_added_latency_is_measured():
    md = run.markdown_report(ARGS, results(), MACHINE)
    caption = next(l for l in md.splitlines() if l.startswith("AWS KMS signing"))
    assert "ctok p50 − bare p50" in caption and "5 rounds × 1.0 s" in caption, caption


def test_the_key_vault_table_has_its_own_caption_after_the_kms_table():
    md = run.markdown_report(ARGS, results(), MACHINE)
    lines = md.splitlines()
    kms = next(i for i, l in enumerate(lines) if l.startswith("AWS KMS signing"))
    akv = next(i for i, l in enumerate(lines) if l.startswith("Azure Key Vault signing"))
    assert kms < akv, "the Key Vault table comes after the KMS table"
    caption = lines[akv]
    assert "tests/akv_emulator.py" in caption and "bearer token" in caption, caption
    assert "ctok p50 − bare p50" in caption and "3 rounds × 2.0 s" in caption, caption
    assert lines[akv + 2].startswith("| key | signature | threads | ctok sig/s"), lines[akv + 2]
    # the Key Vault rows sit under the Key Vault caption, not the KMS one
    akv_rows = [l for l in lines[akv:] if l.startswith("| RSA-2048 | RS256")]
    assert len(akv_rows) == 2, md


def test_no_key_vault_table_without_key_vault_rows():
    r = results()
    r["akv"] = []
    md = run.markdown_report(ARGS, r, MACHINE)
    assert "Azure Key Vault" not in md and "AWS KMS signing" in md


def test_a_ratio_exactly_on_its_target_is_not_missed():
    assert not run.missed(0.95, 0.95, True) and not run.missed(1.05, 1.05, False)
    assert run.missed(0.949, 0.95, True) and run.missed(1.051, 1.05, False)


README = "# x\n\n## Performance\n\n<!-- bench-results:begin -->\nold\n" \
         "<!-- bench-results:end -->\n\n## Layout\n"


def test_paste_replaces_only_what_is_between_the_markers(tmp_path):
    md = run.markdown_report(ARGS, results(), MACHINE)
    res, readme = tmp_path / "results.md", tmp_path / "README.md"
    res.write_text(md)
    readme.write_text(README)
    for _ in range(2):  # idempotent
        p = subprocess.run([sys.executable, str(REPO / "bench" / "paste_results.py"), str(res),
                            str(readme)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        text = readme.read_text()
        assert text.startswith("# x\n\n## Performance\n\n<!-- bench-results:begin -->\n")
        assert text.endswith("<!-- bench-results:end -->\n\n## Layout\n")
        assert "old" not in text and md.strip() in text


@pytest.mark.parametrize("readme", ["no markers\n", README + "<!-- bench-results:end -->\n"])
def test_paste_refuses_a_readme_without_one_pair_of_markers(readme):
    with pytest.raises(ValueError):
        paste.paste(readme, "Measured ...")


def test_the_readme_has_the_markers():
    readme = (REPO / "README.md").read_text()
    assert paste.paste(readme, "Measured x") != readme


def test_the_pass_through_ratio_is_the_median_of_each_rounds_own_ratio():
    """The p11mod sides of a round share its seconds, the rounds do not (this VM's speed drifts
    20-30 % between them): a ratio of medians taken from different rounds would mix them."""
    sect = load("sect_p11mod.py")  # run.py put bench/ on the path for its imports
    runs = {"p11mod": [900.0, 1300.0, 1000.0], "raw-token": [500.0, 700.0, 600.0],
            "raw-copy": [1000.0, 1310.0, 1200.0]}
    row = sect.p11mod_row("P-256", "ecdsa", 1, runs)
    assert row["limit_side"] == "raw-copy" and row["limit"] == 1200.0
    # rounds' own ratios 0.9, 0.992, 0.833: their median, where medians' ratio is 1000/1200
    assert row["ratio"] == pytest.approx(0.9)
    assert row["pair_ratio_min"] == pytest.approx(1000 / 1200)
    assert row["pair_ratio_max"] == pytest.approx(1300 / 1310)
