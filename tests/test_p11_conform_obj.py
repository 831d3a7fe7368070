"""Issue 11, items 1, 4 and 9: token objects as a peer provider's users have them.

Keys are made by OpenSC's pkcs11-tool on SoftHSM (never by ctok's tool); each has a
certificate object of the same CKA_ID, made by `openssl req -x509` with the token key.
- item 1: `openssl req -new`, `openssl x509 -req -signkey / -CAkey` and `openssl ca` sign with
  every key type, with default + ctok and default + ctok + base; plain OpenSSL verifies.
  One EC key has no public key object (its certificate gives its public half).
- item 4: an application's error queue is empty after ctok loaded and used every kind of key
  (Edwards CKA_EC_PARAMS, a raw EC point), and a failure shows ctok's own reason only.
- item 9: an EC key whose CKA_EC_PARAMS hold explicit ECParameters (written with
  `pkcs11-tool --write-object` from an `openssl ecparam -param_enc explicit` key) is listed
  and signs.
"""

import subprocess

import pytest

from ctoktest import OPENSSL, assert_ok, describe, run
from p11conform import PROVIDER_SETS, ToolToken, ossl

HERE = __import__("pathlib").Path(__file__).resolve().parent

# name: (pkcs11-tool key type, CKA_ID, signing options)
PSS = ("-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest")
KEYS = {
    "rsa": ("rsa:2048", "01", ()),
    "rsa-pss": ("rsa:2048", "06", PSS),
    "p256": ("EC:prime256v1", "02", ()),
    "p384": ("EC:secp384r1", "03", ()),
    "ed25519": ("EC:edwards25519", "04", ()),
    "p256-cert-only": ("EC:prime256v1", "05", ()),  # its public key object deleted
    "explicit": (None, "09", ()),  # explicit ECParameters, written from a file
}
STALE_ID = "07"
ALL_KEYS = len(KEYS) + 1  # and the key with a stale certificate
CA_EXT = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext",
          "keyUsage=critical,keyCertSign,digitalSignature")


def every_key(test):
    """test(tt, name, pset) for every key of KEYS with both provider configurations."""
    return pytest.mark.parametrize("pset", PROVIDER_SETS)(
        pytest.mark.parametrize("name", list(KEYS))(test))


def plain(ws, cmd, *args):
    """openssl without ctok: the independent verifier."""
    return ws.ossl(cmd, *args, providers=None)


def explicit_key(t: ToolToken, id_hex, label):
    """An EC P-256 key with explicit parameters, written to the token by pkcs11-tool."""
    ws = t.ws
    pem, der, pub = ws.path("explicit.pem"), ws.path("explicit.der"), ws.path("explicit-pub.der")
    assert_ok(plain(ws, "ecparam", "-name", "prime256v1", "-param_enc", "explicit", "-genkey",
                    "-noout", "-out", pem))
    assert_ok(plain(ws, "pkey", "-in", pem, "-outform", "DER", "-out", der))
    assert_ok(plain(ws, "pkey", "-in", pem, "-pubout", "-outform", "DER", "-out", pub))
    assert_ok(t.tool("--write-object", der, "--type", "privkey", "--id", id_hex, "--label", label))
    assert_ok(t.tool("--write-object", pub, "--type", "pubkey", "--id", id_hex, "--label", label))
    pem.unlink()
    der.unlink()


@pytest.fixture(scope="module")
def tt(tmp_path_factory, build):
    t = ToolToken(tmp_path_factory.mktemp("conform-obj"), build)
    ws = t.ws
    for name, (kt, id_hex, opts) in KEYS.items():
        if kt is None:
            explicit_key(t, id_hex, name)
        else:
            t.keypair(kt, id_hex, name)
        cert = ws.path("%s-ca.pem" % name)
        assert_ok(ossl(ws, "ctok", "req", "-new", "-x509", "-key", t.uri(id_hex), "-subj",
                       "/CN=token %s" % name, "-days", "30", *CA_EXT, *opts, "-out", cert))
        t.write_cert(cert, id_hex, name)
    assert_ok(t.tool("--delete-object", "--type", "pubkey", "--id", KEYS["p256-cert-only"][1]))
    # a key whose certificate (same CKA_ID) is of another key: a stale one left behind
    t.keypair("EC:prime256v1", STALE_ID, "stale")
    assert_ok(plain(ws, "req", "-new", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", ws.path("other.key"), "-subj",
                    "/CN=another key", "-out", ws.path("stale-cert.pem")))
    t.write_cert(ws.path("stale-cert.pem"), STALE_ID, "stale")
    # a software key's request, for the token keys to certify
    assert_ok(plain(ws, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", ws.path("leaf.key"), "-subj", "/CN=leaf", "-out",
                    ws.path("leaf.csr")))
    return t


def ca_cert(tt, name):
    return tt.ws.path("%s-ca.pem" % name)


def der_content(der, i=0):
    """(start, end) of the content of the DER element at offset i."""
    n = der[i + 1]
    if n < 0x80:
        return i + 2, i + 2 + n
    k = n & 0x7F
    start = i + 2 + k
    return start, start + int.from_bytes(der[i + 2:start], "big")


def assert_issued(ws, leaf, ca, name):
    """leaf's signature verifies with ca's public key. openssl verify refuses a CA with
    explicit EC parameters outright (X509_V_ERR_EC_KEY_EXPLICIT_PARAMS): that one is
    checked on its signature alone, with openssl dgst."""
    if name != "explicit":
        p = assert_ok(plain(ws, "verify", "-CAfile", ca, leaf))
        assert ": OK" in p.stdout, describe(p)
        return
    der = ws.path(leaf.name + ".der")
    assert_ok(plain(ws, "x509", "-in", leaf, "-outform", "DER", "-out", der))
    cert = der.read_bytes()
    i, _ = der_content(cert)  # Certificate ::= SEQUENCE { tbs, algorithm, signature }
    _, tbs_end = der_content(cert, i)
    _, alg_end = der_content(cert, tbs_end)
    sig_start, sig_end = der_content(cert, alg_end)
    ws.path("tbs.der").write_bytes(cert[i:tbs_end])
    ws.path("sig.der").write_bytes(cert[sig_start + 1:sig_end])  # after the unused-bits byte
    pub = ws.path("ca-pub.pem")
    assert_ok(plain(ws, "x509", "-in", ca, "-pubkey", "-noout", "-out", pub))
    p = assert_ok(plain(ws, "dgst", "-sha256", "-verify", pub, "-signature", ws.path("sig.der"),
                        ws.path("tbs.der")))
    assert "Verified OK" in p.stdout, describe(p)


def assert_same_public_key(ws, a, b):
    pa = assert_ok(plain(ws, "x509" if a.suffix == ".pem" else "req", "-in", a, "-pubkey",
                         "-noout")).stdout
    pb = assert_ok(plain(ws, "x509", "-in", b, "-pubkey", "-noout")).stdout
    assert pa == pb


@every_key
def test_req_new_signs_a_request_with_each_token_key(tt, name, pset):
    ws, (_, id_hex, opts) = tt.ws, KEYS[name]
    csr = ws.path("req-%s-%s.csr" % (name, pset))
    assert_ok(ossl(ws, pset, "req", "-new", "-key", tt.uri(id_hex), "-subj", "/CN=req %s" % name,
                   *opts, "-out", csr))
    p = assert_ok(plain(ws, "req", "-in", csr, "-verify", "-noout", "-text"))
    assert "verify OK" in p.stdout + p.stderr, describe(p)
    if opts:
        assert "rsassaPss" in p.stdout, describe(p)
    assert_same_public_key(ws, csr, ca_cert(tt, name))


def x509_req(tt, name, pset, kind, *signer):
    """openssl x509 -req on the software key's request, signed by token key name."""
    ws, (_, id_hex, opts) = tt.ws, KEYS[name]
    out = ws.path("%s-%s-%s.pem" % (kind, name, pset))
    signer = [tt.uri(id_hex) if a is None else a for a in signer]
    assert_ok(ossl(ws, pset, "x509", "-req", "-in", ws.path("leaf.csr"), *signer, "-days", "3",
                   *opts, "-out", out))
    return out


@every_key
def test_x509_signkey_self_signs_with_each_token_key(tt, name, pset):
    ws = tt.ws
    out = x509_req(tt, name, pset, "self", "-signkey", None)
    p = assert_ok(plain(ws, "verify", "-check_ss_sig", "-CAfile", out, out))
    assert ": OK" in p.stdout, describe(p)
    assert_same_public_key(ws, out, ca_cert(tt, name))


@every_key
def test_x509_cakey_certifies_a_request_with_each_token_key(tt, name, pset):
    out = x509_req(tt, name, pset, "leaf-x509", "-CA", ca_cert(tt, name), "-CAkey", None,
                   "-CAcreateserial")
    assert_issued(tt.ws, out, ca_cert(tt, name), name)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_public_key_object_is_preferred_to_a_certificate(tt, pset):
    """The key's public half is its public key object's, not that of a certificate with the
    same CKA_ID: a request signed by the key carries (and verifies with) the key's own."""
    ws = tt.ws
    csr = ws.path("stale-%s.csr" % pset)
    assert_ok(ossl(ws, pset, "req", "-new", "-key", tt.uri(STALE_ID), "-subj", "/CN=stale",
                   "-out", csr))
    p = assert_ok(plain(ws, "req", "-in", csr, "-verify", "-noout"))
    assert "verify OK" in p.stdout + p.stderr, describe(p)
    token_pub = assert_ok(ossl(ws, pset, "pkey", "-pubin", "-in",
                               tt.uri(STALE_ID, type="public"), "-pubout")).stdout
    csr_pub = assert_ok(plain(ws, "req", "-in", csr, "-pubkey", "-noout")).stdout
    stale_pub = assert_ok(plain(ws, "x509", "-in", ws.path("stale-cert.pem"), "-pubkey",
                                "-noout")).stdout
    assert csr_pub == token_pub != stale_pub


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_key_with_only_a_certificate_verifies_with_its_public_half(tt, pset):
    """The public half of a key without a public key object comes from its certificate,
    decoded in ctok's own library context: verifying with the token key (its public half, in
    the child context) works with base loaded too."""
    ws, id_hex = tt.ws, KEYS["p256-cert-only"][1]
    msg, sig = ws.path("msg-cert-only.bin"), ws.path("cert-only-%s.sig" % pset)
    msg.write_bytes(b"certificate only\n" * 10)
    assert_ok(ossl(ws, pset, "dgst", "-sha256", "-sign", tt.uri(id_hex), "-out", sig, msg))
    p = assert_ok(ossl(ws, pset, "dgst", "-sha256", "-prverify", tt.uri(id_hex), "-signature",
                       sig, msg))
    assert "Verified OK" in p.stdout, describe(p)


CA_CNF = """[ca]
default_ca = ca_sect
[ca_sect]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = {md}
default_days = 3
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
"""


@every_key
def test_openssl_ca_certifies_a_request_with_each_token_key(tt, name, pset):
    ws, (_, id_hex, opts) = tt.ws, KEYS[name]
    d = ws.path("ca-%s-%s" % (name, pset))
    d.mkdir()
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    cnf = d / "ca.cnf"
    cnf.write_text(CA_CNF.format(dir=d, md="default" if name == "ed25519" else "sha256"))
    out = d / "leaf.pem"
    assert_ok(ossl(ws, pset, "ca", "-batch", "-config", cnf, "-cert", ca_cert(tt, name),
                   "-keyfile", tt.uri(id_hex), "-in", ws.path("leaf.csr"), *opts, "-out", out))
    assert_issued(ws, out, ca_cert(tt, name), name)


# ---------------------------------------------------------------- item 9


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_explicit_parameters_key_is_listed_with_its_parameters(tt, pset):
    p = assert_ok(ossl(tt.ws, pset, "storeutl", "-keys", "pkcs11:token=%s" % tt.label))
    assert "Total found: %d" % ALL_KEYS in p.stdout, describe(p)  # none skipped
    p = assert_ok(ossl(tt.ws, pset, "storeutl", "-keys", tt.uri(KEYS["explicit"][1], type=None)))
    assert "Total found: 1" in p.stdout, describe(p)
    pub = assert_ok(ossl(tt.ws, pset, "pkey", "-in", tt.uri(KEYS["explicit"][1]), "-pubout",
                         "-text_pub", "-noout")).stdout
    assert "Field Type: prime-field" in pub, pub  # explicit, as on the token


def test_explicit_parameters_key_in_the_tool_listing(tt):
    p = assert_ok(tt.ws.ctok("key", "list", "hsm"))
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("explicit ")]
    assert line and " EC " in line[0] and "?" not in line[0], describe(p)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_explicit_parameters_key_signs_and_openssl_verifies(tt, pset):
    ws = tt.ws
    msg, sig = ws.path("msg.bin"), ws.path("explicit-%s.sig" % pset)
    msg.write_bytes(b"explicit parameters\n" * 10)
    assert_ok(ossl(ws, pset, "dgst", "-sha256", "-sign", tt.uri(KEYS["explicit"][1]), "-out",
                   sig, msg))
    pub = ws.path("explicit-%s.pub" % pset)
    assert_ok(plain(ws, "x509", "-in", ca_cert(tt, "explicit"), "-pubkey", "-noout", "-out", pub))
    p = assert_ok(plain(ws, "dgst", "-sha256", "-verify", pub, "-signature", sig, msg))
    assert "Verified OK" in p.stdout, describe(p)


# ---------------------------------------------------------------- item 4


@pytest.fixture(scope="module")
def errqueue(tmp_path_factory):
    out = tmp_path_factory.mktemp("errqueue") / "p11_errqueue"
    p = subprocess.run(["gcc", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(out),
                        str(HERE / "p11_errqueue.c"), "-lcrypto"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return out


def test_no_foreign_error_is_left_on_the_queue(tt, errqueue):
    """Every key of the token (Edwards curve names, raw and wrapped EC points, explicit
    parameters, certificates) loaded and used: the application's error queue stays empty;
    the one failure shows ctok's reason and nothing older."""
    p = assert_ok(run([errqueue, tt.ws.build, "pkcs11:token=%s" % tt.label], tt.ws.env()))
    lines = p.stdout.splitlines()
    assert lines[0] == "load keys=%d queue=0" % ALL_KEYS, describe(p)
    signs = [ln for ln in lines if ln.startswith("sign ")]
    assert len(signs) == ALL_KEYS and all(ln.endswith("ok=1 queue=0") for ln in signs), \
        describe(p)
    fail = lines.index("fail ok=0")
    errors = lines[fail + 1:]
    assert errors and all(":ctok:" in e for e in errors), describe(p)
    assert "data to sign is 100 bytes" in p.stdout, describe(p)
    assert "asn1" not in p.stdout.lower(), describe(p)
