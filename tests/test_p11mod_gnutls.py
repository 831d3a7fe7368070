"""GnuTLS uses ctok's tokens through ctok-p11.so (issue 14): gnutls-serv serves TLS on
127.0.0.1 with a token key named by a pkcs11: URI, gnutls-cli completes the handshake and the
server echoes. The module is given with --provider: p11-kit reads no user config for a program
running as root (the test machine), so a private p11-kit config would be ignored there. The
token's code comes from its config (CKF_PROTECTED_AUTHENTICATION_PATH): GnuTLS asks no PIN."""


import pytest

from ctoktest import describe, free_port, run
from p11modtest import MODULE, Daemon, make_face, require_tools, wait_listening


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    require_tools("gnutls-bin", "gnutls-serv", "gnutls-cli")
    return make_face(request.param, tmp_path_factory, build)


@pytest.mark.parametrize("alias", ["rsa", "ec"])
def test_gnutls_serves_tls_with_a_token_key_by_pkcs11_uri(face, tmp_path, alias):
    port = free_port()
    key = "pkcs11:token=%s;object=%s;type=private" % (face.name, alias)
    serv = Daemon(["gnutls-serv", "--provider", str(MODULE), "--port", str(port),
                   "--x509certfile", str(face.cert(alias)), "--x509keyfile", key, "--echo"],
                  face.env(), tmp_path / "serv.log")
    try:
        assert wait_listening(port, serv.proc), serv.text()
        p = run(["gnutls-cli", "--port", str(port), "--x509cafile", str(face.cert(alias)),
                 "--verify-hostname", alias, "127.0.0.1"], face.env(),
                input="hello through ctok-p11\n", timeout=30)
        assert "Handshake was completed" in p.stdout, describe(p) + serv.text()
        assert "hello through ctok-p11" in p.stdout, describe(p) + serv.text()
    finally:
        serv.stop()
