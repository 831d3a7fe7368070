"""Several threads of one application sign with one token key at once, the way a threaded TLS
server does (tests/p11_sign_loop.c: one OSSL_STORE load, a fresh EVP_PKEY_CTX per signature,
each signature verified). Small here; `make test-tsan` runs these with ctok and the driver
built with ThreadSanitizer, where they are what finds a data race."""

import pytest

from p11fixtures import main_hsm, sign_loop, sign_loop_bin  # noqa: F401  (fixtures)

THREADS, COUNT = "4", "400"


@pytest.mark.parametrize("alias,spec", [("ec", "ec:P-256"), ("rsa", "rsa:2048")])
def test_four_threads_sign_at_once_with_one_soft_token_key(ws, make_token, sign_loop_bin,  # noqa: F811
                                                           alias, spec):
    tok = make_token("soft", {alias: spec}, certs=False)
    p, kv = sign_loop(ws, sign_loop_bin, "sign", tok.key_uri(alias), THREADS, COUNT)
    assert p.returncode == 0 and kv.get("ok") == COUNT and kv.get("failed") == "0", (
        p.stdout + p.stderr)


@pytest.mark.parametrize("alias", ["p256", "rsa2048"])
def test_four_threads_sign_at_once_with_one_softhsm_key(main_hsm, sign_loop_bin,  # noqa: F811
                                                        alias):
    p, kv = sign_loop(main_hsm.ws, sign_loop_bin, "sign", main_hsm.tok.key_uri(alias), THREADS,
                      COUNT)
    assert p.returncode == 0 and kv.get("ok") == COUNT and kv.get("failed") == "0", (
        p.stdout + p.stderr)
