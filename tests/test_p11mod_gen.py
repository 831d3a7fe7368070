"""Key generation, object destruction and certificate import through ctok-p11.so (issue 14):
what OpenSC's pkcs11-tool makes or removes on a soft, a SoftHSM-backed and a KMS-emulator token
is what `ctok key list` and the provider see, under the token's rules and audit trail, and the
calls an application must get refused are refused with the spec's codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ctoktest import OPENSSL, assert_ok, count_items, describe, run
from kmsfixtures import awskms_token, kms_emu  # noqa: F401 (fixture)
from p11modtest import MODULE, empty_token, require_module, tool_objects

GEN_CLIENT = Path(__file__).resolve().parent / "p11mod_gen_client.py"


class Tok:
    """A fresh token of one kind in its own workspace; tests change it."""

    def __init__(self, ws, tok, kind):
        self.ws, self.tok, self.name, self.kind = ws, tok, tok.name, kind

    def tool(self, *args):
        return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]],
                   self.ws.env())

    def client(self, story, *args, pin=""):
        p = run([sys.executable, str(GEN_CLIENT), str(MODULE), story, *[str(a) for a in args]],
                self.ws.env(), input=pin + "\n")
        assert_ok(p)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def aliases(self):
        return {k["alias"] for k in self.tok.keys()}

    def provider_finds(self, alias):
        p = self.ws.ossl("storeutl", "-keys", self.tok.key_uri(alias))
        return p.returncode == 0 and count_items(p.stdout, "Pkey") == 1

    def audit(self):
        self.ws.path("audit.jsonl").touch(mode=0o600)
        assert_ok(self.ws.ctok("token", "modify", self.name, "--audit-file",
                               self.ws.path("audit.jsonl")))
        return self.ws.path("audit.jsonl")

    def permit(self, *rules):
        assert_ok(self.ws.ctok("token", "modify", self.name, "--permissions",
                               ",".join(("modify",) + rules)))


@pytest.fixture(params=["soft", "hsm"])
def tok(request, tmp_path, build):
    require_module()
    ws, t = empty_token(request.param, tmp_path, build, "gen")
    return Tok(ws, t, request.param)


def signature_verifies(t, label, mech, tmp_path):
    """Signs through the module; verifies with the public key read through the provider and
    plain openssl."""
    msg, sig, pub = tmp_path / "msg", tmp_path / (label + ".sig"), tmp_path / (label + ".pub")
    msg.write_bytes(b"made and signed through ctok-p11.so\n")
    kid = {k["alias"]: k["id"] for k in t.tok.keys()}[label]  # pkcs11-tool signs by id
    assert_ok(t.tool("--login", "--sign", "-m", mech, "--id", kid, "-i", msg, "-o", sig,
                     "--signature-format", "openssl"))
    assert_ok(t.ws.ossl("pkey", "-in", t.tok.key_uri(label), "-pubout", "-out", pub))
    v = run([OPENSSL, "dgst", "-sha256", "-verify", pub, "-signature", sig, msg],
            t.ws.env(config=False))
    return "Verified OK" in v.stdout


def test_pkcs11_tool_makes_keys_the_tool_and_the_provider_use(tok, tmp_path):
    for spec, label in (("EC:prime256v1", "X"), ("rsa:2048", "R")):
        p = assert_ok(tok.tool("--login", "--keypairgen", "--key-type", spec, "--label", label))
        kinds = {k for k, lb, _ in tool_objects(p.stdout) if lb == label}
        assert kinds == {"Private Key", "Public Key"}, describe(p)
    assert {"X", "R"} <= tok.aliases()
    assert tok.provider_finds("X") and tok.provider_finds("R")
    assert signature_verifies(tok, "X", "ECDSA-SHA256", tmp_path)
    assert signature_verifies(tok, "R", "SHA256-RSA-PKCS", tmp_path)


def test_an_ed25519_key_is_made_where_the_token_offers_it(tok, tmp_path):
    """A PKCS#11 token says it makes Ed25519 keys; a keystore offers it once it holds one (the
    token layer does not say which types a type makes)."""
    if tok.kind == "soft":
        p = assert_ok(tok.tool("-M"))
        assert "EC-EDWARDS-KEY-PAIR-GEN" not in p.stdout, describe(p)
        tok.ws.add_key(tok.tok, "ed", "ed25519")  # its certificate shows it before login
    p = assert_ok(tok.tool("-M"))
    assert "EC-EDWARDS-KEY-PAIR-GEN" in p.stdout, describe(p)
    assert_ok(tok.tool("--login", "--keypairgen", "--key-type", "EC:edwards25519",
                       "--label", "E"))
    assert {k["alias"]: k["key_type"] for k in tok.tok.keys()}["E"] == "ED25519"
    msg, sig = tmp_path / "msg", tmp_path / "sig"
    msg.write_bytes(b"an Ed25519 key made through ctok-p11.so\n")
    kid = {k["alias"]: k["id"] for k in tok.tok.keys()}["E"]
    assert_ok(tok.tool("--login", "--sign", "-m", "EDDSA", "--id", kid, "-i", msg, "-o", sig))
    pub = tmp_path / "e.pub"
    assert_ok(tok.ws.ossl("pkey", "-in", tok.tok.key_uri("E"), "-pubout", "-out", pub))
    v = run([OPENSSL, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin", "-in", msg,
             "-sigfile", sig], tok.ws.env(config=False))
    assert "Signature Verified Successfully" in v.stdout, describe(v)


def test_pkcs11_tool_removes_a_key_the_provider_then_misses(tok):
    assert_ok(tok.tool("--login", "--keypairgen", "--key-type", "EC:prime256v1", "--label", "X"))
    assert tok.provider_finds("X")
    assert_ok(tok.tool("--login", "--delete-object", "--type", "privkey", "--label", "X"))
    assert "X" not in tok.aliases()
    assert not tok.provider_finds("X")
    p = assert_ok(tok.tool("--login", "-O"))
    assert [o for o in tool_objects(p.stdout) if o[1] == "X"] == [], describe(p)


def test_a_generated_pair_has_handles_and_goes_as_one(tok):
    r = tok.client("lifecycle", "L")
    # a keystore offers what its keys sign: ECDSA once it has an EC key; SoftHSM always
    assert r == {"login": "OK", "ecdsa_before": tok.kind == "hsm", "generate": "OK",
                 "ecdsa_after": True, "labels": ["L", "L"], "found": True, "destroy": "OK",
                 "after": [], "public_gone": "OBJECT_HANDLE_INVALID"}, r


def test_what_an_application_must_not_do_is_refused_with_the_spec_codes(tok, tmp_path):
    tok.ws.add_key(tok.tok, "k", "ec:P-256")
    der = tmp_path / "k.der"
    assert_ok(run([OPENSSL, "x509", "-in", tok.tok.cert("k"), "-outform", "DER", "-out", der],
                  tok.ws.env(config=False)))
    r = tok.client("refusals", "k", der)
    assert r["ro_logged_out"] == "SESSION_READ_ONLY", r
    assert r["rw_logged_out"] == r["create_logged_out"] == "USER_NOT_LOGGED_IN", r
    assert r["login"] == "OK"
    assert r["ro_logged_in"] == r["destroy_ro"] == "SESSION_READ_ONLY", r
    assert r["gen"] == {
        "no_label": "TEMPLATE_INCOMPLETE", "session_key": "TEMPLATE_INCONSISTENT",
        "own_id": "ATTRIBUTE_VALUE_INVALID", "unknown_attribute": "ATTRIBUTE_TYPE_INVALID",
        "other_curve": "CURVE_NOT_SUPPORTED", "garbage_params": "ATTRIBUTE_VALUE_INVALID",
        "null_value": "ATTRIBUTE_VALUE_INVALID", "taken_label": "ATTRIBUTE_VALUE_INVALID",
        "labels_disagree": "TEMPLATE_INCONSISTENT", "not_sensitive": "ATTRIBUTE_VALUE_INVALID",
        "exponent_3": "ATTRIBUTE_VALUE_INVALID", "rsa_1024": "KEY_SIZE_RANGE",
        "rsa_no_bits": "TEMPLATE_INCOMPLETE", "dsa": "MECHANISM_INVALID",
        "null_handles": "ARGUMENTS_BAD"}, r["gen"]
    assert r["destroy_public"] == "ACTION_PROHIBITED", r
    assert r["destroy_unknown"] == "OBJECT_HANDLE_INVALID", r
    assert r["create"] == {
        "private_key": "ATTRIBUTE_VALUE_INVALID", "no_class": "TEMPLATE_INCOMPLETE",
        "no_value": "TEMPLATE_INCOMPLETE", "garbage": "ATTRIBUTE_VALUE_INVALID",
        "other_id": "ATTRIBUTE_VALUE_INVALID", "wrong_subject": "TEMPLATE_INCONSISTENT"}, r
    assert r["nothing_made"], r
    assert tok.aliases() == {"k"}


def audit_lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_the_tokens_rules_refuse_and_the_audit_trail_records_both(tok):
    trail = tok.audit()
    tok.permit("view", "use", "activate")
    r = tok.client("generate", "G")
    assert r == {"login": "OK", "generate": "FUNCTION_REJECTED"}, r
    assert "G" not in tok.aliases()
    tok.permit("view", "use", "activate", "keygen")
    r = tok.client("generate", "G", "remove")
    assert r == {"login": "OK", "generate": "OK", "destroy": "FUNCTION_REJECTED"}, r
    assert "G" in tok.aliases()
    tok.permit("view", "use", "activate", "keygen", "keyremove")
    r = tok.client("generate", "H", "remove")
    assert r == {"login": "OK", "generate": "OK", "destroy": "OK"}, r
    # the tool refused the same way writes the same line
    assert_ok(tok.ws.ctok("token", "modify", tok.name, "--permissions", "view,use,activate"))
    assert tok.ws.ctok("key", "generate", tok.name, "T", "ec:P-256").returncode != 0
    got = [(e["operation"], e.get("object"), e["outcome"], e.get("detail", ""))
           for e in audit_lines(trail) if e["operation"] in ("key_generate", "key_remove")]
    assert got == [("key_generate", "G", "failure", "rule 'keygen' is not permitted"),
                   ("key_generate", "G", "success", "EC prime256v1"),
                   ("key_remove", "G", "failure", "rule 'keyremove' is not permitted"),
                   ("key_generate", "H", "success", "EC prime256v1"),
                   ("key_remove", "H", "success", ""),
                   ("key_generate", None, "failure", "rule 'keygen' is not permitted")], got
    assert {e["process"]["program"] for e in audit_lines(trail)} >= {"ctok"}


def test_a_certificate_written_with_pkcs11_tool_binds_to_its_key(tok, tmp_path):
    assert_ok(tok.tool("--login", "--keypairgen", "--key-type", "EC:prime256v1", "--label", "C"))
    pem = tok.ws.self_signed(tok.tok, "C")
    der = tmp_path / "c.der"
    assert_ok(run([OPENSSL, "x509", "-in", pem, "-outform", "DER", "-out", der],
                  tok.ws.env(config=False)))
    p = assert_ok(tok.tool("--login", "--write-object", der, "--type", "cert", "--label", "C"))
    objs = tool_objects(assert_ok(tok.tool("--login", "-O")).stdout)
    ids = {kind: kid for kind, label, kid in objs if label == "C"}
    assert set(ids) == {"Certificate", "Private Key", "Public Key"}, describe(p)
    assert ids["Certificate"] == ids["Private Key"], objs
    keys = {k["alias"]: k for k in tok.tok.keys()}
    assert keys["C"]["certificates"], keys
    # the provider's certificate-first lookup finds the key by the certificate
    p = tok.ws.ossl("storeutl", "-certs", tok.tok.uri(object="C"))
    assert count_items(assert_ok(p).stdout, "Certificate") == 1, describe(p)
    # and the certificate goes alone: the key stays
    assert_ok(tok.tool("--login", "--delete-object", "--type", "cert", "--label", "C"))
    objs = tool_objects(assert_ok(tok.tool("--login", "-O")).stdout)
    assert {kind for kind, label, _ in objs if label == "C"} == {"Private Key", "Public Key"}
    assert not {k["alias"]: k for k in tok.tok.keys()}["C"]["certificates"]


def test_a_key_another_process_made_shows_in_the_next_find(tok):
    """The module initialized first; `ctok key generate` then adds a key; the next
    C_FindObjects finds it, and what it found before keeps its handles."""
    tok.ws.add_key(tok.tok, "old", "ec:P-256", cert=False)
    argv = [sys.executable, str(GEN_CLIENT), str(MODULE), "watch", "new"]
    with subprocess.Popen(argv, env=tok.ws.env(), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as app:
        try:
            app.stdin.write("\n")
            app.stdin.flush()
            assert app.stdout.readline().strip() == "ready"
            assert_ok(tok.ws.ctok("key", "generate", tok.name, "new", "ec:P-256"))
            out, _ = app.communicate("\n", timeout=60)
        finally:
            app.kill()
    r = json.loads(out.strip().splitlines()[-1])
    assert r == {"login": "OK", "before": 0, "after": 2, "kept_handles": True}, r


@pytest.fixture
def kms(tmp_path, build, kms_emu):  # noqa: F811
    from ctoktest import Workspace

    require_module()
    ws = Workspace(tmp_path, build)
    awskms_token(ws, kms_emu)
    return ws


def test_a_kms_token_makes_keys_with_an_alias_and_schedules_their_deletion(kms, kms_emu,
                                                                           request):  # noqa: F811
    label = "p11-gen-%x" % (hash(request.node.name) & 0xFFFFFF)
    tool = ["pkcs11-tool", "--module", str(MODULE), "--login"]
    p = assert_ok(run(tool + ["--keypairgen", "--key-type", "EC:prime256v1", "--label", label],
                      kms.env()))
    key_id = kms_emu.aliases().get("alias/" + label)
    assert key_id is not None, describe(p)
    assert kms_emu.key_metadata(key_id)["KeyState"] == "Enabled"
    assert_ok(run(tool + ["--delete-object", "--type", "privkey", "--label", label], kms.env()))
    assert kms_emu.key_metadata(key_id)["KeyState"] == "PendingDeletion"
