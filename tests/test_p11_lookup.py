"""A user names an HSM key by its certificate (certificate-first lookup by CKA_ID), has role
certificates that share one key, and uses modules that are older (Cryptoki 2.11) or keep
their certificates private until login (through the PKCS#11 test shim)."""

import pytest
from cryptography.hazmat.primitives import serialization

from ctoktest import (
    assert_ok,
    assert_verified,
    count_items,
    describe,
    load_cert,
    public_der,
    sign_digest,
    verify_digest,
)
from p11fixtures import MAIN_LABEL, ShimLog, logins, main_hsm  # noqa: F401  (fixture)


@pytest.fixture
def log(tmp_path):
    return ShimLog(tmp_path / "shim.log")


def public_key_at(ws, uri, out):
    assert_ok(ws.ossl("pkey", "-in", uri, "-pubout", "-out", out))
    return public_der(serialization.load_pem_public_key(out.read_bytes()))


# ---------------------------------------------------------------- certificate-first, roles


def test_certificate_gets_the_cka_id_of_the_key_it_certifies(main_hsm):
    certs = main_hsm.hsm.objects(MAIN_LABEL, "cert")
    by_label = {}
    for c in certs:
        by_label.setdefault(c["label"], []).append(c["id"])
    for alias in ("rsa2048", "p256", "ed25519", "role-a", "role-b", "rsa2048-copy"):
        key = "role-key" if alias.startswith("role-") else alias.replace("-copy", "")
        assert by_label.get(alias) == [main_hsm.key_ids[key].hex()], certs


@pytest.mark.parametrize("role", ["role-a", "role-b"])
def test_role_certificates_with_one_cka_id_resolve_to_the_same_key(main_hsm, tmp_path, role):
    ws, tok = main_hsm.ws, main_hsm.tok
    expected = public_der(load_cert(tok.cert(role)).public_key())
    assert public_key_at(ws, tok.uri(object=role, type="private"), tmp_path / "a.pem") == expected
    p, sig, dg = sign_digest(ws, tok.uri(object=role, type="private"))
    assert_ok(p)
    # a signature by one role's key verifies with the other role's certificate too
    for other in ("role-a", "role-b"):
        assert_verified(verify_digest(ws, tok.cert(other), dg, sig))


@pytest.mark.parametrize("label", ["role-a", "role-b", "rsa2048-copy", "p256"])
def test_a_certificate_label_names_exactly_one_private_key(main_hsm, label):
    """The token holds several keys: a certificate's label selects only the key with the
    certificate's CKA_ID, never the others (a signature alone cannot tell when the first key
    listed happens to be the right one)."""
    ws, tok = main_hsm.ws, main_hsm.tok
    p = assert_ok(ws.ossl("storeutl", "-keys", tok.uri(object=label, type="private")))
    assert count_items(p.stdout, "Pkey") == 1, describe(p)


def test_the_same_certificate_imported_twice_resolves_to_the_same_key(main_hsm, tmp_path):
    ws, tok = main_hsm.ws, main_hsm.tok
    a = public_key_at(ws, tok.uri(object="rsa2048", type="private"), tmp_path / "a.pem")
    b = public_key_at(ws, tok.uri(object="rsa2048-copy", type="private"), tmp_path / "b.pem")
    assert a == b == public_der(load_cert(tok.cert("rsa2048")).public_key())
    p, sig, dg = sign_digest(ws, tok.uri(object="rsa2048-copy", type="private"))
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("rsa2048"), dg, sig))


def test_certificate_first_lookup_without_naming_the_token(main_hsm):
    ws, tok = main_hsm.ws, main_hsm.tok
    p, sig, dg = sign_digest(ws, "ctok:object=role-b;type=private")
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("role-b"), dg, sig))


def test_role_certificates_are_listed_without_login_and_the_key_once(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p = assert_ok(ws.ossl("storeutl", "-certs", tok.uri(id=main_hsm.key_ids["role-key"]),
                          env=log.env()))
    assert count_items(p.stdout, "Certificate") == 2, describe(p)
    assert log.calls("C_Login") == [], log.text()


def test_certificate_first_signing_logs_in_once(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, sig, dg = sign_digest(ws, "ctok:object=role-a;type=private", env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("role-a"), dg, sig))
    assert [(c["rv"], c.get("token")) for c in log.calls("C_Login")] == [
        ("CKR_OK", MAIN_LABEL)], log.text()


def test_public_key_and_certificate_are_read_without_login(main_hsm, log, tmp_path):
    """The public key comes from the token (or its certificate) without the PIN."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    out = tmp_path / "pub.pem"
    assert_ok(ws.ossl("pkey", "-pubin", "-in", tok.uri(object="p384", type="public"), "-out", out,
                      env=log.env()))
    assert public_der(serialization.load_pem_public_key(out.read_bytes())) == public_der(
        load_cert(tok.cert("p384")).public_key())
    assert log.calls("C_Login") == [], log.text()


# ---------------------------------------------------------------- old modules, private certs


def test_cryptoki_2_11_module_still_works(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    env = log.env(version="2.11")
    slots = ws.slots(main_hsm.shim, env=env)
    assert MAIN_LABEL in [s["token_label"] for s in slots]
    p = assert_ok(ws.ctok("key", "list", tok.name, env=env))
    assert "p256" in p.stdout
    for alias in ("p256", "rsa2048"):
        p, sig, dg = sign_digest(ws, tok.key_uri(alias), env=env)
        assert_ok(p)
        assert_verified(verify_digest(ws, tok.cert(alias), dg, sig))
    p = assert_ok(ws.ossl("storeutl", "-certs", tok.uri(), env=env))
    assert count_items(p.stdout, "Certificate") == 8, describe(p)
    assert log.calls("C_Initialize", "CKR_OK"), log.text()


def test_cryptoki_2_11_module_key_test_through_the_tool(main_hsm):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p = assert_ok(ws.ctok("key", "test", tok.name, "ed25519",
                          env={"CTOK_SHIM_VERSION": "2.11"}))
    assert "passed" in p.stdout


def test_private_certificates_are_found_after_login(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    env = log.env(private_certs=1)
    p = assert_ok(ws.ossl("storeutl", "-certs", tok.uri(), env=env))
    assert count_items(p.stdout, "Certificate") == 8, describe(p)
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()


def test_private_certificates_still_allow_certificate_first_lookup(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    env = log.env(private_certs=1)
    for uri in (tok.uri(object="role-b", type="private"), "ctok:object=role-a;type=private"):
        p, sig, dg = sign_digest(ws, uri, env=env)
        assert_ok(p)
        assert_verified(verify_digest(ws, tok.cert("role-a"), dg, sig))
    assert all(c["rv"] == "CKR_OK" for c in log.calls("C_Login")), log.text()


def test_private_certificates_one_certificate_by_label(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p = assert_ok(ws.ossl("storeutl", "-certs", tok.uri(object="p384"),
                          env=log.env(private_certs=1)))
    assert count_items(p.stdout, "Certificate") == 1, describe(p)


def test_verification_with_an_hsm_key_never_calls_the_token_to_verify(main_hsm, log):
    """The public key is kept in ctok: openssl pkeyutl -verify with the token key verifies in
    software, with no C_Verify* call to the module."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, sig, dg = sign_digest(ws, tok.key_uri("rsa2048"))
    assert_ok(p)
    for uri in (tok.key_uri("rsa2048"), tok.uri(object="rsa2048", type="public")):
        v = ws.ossl("pkeyutl", "-verify", "-inkey", uri, *(["-pubin"] if "public" in uri else []),
                    "-in", dg, "-sigfile", sig, "-pkeyopt", "digest:sha256",
                    env=dict(log.env(), CTOK_SHIM_LOG_ALL="1"))
        assert_verified(v)
    # and with the certificate, not only with ctok's own idea of the public key
    assert_verified(verify_digest(ws, tok.cert("rsa2048"), dg, sig))
    assert log.entries(), "the shim logged nothing"
    assert not [e for e in log.entries() if e["fn"].startswith("C_Verify")], log.summary()


def test_a_key_load_by_label_reads_only_that_keys_objects(main_hsm, log, tmp_path):
    """Issue 9: a URI naming an object is answered with C_FindObjects templates on CKA_LABEL /
    CKA_ID, not by reading every object of the token. Signing with one key of the main token
    looks it up before and after the login and loads it: reading every object each time (as
    before) costs at least twice a listing's attribute reads; the key's objects alone, less
    than half of one."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, sig, dg = sign_digest(ws, tok.key_uri("p256"), env=log.env(log_all=1))
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("p256"), dg, sig))
    one = len(log.calls("C_GetAttributeValue"))
    every = ShimLog(tmp_path / "every.log")
    assert_ok(ws.ctok("key", "list", tok.name, env=every.env(log_all=1)))
    all_reads = len(every.calls("C_GetAttributeValue"))
    print("attribute reads: signing with one key %d, listing every key %d" % (one, all_reads))
    assert 0 < one and 2 * one < all_reads, (one, all_reads, log.summary())
