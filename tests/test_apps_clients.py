"""Clients and libraries that read a PEM private key, with ctok active through OPENSSL_CONF:
curl authenticates with a client certificate whose key is in a token (mutual TLS), and
Python's ssl module (Debian's python3, in a process of its own) loads a key-reference PEM
with load_cert_chain and serves a TLS handshake."""

import re
import socket
import ssl

import pytest

from appfixtures import (
    SServer,
    curl,
    python_server,
    wait_output,
    world,  # noqa: F401  (fixture)
)
from ctoktest import describe


@pytest.mark.parametrize("token,alias,proto", [("soft", "ec", "TLSv1.3"),
                                               ("soft", "rsa", "TLSv1.2"),
                                               ("hsm", "rsa", "TLSv1.3"),
                                               ("hsm", "ec", "TLSv1.2")])
def test_curl_authenticates_with_a_client_certificate_whose_key_is_in_a_token(world, token,
                                                                              alias, proto):
    key = world.key(token, alias)
    with SServer(world, "-Verify", "1", "-verify_return_error", "-CAfile", world.ca) as srv:
        c = curl(world, srv.port, "--cert", key.cert, "--key", key.ref,
                 "--tlsv1.3" if proto == "TLSv1.3" else "--tlsv1.2",
                 "--tls-max", proto[-3:], env=world.app_env())
        rc = srv.finish()
        out = srv.output()
    # curl talks to a server whose certificate is a plain file key under the same CA
    assert c.returncode == 0, describe(c) + "\n--- s_server ---\n" + out
    assert "SSL connection using %s" % proto in c.stderr, describe(c)
    assert "SSL certificate verify ok" in c.stderr, describe(c)
    # the server verified the client's chain and saw the token key's certificate
    assert re.search(r"depth=0 CN\s*=\s*%s" % re.escape(key.subject), out), out
    assert "verify error" not in out.lower(), out
    assert "CN=%s" % key.subject in c.stdout or "CN = %s" % key.subject in c.stdout, \
        describe(c)
    assert rc == 0, out


def test_curl_stops_with_a_private_key_error_on_a_client_key_reference_to_a_missing_key(world):
    from appfixtures import keyref_pem

    ref = world.ws.write("client-missing.ref.pem",
                         keyref_pem("ctok:token=soft;object=not-there;type=private"))
    key = world.key("soft", "ec")
    with SServer(world, "-Verify", "1", "-CAfile", world.ca) as srv:
        c = curl(world, srv.port, "--cert", key.cert, "--key", ref, env=world.app_env())
    assert c.returncode != 0 and c.returncode not in (134, 139), describe(c)
    # curl: (58) unable to set private key file: '...' type PEM
    assert c.returncode == 58 and "private key" in c.stderr, describe(c)


@pytest.mark.parametrize("token,alias", [("soft", "rsa"), ("hsm", "ec")])
def test_python_ssl_loads_a_key_reference_with_load_cert_chain_and_completes_a_handshake(
        world, token, alias):
    key = world.key(token, alias)
    srv = python_server(world, key)
    try:
        m = wait_output(srv, r"PORT (\d+)")
        assert m, "python server did not start\n" + srv.output()
        port = int(m.group(1))
        ctx = ssl.create_default_context(cafile=str(world.ca))
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                peer = t.getpeercert()
                t.sendall(b"ping\n")
                data = b""
                while True:
                    chunk = t.recv(1024)
                    if not chunk:
                        break
                    data += chunk
        assert wait_output(srv, r"DONE"), srv.output()
    finally:
        srv.stop()
    out = srv.output()
    assert data == b"python says: \ngnip", (data, out)
    assert ("commonName", key.subject) in [x for rdn in peer["subject"] for x in rdn], peer
    assert re.search(r"HANDSHAKE TLSv1\.3", out), out
    assert "DONE" in out, out


def test_python_ssl_load_cert_chain_fails_cleanly_on_a_reference_to_a_missing_key(world):
    from appfixtures import ServerKey, keyref_pem

    ref = world.ws.write("py-missing.ref.pem",
                         keyref_pem("ctok:token=soft;object=not-there;type=private"))
    good = world.key("soft", "rsa")
    bogus = ServerKey("soft", "not-there", "", good.cert, ref, good.subject)
    srv = python_server(world, bogus)
    try:
        m = wait_output(srv, r"LOAD-FAILED|PORT")
        if m and m.group(0) == "LOAD-FAILED":
            srv.proc.wait(20)  # it exits by itself; a slow exit (ASan) is not a SIGTERM's
    finally:
        srv.stop()
    assert m and m.group(0) == "LOAD-FAILED", srv.output()
    assert srv.proc.returncode == 3, srv.output()
