"""allow_export: a token may let its private keys out (e.g. for migration); without the
flag no private key material leaves through any OpenSSL path, while the public key
always does."""

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ctoktest import (
    PIN,
    assert_fails_with,
    assert_ok,
    load_cert,
    public_der,
    sign_digest,
)


def private_secret_forms(tok, alias):
    """The private key's secret number in the forms an output could carry it: raw
    big-endian bytes, plain hex, colon hex (as -text prints). Read from the keystore with
    the code, as its owner could."""
    k = pkcs12.load_pkcs12(tok.keystore_bytes(), PIN.encode()).key
    assert k is not None, "no private key readable in the keystore"
    assert public_der(k.public_key()) == public_der(load_cert(tok.cert(alias)).public_key())
    if isinstance(k, rsa.RSAPrivateKey):
        n = k.private_numbers().d
    else:
        n = k.private_numbers().private_value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    chunk = raw[8:24]
    return [chunk, chunk.hex().encode(), chunk.hex().upper().encode(),
            ":".join("%02x" % b for b in chunk[:8]).encode()]


def assert_no_leak(forms, *outputs):
    for out in outputs:
        if isinstance(out, str):
            out = out.encode(errors="replace")
        flat = re.sub(rb"\s", b"", out)
        for f in forms:
            assert f not in out and f not in flat, "private key material leaked"


@pytest.mark.parametrize("spec", ["rsa:2048", "ec:P-256"])
def test_public_key_export_works_without_allow_export(ws, make_token, spec):
    tok = make_token("soft1", {"k1": spec})
    out = ws.path("k1.pub.pem")
    assert_ok(ws.ossl("pkey", "-in", tok.key_uri("k1"), "-pubout", "-out", out))
    pub = serialization.load_pem_public_key(out.read_bytes())
    assert public_der(pub) == public_der(load_cert(tok.cert("k1")).public_key())


@pytest.mark.parametrize("spec", ["rsa:2048", "ec:P-384", "ed25519"])
def test_exportable_token_exports_private_key_matching_certificate(ws, make_token, spec):
    tok = make_token("mig", {"k1": spec}, allow_export=True)
    out = ws.path("k1.key.pem")
    assert_ok(ws.ossl("pkey", "-in", tok.key_uri("k1"), "-out", out))
    key = serialization.load_pem_private_key(out.read_bytes(), None)
    assert public_der(key.public_key()) == public_der(load_cert(tok.cert("k1")).public_key())


def test_exported_private_key_signs_like_the_token_key(ws, make_token):
    """PKCS#1 v1.5 is deterministic: the exported key gives the very same signature."""
    tok = make_token("mig", {"k1": "rsa:2048"}, allow_export=True)
    out = ws.path("k1.key.pem")
    assert_ok(ws.ossl("pkey", "-in", tok.key_uri("k1"), "-out", out))
    p1, s1, _ = sign_digest(ws, tok.key_uri("k1"))
    p2, s2, _ = sign_digest(ws, out, providers=None)
    assert_ok(p1)
    assert_ok(p2)
    assert s1.read_bytes() == s2.read_bytes()


LEAK_PATHS = {
    "pkey-pem": ["pkey", "-in", "{uri}"],
    "pkey-der": ["pkey", "-in", "{uri}", "-outform", "DER"],
    "pkey-text": ["pkey", "-in", "{uri}", "-text", "-noout"],
    "pkcs8-nocrypt": ["pkcs8", "-topk8", "-nocrypt", "-in", "{uri}"],
    "pkcs12-export": ["pkcs12", "-export", "-inkey", "{uri}", "-in", "{cert}", "-passout",
                      "pass:x"],
    "storeutl-text": ["storeutl", "-text", "{uri}"],
}


@pytest.mark.parametrize("path", list(LEAK_PATHS))
@pytest.mark.parametrize("spec", ["rsa:2048", "ec:P-256"])
def test_non_exportable_key_leaks_no_private_material(ws, make_token, path, spec):
    tok = make_token("soft1", {"k1": spec})
    forms = private_secret_forms(tok, "k1")
    out = ws.path("out.bin")
    argv = [a.format(uri=tok.key_uri("k1"), cert=tok.cert("k1")) for a in LEAK_PATHS[path]]
    p = ws.ossl(*argv, "-out", out, text=False) if path != "storeutl-text" else \
        ws.ossl(*argv, text=False)
    # these can only succeed by writing the private key out
    if path in ("pkey-pem", "pkey-der"):
        assert_fails_with(_decoded(p), "private key export not allowed")
    elif path in ("pkcs8-nocrypt", "pkcs12-export"):
        assert_fails_with(_decoded(p))
    assert_no_leak(forms, p.stdout, p.stderr, out.read_bytes() if out.exists() else b"")
    if out.exists() and path != "pkcs12-export":
        assert b"PRIVATE KEY" not in out.read_bytes()


def _decoded(p):
    import subprocess

    return subprocess.CompletedProcess(p.args, p.returncode,
                                       p.stdout.decode(errors="replace"),
                                       p.stderr.decode(errors="replace"))


@pytest.mark.parametrize("alias,expect", [
    ("rsa3072", ["Public-Key: (3072 bit)", "Exponent: 65537"]),
    ("p384", ["Public-Key: (384 bit)", "NIST CURVE: P-384"]),
    ("ed25519", ["ED25519 Public-Key"]),
])
def test_public_key_text_of_token_key_shows_size_and_curve(shared_ws, signer, alias, expect):
    p = assert_ok(shared_ws.ossl("pkey", "-in", signer.key_uri(alias), "-pubout", "-text",
                                 "-noout"))
    for e in expect:
        assert e in p.stdout, p.stdout
