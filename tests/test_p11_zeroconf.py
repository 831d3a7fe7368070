"""Zero-config pkcs11: URIs (issue 12, "System-wide setup"): with no ctok config at all, a
pkcs11: URI resolves against the PKCS#11 modules registered with p11-kit, as p11-kit consumers
and pkcs11-provider do, and pkcs11-provider's key-reference PEM files work as they are.

The registration used is Debian's own: the softhsm2 package installs
/usr/share/p11-kit/modules/softhsm2.module (make test-deps installs softhsm2). Each subprocess
gets SOFTHSM2_CONF, so the registered module sees this test's token directory only; CTOK_CONFIG
names a file that does not exist. Nothing is set in this Python process's environment."""

import base64
import os
from pathlib import Path

import pytest

from ctoktest import (
    BUILD,
    PIN,
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_ok,
    assert_verified,
    describe,
    run_with_tty,
    sign_digest,
    tls_client,
    verify_digest,
)
from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

REGISTERED = Path("/usr/share/p11-kit/modules/softhsm2.module")
LABEL = "zc-token"
KEY = "pkcs11:token=%s;object=k1" % LABEL


def der(tag, body):
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(b)]) + b
    return bytes([tag]) + length + body


def p11prov_der(uri, desc=b"PKCS#11 Provider URI v1.0"):
    """pkcs11-provider's key reference: SEQUENCE { desc VisibleString, uri UTF8String }."""
    return der(0x30, der(0x1A, desc) + der(0x0C, uri.encode()))


def pem(body):
    return ("-----BEGIN PKCS#11 PROVIDER URI-----\n%s-----END PKCS#11 PROVIDER URI-----\n"
            % base64.encodebytes(body).decode())


def p11prov_pem(uri):
    return pem(p11prov_der(uri))


class ZeroConf:
    """One SoftHSM token with an EC key 'k1' made by pkcs11-tool (no ctok involved) and a
    self-signed certificate for it made by openssl req through the zero-config path."""

    def __init__(self, root):
        require_pkcs11_tools()
        assert REGISTERED.exists(), "softhsm2 is not registered with p11-kit: %s" % REGISTERED
        self.hsm = SoftHsm(root / "softhsm")
        self.hsm.init_token(LABEL, PIN)
        assert_ok(self.hsm.tool("--token-label", LABEL, "--login", "--pin", PIN,
                                "--keypairgen", "--key-type", "EC:prime256v1", "--label", "k1",
                                "--id", "01"))
        self.ws = P11Workspace(root, BUILD, self.hsm, config_name="absent.json")
        assert not self.ws.config.exists()
        self.cert = self.ws.path("k1.crt")
        assert_ok(self.ws.ossl("req", "-new", "-x509", "-key", KEY + "?pin-value=" + PIN,
                               "-subj", "/CN=zero-config", "-days", "2", "-out", self.cert))


@pytest.fixture(scope="module")
def zc(tmp_path_factory):
    return ZeroConf(tmp_path_factory.mktemp("p11zc"))


def test_sign_with_a_plain_pkcs11_uri_and_no_ctok_config(zc):
    p, sig, dg = sign_digest(zc.ws, KEY + "?pin-value=" + PIN)
    assert_ok(p)
    assert_verified(verify_digest(zc.ws, zc.cert, dg, sig))


def test_pin_from_pin_source_file(zc):
    pin = zc.ws.write("pin.txt", PIN + "\n")
    p, sig, dg = sign_digest(zc.ws, KEY + "?pin-source=file:" + str(pin))
    assert_ok(p)
    assert_verified(verify_digest(zc.ws, zc.cert, dg, sig))


def test_pin_from_the_prompt_names_the_token(zc):
    _, sig, dg = sign_digest(zc.ws, KEY + "?pin-value=" + PIN)  # the digest file
    out_sig = zc.ws.path("tty.sig")
    argv = zc.ws.ossl_argv("pkeyutl", "-sign", "-inkey", KEY, "-in", dg, "-out", out_sig,
                           "-pkeyopt", "digest:sha256")
    code, out, prompts = run_with_tty(argv, zc.ws.ossl_env(), answers=[PIN])
    assert code == 0, out
    assert len(prompts) == 1 and LABEL in prompts[0], out
    assert PIN not in out, "the PIN was echoed"
    assert_verified(verify_digest(zc.ws, zc.cert, dg, out_sig))


def test_csr_signed_by_the_token_verifies(zc):
    csr = zc.ws.path("k1.csr")
    assert_ok(zc.ws.ossl("req", "-new", "-key", KEY + "?pin-value=" + PIN, "-subj",
                         "/CN=zero-config csr", "-out", csr))
    p = assert_ok(zc.ws.ossl("req", "-in", csr, "-verify", "-noout", providers=None))
    assert "verify OK" in p.stdout + p.stderr, describe(p)


def test_pkey_gives_the_public_key_of_the_certificate(zc):
    p = assert_ok(zc.ws.ossl("pkey", "-in", KEY + "?pin-value=" + PIN, "-pubout"))
    q = assert_ok(zc.ws.ossl("x509", "-in", zc.cert, "-noout", "-pubkey", providers=None))
    assert p.stdout == q.stdout and "BEGIN PUBLIC KEY" in p.stdout, describe(p)


def test_tls_server_with_a_pkcs11_uri_and_no_ctok_config(zc):
    with TlsServer(zc.ws, KEY + "?pin-value=" + PIN, zc.cert) as server:
        client = tls_client(zc.ws, server.port, zc.cert)
        assert_handshake(client, server)


def test_module_path_selects_the_library_itself(zc):
    uri = KEY + "?module-path=%s&pin-value=%s" % (SOFTHSM_LIB, PIN)
    p, sig, dg = sign_digest(zc.ws, uri)
    assert_ok(p)
    assert_verified(verify_digest(zc.ws, zc.cert, dg, sig))


def test_no_matching_token_names_what_was_searched(zc):
    p, _, _ = sign_digest(zc.ws, "pkcs11:token=no-such-token;object=k1?pin-value=" + PIN)
    assert_fails_with(p, "no PKCS#11 token matches 'pkcs11:token=no-such-token'",
                      str(zc.ws.config), "does not exist", "softhsm2 (token '%s')" % LABEL)


def test_module_name_narrows_the_search(zc):
    p, _, _ = sign_digest(zc.ws, KEY + "?module-name=not-registered&pin-value=" + PIN)
    assert_fails_with(p, "no module registered with that module-name")


def test_a_configured_token_wins_and_its_rules_hold(zc):
    """A slot the config names is never reached around the config: its rules hold."""
    conf = zc.ws.write("restricted.json", '{"tokens": [{"name": "hsm", "type": "pkcs11", '
                       '"library": "%s", "ref_type": "label", "ref": "%s", '
                       '"permissions": ["view"]}]}' % (SOFTHSM_LIB, LABEL))
    p, _, _ = sign_digest(zc.ws, KEY + "?pin-value=" + PIN, env={"CTOK_CONFIG": conf})
    assert_fails_with(p, "token 'hsm'", "'use' is not permitted")


def test_pkcs11_provider_key_reference_pem_signs(zc):
    ref = zc.ws.write("k1-ref.pem", p11prov_pem(KEY + ";type=private"), mode=0o644)
    p, sig, dg = sign_digest(zc.ws, ref, "-passin", "pass:" + PIN)
    assert_ok(p)
    assert_verified(verify_digest(zc.ws, zc.cert, dg, sig))


def test_pkcs11_provider_key_reference_serves_a_tls_server(zc):
    ref = zc.ws.write("k1-tls.pem", p11prov_pem(KEY), mode=0o644)
    with TlsServer(zc.ws, ref, zc.cert, "-pass", "pass:" + PIN) as server:
        client = tls_client(zc.ws, server.port, zc.cert)
        assert_handshake(client, server)


HOSTILE = [
    ("module-path", p11prov_pem(KEY + "?module-path=/tmp/evil.so"), "may not name a library"),
    ("pin-value", p11prov_pem(KEY + "?pin-value=" + PIN), "may not carry auth codes"),
    ("ctok-uri-inside", p11prov_pem("ctok:token=x;object=k1"), "holds no key reference"),
    ("truncated-base64", p11prov_pem(KEY)[:-60] + "\n-----END PKCS#11 PROVIDER URI-----\n",
     "is damaged"),
    ("truncated-der", pem(p11prov_der(KEY)[:-5]), "holds no key reference"),
    ("trailing-byte", pem(p11prov_der(KEY) + b"\0"), "holds no key reference"),
    ("nul-in-uri", p11prov_pem(KEY + "\0;object=x"), "holds no key reference"),
    ("not-base64", "-----BEGIN PKCS#11 PROVIDER URI-----\n!!!!\n"
     "-----END PKCS#11 PROVIDER URI-----\n", "is damaged"),
    ("oversized", "-----BEGIN PKCS#11 PROVIDER URI-----\n" + ("QUFB" * 16 + "\n") * 200
     + "-----END PKCS#11 PROVIDER URI-----\n", "is damaged or longer"),
]


@pytest.mark.parametrize("name, text, phrase", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_pkcs11_provider_pem_fails_cleanly(zc, name, text, phrase):
    """One clear error (OpenSSL 3.0's file store drops a decoder's errors from its own
    report: ctok's trace shows it), no crash, no PIN sent, no library loaded."""
    ref = zc.ws.write("hostile-%s.pem" % name, text, mode=0o644)
    p = zc.ws.ossl("pkey", "-in", ref, "-noout", "-passin", "pass:" + PIN, debug=True)
    assert_fails_with(p, phrase)
    assert "key-reference PEM found" not in p.stderr, describe(p)


def test_ordinary_pem_keys_are_untouched(zc):
    """The decoder sees every PEM: an ordinary key next to it reads as it always did."""
    key = zc.ws.path("plain.key")
    assert_ok(zc.ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                         "-out", key, providers=None))
    p = assert_ok(zc.ws.ossl("pkey", "-in", key, "-noout", "-text"))
    assert "Private-Key" in p.stdout, describe(p)
    assert p.stderr == "", describe(p)


def test_without_ctok_config_variable_either(zc):
    if Path("/etc/ctok/tokens.json").exists():
        pytest.skip("this machine has /etc/ctok/tokens.json")
    p, sig, dg = sign_digest(zc.ws, KEY + "?pin-value=" + PIN, env={"CTOK_CONFIG": None})
    assert_ok(p)
    assert_verified(verify_digest(zc.ws, zc.cert, dg, sig))
    assert "CTOK_CONFIG" not in os.environ
