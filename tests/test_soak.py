"""Stress and soak (issue 8): a server signs from many threads for a long time, reloads
keys, forks workers, loads and unloads providers. Nothing may pile up: HSM objects,
sessions, file descriptors and memory stay flat (within 10% after warm-up), and every
signature verifies with OpenSSL's default provider. The work runs in the p11_sign_loop C
driver (tests/p11_sign_loop.c); a forked child whose 8 threads start signing at once is
tested in test_p11_faults.py.

Sizes are multiplied by CTOK_SOAK_SCALE (default 1). At 1: 5,000 load/sign/free cycles
and 1,000 provider loads (the issue's numbers), but 8 threads x 1,000 signatures per
backend: the issue's 8 x 5,000 took 50 s (soft) and 75 s (SoftHSM) on the 2-core CI
machine, over the ~60 s a CI test may take. CTOK_SOAK_SCALE=5 runs the issue's size."""

import os

import pytest

from ctoktest import SANITIZE_RUNTIME, TIMEOUT, assert_no_crash, describe
from p11fixtures import (  # noqa: F401  (fixtures)
    MAIN_LABEL,
    ShimLog,
    main_hsm,
    sign_loop,
    sign_loop_bin,
)

SCALE = float(os.environ.get("CTOK_SOAK_SCALE", "1"))


def scaled(n, least=10):
    return max(least, int(n * SCALE))


def samples(stdout):
    """The driver's 'sample n=... rss_kb=... fds=... objects=... sessions=...' lines."""
    out = []
    for line in stdout.splitlines():
        if line.startswith("sample "):
            out.append({k: int(v) for k, v in (f.split("=") for f in line.split()[1:])})
    return out


def assert_flat(points, field, warm_up, p):
    """field at the end is within 10% of its value once warmed up (and never far above).
    Not memory under a sanitizer: ASan's quarantine holds every freed block, so RSS grows
    without a leak there (fds, objects and sessions are still checked)."""
    if field == "rss_kb" and SANITIZE_RUNTIME:
        return
    base = [s for s in points if s["n"] >= warm_up][0][field]
    worst = max(s[field] for s in points if s["n"] >= warm_up)
    assert worst <= base * 1.10 + 1, "%s grew from %d to %d after warm-up:\n%s" % (
        field, base, worst, describe(p))


def open_sessions_at_each_signature(log):
    """Sessions open (C_OpenSession minus C_CloseSession) when each C_Sign was made."""
    open_, at = 0, []
    for e in log.entries():
        if e["fn"] == "C_OpenSession" and e["rv"] == "CKR_OK":
            open_ += 1
        elif e["fn"] == "C_CloseSession" and e["rv"] == "CKR_OK":
            open_ -= 1
        elif e["fn"] == "C_Sign" and e["rv"] == "CKR_OK" and not e.get("length-query"):
            at.append(open_)
    return at


@pytest.fixture(scope="module")
def soft_keys(shared_ws, signer):
    return shared_ws, signer


@pytest.mark.parametrize("backend", ["pkcs12", "softhsm"])
def test_eight_threads_sign_with_rsa_and_ec_keys_and_every_signature_verifies(
        backend, soft_keys, main_hsm, sign_loop_bin):
    ws, tok = soft_keys if backend == "pkcs12" else (main_hsm.ws, main_hsm.tok)
    count = scaled(8 * 1000)
    uris = "|".join(tok.key_uri(a) for a in ("rsa2048", "p256"))  # threads alternate
    p, kv = sign_loop(ws, sign_loop_bin, "sign", uris, "8", str(count), timeout=TIMEOUT * 5)
    assert_no_crash(p)
    assert p.returncode == 0, describe(p)
    assert kv.get("ok") == str(count) and kv.get("failed") == "0", describe(p)


def test_key_load_sign_free_cycles_leave_no_objects_sessions_fds_or_memory_behind(
        main_hsm, sign_loop_bin, tmp_path):
    """A server that loads its key for every request: each load makes a session copy of
    the private key in the HSM, which must go with the key handle."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    cycles = scaled(5000, least=100)
    every = cycles // 10
    log = ShimLog(tmp_path / "shim.log")
    p, kv = sign_loop(ws, sign_loop_bin, "--module", main_hsm.shim, "--token", MAIN_LABEL,
                      "cycles", tok.key_uri("p256"), str(cycles), str(every), env=log.env(),
                      timeout=TIMEOUT * 3)
    assert_no_crash(p)
    assert p.returncode == 0 and kv.get("ok") == str(cycles), describe(p)
    points = samples(p.stdout)
    assert len(points) == 10, describe(p)
    # the HSM's private keys: the token's own, plus at most one session copy in use
    keys = len(main_hsm.key_ids)
    assert all(keys <= s["objects"] <= keys + 1 for s in points), describe(p)
    for field in ("rss_kb", "fds"):
        assert_flat(points, field, 2 * every, p)
    sessions = open_sessions_at_each_signature(log)
    assert len(sessions) == cycles, log.summary()
    warm = sessions[len(sessions) // 5]
    assert max(sessions[len(sessions) // 5:]) <= warm, log.summary()


@pytest.mark.parametrize("backend", ["pkcs12", "softhsm"])
def test_provider_load_and_unload_a_thousand_times_in_one_process(backend, soft_keys, main_hsm,
                                                                  sign_loop_bin):
    """OSSL_PROVIDER_load / unload of ctok in a loop; every 50th time a key is loaded and
    signs while ctok is loaded (the PKCS#11 module stays loaded and initialized across
    unloads of ctok). No crash, no growth."""
    ws, tok = soft_keys if backend == "pkcs12" else (main_hsm.ws, main_hsm.tok)
    loads = scaled(1000, least=100)
    every = loads // 20
    p, kv = sign_loop(ws, sign_loop_bin, "provider", tok.key_uri("p256"), str(loads), str(every),
                      timeout=TIMEOUT * 5)
    assert_no_crash(p)
    assert p.returncode == 0 and kv.get("ok") == "20", describe(p)
    points = samples(p.stdout)
    assert len(points) == 20, describe(p)
    for field in ("rss_kb", "fds"):
        assert_flat(points, field, 4 * every, p)
