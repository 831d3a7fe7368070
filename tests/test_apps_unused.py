"""ctok.cnf is active system-wide (here: OPENSSL_CONF), but an application uses no ctok key:
it works as before, no token is opened and no PKCS#11 module is loaded, although the ctok
config names a SoftHSM token (checked in /proc/<pid>/maps and in the ctok-debug trace)."""

import re

from appfixtures import (
    Nginx,
    TOKEN_TRACE,
    assert_curl_ok,
    curl,
    maps_of,
    s_client,
    token_traces,
    world,  # noqa: F401  (fixture)
)
from ctoktest import OPENSSL, describe, run

SOFTHSM_SO = "libsofthsm2"


def test_openssl_speed_rsa2048_works_and_reports_numbers_with_ctok_cnf_active(world):
    p = run([OPENSSL, "speed", "-seconds", "1", "rsa2048"], world.app_env(debug=True),
            timeout=60)
    assert p.returncode == 0, describe(p)
    m = re.search(r"^rsa\s+2048 bits\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)\s*$", p.stdout, re.M)
    assert m, describe(p)
    assert float(m.group(1)) > 0 and float(m.group(2)) > 0, describe(p)
    # ctok was loaded (so ctok.cnf is in force) and did nothing else
    assert re.search(r"ctok\[\d+\]: provider loaded", p.stderr), describe(p)
    assert not token_traces(p.stderr), describe(p)


def test_plain_nginx_with_a_file_key_serves_tls_and_loads_no_pkcs11_module(world):
    """The ctok config holds a SoftHSM token; nginx's key is an ordinary PEM file."""
    assert '"pkcs11"' in world.ws.config.read_text()
    ngx = Nginx(world, world.file_cert, world.file_key, workers=2,
                env=world.app_env(debug=True))
    with ngx:
        c13 = curl(world, ngx.port, "--tlsv1.3")
        c12 = curl(world, ngx.port, "--tlsv1.2", "--tls-max", "1.2")
        s = s_client(world, ngx.port, "-tls1_3")
        pids = [ngx.master_pid] + ngx.worker_pids()
        maps = {pid: maps_of(pid) for pid in pids}
        log = ngx.error_log()
    assert_curl_ok(c13, "TLSv1.3", "nginx worker")
    assert_curl_ok(c12, "TLSv1.2", "nginx worker")
    assert s.returncode == 0 and "Verify return code: 0 (ok)" in s.stdout, describe(s)
    assert len(pids) == 3, ngx.report()
    for pid, text in maps.items():
        assert text, "no maps for %d" % pid
        assert "ctok.so" in text, "ctok is not loaded in %d: ctok.cnf not in force?" % pid
        assert SOFTHSM_SO not in text, "process %d mapped SoftHSM:\n%s" % (
            pid, "\n".join(l for l in text.splitlines() if SOFTHSM_SO in l))
        # p11-kit is loaded for the first pkcs11: URI only (store/p11kit_lazy.c), libcurl for
        # the first cloud request (kms/curl_lazy.c), jansson for the first config read
        # (store/jansson_lazy.c)
        for lib in ("libp11-kit", "libcurl", "libjansson"):
            assert lib not in text, "process %d mapped %s:\n%s" % (
                pid, lib, "\n".join(l for l in text.splitlines() if lib in l))
    assert re.search(r"ctok\[\d+\]: provider loaded", log), ngx.report()
    hits = token_traces(log)
    assert not hits, "ctok touched a token or loaded a module:\n%s" % "\n".join(hits[:10])
    assert not [l for l in log.splitlines() if "pkcs11:" in l], ngx.report()


def test_token_trace_pattern_matches_what_a_token_key_prints(world):
    """The trace check above would see a token being used: with a key reference the same
    nginx prints it (guards the pattern against changes of the trace format)."""
    key = world.key("soft", "ec")
    ngx = Nginx(world, key.cert, key.ref, workers=1, env=world.app_env(debug=True))
    with ngx:
        c = curl(world, ngx.port, "--tlsv1.3")
        log = ngx.error_log()
    assert c.returncode == 0, describe(c)
    assert any(TOKEN_TRACE.search(l) for l in log.splitlines()), ngx.report()
