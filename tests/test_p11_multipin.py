"""A user with an eID card that has two PINs (identification and signature; the shim shows
two SoftHSM tokens as one card: CTOK_SHIM_MULTIPIN) makes each half its own ctok token.
Listing certificates needs no PIN; signing with the signature certificate's key logs in to
the signature PIN only, once; a wrong PIN is sent exactly once. The shim's call log
(CTOK_SHIM_LOG with LOG_DETAIL) is what the tests count."""

import pytest

from ctoktest import (
    assert_fails_with,
    assert_ok,
    assert_verified,
    count_items,
    describe,
    digest_file,
    run_with_tty,
    sign_digest,
    verify_digest,
)
from p11fixtures import (
    EID_IDENT,
    EID_SIGN,
    P11Workspace,
    ShimLog,
    SoftHsm,
    copy_config,
    require_pkcs11_tools,
    require_shim,
)

IDENT_PIN = "1111"
SIGN_PIN = "246810"


class Card:
    """SoftHSM tokens eid-ident / eid-sign shown by the shim as one card. ctok tokens 'ident'
    and 'sign' (by label); each half holds a P-256 key whose certificate has another label
    than the key: keys 'ident-key' / 'sign-key', certificates 'identification-cert' /
    'signature-cert'."""

    def __init__(self, root, build):
        require_pkcs11_tools()
        self.shim = require_shim()
        self.hsm = SoftHsm(root / "softhsm")
        self.hsm.init_token("eid-ident", IDENT_PIN)
        self.hsm.init_token("eid-sign", SIGN_PIN)
        self.ws = P11Workspace(root, build, self.hsm,
                               fixed_env={"CTOK_SHIM_MULTIPIN": "eid-ident,eid-sign"})
        self.slots = self.ws.slots(self.shim)
        self.ident = self.ws.create_p11_token("ident", self.shim, "label", EID_IDENT,
                                              pin=IDENT_PIN)
        self.sign = self.ws.create_p11_token("sign", self.shim, "label", EID_SIGN, pin=SIGN_PIN)
        for tok, key, cert, cn in ((self.ident, "ident-key", "identification-cert",
                                    "Jane Doe (Authentication)"),
                                   (self.sign, "sign-key", "signature-cert",
                                    "Jane Doe (Signature)")):
            self.ws.generate(tok, key, "ec:P-256")
            c = self.ws.self_signed(tok, key, subject="/CN=%s" % cn, out=root / ("%s.pem" % cert))
            self.ws.import_cert(tok, cert, c)


@pytest.fixture(scope="module")
def card(tmp_path_factory, build):
    return Card(tmp_path_factory.mktemp("p11card"), build)


@pytest.fixture
def log(tmp_path):
    return ShimLog(tmp_path / "shim.log")


def test_multi_pin_card_shows_two_tokens_told_apart_by_slot_id(card):
    card_slots = [s for s in card.slots if s["token_label"] in (EID_IDENT, EID_SIGN)]
    assert sorted(s["token_label"] for s in card_slots) == sorted([EID_IDENT, EID_SIGN])
    assert card_slots[0]["description"] == card_slots[1]["description"] == "Card Reader"
    assert card_slots[0]["id"] != card_slots[1]["id"]
    # each half is its own crypto token with its own key
    assert [k["alias"] for k in card.sign.keys()] == ["sign-key"]
    assert [k["alias"] for k in card.ident.keys()] == ["ident-key"]


def test_listing_certificates_of_a_multi_pin_card_makes_no_login(card, log):
    ws = card.ws
    p = assert_ok(ws.ossl("storeutl", "-certs", "ctok:", env=log.env()))
    assert count_items(p.stdout, "Certificate") == 2, describe(p)
    assert log.entries(), "the shim logged nothing: is ctok using it?"
    assert log.calls("C_Login") == [], log.text()


def test_listing_one_halfs_certificates_makes_no_login(card, log):
    p = assert_ok(card.ws.ossl("storeutl", "-certs", card.sign.uri(), env=log.env()))
    assert count_items(p.stdout, "Certificate") == 1, describe(p)
    assert log.calls("C_Login") == [], log.text()


def test_multi_pin_card_logs_in_only_to_the_signature_pin(card, log):
    """Certificate-first: the key of the certificate labelled 'signature-cert', found without
    naming the token; only 'eID Card (signature)' is logged in to, once."""
    ws = card.ws
    p, sig, dg = sign_digest(ws, "ctok:object=signature-cert;type=private", env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, card.sign.cert("signature-cert"), dg, sig))
    calls = log.calls("C_Login")
    assert len(calls) == 1, log.text()
    assert calls[0]["rv"] == "CKR_OK", log.text()
    assert calls[0].get("token") == EID_SIGN, log.text()
    assert calls[0].get("user") == "CKU_USER", log.text()


def test_identification_certificate_key_logs_in_only_to_the_identification_pin(card, log):
    ws = card.ws
    p, sig, dg = sign_digest(ws, "ctok:object=identification-cert;type=private", env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, card.ident.cert("identification-cert"), dg, sig))
    calls = log.calls("C_Login")
    assert [(c["rv"], c.get("token")) for c in calls] == [("CKR_OK", EID_IDENT)], log.text()


def test_signature_key_by_token_name_logs_in_once_for_several_signatures(card, log, tmp_path):
    """openssl req -x509 and cms -sign in one process each: one login per process."""
    ws = card.ws
    for n in range(2):
        out = tmp_path / ("again-%d.pem" % n)
        assert_ok(ws.ossl("req", "-new", "-x509", "-key", card.sign.key_uri("sign-key"), "-subj",
                          "/CN=again", "-days", "1", "-out", out, env=log.env()))
    by_pid = {}
    for c in log.calls("C_Login"):
        by_pid.setdefault(c["pid"], []).append(c)
    assert len(by_pid) == 2 and all(len(v) == 1 for v in by_pid.values()), log.text()
    assert all(c.get("token") == EID_SIGN for v in by_pid.values() for c in v), log.text()


def test_wrong_signature_pin_makes_exactly_one_failed_login(card, log):
    ws = card.ws
    p, _, _ = sign_digest(ws, "ctok:object=signature-cert;type=private?pin-value=135791",
                          env=log.env())
    assert_fails_with(p, "CKR_PIN_INCORRECT")
    calls = log.calls("C_Login")
    assert len(calls) == 1, log.text()
    assert calls[0]["rv"] == "CKR_PIN_INCORRECT" and calls[0].get("token") == EID_SIGN, log.text()


def test_wrong_configured_signature_pin_is_sent_once_however_often_the_key_is_used(card, log):
    """The token's auth file holds a wrong PIN: listings of everything, private keys included,
    never send the rejected PIN twice in one process."""
    ws = card.ws
    bad = ws.write("wrong-sign.pin", "999999")
    view = ws.view("wrong-pin.json", copy_config(ws, sign={"auth": {"file": str(bad)}}))
    p = view.ossl("storeutl", "ctok:", env=log.env())
    assert p.returncode not in (134, 139), describe(p)
    failed = [c for c in log.calls("C_Login") if c["rv"] != "CKR_OK"]
    assert len(failed) == 1, log.text()
    assert failed[0]["rv"] == "CKR_PIN_INCORRECT" and failed[0].get("token") == EID_SIGN

    # every private key of the card listed in one process: still one failed login
    log2 = ShimLog(log.path.with_name("shim2.log"))
    p = view.ossl("storeutl", "-keys", "ctok:", env=log2.env())
    assert p.returncode not in (134, 139), describe(p)
    assert [c["rv"] for c in log2.calls("C_Login") if c.get("token") == EID_SIGN] == [
        "CKR_PIN_INCORRECT"], log2.text()


def test_multi_pin_halves_selected_by_slot_id_work_like_by_label(card, log):
    sign_slot = next(s for s in card.slots if s["token_label"] == EID_SIGN)
    ws = card.ws.view("by-id.json")
    tok = ws.create_p11_token("sig-by-id", card.shim, "id", str(sign_slot["id"]), pin=SIGN_PIN)
    p, sig, dg = sign_digest(ws, tok.uri(object="signature-cert", type="private"), env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, card.sign.cert("signature-cert"), dg, sig))
    assert [c.get("token") for c in log.calls("C_Login")] == [EID_SIGN], log.text()


def test_pkcs11_uri_with_the_multi_pin_token_label_selects_the_signature_half(card, log):
    ws = card.ws
    uri = "pkcs11:token=eID%20Card%20%28signature%29;object=sign-key;type=private"
    p, sig, dg = sign_digest(ws, uri, env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, card.sign.cert("signature-cert"), dg, sig))
    assert [c.get("token") for c in log.calls("C_Login")] == [EID_SIGN], log.text()


def test_pin_prompt_names_the_signature_half_of_the_card(card, log):
    """The signature PIN is typed on the terminal: one prompt, naming the token label, and
    one login to that half only."""
    ws = card.ws
    view = ws.view("prompt.json", copy_config(ws, sign={"auth": {"prompt": True}},
                                              ident={"auth": {"prompt": True}}))
    _, dg = digest_file(view)
    sig = view.path("tty.sig")
    argv = view.ossl_argv("pkeyutl", "-sign", "-inkey", "ctok:object=signature-cert;type=private",
                          "-in", dg, "-out", sig, "-pkeyopt", "digest:sha256")
    code, out, prompts = run_with_tty(argv, view.ossl_env(env=log.env()), answers=[SIGN_PIN])
    assert code == 0, out
    assert len(prompts) == 1, out
    assert EID_SIGN in prompts[0], "the prompt does not name the token label:\n" + out
    assert SIGN_PIN not in out, "the PIN was echoed"
    assert_verified(verify_digest(view, card.sign.cert("signature-cert"), dg, sig))
    assert [(c["rv"], c.get("token")) for c in log.calls("C_Login")] == [("CKR_OK", EID_SIGN)], \
        log.text()
