"""Issue 5: for a token with "explicit_ecc" (ICAO CSCA/DS), the EC public keys in CSRs and
certificates made with `openssl req` carry explicit curve parameters (a prime field) instead
of the named curve, and still verify; other tokens keep the named curve."""

import re

import pytest

from ctoktest import CTOK_FIRST, assert_ok, describe
from test_cli_support import kind  # noqa: F401  (fixture kind)

# the field primes of the curves (FIPS 186-4 D.1.2)
PRIMES = {
    "P-256": "%x" % (2**256 - 2**224 + 2**192 + 2**96 - 1),
    "P-384": "%x" % (2**384 - 2**128 - 2**96 + 2**32 - 1),
}


def make_csr(kind, tok, alias, subject="/CN=ICAO DS"):
    csr = kind.ws.path("%s-%s.csr" % (tok.name, alias))
    p = kind.ossl("req", "-new", "-key", tok.uri(object=alias), "-subj", subject, "-out", csr,
                  providers=CTOK_FIRST)
    assert_ok(p)
    return csr


def csr_text(kind, csr):
    return assert_ok(kind.ossl("req", "-in", csr, "-text", "-noout", providers=None)).stdout


def assert_csr_verifies(kind, csr):
    p = kind.ossl("req", "-in", csr, "-verify", "-noout", providers=None)
    assert_ok(p)
    assert "verify OK" in p.stdout + p.stderr, describe(p)


def prime_of(text):
    m = re.search(r"Prime:\s*\n((?:\s+[0-9a-f:]+\n)+)", text)
    assert m, text
    return re.sub(r"[\s:]", "", m.group(1)).lstrip("0")


@pytest.mark.parametrize("curve", ["P-256", "P-384"])
def test_csr_of_an_explicit_ecc_token_has_explicit_parameters_and_verifies(kind, curve):
    tok = kind.create("icao", extra=["--explicit-ecc"])
    kind.ws.generate(tok, "ds", "ec:%s" % curve)
    csr = make_csr(kind, tok, "ds")
    text = csr_text(kind, csr)
    assert "Field Type: prime-field" in text, text
    assert "Prime:" in text and "ASN1 OID" not in text and "NIST CURVE" not in text, text
    assert prime_of(text) == PRIMES[curve], text
    assert_csr_verifies(kind, csr)


def test_csr_of_an_ordinary_token_keeps_the_named_curve(kind):
    tok = kind.create("plain")
    kind.ws.generate(tok, "ds", "ec:P-256")
    text = csr_text(kind, make_csr(kind, tok, "ds"))
    assert "ASN1 OID: prime256v1" in text and "Field Type" not in text, text


def test_modify_explicit_ecc_switches_the_encoding_of_an_existing_key(kind):
    tok = kind.create("icao")
    kind.ws.generate(tok, "ds", "ec:P-256")
    assert "ASN1 OID" in csr_text(kind, make_csr(kind, tok, "ds"))
    assert_ok(kind.ctok("token", "modify", "icao", "--explicit-ecc"))
    csr = make_csr(kind, tok, "ds")
    text = csr_text(kind, csr)
    assert "Field Type: prime-field" in text and "ASN1 OID" not in text, text
    assert_csr_verifies(kind, csr)
    assert_ok(kind.ctok("token", "modify", "icao", "--no-explicit-ecc"))
    assert "ASN1 OID" in csr_text(kind, make_csr(kind, tok, "ds"))


def test_self_signed_certificate_of_an_explicit_ecc_token_carries_the_parameters(kind):
    tok = kind.create("icao", extra=["--explicit-ecc"])
    kind.ws.generate(tok, "csca", "ec:P-256")
    cert = kind.ws.self_signed(tok, "csca", subject="/CN=CSCA")
    text = assert_ok(kind.ossl("x509", "-in", cert, "-text", "-noout", providers=None)).stdout
    assert "Field Type: prime-field" in text and "ASN1 OID" not in text, text
    # the certificate signature checks out against its own (explicit) public key
    p = kind.ossl("verify", "-CAfile", cert, "-check_ss_sig", "-partial_chain", cert,
                  providers=None)
    assert_ok(p)
    # and ctok still matches it to its key
    assert_ok(kind.ctok("cert", "import", "icao", "csca", cert))
    assert kind.keys("icao")[0]["certificates"] == ["csca"]


@pytest.mark.parametrize("spec,alias", [("ed25519", "ed"), ("rsa:2048", "rsa")])
def test_explicit_ecc_leaves_non_ec_keys_alone(kind, spec, alias):
    tok = kind.create("icao", extra=["--explicit-ecc"])
    kind.ws.generate(tok, alias, spec)
    csr = make_csr(kind, tok, alias)
    assert "Field Type" not in csr_text(kind, csr)
    assert_csr_verifies(kind, csr)
