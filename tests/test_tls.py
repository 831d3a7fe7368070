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

# id: (key alias, protocol, client options, expected peer signature type); RSA-2048/3072 and
# ECDSA P-256/384/521 servers and client authentication are in the behaviour table
# (test_behaviour.py)
CASES = {
    "tls13-rsa4096-pss": ("rsa4096", "-tls1_3", [], "RSA-PSS"),
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
