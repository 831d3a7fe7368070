"""A user manages PKCS#11 tokens with the ctok tool: makes a token of an HSM slot (the PIN is
checked), generates keys with the attribute template (checked independently with OpenSC's
pkcs11-tool), imports certificates, tests and removes keys, and sets a new PIN with the PUK
through C_UnlockPIN or the SO-login fallback."""

import pytest

from ctoktest import (
    PIN,
    assert_fails_with,
    assert_ok,
    assert_tool_error,
    assert_verified,
    describe,
    sign_digest,
    verify_digest,
)
from p11fixtures import (  # noqa: F401  (fixture fresh_hsm)
    SO_PIN,
    SOFTHSM_LIB,
    ShimLog,
    fresh_hsm,
    logins,
    require_shim,
)

LABEL = "tool-token"


@pytest.fixture
def hw(fresh_hsm):
    """A fresh SoftHSM token LABEL (PIN ctoktest.PIN, SO PIN = PUK SO_PIN) and a ctok token
    'hsm' of it through SoftHSM's own module."""
    fresh_hsm.hsm.init_token(LABEL, PIN)
    return fresh_hsm


def privkey(hw, alias, pin=PIN):
    objs = [o for o in hw.hsm.objects(LABEL, "privkey", pin=pin) if o.get("label") == alias]
    assert len(objs) == 1, objs
    return objs[0]


# ---------------------------------------------------------------- token create


def test_token_create_checks_the_pin_by_logging_in(hw):
    bad = hw.write("bad.pin", "not-the-pin")
    p = hw.ctok("token", "create", "--type", "pkcs11", "--name", "hsm", "--library", SOFTHSM_LIB,
                "--ref-type", "label", "--ref", LABEL, "--auth-file", bad)
    assert_tool_error(p, "CKR_PIN_INCORRECT")
    assert not hw.config.exists() or '"hsm"' not in hw.config.read_text()
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    entry = hw.token_entry("hsm")
    assert entry["type"] == "pkcs11" and entry["ref_type"] == "label" and entry["ref"] == LABEL
    assert entry["library"] == str(SOFTHSM_LIB)
    assert entry["auth"] == {"file": str(tok.pin_file)}
    listed = assert_ok(hw.ctok("token", "list"))
    assert "hsm" in listed.stdout


# ---------------------------------------------------------------- key generation


def test_generated_keys_are_sensitive_never_extractable_and_private_by_default(hw):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    ids = {}
    for alias, spec in (("r", "rsa:2048"), ("e", "ec:P-384"), ("d", "ed25519")):
        ids[alias] = hw.generate(tok, alias, spec)
    for alias in ids:
        k = privkey(hw, alias)
        assert "sensitive" in k["access"], k
        assert "never extractable" in k["access"] and "extractable" not in k["access"], k
        assert k["id"] == ids[alias].hex(), k
        assert len(ids[alias]) == 20, "CKA_ID is not a SHA-1"
    # CKA_PRIVATE: no private key is visible without login
    assert hw.hsm.objects(LABEL, "privkey") == []
    # public keys are, with the same CKA_ID and label
    pubs = {o["label"]: o["id"] for o in hw.hsm.objects(LABEL, "pubkey")}
    assert pubs == {a: i.hex() for a, i in ids.items()}


def test_key_generation_honours_the_attribute_template_per_key_type(hw):
    attrs = hw.write("attrs.cfg", """# SunPKCS11 / EJBCA syntax
attributes(generate, CKO_PRIVATE_KEY, CKK_RSA) = {
  CKA_SENSITIVE = false
  CKA_EXTRACTABLE = true
}
attributes(generate, CKO_PRIVATE_KEY, CKK_EC) = {
  CKA_PRIVATE = false
}
""", mode=0o644)
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL, attributes=attrs)
    assert hw.token_entry("hsm").get("attributes") == str(attrs)
    hw.generate(tok, "r", "rsa:2048")
    hw.generate(tok, "e", "ec:P-256")
    hw.generate(tok, "d", "ed25519")
    r = privkey(hw, "r")
    assert "extractable" in r["access"] and "never extractable" not in r["access"], r
    assert "sensitive" not in r["access"], r
    e = privkey(hw, "e")
    assert "sensitive" in e["access"] and "never extractable" in e["access"], e
    # the EC private key is visible without login (CKA_PRIVATE false), the others are not
    assert [o["label"] for o in hw.hsm.objects(LABEL, "privkey")] == ["e"]
    d = privkey(hw, "d")
    assert "sensitive" in d["access"] and "never extractable" in d["access"], d
    # every key still signs through ctok
    for alias in ("r", "e", "d"):
        assert "passed" in assert_ok(hw.ctok("key", "test", "hsm", alias)).stdout


def test_attribute_template_for_every_key_type_with_a_wildcard(hw):
    attrs = hw.write("attrs.cfg", "attributes(*, CKO_PRIVATE_KEY, *) = {\n"
                     "  CKA_SENSITIVE = true\n  CKA_EXTRACTABLE = false\n  CKA_DERIVE = false\n}\n")
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL, attributes=attrs)
    hw.generate(tok, "e", "ec:P-256")
    e = privkey(hw, "e")
    assert "derive" not in e["usage"] and "sign" in e["usage"], e


def test_malformed_attribute_template_is_a_clear_error_and_makes_no_key(hw):
    attrs = hw.write("attrs.cfg", "attributes(generate, CKO_PRIVATE_KEY, *) = {\n"
                     "  CKA_SENSITIVE = maybe\n}\n")
    pin = hw.write("hsm.pin", PIN)
    p = hw.ctok("token", "create", "--type", "pkcs11", "--name", "hsm", "--library", SOFTHSM_LIB,
                "--ref-type", "label", "--ref", LABEL, "--auth-file", pin, "--attributes", attrs)
    if p.returncode == 0:  # not checked at creation: then at key generation
        p = hw.ctok("key", "generate", "hsm", "k", "ec:P-256")
    assert_tool_error(p, "attrs.cfg")
    assert ":2" in p.stderr, describe(p)
    assert hw.hsm.objects(LABEL, "privkey", pin=PIN) == []


def test_allow_export_cannot_export_a_generated_sensitive_key(hw):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    hw.generate(tok, "k", "ec:P-256")
    hw.set_token_fields(tok, allow_export=True)
    p = hw.ossl("pkey", "-in", tok.key_uri("k"))
    assert_fails_with(p)
    assert "PRIVATE KEY" not in p.stdout


# ---------------------------------------------------------------- keys and certificates


def test_key_list_test_and_remove_on_an_hsm_token(hw):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    kid = hw.add_key(tok, "web", "ec:P-256")
    hw.add_key(tok, "mail", "rsa:2048")
    keys = {k["alias"]: k for k in tok.keys()}
    assert set(keys) == {"web", "mail"}
    assert keys["web"]["id"] == kid.hex() and keys["web"]["certificates"] == ["web"]
    assert keys["web"]["key_type"] == "EC" and keys["web"]["curve"] == "P-256"
    assert keys["mail"]["key_type"] == "RSA" and keys["mail"]["bits"] == 2048
    assert "passed" in assert_ok(hw.ctok("key", "test", "hsm", "web")).stdout
    certs = {o["label"]: o["id"] for o in hw.hsm.objects(LABEL, "cert")}
    assert certs == {"web": kid.hex(), "mail": keys["mail"]["id"]}

    assert_ok(hw.ctok("key", "remove", "hsm", "web"))
    assert [k["alias"] for k in tok.keys()] == ["mail"]
    # the key pair and its certificate are gone from the token
    assert [o["label"] for o in hw.hsm.objects(LABEL, "privkey", pin=PIN)] == ["mail"]
    assert [o["label"] for o in hw.hsm.objects(LABEL, "pubkey")] == ["mail"]
    assert [o["label"] for o in hw.hsm.objects(LABEL, "cert")] == ["mail"]
    p, _, _ = sign_digest(hw, tok.key_uri("web"))
    assert_fails_with(p)


def test_key_generate_refuses_an_alias_that_exists(hw):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    hw.generate(tok, "k", "ec:P-256")
    assert_tool_error(hw.ctok("key", "generate", "hsm", "k", "ec:P-384"), "k")
    assert len(hw.hsm.objects(LABEL, "privkey", pin=PIN)) == 1


def test_second_certificate_for_a_key_gets_its_cka_id(hw, tmp_path):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    kid = hw.add_key(tok, "k", "rsa:3072")
    other = hw.self_signed(tok, "k", subject="/CN=k second role", out=tmp_path / "role2.pem")
    hw.import_cert(tok, "k-role2", other)
    certs = {o["label"]: o["id"] for o in hw.hsm.objects(LABEL, "cert")}
    assert certs == {"k": kid.hex(), "k-role2": kid.hex()}
    keys = tok.keys()
    assert sorted(keys[0]["certificates"]) == ["k", "k-role2"], keys
    p, sig, dg = sign_digest(hw, tok.uri(object="k-role2", type="private"))
    assert_ok(p)
    assert_verified(verify_digest(hw, other, dg, sig))


# ---------------------------------------------------------------- PIN unlock


def _unlock(hw, tok, puk=SO_PIN, new_pin="new-pin-2468", env=None):
    puk_file = hw.write("puk", puk)
    new_file = hw.write("new.pin", new_pin)
    p = hw.ctok("pin", "unlock", tok.name, "--puk-file", puk_file, "--auth-file", new_file,
                env=env)
    return p, new_file


def _new_pin_works(hw, tok, new_pin, new_file):
    assert hw.hsm.can_login(LABEL, new_pin)
    assert not hw.hsm.can_login(LABEL, PIN)
    hw.set_token_fields(tok, auth={"file": str(new_file)})
    assert "passed" in assert_ok(hw.ctok("key", "test", tok.name, "k")).stdout


def test_pin_unlock_uses_c_unlockpin_when_the_module_exports_it(hw, tmp_path):
    shim = require_shim()
    tok = hw.create_p11_token("card", shim, "label", LABEL)
    hw.generate(tok, "k", "ec:P-256")
    log = ShimLog(tmp_path / "shim.log")
    p, new_file = _unlock(hw, tok, env=log.env())
    assert_ok(p)
    assert [c["rv"] for c in log.calls("C_UnlockPIN")] == ["CKR_OK"], log.text()
    assert log.calls("C_InitPIN") == [] and logins(log, "CKU_SO") == [], log.text()
    _new_pin_works(hw, tok, "new-pin-2468", new_file)


@pytest.mark.parametrize("module", ["softhsm", "shim-without-unlock"])
def test_pin_unlock_falls_back_to_so_login_and_c_initpin(hw, tmp_path, module):
    log = ShimLog(tmp_path / "shim.log")
    if module == "softhsm":
        tok = hw.create_p11_token("card", SOFTHSM_LIB, "label", LABEL)
        env = None
    else:
        tok = hw.create_p11_token("card", require_shim(), "label", LABEL)
        env = log.env(no_unlock=1)
    hw.generate(tok, "k", "ec:P-256")
    p, new_file = _unlock(hw, tok, env=env)
    assert_ok(p)
    if module != "softhsm":
        assert [c["rv"] for c in log.calls("C_UnlockPIN")] == ["CKR_FUNCTION_NOT_SUPPORTED"], \
            log.text()
        assert [c["rv"] for c in log.calls("C_Login") if c.get("user") == "CKU_SO"] == [
            "CKR_OK"], log.text()
        assert [c["rv"] for c in log.calls("C_InitPIN")] == ["CKR_OK"], log.text()
    _new_pin_works(hw, tok, "new-pin-2468", new_file)


@pytest.mark.parametrize("module", ["shim", "softhsm"])
def test_pin_unlock_with_a_wrong_puk_fails_and_keeps_the_pin(hw, module):
    lib = require_shim() if module == "shim" else SOFTHSM_LIB
    tok = hw.create_p11_token("card", lib, "label", LABEL)
    p, _ = _unlock(hw, tok, puk="wrong-puk")
    assert_tool_error(p, "CKR_PIN_INCORRECT")
    assert hw.hsm.can_login(LABEL, PIN)
    assert not hw.hsm.can_login(LABEL, "new-pin-2468")
