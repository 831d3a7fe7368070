"""An administrator serves HTTPS with Debian's Apache httpd (mod_ssl, mpm_event, the child
running as www-data) and a ctok key: `SSLCertificateKeyFile` names a key-reference PEM, or a
key URI directly where mod_ssl accepts one.

What mod_ssl 2.4 accepts (measured on Debian 12's 2.4.x): it takes SSLCertificateKeyFile
values that start with "pkcs11:" as a key URI (it first tries an ENGINE named pkcs11, logs
that it has none, then loads the URI through OSSL_STORE, where ctok resolves it against its
PKCS#11 tokens); any other value, a `ctok:` URI included, is a file name relative to
ServerRoot, and httpd refuses to start because that file does not exist."""

import os

import pytest

from appfixtures import (
    Httpd,
    assert_curl_ok,
    assert_s_client_ok,
    curl,
    s_client,
    world,  # noqa: F401  (fixture)
    HSM_LABEL,
    proc_uid,
    worker_ids,
)
from ctoktest import describe

SIGTYPE = {"rsa": "RSA-PSS", "ec": "ECDSA"}


def bad_lines(log):
    return [l for l in log.splitlines()
            if "[core:notice]" in l and "exit signal" in l or "Segmentation" in l]


@pytest.mark.parametrize("token,alias", [("soft", "rsa"), ("soft", "ec"), ("hsm", "rsa"),
                                         ("hsm", "ec")])
def test_httpd_serves_https_with_a_key_reference_pem_as_SSLCertificateKeyFile(world, token,
                                                                              alias):
    key = world.key(token, alias)
    with Httpd(world, key.cert, key.ref) as httpd:
        children = httpd.server.children()
        c13 = curl(world, httpd.port, "--tlsv1.3", path="/index.html")
        s12 = s_client(world, httpd.port, "-tls1_2",
                       request="GET /index.html HTTP/1.1\r\nHost: localhost\r\n"
                               "Connection: close\r\n\r\n")
        # read once they have served: a child forked a moment ago may not have switched yet
        uids = {pid: proc_uid(pid) for pid in children if os.path.exists("/proc/%d" % pid)}
        log = httpd.error_log()
    assert_curl_ok(c13, "TLSv1.3", "hello from httpd")
    assert_s_client_ok(s12, "TLSv1.2", SIGTYPE[alias], "hello from httpd")
    assert "configured from %s and %s" % (key.cert, key.ref) in log, log
    assert not bad_lines(log), httpd.report()
    # the parent (root) loaded the key; the child that served runs as www-data
    assert children and set(uids.values()) == {worker_ids()[0]}, uids


def test_httpd_serves_https_with_a_pkcs11_uri_as_SSLCertificateKeyFile_through_ctok(world):
    """mod_ssl hands a pkcs11: URI to OSSL_STORE, and ctok resolves it against its PKCS#11
    token (SoftHSM, by the token label)."""
    key = world.key("hsm", "ec")
    uri = "pkcs11:token=%s;object=ec;type=private" % HSM_LABEL
    with Httpd(world, key.cert, uri, env=world.app_env(debug=True)) as httpd:
        c = curl(world, httpd.port, "--tlsv1.3", path="/index.html")
        log = httpd.error_log()
    assert_curl_ok(c, "TLSv1.3", "hello from httpd")
    assert "configured from %s and %s" % (key.cert, uri) in log, log
    # ctok resolved the URI and made the handshake signature
    assert "store: open" in log and "signature:" in log, httpd.report()


def test_httpd_takes_no_ctok_uri_as_SSLCertificateKeyFile_and_says_the_file_is_missing(world):
    """mod_ssl treats every value but a pkcs11: URI as a file: a ctok: URI is refused at
    start-up with its own "does not exist" error (use a key-reference PEM instead)."""
    key = world.key("soft", "rsa")
    httpd = Httpd(world, key.cert, key.uri)
    p = httpd.test_config()
    assert p.returncode != 0 and p.returncode not in (134, 139), describe(p)
    out = p.stdout + p.stderr
    assert "SSLCertificateKeyFile: file" in out and "does not exist or is empty" in out, \
        describe(p)
    assert key.uri in out, describe(p)
