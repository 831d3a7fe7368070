"""A user decrypts with a token RSA key and derives ECDH secrets with a token EC key;
the other side works with plain OpenSSL (or python-cryptography) and the results agree."""

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from ctoktest import assert_ok, describe, load_cert

SECRET = b"a 32-byte session key, honestly."

# (key, pkeyutl options for both sides)
DECRYPT_CASES = {
    "rsa2048-pkcs1": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa4096-pkcs1": ("rsa4096", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa2048-oaep-sha1": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:oaep"]),
    "rsa2048-oaep-sha256": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
                                        "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"]),
    "rsa3072-oaep-sha256-mgf1-sha1": ("rsa3072", ["-pkeyopt", "rsa_padding_mode:oaep",
                                                  "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
                                                  "rsa_mgf1_md:sha1"]),
    "rsa2048-oaep-sha512-label": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
                                              "rsa_oaep_md:sha512", "-pkeyopt",
                                              "rsa_oaep_label:63746f6b2d6c6162656c"]),
}


@pytest.mark.parametrize("case", list(DECRYPT_CASES))
def test_rsa_decrypt_with_token_key_recovers_what_plain_openssl_encrypted(shared_ws, signer,
                                                                           tmp_path, case):
    ws = shared_ws
    alias, opts = DECRYPT_CASES[case]
    pt = tmp_path / "secret.bin"
    pt.write_bytes(SECRET)
    ct = tmp_path / "secret.enc"
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", signer.cert(alias), "-in", pt,
                      "-out", ct, *opts, providers=None))
    out = tmp_path / "secret.dec"
    p = assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", signer.key_uri(alias), "-in", ct,
                          "-out", out, *opts))
    assert out.read_bytes() == SECRET, describe(p)


def test_rsa_oaep_decrypt_of_python_ciphertext(shared_ws, signer, tmp_path):
    """Another implementation encrypts (OAEP, SHA-256); the token decrypts."""
    ws = shared_ws
    pub = load_cert(signer.cert("rsa3072")).public_key()
    ct = tmp_path / "py.enc"
    ct.write_bytes(pub.encrypt(SECRET, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                   algorithm=hashes.SHA256(), label=None)))
    out = tmp_path / "py.dec"
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", signer.key_uri("rsa3072"), "-in", ct,
                      "-out", out, "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
                      "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"))
    assert out.read_bytes() == SECRET


def test_rsa_decrypt_of_tampered_ciphertext_fails(shared_ws, signer, tmp_path):
    ws = shared_ws
    pt = tmp_path / "secret.bin"
    pt.write_bytes(SECRET)
    ct = tmp_path / "secret.enc"
    opts = ["-pkeyopt", "rsa_padding_mode:oaep"]
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", signer.cert("rsa2048"), "-in",
                      pt, "-out", ct, *opts, providers=None))
    data = bytearray(ct.read_bytes())
    data[len(data) // 2] ^= 0x01
    ct.write_bytes(bytes(data))
    out = tmp_path / "secret.dec"
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", signer.key_uri("rsa2048"), "-in", ct, "-out",
                out, *opts)
    assert p.returncode > 0 and p.returncode not in (134, 139), describe(p)
    assert not out.exists() or out.read_bytes() != SECRET


# ECDH with P-256/384/521 token keys: the behaviour table (test_behaviour.py)


def test_ecdh_derive_with_peer_on_another_curve_fails(shared_ws, signer, tmp_path):
    ws = shared_ws
    peer = tmp_path / "peer.pem"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384",
                      "-out", peer, providers=None))
    peer_pub = tmp_path / "peer.pub.pem"
    assert_ok(ws.ossl("pkey", "-in", peer, "-pubout", "-out", peer_pub, providers=None))
    p = ws.ossl("pkeyutl", "-derive", "-inkey", signer.key_uri("p256"), "-peerkey", peer_pub,
                "-out", tmp_path / "x.bin")
    assert p.returncode > 0 and p.returncode not in (134, 139), describe(p)
