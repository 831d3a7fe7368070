"""Issue 12, "Certificates over a key's life": renewal (`cert import --replace`), `cert remove`,
chain files, `cert rename`/`key rename`, and key references that survive renaming their token,
on a soft (PKCS#12) token and a SoftHSM token. Certificates are made by openssl; what the
PKCS#11 token holds afterwards is read with OpenSC's pkcs11-tool, not through ctok."""

import json
import re

import pytest

from ctoktest import (
    PIN,
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_ok,
    describe,
    key_id_of_cert,
    load_cert,
    tls_client,
)
from p11fixtures import P11Workspace, SoftHsm, require_pkcs11_tools

KINDS = ("soft", "softhsm")


class Setup:
    """One fresh token of a kind in a workspace of its own."""

    def __init__(self, kind, tmp_path, build):
        from ctoktest import Workspace

        self.kind = kind
        if kind == "soft":
            self.ws = Workspace(tmp_path, build)
            self.tok = self.ws.create_token("tok")
            self.label = None
        else:
            require_pkcs11_tools()
            hsm = SoftHsm(tmp_path / "softhsm")
            self.label = "lifecycle"
            hsm.init_token(self.label, PIN)
            self.ws = P11Workspace(tmp_path, build, hsm)
            self.tok = self.ws.create_p11_token("tok", ref=self.label)

    def ctok(self, *args):
        return self.ws.ctok(*args)

    def certs(self):
        return json.loads(assert_ok(self.ctok("cert", "list", "tok", "--json")).stdout)

    def keys(self):
        return json.loads(assert_ok(self.ctok("key", "list", "tok", "--json")).stdout)

    def p11(self, type):
        """The objects pkcs11-tool sees (after login): [{label, id}] (SoftHSM only)."""
        return [{"label": o.get("label"), "id": o.get("id", "").lower()}
                for o in self.ws.hsm.objects(self.label, type, pin=PIN)]

    def cert_for(self, alias, subject, name):
        """A new self-signed certificate for the token's key alias (a renewal's)."""
        return self.ws.self_signed(self.tok, alias, subject=subject,
                                   out=self.ws.path(name + ".pem"))


@pytest.fixture(params=KINDS)
def setup(request, tmp_path, build):
    return Setup(request.param, tmp_path, build)


def serial_of(path):
    return load_cert(path).serial_number


def test_cert_remove_takes_the_certificate_and_leaves_the_key(setup):
    kid = setup.ws.add_key(setup.tok, "k", "ec:P-256")
    p = assert_ok(setup.ctok("cert", "remove", "tok", "k"))
    assert "Removed certificate 'k'" in p.stdout, describe(p)
    assert setup.certs() == []
    keys = setup.keys()
    assert [(k["alias"], k["id"], k["certificates"]) for k in keys] == [("k", kid.hex(), [])]
    assert_ok(setup.ctok("key", "test", "tok", "k"))
    if setup.kind == "softhsm":
        assert setup.p11("cert") == []
        assert setup.p11("privkey") == [{"label": "k", "id": kid.hex()}]


def test_cert_remove_refuses_a_label_that_names_only_a_key(setup):
    kid = setup.ws.generate(setup.tok, "k", "ec:P-256")
    p = setup.ctok("cert", "remove", "tok", "k")
    assert_fails_with(p, "token 'tok'", "'k' names a key and no certificate",
                      "'ctok key remove' removes keys")
    assert [k["id"] for k in setup.keys()] == [kid.hex()]
    assert_fails_with(setup.ctok("cert", "remove", "tok", "nosuch"),
                      "token 'tok': no certificate named 'nosuch'")


def test_replace_renews_the_certificate_under_its_label_and_id_and_serves_tls(setup):
    kid = setup.ws.add_key(setup.tok, "web", "ec:P-256")
    old = setup.tok.cert("web")
    new = setup.cert_for("web", "/CN=web-renewed", "renewed")
    assert serial_of(new) != serial_of(old)
    # without --replace the label is taken: nothing changes
    assert_fails_with(setup.ctok("cert", "import", "tok", "web", str(new)),
                      "a certificate named 'web' exists already")
    p = assert_ok(setup.ctok("cert", "import", "tok", "web", str(new), "--replace", "--json"))
    out = json.loads(p.stdout)
    assert out["replaced"] is True and out["id"] == kid.hex(), out
    certs = setup.certs()
    assert [(c["alias"], c["id"]) for c in certs] == [("web", kid.hex())], certs
    assert "CN=web-renewed" in certs[0]["subject"], certs
    if setup.kind == "softhsm":
        assert setup.p11("cert") == [{"label": "web", "id": kid.hex()}]
    # the renewed certificate from the token serves TLS
    cert_uri = setup.tok.uri(object="web", type="cert")
    with TlsServer(setup.ws, setup.tok.key_uri("web"), cert_uri) as srv:
        cli = tls_client(setup.ws, srv.port, new)
        assert_handshake(cli, srv)


def test_replace_of_a_label_that_holds_no_certificate_changes_nothing(setup):
    setup.ws.add_key(setup.tok, "web", "ec:P-256")
    new = setup.cert_for("web", "/CN=other", "other")
    assert_fails_with(setup.ctok("cert", "import", "tok", "nosuch", str(new), "--replace"),
                      "token 'tok'", "no certificate named 'nosuch' to replace")
    assert [c["alias"] for c in setup.certs()] == ["web"]


def make_ca(ws, name, subject, issuer=None):
    """A CA key and certificate made by openssl alone (issuer: (key, cert) signing it)."""
    key, cert = ws.path(name + ".key"), ws.path(name + ".pem")
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None))
    ext = ws.write(name + ".ext", "basicConstraints=critical,CA:TRUE\n"
                   "keyUsage=keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n")
    if issuer is None:
        assert_ok(ws.ossl("req", "-new", "-x509", "-key", key, "-subj", subject, "-days", "30",
                          "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                          "keyUsage=keyCertSign,cRLSign", "-out", cert, providers=None))
    else:
        csr = ws.path(name + ".csr")
        assert_ok(ws.ossl("req", "-new", "-key", key, "-subj", subject, "-out", csr,
                          providers=None))
        assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", issuer[1], "-CAkey", issuer[0],
                          "-CAcreateserial", "-days", "30", "-extfile", ext, "-out", cert,
                          providers=None))
    return key, cert


def test_chain_import_binds_the_leaf_and_stores_every_ca_certificate(setup):
    ws = setup.ws
    kid = ws.generate(setup.tok, "web", "ec:P-256")
    root = make_ca(ws, "root", "/O=Lifecycle Root")  # no CN: labelled <alias>-caN
    sub = make_ca(ws, "sub", "/CN=Lifecycle Sub CA", issuer=root)
    csr, leaf = ws.path("web.csr"), ws.path("web-leaf.pem")
    assert_ok(ws.ossl("req", "-new", "-key", setup.tok.key_uri("web"), "-subj", "/CN=web",
                      "-out", csr))
    assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", sub[1], "-CAkey", sub[0],
                      "-CAcreateserial", "-days", "30", "-out", leaf, providers=None))
    # the leaf is not first: it is found by its key on the token
    chain = ws.write("chain.pem", "".join(open(p).read() for p in (sub[1], leaf, root[1])))
    p = assert_ok(setup.ctok("cert", "import", "tok", "web", str(chain)))
    assert "Imported certificate 'web'" in p.stdout, describe(p)
    assert "Stored CA certificate 'Lifecycle Sub CA'" in p.stdout, describe(p)
    assert "Stored CA certificate 'web-ca2'" in p.stdout, describe(p)
    got = {c["alias"]: c for c in setup.certs()}
    want = {"web": kid.hex(), "Lifecycle Sub CA": key_id_of_cert(sub[1]).hex(),
            "web-ca2": key_id_of_cert(root[1]).hex()}
    assert {a: c["id"] for a, c in got.items()} == want, got
    assert "CN=web" in got["web"]["subject"] and "O=Lifecycle Root" in got["web-ca2"]["subject"]
    if setup.kind == "softhsm":
        assert sorted((o["label"], o["id"]) for o in setup.p11("cert")) == sorted(want.items())
    # a renewal with the same chain: the leaf is replaced, the CA certificates are kept as
    # they are and said so
    p = assert_ok(setup.ctok("cert", "import", "tok", "web", str(chain), "--replace", "--json"))
    out = json.loads(p.stdout)
    assert [(c["label"], c["stored"]) for c in out["ca_certificates"]] == \
        [("Lifecycle Sub CA", False), ("web-ca2", False)], out
    assert {c["alias"]: c["id"] for c in setup.certs()} == want
    # the key serves TLS with its chain from the token
    with TlsServer(ws, setup.tok.key_uri("web"), setup.tok.uri(object="web", type="cert"),
                   "-cert_chain", sub[1]) as srv:
        cli = tls_client(ws, srv.port, root[1])
        assert_handshake(cli, srv)


def test_chain_import_refuses_a_ca_label_taken_by_other_certificates_before_storing(setup):
    ws = setup.ws
    ws.add_key(setup.tok, "web", "ec:P-256")
    ws.add_key(setup.tok, "other", "ec:P-256")
    # two other certificates hold the CA's CN and its fallback label
    for label in ("Clash CA", "web2-ca1"):
        assert_ok(setup.ctok("cert", "import", "tok", label, str(setup.tok.cert("other"))))
    ca = make_ca(ws, "clash", "/CN=Clash CA")
    ws.generate(setup.tok, "web2", "ec:P-256")
    leaf = setup.cert_for("web2", "/CN=web2", "web2")
    chain = ws.write("clash-chain.pem", open(leaf).read() + open(ca[1]).read())
    before = sorted(c["alias"] for c in setup.certs())
    assert_fails_with(setup.ctok("cert", "import", "tok", "web2", str(chain)),
                      "token 'tok'", "another certificate is named 'web2-ca1' already",
                      "nothing was imported")
    assert sorted(c["alias"] for c in setup.certs()) == before


def test_rename_changes_labels_and_keeps_ids(setup):
    kid = setup.ws.add_key(setup.tok, "k", "ec:P-256")
    p = assert_ok(setup.ctok("key", "rename", "tok", "k", "k2"))
    assert "Renamed key 'k' to 'k2'" in p.stdout, describe(p)
    assert [(k["alias"], k["id"], k["certificates"]) for k in setup.keys()] == \
        [("k2", kid.hex(), ["k2"])]
    if setup.kind == "softhsm":
        for t in ("privkey", "pubkey", "cert"):
            assert setup.p11(t) == [{"label": "k2", "id": kid.hex()}], t
    assert_ok(setup.ctok("cert", "rename", "tok", "k2", "web"))
    assert [(c["alias"], c["id"]) for c in setup.certs()] == [("web", kid.hex())]
    if setup.kind == "softhsm":
        assert setup.p11("cert") == [{"label": "web", "id": kid.hex()}]
        assert setup.p11("privkey") == [{"label": "k2", "id": kid.hex()}]
    # the key answers to its new name and through its certificate's (certificate-first)
    for uri in (setup.tok.key_uri("k2"), setup.tok.key_uri("web")):
        assert_ok(setup.ws.ossl("pkey", "-in", uri, "-pubout"))


def test_rename_refuses_a_taken_label_and_a_missing_object(setup):
    setup.ws.add_key(setup.tok, "a", "ec:P-256")
    setup.ws.add_key(setup.tok, "b", "ec:P-256")
    assert_fails_with(setup.ctok("key", "rename", "tok", "a", "b"),
                      "token 'tok'", "a key named 'b' exists already")
    assert_fails_with(setup.ctok("cert", "rename", "tok", "a", "b"),
                      "token 'tok'", "a certificate named 'b' exists already")
    # a key's certificates are renamed with it: not onto another key's certificate
    assert_ok(setup.ctok("cert", "rename", "tok", "b", "c"))
    assert_fails_with(setup.ctok("key", "rename", "tok", "a", "c"),
                      "token 'tok'", "a certificate of another key is named 'c'")
    assert_fails_with(setup.ctok("key", "rename", "tok", "nosuch", "d"),
                      "token 'tok'", "no key named 'nosuch'")
    assert_fails_with(setup.ctok("cert", "rename", "tok", "nosuch", "d"),
                      "token 'tok'", "no certificate named 'nosuch'")
    assert sorted(k["alias"] for k in setup.keys()) == ["a", "b"]
    assert sorted(c["alias"] for c in setup.certs()) == ["a", "c"]


def test_certificate_changes_need_the_modify_rule(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256")
    ws.set_token_fields(tok, permissions=["view", "use", "activate", "keygen", "keyremove"])
    for argv in (["cert", "remove", "tok", "k"], ["cert", "rename", "tok", "k", "x"],
                 ["key", "rename", "tok", "k", "x"],
                 ["cert", "import", "tok", "k", str(tok.cert("k")), "--replace"]):
        assert_fails_with(ws.ctok(*argv), "token 'tok'", "rule 'modify' is not permitted")
    assert [c["alias"] for c in json.loads(
        assert_ok(ws.ctok("cert", "list", "tok", "--json")).stdout)] == ["k"]


def test_certificate_changes_are_audited(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256")
    log = ws.path("audit.log")
    assert_ok(ws.ctok("token", "modify", "tok", "--audit-file", str(log)))
    assert_ok(ws.ctok("cert", "rename", "tok", "k", "c"))
    assert_ok(ws.ctok("key", "rename", "tok", "k", "k2"))  # its certificate too: same id
    assert_ok(ws.ctok("cert", "remove", "tok", "k2"))
    text = log.read_text()
    for op in ("cert_rename", "key_rename", "cert_remove"):
        assert op in text, text


def test_a_key_reference_survives_renaming_its_token(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256")
    pem = assert_ok(ws.ctok("ref", "tok", "k")).stdout
    uri = json.loads(assert_ok(ws.ctok("ref", "tok", "k", "--json")).stdout)["uri"]
    assert uri == "ctok:token-id=%s;object=k;type=private" % tok.id, uri
    ref = ws.write("k.ref.pem", pem, 0o644)
    before = assert_ok(ws.ossl("pkey", "-in", str(ref), "-pubout")).stdout
    p = assert_ok(ws.ctok("token", "modify", "tok", "--name", "renamed"))
    assert re.search(r"ctok:token=tok\)? stop working", p.stderr), describe(p)
    assert "token-id=%s" % tok.id in p.stderr, describe(p)
    assert assert_ok(ws.ossl("pkey", "-in", str(ref), "-pubout")).stdout == before
    # a URI by the old name does not
    assert ws.ossl("pkey", "-in", tok.key_uri("k"), "-pubout").returncode != 0


def test_cloud_tokens_say_what_their_type_does_not_support(tmp_path, build, request):
    from tokenkinds import MAKERS

    kind = MAKERS["awskms"](tmp_path, build, request)
    ws, name = kind.ws, kind.tok.name
    kind.key_uri("p256")  # the key, made through ctok key generate
    for argv, op in ((["cert", "remove", name, "p256"], "certificate removal"),
                     (["cert", "rename", name, "p256", "x"], "certificate rename"),
                     (["key", "rename", name, "p256", "x"], "key rename")):
        assert_fails_with(ws.ctok(*argv), "token '%s'" % name,
                          "%s not supported by token type awskms" % op)
    ca = make_ca(ws, "cloud-ca", "/CN=Cloud CA")
    chain = ws.write("cloud-chain.pem", open(kind.cert("p256")).read() + open(ca[1]).read())
    assert_fails_with(ws.ctok("cert", "import", name, "p256", str(chain)),
                      "token '%s'" % name, "not supported by token type awskms",
                      "nothing was imported")


def test_a_pkcs11_renewal_that_fails_leaves_the_old_certificate(tmp_path, build):
    from p11fixtures import copy_config, require_shim

    setup = Setup("softhsm", tmp_path, build)
    kid = setup.ws.add_key(setup.tok, "web", "ec:P-256")
    new = setup.cert_for("web", "/CN=web-renewed", "renewed")
    shim = setup.ws.view("shim.json", copy_config(setup.ws, tok={"library": str(require_shim())}))
    p = shim.ctok("cert", "import", "tok", "web", str(new), "--replace",
                  env={"CTOK_SHIM_FAIL": "C_CreateObject:1:CKR_DEVICE_MEMORY"})
    assert_fails_with(p, "token 'tok': certificate 'web': storing it: CKR_DEVICE_MEMORY")
    assert setup.p11("cert") == [{"label": "web", "id": kid.hex()}]
    certs = setup.certs()
    assert len(certs) == 1 and "CN=web" in certs[0]["subject"] and \
        "renewed" not in certs[0]["subject"], certs
