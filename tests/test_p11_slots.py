"""A user with an HSM that holds three tokens lists its slots with `ctok slots` and makes a
ctok token of one of them by slot id, by slot index or by token label; each reference selects
the right token, which the user sees by the key and certificate it finds."""

import json

import pytest
from cryptography.hazmat.primitives import serialization

from ctoktest import (
    assert_fails_with,
    assert_ok,
    assert_verified,
    describe,
    load_cert,
    public_der,
    sign_digest,
    verify_digest,
)
from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

LABELS = ["slot-alpha", "slot-beta", "slot-gamma"]
PINS = {"slot-alpha": "alpha-1111", "slot-beta": "beta-2222", "slot-gamma": "gamma-3333"}


class ThreeTokens:
    def __init__(self, root, build):
        require_pkcs11_tools()
        self.hsm = SoftHsm(root / "softhsm")
        for label in LABELS:
            self.hsm.init_token(label, PINS[label])
        self.ws = P11Workspace(root, build, self.hsm)
        self.slots = self.ws.slots()
        self.by_label = {s["token_label"]: s for s in self.slots}
        # Each token gets a key and a certificate under the same alias "k", made through a
        # ctok token that names it by label; the certificate's subject says which token.
        self.certs = {}
        for label in LABELS:
            tok = self.ws.create_p11_token("setup-" + label, SOFTHSM_LIB, "label", label,
                                           pin=PINS[label])
            self.ws.generate(tok, "k", "ec:P-256")
            c = self.ws.self_signed(tok, "k", subject="/CN=key of %s" % label,
                                    out=root / ("%s.pem" % label))
            self.ws.import_cert(tok, "k", c)
            self.certs[label] = c


@pytest.fixture(scope="module")
def three(tmp_path_factory, build):
    return ThreeTokens(tmp_path_factory.mktemp("p11slots"), build)


def test_slots_lists_every_token_with_id_index_label_and_flags(three):
    labels = [s["token_label"] for s in three.slots if s["token_label"]]
    assert sorted(labels) == sorted(LABELS), json.dumps(three.slots, indent=1)
    ids = [s["id"] for s in three.slots]
    assert len(set(ids)) == len(ids)
    assert sorted(s["index"] for s in three.slots) == list(range(len(three.slots)))
    for label in LABELS:
        s = three.by_label[label]
        assert "login-required" in s["flags"], s
        assert s["description"] and s["manufacturer"] and s["serial"], s
    # the table for people names the same slots
    p = assert_ok(three.ws.ctok("slots", "--library", SOFTHSM_LIB))
    for label in LABELS:
        assert label in p.stdout
        assert str(three.by_label[label]["id"]) in p.stdout


@pytest.mark.parametrize("ref_type,target", [("id", "slot-beta"), ("index", "slot-gamma"),
                                             ("label", "slot-alpha"), ("id", "slot-gamma"),
                                             ("index", "slot-alpha"), ("label", "slot-beta")])
def test_slot_reference_selects_the_right_token_among_three(three, tmp_path, ref_type, target):
    slot = three.by_label[target]
    ref = {"id": str(slot["id"]), "index": str(slot["index"]), "label": target}[ref_type]
    ws = three.ws.view("ref-%s-%s.json" % (ref_type, target))
    tok = ws.create_p11_token("picked", SOFTHSM_LIB, ref_type, ref, pin=PINS[target])
    # the public key found is the one of the target token's key
    pub = tmp_path / "pub.pem"
    assert_ok(ws.ossl("pkey", "-in", tok.uri(object="k", type="public"), "-pubin", "-out", pub))
    got = public_der(serialization.load_pem_public_key(pub.read_bytes()))
    assert got == public_der(load_cert(three.certs[target]).public_key()), (
        "ref_type %s ref %s did not select %s" % (ref_type, ref, target))
    # the certificate found is the target token's
    out = assert_ok(ws.ossl("storeutl", "-certs", "-noout", "-text", tok.uri(object="k")))
    assert "Subject: CN=key of %s\n" % target in out.stdout, describe(out)
    # and its private key signs (logging in with that token's PIN)
    p, sig, dg = sign_digest(ws, tok.key_uri("k"))
    assert_ok(p)
    assert_verified(verify_digest(ws, three.certs[target], dg, sig))


def test_slot_reference_by_an_integer_index_in_the_config_file(three, tmp_path):
    """The config may carry the index (or id) as a JSON number."""
    conf = three.ws.load_config()
    entry = dict(next(t for t in conf["tokens"] if t["name"] == "setup-slot-beta"))
    entry.update(name="numeric", id="1c7e1f5e-0000-4000-8000-00000000beef", ref_type="index",
                 ref=three.by_label["slot-beta"]["index"])
    ws = three.ws.view("numeric.json", {"tokens": [entry]})
    pub = tmp_path / "pub.pem"
    assert_ok(ws.ossl("pkey", "-in", "ctok:token=numeric;object=k;type=public", "-pubin", "-out",
                      pub))
    got = public_der(serialization.load_pem_public_key(pub.read_bytes()))
    assert got == public_der(load_cert(three.certs["slot-beta"]).public_key())


@pytest.mark.parametrize("ref_type,ref", [("label", "no-such-token"), ("id", "4242"),
                                          ("index", "17")])
def test_token_create_for_a_slot_that_does_not_exist_fails_clearly(three, ref_type, ref):
    ws = three.ws.view("missing-%s.json" % ref_type)
    pin = ws.write("missing.pin", "alpha-1111")
    p = ws.ctok("token", "create", "--type", "pkcs11", "--name", "missing", "--library",
                SOFTHSM_LIB, "--ref-type", ref_type, "--ref", ref, "--auth-file", pin)
    assert_fails_with(p)
    assert p.returncode == 1, describe(p)
    assert ref in p.stderr, describe(p)
    assert not ws.config.exists() or "missing" not in ws.config.read_text()
