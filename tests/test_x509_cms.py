"""A user runs a small CA whose key lives in a token (`openssl req -x509`,
`openssl x509 -req -CAkey ctok:...`, `openssl ca`), makes CSRs and CMS signatures with
token keys, and decrypts CMS messages; everything is checked with plain OpenSSL."""

import pytest

from ctoktest import assert_ok, describe, load_cert, public_der

CA_EXTS = ["-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign"]


def make_ca(ws, tok, alias, out, extra=()):
    """Self-signed CA certificate made by `openssl req -x509` with the token key."""
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", tok.key_uri(alias), "-subj",
                      "/O=ctok tests/CN=Token CA %s" % alias, "-days", "30", *CA_EXTS,
                      "-out", out, *extra))
    return out


def leaf_csr(ws, tmp_path, name="leaf"):
    key = tmp_path / ("%s.key" % name)
    csr = tmp_path / ("%s.csr" % name)
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None))
    assert_ok(ws.ossl("req", "-new", "-key", key, "-subj", "/CN=%s.example" % name, "-out", csr,
                      providers=None))
    return csr


def assert_verifies(ws, ca, leaf):
    v = assert_ok(ws.ossl("verify", "-CAfile", ca, leaf, providers=None))
    assert "%s: OK" % leaf in v.stdout, describe(v)


# RSA and ECDSA CA keys, RSA-PSS certificates: the behaviour table (test_behaviour.py)
@pytest.mark.parametrize("alias", ["ed25519"])
def test_ca_key_in_token_issues_leaf_that_openssl_verify_accepts(shared_ws, signer, tmp_path,
                                                                 alias):
    ws = shared_ws
    ca = make_ca(ws, signer, alias, tmp_path / "ca.pem")
    assert_verifies(ws, ca, ca)
    csr = leaf_csr(ws, tmp_path)
    leaf = tmp_path / "leaf.pem"
    assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", signer.key_uri(alias),
                      "-CAcreateserial", "-days", "10", "-out", leaf))
    assert_verifies(ws, ca, leaf)
    assert load_cert(leaf).issuer == load_cert(ca).subject


# RSA and ECDSA CSRs: the behaviour table (test_behaviour.py)
@pytest.mark.parametrize("alias", ["ed25519"])
def test_csr_signed_with_token_key_verifies_and_carries_its_public_key(shared_ws, signer,
                                                                       tmp_path, alias):
    ws = shared_ws
    csr = tmp_path / "req.csr"
    assert_ok(ws.ossl("req", "-new", "-key", signer.key_uri(alias), "-subj", "/CN=from token",
                      "-out", csr))
    v = assert_ok(ws.ossl("req", "-verify", "-in", csr, "-noout", providers=None))
    assert "verify OK" in v.stdout + v.stderr, describe(v)
    from cryptography import x509

    req = x509.load_pem_x509_csr(csr.read_bytes())
    assert public_der(req.public_key()) == public_der(load_cert(signer.cert(alias)).public_key())


CA_CNF = """
[ca]
default_ca = ca_default
[ca_default]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
default_days = 30
policy = policy_any
unique_subject = no
x509_extensions = leaf_ext
[policy_any]
commonName = supplied
[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
"""


@pytest.mark.parametrize("alias", ["rsa2048", "p256"])
def test_openssl_ca_signs_request_with_token_key(shared_ws, signer, tmp_path, alias):
    ws = shared_ws
    ca = make_ca(ws, signer, alias, tmp_path / "ca.pem")
    (tmp_path / "newcerts").mkdir()
    (tmp_path / "index.txt").write_text("")
    (tmp_path / "serial").write_text("1000\n")
    cnf = tmp_path / "ca.cnf"
    cnf.write_text(CA_CNF.format(dir=tmp_path))
    csr = leaf_csr(ws, tmp_path)
    leaf = tmp_path / "leaf.pem"
    assert_ok(ws.ossl("ca", "-batch", "-config", cnf, "-cert", ca, "-keyfile",
                      signer.key_uri(alias), "-in", csr, "-out", leaf, "-notext"))
    assert_verifies(ws, ca, leaf)
    assert "CN=leaf.example" in (tmp_path / "index.txt").read_text()


def test_cms_detached_signature_fails_to_verify_for_changed_content(shared_ws, signer,
                                                                    tmp_path):
    ws = shared_ws
    msg = tmp_path / "contract.txt"
    msg.write_bytes(b"I agree to pay 10 EUR.\n")
    sig = tmp_path / "contract.p7s"
    assert_ok(ws.ossl("cms", "-sign", "-binary", "-in", msg, "-signer", signer.cert("p256"),
                      "-inkey", signer.key_uri("p256"), "-outform", "DER", "-out", sig))
    ok = ws.ossl("cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", msg,
                 "-CAfile", signer.cert("p256"), "-out", tmp_path / "o1", providers=None)
    assert_ok(ok)
    msg.write_bytes(b"I agree to pay 10000 EUR.\n")
    bad = ws.ossl("cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", msg,
                  "-CAfile", signer.cert("p256"), "-out", tmp_path / "o2", providers=None)
    assert bad.returncode != 0, describe(bad)


@pytest.mark.parametrize("alias", ["rsa2048", "p256"])
def test_cms_message_encrypted_to_token_certificate_decrypts_with_token_key(shared_ws, signer,
                                                                            tmp_path, alias):
    """RSA key transport (asym cipher) and ECDH key agreement (key exchange)."""
    ws = shared_ws
    msg = tmp_path / "secret.txt"
    msg.write_bytes(b"for your token only\n")
    enc = tmp_path / "secret.cms"
    assert_ok(ws.ossl("cms", "-encrypt", "-binary", "-aes-256-cbc", "-in", msg, "-recip",
                      signer.cert(alias), "-outform", "DER", "-out", enc, providers=None))
    out = tmp_path / "secret.out"
    assert_ok(ws.ossl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", enc, "-recip",
                      signer.cert(alias), "-inkey", signer.key_uri(alias), "-out", out))
    assert out.read_bytes() == msg.read_bytes()
