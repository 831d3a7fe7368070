"""A user serves TLS with `openssl s_server -key ctok:...` and a plain `openssl s_client`
verifies the server against its certificate, completes TLS 1.3 / 1.2 handshakes with
RSA (PSS and PKCS#1) and ECDSA keys, and exchanges data."""

import re

import pytest

from ctoktest import (
    PROVIDER_ORDERS,
    SIGNATURE_TRACE,
    TlsServer,
    assert_handshake,
    tls_client,
)

# id: (key alias, protocol, client options, expected peer signature type)
CASES = {
    "tls13-rsa2048-pss": ("rsa2048", "-tls1_3", [], "RSA-PSS"),
    "tls13-rsa4096-pss": ("rsa4096", "-tls1_3", [], "RSA-PSS"),
    "tls12-rsa2048-pkcs1": ("rsa2048", "-tls1_2", ["-sigalgs", "rsa_pkcs1_sha256"], "RSA"),
    "tls12-rsa3072-pkcs1-sha384": ("rsa3072", "-tls1_2", ["-sigalgs", "rsa_pkcs1_sha384"],
                                   "RSA"),
    "tls12-rsa2048-pss": ("rsa2048", "-tls1_2", ["-sigalgs", "rsa_pss_rsae_sha256"], "RSA-PSS"),
    "tls13-p256-ecdsa": ("p256", "-tls1_3", [], "ECDSA"),
    "tls13-p384-ecdsa": ("p384", "-tls1_3", [], "ECDSA"),
    "tls13-p521-ecdsa": ("p521", "-tls1_3", [], "ECDSA"),
    "tls12-p256-ecdsa": ("p256", "-tls1_2", [], "ECDSA"),
    "tls13-ed25519": ("ed25519", "-tls1_3", [], "Ed25519"),
}


def peer_signature_type(out):
    m = re.search(r"^Peer signature type: (\S+)", out, re.M)
    return m.group(1) if m else None


@pytest.mark.parametrize("case", list(CASES))
def test_tls_handshake_with_token_key_on_server(shared_ws, signer, case):
    ws = shared_ws
    alias, proto, client_opts, sigtype = CASES[case]
    cert = signer.cert(alias)
    with TlsServer(ws, signer.key_uri(alias), cert, proto, debug=True) as srv:
        cli = tls_client(ws, srv.port, cert, proto, *client_opts)
        assert_handshake(cli, srv)
    assert ("Protocol  : %s" % ("TLSv1.3" if proto == "-tls1_3" else "TLSv1.2")) in cli.stdout
    assert (peer_signature_type(cli.stdout) or "").lower() == sigtype.lower(), cli.stdout
    # the handshake signature was made by the token key inside ctok
    assert SIGNATURE_TRACE.search(srv.stderr), srv.report()


@pytest.mark.parametrize("alias,proto,group,temp_key", [
    ("p256", "-tls1_3", "P-256", "ECDH, prime256v1"),
    ("p384", "-tls1_2", "P-384", "ECDH, secp384r1"),
    ("rsa2048", "-tls1_3", "P-521", "ECDH, secp521r1"),
    ("p256", "-tls1_3", "X25519", "X25519"),
])
def test_tls_handshake_with_token_key_and_ec_key_share(shared_ws, signer, alias, proto, group,
                                                       temp_key):
    """ECDHE groups stay available on a server that holds a token EC key."""
    ws = shared_ws
    cert = signer.cert(alias)
    with TlsServer(ws, signer.key_uri(alias), cert, proto) as srv:
        cli = tls_client(ws, srv.port, cert, proto, "-groups", group)
        assert_handshake(cli, srv)
    assert "Server Temp Key: %s" % temp_key in cli.stdout, cli.stdout


def test_tls12_rsa_key_exchange_decrypts_premaster_with_token_key(shared_ws, signer):
    ws = shared_ws
    cert = signer.cert("rsa2048")
    with TlsServer(ws, signer.key_uri("rsa2048"), cert, "-tls1_2", "-cipher",
                   "AES128-GCM-SHA256", debug=True) as srv:
        cli = tls_client(ws, srv.port, cert, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
        assert_handshake(cli, srv)
    assert "Cipher is AES128-GCM-SHA256" in cli.stdout, cli.stdout
    assert re.search(r"ctok\[\d+\]: *asym-cipher:", srv.stderr), srv.report()


@pytest.mark.parametrize("order", PROVIDER_ORDERS)
def test_tls13_handshake_with_token_key_in_every_provider_order(shared_ws, signer, order):
    ws = shared_ws
    cert = signer.cert("p256")
    with TlsServer(ws, signer.key_uri("p256"), cert, "-tls1_3", providers=order) as srv:
        cli = tls_client(ws, srv.port, cert, "-tls1_3")
        assert_handshake(cli, srv)


def test_tls_client_authenticates_with_token_key(shared_ws, signer, tmp_path):
    """s_client -key ctok:... : the token key signs CertificateVerify for the client."""
    ws = shared_ws
    server_key = tmp_path / "server.key"
    server_cert = tmp_path / "server.pem"
    from ctoktest import assert_ok

    assert_ok(ws.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", server_key, "-subj", "/CN=server", "-days", "2",
                      "-out", server_cert, providers=None))
    client_cert = signer.cert("rsa2048")
    with TlsServer(ws, server_key, server_cert, "-tls1_3", "-Verify", "1", "-verify_return_error",
                   "-CAfile", client_cert, providers=None) as srv:
        cli = tls_client(ws, srv.port, server_cert, "-tls1_3", "-key", signer.key_uri("rsa2048"),
                         "-cert", client_cert, providers="ctok-first")
        assert_handshake(cli, srv)
    assert "CN = rsa2048" in bytes(srv.out).decode(errors="replace") + srv.stderr, srv.report()


def test_server_refuses_certificate_that_does_not_match_token_key(shared_ws, signer):
    """The key/certificate consistency check compares the public keys for real."""
    import subprocess

    from ctoktest import assert_fails_with, free_port

    ws = shared_ws
    try:
        p = ws.ossl("s_server", "-accept", "127.0.0.1:%d" % free_port(), "-naccept", "1",
                    "-key", signer.key_uri("p256"), "-cert", signer.cert("p384"), timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("s_server accepted a certificate for another key and served")
    assert_fails_with(p)
    assert "mismatch" in p.stderr.lower() or "does not match" in p.stderr.lower(), p.stderr
