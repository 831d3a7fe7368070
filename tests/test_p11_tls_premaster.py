"""TLS 1.2 RSA key exchange with a PKCS#11 key: the premaster a server decrypts never tells a
good block from a bad one (RFC 5246 7.4.7.1, Bleichenbacher): ctok decrypts raw and checks
the block itself in constant time."""
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from ctoktest import compile_evp_driver, assert_ok, run
from p11fixtures import main_hsm  # noqa: F401 (fixture)

SRC = os.path.join(os.path.dirname(__file__), "tls_premaster.c")


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    out = tmp_path_factory.mktemp("tlspm") / "tls_premaster"
    return compile_evp_driver(SRC, out)


def premaster(ws, driver, tok, ciphertext, version="0303"):
    ct = ws.path("premaster-%d.bin" % len(os.listdir(ws.root)))
    ct.write_bytes(ciphertext)
    p = assert_ok(run([driver, ws.build, tok.key_uri("rsa2048"), ct, version], ws.env()))
    fields = dict(kv.split("=", 1) for kv in p.stdout.split())
    return fields


def public_key(tok):
    return x509.load_pem_x509_certificate(tok.cert("rsa2048").read_bytes()).public_key()


def test_tls12_premaster_encrypted_to_a_pkcs11_key_is_decrypted(main_hsm, driver):
    ws, tok = main_hsm.ws, main_hsm.tok
    secret = bytes([3, 3]) + os.urandom(46)
    got = premaster(ws, driver, tok, public_key(tok).encrypt(secret, padding.PKCS1v15()))
    assert got["ok"] == "1" and got["errors"] == "0"
    assert bytes.fromhex(got["premaster"]) == secret


@pytest.mark.parametrize("bad", ["wrong-version", "garbage", "short-message"])
def test_tls12_bad_block_gives_a_random_premaster_and_no_error(main_hsm, driver, bad):
    ws, tok = main_hsm.ws, main_hsm.tok
    pub = public_key(tok)
    if bad == "wrong-version":
        secret = bytes([3, 1]) + os.urandom(46)
        ct = pub.encrypt(secret, padding.PKCS1v15())
    elif bad == "short-message":
        secret = bytes([3, 3]) + os.urandom(30)
        ct = pub.encrypt(secret, padding.PKCS1v15())
    else:
        secret = b""
        ct = (int.from_bytes(os.urandom(255), "big") % pub.public_numbers().n).to_bytes(256, "big")
    first = premaster(ws, driver, tok, ct)
    second = premaster(ws, driver, tok, ct)
    # the server carries on with a premaster the client cannot know: the handshake fails
    # later, at Finished, like for any wrong key; nothing tells a bad block from a good one
    assert first["ok"] == "1" and second["ok"] == "1"
    assert first["errors"] == "0" and second["errors"] == "0"
    assert len(bytes.fromhex(first["premaster"])) == 48
    assert first["premaster"] != second["premaster"]
    if secret:
        assert secret[2:] not in bytes.fromhex(first["premaster"])
