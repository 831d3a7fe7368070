"""A card with two PINs (identification and signature: two SoftHSM tokens the shim shows as one
card, tests/test_p11_multipin.py) through ctok-p11.so (issue 14, seed 004): each half is its
own ctok token, so its own slot with its own PIN. Listing certificates logs in to nothing;
signing with the signature key logs in to the signature PIN only, once; a wrong PIN is sent
once. OpenSC's pkcs11-tool is the application; the shim's call log is what is counted."""

import pytest

from ctoktest import OPENSSL, assert_ok, describe, run
from p11fixtures import EID_SIGN, ShimLog, copy_config
from p11modtest import MODULE, require_module, tool_objects, tool_sections
from test_p11_multipin import SIGN_PIN, Card


@pytest.fixture(scope="module")
def card(tmp_path_factory, build):
    require_module()
    return Card(tmp_path_factory.mktemp("p11mod-card"), build)


def tool(ws, log, *args):
    return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]],
               ws.env(log.env()))


def test_each_half_of_the_card_is_a_slot_with_its_own_pin(card, tmp_path):
    log = ShimLog(tmp_path / "shim.log")
    info = tool_sections(assert_ok(tool(card.ws, log, "-L")).stdout)
    assert set(info) == {"ident", "sign"}, info
    # the codes come from the config: no login is required of the application
    assert all("login required" not in t["token flags"] for t in info.values()), info
    for label, cert in (("ident", "identification-cert"), ("sign", "signature-cert")):
        objs = tool_objects(assert_ok(tool(card.ws, log, "--token-label", label, "-O",
                                           "--type", "cert")).stdout)
        assert [o[:2] for o in objs] == [("Certificate", cert)], objs


def test_public_keys_and_certificates_of_the_card_are_read_without_a_login(card, tmp_path):
    # OpenSSH reads public keys and certificates (finds by CKA_CLASS): certificates first, a
    # login only to use a key (pkcs11-tool -O finds everything, private keys too: it logs in)
    log = ShimLog(tmp_path / "shim.log")
    p = assert_ok(run(["ssh-keygen", "-D", str(MODULE)], card.ws.env(log.env())))
    assert len([k for k in p.stdout.splitlines() if k.startswith("ecdsa-")]) == 2, describe(p)
    assert log.entries(), "the shim logged nothing: is the module using it?"
    assert log.calls("C_Login") == [], log.text()


def sign_with_signature_key(ws, log, tmp_path, *login):
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed with the signature PIN's key\n")
    sig = tmp_path / "msg.sig"
    p = tool(ws, log, "--token-label", "sign", *login, "--sign", "-m", "ECDSA-SHA256",
             "--label", "sign-key", "-i", msg, "-o", sig, "--signature-format", "openssl")
    return p, msg, sig


@pytest.mark.parametrize("how", ["config", "typed"])
def test_the_signature_key_logs_in_to_the_signature_pin_only_once(card, tmp_path, how):
    log = ShimLog(tmp_path / "shim.log")
    ws, login = card.ws, ()
    if how == "typed":
        ws = card.ws.view("typed.json", copy_config(card.ws, sign={"auth": {"prompt": True}}))
        login = ("--login", "--pin", SIGN_PIN)
    p, msg, sig = sign_with_signature_key(ws, log, tmp_path, *login)
    assert_ok(p)
    pub = tmp_path / "pub.pem"
    assert_ok(run([OPENSSL, "x509", "-in", card.sign.cert("signature-cert"), "-pubkey",
                   "-noout", "-out", pub], card.ws.env(config=False)))
    v = assert_ok(run([OPENSSL, "dgst", "-sha256", "-verify", pub, "-signature", sig, msg],
                      card.ws.env(config=False)))
    assert "Verified OK" in v.stdout, describe(v)
    calls = log.calls("C_Login")
    assert [(c["rv"], c.get("token")) for c in calls] == [("CKR_OK", EID_SIGN)], log.text()


def test_a_wrong_typed_signature_pin_is_sent_once(card, tmp_path):
    log = ShimLog(tmp_path / "shim.log")
    ws = card.ws.view("typed-wrong.json", copy_config(card.ws, sign={"auth": {"prompt": True}}))
    p, _, _ = sign_with_signature_key(ws, log, tmp_path, "--login", "--pin", "135791")
    assert p.returncode != 0 and "CKR_PIN_INCORRECT" in p.stdout + p.stderr, describe(p)
    calls = log.calls("C_Login")
    assert [(c["rv"], c.get("token")) for c in calls] == [("CKR_PIN_INCORRECT", EID_SIGN)], \
        log.text()
