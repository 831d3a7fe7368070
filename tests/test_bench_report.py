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
           "openssl": "OpenSSL 3.0.19", "softhsm": "2.6.1", "nginx": "nginx version: 1.22.1"}
ARGS = argparse.Namespace(rounds=5, seconds=1.5, startup_runs=10)


def results():
    return {
        "throughput": [
            {"key": "RSA-2048", "alg": "rsa-pkcs1", "threads": 1, "file": 1000.0,
             "ctok": 990.0, "ratio": 0.99},
            {"key": "P-256", "alg": "ecdsa", "threads": 2, "file": 10000.0, "ctok": 9000.0,
             "ratio": 0.90},
        ],
        "startup": [
            {"key": "P-256", "what": "ctok key vs file key", "target": run.STARTUP_TARGET,
             "base_ms": 20.0, "ctok_ms": 30.0, "ratio": 1.5},
        ],
        "hsm": [
            {"key": "P-256", "alg": "ecdsa", "threads": 1, "ctok": 930.0, "limit": 1000.0,
             "limit_side": "raw-copy", "ratio": 0.93, "ratio_reuse": 0.99},
        ],
        "hsm_rounds": 3, "hsm_seconds": 1.5,
        "tls": [
            {"key": "P-256", "side": "soft", "target": run.TLS_CPU_TARGET, "ctok_cpu_us": 100.0,
             "file_cpu_us": 100.0, "cpu_ratio": 1.0},
            {"key": "P-256", "side": "hsm", "target": None, "ctok_cpu_us": 300.0,
             "file_cpu_us": 100.0, "cpu_ratio": 3.0},
        ],
        "tls_rounds": 3, "tls_seconds": 3.0, "tls_errors": [],
        "kms": [
            {"key": "P-256", "alg": "ECDSA_SHA_256", "threads": 1, "ctok_ops": 900.0,
             "bare_ops": 1000.0, "ctok_p50_us": 1080.0, "bare_p50_us": 1000.0,
             "ctok_p99_us": 3000.0, "bare_p99_us": 2500.0, "added_p50_us": 80.0},
            {"key": "P-256", "alg": "ECDSA_SHA_256", "threads": 4, "ctok_ops": 1500.0,
             "bare_ops": 2000.0, "ctok_p50_us": 2150.0, "bare_p50_us": 2000.0,
             "ctok_p99_us": 9000.0, "bare_p99_us": 8000.0, "added_p50_us": 150.0},
        ],
        "kms_rounds": 5, "kms_seconds": 1.0,
        "akv": [
            {"key": "RSA-2048", "alg": "RS256", "threads": 1, "ctok_ops": 400.0,
             "bare_ops": 420.0, "ctok_p50_us": 2100.0, "bare_p50_us": 2000.0,
             "ctok_p99_us": 5000.0, "bare_p99_us": 4000.0, "added_p50_us": 100.0},
            {"key": "RSA-2048", "alg": "RS256", "threads": 4, "ctok_ops": 500.0,
             "bare_ops": 600.0, "ctok_p50_us": 7101.0, "bare_p50_us": 7000.0,
             "ctok_p99_us": 9000.0, "bare_p99_us": 8000.0, "added_p50_us": 101.0},
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
    for what in ("2026-11-29 04:00 UTC", "2 × AMD EPYC", "OpenSSL 3.0.19", "SoftHSM 2.6.1"):
        assert what in first, first


def test_every_missed_target_is_marked_missed_and_only_those():
    md = run.markdown_report(ARGS, results(), MACHINE)
    by_first = {(r[0], r[1], r[2]): r for r in rows(md)}
    assert by_first[("RSA-2048", "rsa-pkcs1", "1")][-1] == "ok"
    assert by_first[("P-256", "ecdsa", "2")][-1] == "**MISSED**"  # 0.90 < 0.95
    hsm = by_first[("P-256", "ecdsa", "1")]
    assert hsm[5:8] == ["0.93", "≥ 0.95", "**MISSED**"] and hsm[-1] == "ok", hsm
    startup = by_first[("ctok key vs file key", "P-256", "30.0")]
    assert startup[-2:] == ["≤ %.2f" % run.STARTUP_TARGET, "**MISSED**"]
    soft_tls = by_first[("P-256", "soft token", "100")]
    assert soft_tls[-1] == "ok"
    hsm_tls = by_first[("P-256", "SoftHSM", "300")]
    assert hsm_tls[-1] == "" and "none" in hsm_tls[-2]  # no target: never MISSED
    kms1, kms4 = by_first[("P-256", "ECDSA_SHA_256", "1")], by_first[("P-256", "ECDSA_SHA_256",
                                                                    "4")]
    assert kms1[-3:] == ["80", "≤ 100", "ok"], kms1  # ctok p50 - bare p50 within 100 µs
    assert kms4[-3:] == ["150", "≤ 100", "**MISSED**"], kms4
    assert kms1[3:9] == ["900", "1000", "1080", "1000", "3000", "2500"], kms1
    akv1, akv4 = by_first[("RSA-2048", "RS256", "1")], by_first[("RSA-2048", "RS256", "4")]
    assert akv1[-3:] == ["100", "≤ 100", "ok"], akv1  # exactly on the target: not missed
    assert akv4[-3:] == ["101", "≤ 100", "**MISSED**"], akv4
    assert akv1[3:9] == ["400", "420", "2100", "2000", "5000", "4000"], akv1
    assert ("P-256", "ES256", "1") not in by_first  # a row without a ctok side is left out
    assert md.count("MISSED") == 5


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
