"""Issue 5: a user generates, lists, tests and removes key pairs, imports, lists and exports
certificates and makes key references with the ctok tool, on pkcs12 and pkcs11 (SoftHSM)
tokens, in human and --json output; an unknown or duplicate alias is a clear one-line error
that changes nothing."""

import base64
import json
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ctoktest import (
    assert_ok,
    assert_verified,
    describe,
    key_id_of_cert,
    load_cert,
    sign_digest,
    verify_digest,
)
from test_cli_audit import Audit
from test_cli_support import kind, error_line  # noqa: F401  (fixture kind)


def test_key_generate_reports_type_alias_token_and_id(kind):
    kind.create("tok")
    p = assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    m = re.match(r"^Generated EC P-256 key 'k1' on token 'tok' \(id ([0-9a-f]{40})\)$",
                 p.stdout.strip())
    assert m, describe(p)
    keys = kind.keys()
    assert [(k["alias"], k["id"]) for k in keys] == [("k1", m.group(1))]


def test_key_list_human_and_json_describe_every_key_and_its_certificates(kind):
    tok = kind.with_key("tok", "ec", "ec:P-256")
    kind.ws.add_key(tok, "ed", "ed25519", cert=False)
    p = assert_ok(kind.ctok("key", "list", "tok"))
    # each row is followed by the key's URIs, indented
    lines = [l for l in p.stdout.splitlines() if not l.startswith("    ")]
    assert re.match(r"^ALIAS\s+TYPE\s+ID\s+CERTIFICATES", lines[0]), describe(p)
    rows = {l.split()[0]: l for l in lines[1:]}
    assert set(rows) == {"ec", "ed"}, describe(p)
    assert "EC P-256" in rows["ec"] and rows["ec"].rstrip().endswith("ec")
    assert "ED25519" in rows["ed"]
    keys = {k["alias"]: k for k in kind.keys()}
    assert keys["ec"]["key_type"] == "EC" and keys["ec"]["curve"] == "P-256"
    assert keys["ec"]["bits"] == 256 and keys["ec"]["certificates"] == ["ec"]
    assert keys["ed"]["key_type"] == "ED25519" and keys["ed"]["certificates"] == []
    # the id is the SHA-1 of the public key, as in the certificate
    assert keys["ec"]["id"] == key_id_of_cert(tok.cert("ec")).hex()


def test_key_list_of_a_token_without_keys(kind):
    kind.create("tok")
    assert "No keys on token 'tok'" in assert_ok(kind.ctok("key", "list", "tok")).stdout
    assert kind.keys() == []


def test_key_generate_with_a_duplicate_alias_fails_and_keeps_the_first_key(kind):
    kind.with_key("tok", "k1", "ec:P-256", cert=False)
    first = kind.keys()
    before = kind.storage_digest()
    p = kind.ctok("key", "generate", "tok", "k1", "ec:P-384")
    line = error_line(p, "duplicate alias", "k1")
    assert "tok" in line
    assert kind.keys() == first
    assert kind.storage_digest() == before


def test_key_generate_with_an_unknown_spec_is_a_usage_error(kind):
    kind.create("tok")
    before = kind.storage_digest()
    p = kind.ctok("key", "generate", "tok", "k1", "ec:P-999")
    assert p.returncode == 2, describe(p)
    assert p.stderr.startswith("ctok: ") and len(p.stderr.strip().splitlines()) == 1
    assert kind.storage_digest() == before


def test_key_test_signs_and_verifies(kind):
    kind.with_key("tok", "k1", "ec:P-256", cert=False)
    audit = Audit(kind, use=True)
    p = assert_ok(kind.ctok("key", "test", "tok", "k1"))
    assert p.stdout.strip() == \
        "Key 'k1' on token 'tok' (EC P-256): sign and verify test passed", describe(p)
    # the token really signed: the token layer logged one use of the key
    assert [(e["object"], e["outcome"], e.get("detail")) for e in audit.new()
            if e["operation"] == "key_use"] == [("k1", "success", "sign")]


def mismatched_ec_key(ws):
    """A P-256 private key (PEM) whose public key is another key's: the private scalar of
    one key with the public point of a second one, made without ctok. Returns the PEM and
    the DER SubjectPublicKeyInfo of the public key it claims."""
    from cryptography.hazmat.primitives.asymmetric import ec

    a, b = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    der = a.private_bytes(serialization.Encoding.DER,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    point = b.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    assert der[-65:] == a.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    der = der[:-65] + point  # ECPrivateKey ends with its publicKey BIT STRING
    pem = ws.write("mismatched.pem", b"-----BEGIN EC PRIVATE KEY-----\n" +
                   base64.encodebytes(der) + b"-----END EC PRIVATE KEY-----\n")
    spki = b.public_key().public_bytes(serialization.Encoding.DER,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, spki


def give_key_a_wrong_public_key(kind, tok, alias):
    """Token key `alias` whose public key (the one the token reports) is not its own."""
    ws = kind.ws
    pem, spki = mismatched_ec_key(ws)
    if kind.kind == "pkcs12":
        # a keystore made by openssl pkcs12 from that key, under the token's code
        out = ws.path("mismatched.p12")
        assert_ok(ws.ossl("pkcs12", "-export", "-nocerts", "-inkey", pem, "-name", alias,
                          "-passout", "file:%s" % tok.pin_file, "-out", out, providers=None))
        tok.keystore.write_bytes(out.read_bytes())
        return
    # SoftHSM: the key's public key object replaced by another key's, same CKA_ID and label
    label = kind.labels[tok.name]
    kid = [k["id"] for k in kind.keys(tok.name) if k["alias"] == alias][0]
    login = ["--token-label", label, "--login", "--pin", tok.pin]
    assert_ok(kind.hsm.tool(*login, "--delete-object", "--type", "pubkey", "--id", kid))
    assert_ok(kind.hsm.tool(*login, "--write-object", ws.write("other.pub.der", spki),
                            "--type", "pubkey", "--id", kid, "--label", alias))


def test_key_test_fails_when_the_public_key_is_not_the_private_keys(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256", cert=False)
    give_key_a_wrong_public_key(kind, tok, "k1")
    audit = Audit(kind, use=True)
    p = kind.ctok("key", "test", "tok", "k1")
    line = error_line(p, "key test FAILED", "does not verify", "k1")
    assert "tok" in line and p.stdout == "", describe(p)
    # it failed for the right reason: the token did sign, the signature did not verify
    assert [(e["object"], e["outcome"]) for e in audit.new()
            if e["operation"] == "key_use"] == [("k1", "success")]
    p = kind.ctok("--json", "key", "test", "tok", "k1")
    assert p.returncode == 1 and json.loads(p.stdout)["passed"] is False, describe(p)


@pytest.mark.parametrize("argv", [
    ["key", "test", "tok", "nosuch"],
    ["key", "remove", "tok", "nosuch"],
    ["cert", "export", "tok", "nosuch"],
    ["ref", "tok", "nosuch"],
], ids=["key-test", "key-remove", "cert-export", "ref"])
def test_unknown_alias_is_a_one_line_not_found_error(kind, argv):
    kind.with_key("tok", "k1", "ec:P-256")
    before = kind.storage_digest()
    p = kind.ctok(*argv)
    line = error_line(p, "not found", "nosuch")
    assert "tok" in line
    assert p.stdout == ""
    assert kind.storage_digest() == before


def test_key_remove_deletes_the_key_and_its_certificates(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    kind.ws.add_key(tok, "k2", "ec:P-256")
    p = assert_ok(kind.ctok("key", "remove", "tok", "k1"))
    assert p.stdout.strip() == "Removed key 'k1' and its certificates from token 'tok'"
    assert [k["alias"] for k in kind.keys()] == ["k2"]
    assert [c["alias"] for c in kind.certs()] == ["k2"]
    error_line(kind.ctok("key", "test", "tok", "k1"), "k1")
    # the alias is free again
    assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256"))


def test_cert_import_reports_the_id_of_the_key_it_certifies(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256", cert=False)
    cert = kind.ws.self_signed(tok, "k1")
    p = assert_ok(kind.ctok("cert", "import", "tok", "role", cert))
    kid = kind.keys()[0]["id"]
    assert p.stdout.strip() == "Imported certificate 'role' to token 'tok' (id %s)" % kid
    assert kind.keys()[0]["certificates"] == ["role"]


def test_cert_import_accepts_der(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256", cert=False)
    pem = kind.ws.self_signed(tok, "k1")
    der = kind.ws.path("k1.der")
    der.write_bytes(load_cert(pem).public_bytes(serialization.Encoding.DER))
    assert_ok(kind.ctok("cert", "import", "tok", "k1", der))
    assert [c["alias"] for c in kind.certs()] == ["k1"]


def test_cert_import_with_a_duplicate_alias_fails_and_keeps_the_first(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    other = kind.ws.self_signed(tok, "k1", subject="/CN=other", out=kind.ws.path("other.pem"))
    before = kind.storage_digest()
    p = kind.ctok("cert", "import", "tok", "k1", other)
    error_line(p, "duplicate alias", "k1")
    assert kind.storage_digest() == before
    assert [c["subject"] for c in kind.certs()] == ["/CN=k1"]


@pytest.mark.parametrize("content", [None, b"this is no certificate\n"], ids=["missing", "garbage"])
def test_cert_import_of_a_missing_or_bad_file_fails(kind, content):
    kind.with_key("tok", "k1", "ec:P-256", cert=False)
    f = kind.ws.path("input.pem")
    if content is not None:
        f.write_bytes(content)
    before = kind.storage_digest()
    error_line(kind.ctok("cert", "import", "tok", "c1", f), "input.pem")
    assert kind.storage_digest() == before


def test_cert_list_human_and_json(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    c = load_cert(tok.cert("k1"))
    p = assert_ok(kind.ctok("cert", "list", "tok"))
    lines = [l for l in p.stdout.splitlines() if not l.startswith("    ")]
    assert re.match(r"^ALIAS\s+ID\s+NOT AFTER\s+SUBJECT", lines[0]), describe(p)
    assert len(lines) == 2 and lines[1].split()[0] == "k1" and "/CN=k1" in lines[1]
    certs = kind.certs()
    assert len(certs) == 1
    e = certs[0]
    assert e["alias"] == "k1" and e["subject"] == "/CN=k1" and e["issuer"] == "/CN=k1"
    assert e["id"] == key_id_of_cert(tok.cert("k1")).hex()
    assert e["not_after"] == c.not_valid_after.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert e["not_before"] == c.not_valid_before.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_cert_list_of_a_token_without_certificates(kind):
    kind.create("tok")
    p = assert_ok(kind.ctok("cert", "list", "tok"))
    assert "No certificates on token 'tok'" in p.stdout
    assert kind.certs() == []


def test_cert_export_gives_the_imported_certificate_on_stdout_or_in_a_file(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    want = load_cert(tok.cert("k1"))
    p = assert_ok(kind.ctok("cert", "export", "tok", "k1"))
    assert p.stdout.startswith("-----BEGIN CERTIFICATE-----")
    assert x509.load_pem_x509_certificate(p.stdout.encode()) == want
    out = kind.ws.path("exported.pem")
    p = assert_ok(kind.ctok("cert", "export", "tok", "k1", "--out", out))
    assert load_cert(out) == want
    assert want.fingerprint(hashes.SHA256()) == load_cert(out).fingerprint(hashes.SHA256())


def test_cert_export_to_an_unwritable_path_fails(kind):
    kind.with_key("tok", "k1", "ec:P-256")
    error_line(kind.ctok("cert", "export", "tok", "k1", "--out",
                         kind.ws.path("no-dir/out.pem")), "no-dir")


def test_ref_gives_a_key_reference_that_signs_with_the_token_key(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    p = assert_ok(kind.ctok("ref", "tok", "k1"))
    assert p.stdout.startswith("-----BEGIN CTOK URI-----"), describe(p)
    assert tok.pin not in p.stdout
    ref = kind.ws.write("k1.ref.pem", p.stdout)
    sp, sig, dg = sign_digest(kind.ws, ref)
    assert_ok(sp)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))
    kind.assert_no_secret()


def test_tool_output_of_a_whole_key_lifecycle_holds_no_secret(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    for argv in (["key", "list", "tok"], ["key", "list", "tok", "--json"],
                 ["key", "test", "tok", "k1"], ["cert", "list", "tok", "--json"],
                 ["token", "show", "tok"], ["token", "show", "tok", "--json"],
                 ["key", "remove", "tok", "k1"]):
        assert_ok(kind.ctok(*argv))
    kind.assert_no_secret(tok.pin)


def test_certificates_are_listed_and_exported_without_an_authentication_code(kind):
    """A token that asks for its code ({"prompt": true}): show, cert list and cert export
    work without a terminal and without any code."""
    tok = kind.with_key("tok", "k1", "ec:P-256")
    kind.set_fields("tok", auth={"prompt": True})
    p = kind.no_tty("cert", "list", "tok", "--json")
    assert_ok(p)
    assert [c["alias"] for c in json.loads(p.stdout)] == ["k1"]
    p = kind.no_tty("cert", "export", "tok", "k1")
    assert_ok(p)
    assert x509.load_pem_x509_certificate(p.stdout.encode()) == load_cert(tok.cert("k1"))
    assert_ok(kind.no_tty("token", "show", "tok"))
    # keys are another matter: using one needs the code
    error_line(kind.no_tty("key", "test", "tok", "k1"), "tok")
