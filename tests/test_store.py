"""A user looks into tokens with `openssl storeutl` and ctok: URIs: what is listed, and
how labels, ids, types and tokens filter it. (storeutl names a private key "Pkey".)"""


import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ctoktest import (
    CTOK_FIRST,
    assert_ok,
    count_items,
    describe,
    key_id_of_cert,
    load_cert,
    pem_blocks,
    public_der,
)

PRIVATE = "Pkey"
PUBLIC = "Public key"
CERT = "Certificate"


@pytest.fixture(scope="module")
def store(tmp_path_factory, build):
    """Token 'store': an RSA key and an EC key, each with its certificate, plus a second
    certificate for the EC key under another label."""
    from ctoktest import Workspace

    ws = Workspace(tmp_path_factory.mktemp("store"), build)
    tok = ws.create_token("store")
    ws.add_key(tok, "k-rsa", "rsa:2048")
    ws.add_key(tok, "k-ec", "ec:P-256")
    role = ws.self_signed(tok, "k-ec", subject="/CN=k-ec second role",
                          out=ws.path("k-ec-role.pem"))
    ws.import_cert(tok, "k-ec-role", role)
    return ws, tok


def storeutl(ws, uri, *opts, providers=CTOK_FIRST):
    return assert_ok(ws.ossl("storeutl", *opts, uri, providers=providers))


def subjects(text):
    return sorted(load_cert_pem(b).subject.rfc4514_string() for b in pem_blocks(text,
                                                                                "CERTIFICATE"))


def load_cert_pem(block):
    return x509.load_pem_x509_certificate(block.encode())


def test_storeutl_lists_every_certificate_and_private_key_of_a_token(store):
    ws, tok = store
    p = storeutl(ws, tok.uri())
    assert count_items(p.stdout, CERT) == 3, describe(p)
    assert count_items(p.stdout, PRIVATE) == 2, describe(p)
    assert subjects(p.stdout) == ["CN=k-ec", "CN=k-ec second role", "CN=k-rsa"]


def test_storeutl_object_filter_returns_only_that_label(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(object="k-rsa"))
    assert count_items(p.stdout, CERT) == 1, describe(p)
    assert count_items(p.stdout, PRIVATE) == 1, describe(p)
    assert subjects(p.stdout) == ["CN=k-rsa"]


def test_storeutl_certificate_is_the_one_imported(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(object="k-ec-role", type="cert"))
    blocks = pem_blocks(p.stdout, "CERTIFICATE")
    assert len(blocks) == 1, describe(p)
    assert load_cert_pem(blocks[0]) == load_cert(tok.cert("k-ec-role"))


def test_storeutl_type_cert_lists_certificates_only(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(type="cert"))
    assert count_items(p.stdout, CERT) == 3, describe(p)
    assert count_items(p.stdout, PRIVATE) == 0, describe(p)
    assert count_items(p.stdout, PUBLIC) == 0, describe(p)


def test_storeutl_type_private_lists_private_keys_only(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(type="private"))
    assert count_items(p.stdout, PRIVATE) == 2, describe(p)
    assert count_items(p.stdout, CERT) == 0, describe(p)
    assert count_items(p.stdout, PUBLIC) == 0, describe(p)


def test_storeutl_type_public_lists_public_keys_of_the_key_pairs(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(type="public"))
    assert count_items(p.stdout, PUBLIC) == 2, describe(p)
    assert count_items(p.stdout, PRIVATE) == 0 and count_items(p.stdout, CERT) == 0
    got = sorted(public_der(serialization.load_pem_public_key(b.encode()))
                 for b in pem_blocks(p.stdout, "PUBLIC KEY"))
    want = sorted(public_der(load_cert(tok.cert(a)).public_key()) for a in ("k-rsa", "k-ec"))
    assert got == want


def test_storeutl_certs_option_lists_certificates_only(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(), "-certs")
    assert count_items(p.stdout, CERT) == 3, describe(p)
    assert count_items(p.stdout, PRIVATE) == 0 and count_items(p.stdout, PUBLIC) == 0


def test_storeutl_keys_option_lists_private_keys_only(store):
    ws, tok = store
    p = storeutl(ws, tok.uri(), "-keys")
    assert count_items(p.stdout, PRIVATE) == 2, describe(p)
    assert count_items(p.stdout, CERT) == 0, describe(p)


def test_storeutl_lists_private_key_without_its_private_parts(store):
    """The key reaches OpenSSL as an opaque reference: -text shows what it is, and no
    private key PEM is printed."""
    ws, tok = store
    p = storeutl(ws, tok.uri(object="k-rsa", type="private"))
    assert count_items(p.stdout, PRIVATE) == 1, describe(p)
    assert "PRIVATE KEY-----" not in p.stdout, describe(p)


def test_storeutl_id_filter_finds_certificate_and_key_of_that_id(store):
    ws, tok = store
    kid = key_id_of_cert(tok.cert("k-rsa"))
    p = storeutl(ws, tok.uri(id=kid))
    assert count_items(p.stdout, CERT) == 1, describe(p)
    assert count_items(p.stdout, PRIVATE) == 1, describe(p)
    assert subjects(p.stdout) == ["CN=k-rsa"]


def test_storeutl_certificate_label_with_type_private_finds_key_of_same_id(store):
    """Certificate-first: a role certificate's label names the key it certifies."""
    ws, tok = store
    p = storeutl(ws, tok.uri(object="k-ec-role", type="private"))
    assert count_items(p.stdout, PRIVATE) == 1, describe(p)


def test_storeutl_unfiltered_role_certificates_share_one_key(store):
    ws, tok = store
    kid = key_id_of_cert(tok.cert("k-ec"))
    assert key_id_of_cert(tok.cert("k-ec-role")) == kid
    p = storeutl(ws, tok.uri(id=kid))
    assert count_items(p.stdout, CERT) == 2, describe(p)
    assert count_items(p.stdout, PRIVATE) == 1, describe(p)


def test_storeutl_ctok_alone_lists_objects_of_every_token(ws, make_token):
    make_token("alpha", {"a1": "ec:P-256"})
    make_token("beta", {"b1": "ec:P-256", "b2": "ed25519"})
    p = storeutl(ws, "ctok:")
    assert count_items(p.stdout, CERT) == 3, describe(p)
    assert count_items(p.stdout, PRIVATE) == 3, describe(p)
    assert subjects(p.stdout) == ["CN=a1", "CN=b1", "CN=b2"]


def test_storeutl_token_id_selects_one_token(ws, make_token):
    make_token("alpha", {"a1": "ec:P-256"})
    beta = make_token("beta", {"b1": "ec:P-256"})
    p = storeutl(ws, "ctok:token-id=%s" % beta.id)
    assert count_items(p.stdout, CERT) == 1, describe(p)
    assert subjects(p.stdout) == ["CN=b1"]


def test_same_label_on_two_tokens_resolves_per_token(ws, make_token):
    alpha = make_token("alpha", {"k1": "ec:P-256"})
    beta = make_token("beta", {"k1": "ec:P-256"})
    for tok in (alpha, beta):
        p = storeutl(ws, tok.uri(object="k1", type="cert"))
        blocks = pem_blocks(p.stdout, "CERTIFICATE")
        assert len(blocks) == 1, describe(p)
        assert load_cert_pem(blocks[0]) == load_cert(tok.cert("k1"))


def test_certificates_are_listed_without_an_authentication_code(ws, make_token):
    """Certificate-first lookup reads certificates without logging in."""
    tok = make_token("soft1", {"k1": "ec:P-256"})
    ws.set_token_fields(tok, auth={"env": "CTOK_TEST_PIN_NOT_SET"})
    p = storeutl(ws, tok.uri(type="cert"))
    assert count_items(p.stdout, CERT) == 1, describe(p)


def test_config_path_from_openssl_cnf_provider_parameter(ws, make_token):
    """openssl.cnf's ctok-config names the token file when $CTOK_CONFIG is not set; a set
    $CTOK_CONFIG wins (as pkcs11-provider lets the environment win)."""
    tok = make_token("soft1", {"k1": "ec:P-256"})
    cnf = ws.path("ctok-param.cnf")
    cnf.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n"
        "[provider_sect]\ndefault = default_sect\nctok = ctok_sect\n"
        "[default_sect]\nactivate = 1\n"
        "[ctok_sect]\nmodule = %s\nctok-config = %s\nactivate = 1\n"
        % (ws.build / "ctok.so", ws.config))
    p = ws.ossl("storeutl", "-noout", tok.uri(type="cert"), providers=None,
                env={"OPENSSL_CONF": cnf, "CTOK_CONFIG": None})
    assert_ok(p)
    assert count_items(p.stdout, CERT) == 1, describe(p)
    p = ws.ossl("storeutl", "-noout", tok.uri(type="cert"), providers=None,
                env={"OPENSSL_CONF": cnf, "CTOK_CONFIG": ws.path("no-such-tokens.json")})
    assert count_items(p.stdout, CERT) == 0, describe(p)


def test_keystore_made_by_openssl_pkcs12_becomes_a_token(ws):
    """A user brings an existing .p12 (friendlyName = alias, localKeyID shared by key and
    certificate): ctok token create adopts it, and its key signs by the alias."""
    from ctoktest import PIN, assert_verified, sign_digest, verify_digest

    key, cert, p12 = ws.path("legacy.key"), ws.path("legacy.pem"), ws.path("legacy.p12")
    assert_ok(ws.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-subj", "/CN=legacy", "-days", "2", "-out",
                      cert, providers=None))
    assert_ok(ws.ossl("pkcs12", "-export", "-inkey", key, "-in", cert, "-name", "web",
                      "-passout", "pass:" + PIN, "-out", p12, providers=None))
    before = p12.read_bytes()
    tok = ws.create_token("legacy", keystore=p12)
    assert p12.read_bytes() == before, "adopting the keystore rewrote it"
    s, sig, dg = sign_digest(ws, tok.key_uri("web"))
    assert_ok(s)
    assert_verified(verify_digest(ws, cert, dg, sig))
    # its certificate is there too (OpenSSL encrypts the certificate bag with the code)
    p = storeutl(ws, tok.uri(object="web"))
    assert count_items(p.stdout, CERT) == 1 and count_items(p.stdout, PRIVATE) == 1, describe(p)
