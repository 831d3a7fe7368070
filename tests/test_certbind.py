"""Issue 9, "Certificates bound from files": a token entry's "certificates" names certificate
files (PEM or DER) and folders; each certificate is reported as a certificate of the key
whose public key it carries (that key's label and id), for any backend, so storeutl,
certificate-first lookup and TLS servers find it as they find an HSM's certificates. One
that binds to no key is not reported (a CTOK_DEBUG line says so)."""

import subprocess

import pytest

from ctoktest import (TlsServer, assert_handshake, assert_ok, count_items, describe, load_cert,
                      tls_client)
from test_cli_support import Kind


def other_cert(path):
    """A certificate of a key no token holds."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(path) + ".key", "-subj",
                    "/CN=stranger", "-days", "2", "-out", str(path)], check=True,
                   capture_output=True, timeout=60)
    return path


def bound_token(kind, tmp_path, build):
    """Token 'tok' (keystore or SoftHSM) with keys k1 (EC) and k2 (RSA) and no certificates
    of its own; k1's certificate and a stranger's in a folder, k2's as DER in a file."""
    k = Kind(kind, tmp_path, build)
    tok = k.with_key("tok", "k1", "ec:P-256", cert=False)
    k.ws.add_key(tok, "k2", "rsa:2048", cert=False)
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o755)
    k.ws.self_signed(tok, "k1", out=certs / "k1.pem")
    other_cert(certs / "stranger.crt")
    pem = k.ws.self_signed(tok, "k2", out=tmp_path / "k2.pem")
    der = tmp_path / "k2.der"
    assert_ok(k.ws.ossl("x509", "-in", pem, "-outform", "DER", "-out", der, providers=None))
    k.set_fields("tok", certificates=[str(certs), str(der)])
    return k, tok, certs


@pytest.mark.parametrize("kind", ["pkcs12", "pkcs11"])
def test_certificates_in_files_are_reported_with_their_keys(kind, tmp_path, build):
    k, tok, certs = bound_token(kind, tmp_path, build)
    p = assert_ok(k.ossl("storeutl", "-certs", "-text", tok.uri(), debug=True))
    assert count_items(p.stdout, "Certificate") == 2, describe(p)
    assert "Subject: CN=k1" in p.stdout and "Subject: CN=k2" in p.stdout and "stranger" not in p.stdout, \
        describe(p)
    said = [ln for ln in p.stderr.splitlines() if "carries the public key of no key" in ln]
    assert len(said) == 1 and "stranger.crt" in said[0], describe(p)
    # by the key's label and by its id, as the token's own certificates are
    p = assert_ok(k.ossl("storeutl", "-certs", "-text", tok.uri(object="k2", type="cert")))
    assert count_items(p.stdout, "Certificate") == 1 and "Subject: CN=k2" in p.stdout, describe(p)


def test_a_bound_certificate_serves_tls_with_its_key(tmp_path, build):
    k, tok, certs = bound_token("pkcs11", tmp_path, build)
    with TlsServer(k.ws, tok.key_uri("k1"), tok.uri(object="k1", type="cert")) as srv:
        c = tls_client(k.ws, srv.port, certs / "k1.pem")
        assert_handshake(c, srv)


def test_certificates_must_be_a_list_of_paths(tmp_path, build):
    k = Kind("pkcs12", tmp_path, build)
    k.create("tok")
    k.set_fields("tok", certificates=str(tmp_path))
    p = k.ctok("key", "list", "tok")
    assert p.returncode != 0, describe(p)
    assert "token 'tok': \"certificates\" must be an array of paths" in p.stderr, describe(p)
    k.set_fields("tok", certificates=[str(tmp_path / "absent.pem")])
    p = k.ctok("key", "list", "tok")
    assert p.returncode != 0 and "absent.pem" in p.stderr, describe(p)
