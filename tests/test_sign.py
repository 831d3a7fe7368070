"""A user signs with a token key through `openssl pkeyutl` / `openssl dgst`, and anyone
verifies the signature with the certificate's public key, without ctok (OpenSSL's
default provider) and with another implementation (python-cryptography)."""

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from ctoktest import (
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    load_cert,
    sign_digest,
    verify_digest,
)

HASHES = {
    "sha1": hashes.SHA1(),
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
MD_LEN = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
# RSA-2048 with every digest is in the behaviour table (test_behaviour.py)
RSA_KEYS = ["rsa3072", "rsa4096"]


def pubkey(tok, alias):
    return load_cert(tok.cert(alias)).public_key()


@pytest.mark.parametrize("md", ["sha1", "sha256", "sha384", "sha512"])
@pytest.mark.parametrize("alias", RSA_KEYS)
def test_rsa_pkcs1_signature_verifies_with_certificate_public_key(shared_ws, signer, alias, md):
    ws = shared_ws
    p, sig, dg = sign_digest(ws, signer.key_uri(alias), "-pkeyopt", "rsa_padding_mode:pkcs1",
                             md=md)
    assert_ok(p)
    assert_verified(verify_digest(ws, signer.cert(alias), dg, sig, "-pkeyopt",
                                  "rsa_padding_mode:pkcs1", md=md))
    pubkey(signer, alias).verify(sig.read_bytes(), dg.read_bytes(), padding.PKCS1v15(),
                                 utils.Prehashed(HASHES[md]))


# (key, digest, salt length asked for, salt length expected, MGF1 digest); salt = digest length
# with MGF1 = the digest is in the behaviour table (test_behaviour.py)
PSS_CASES = [
    ("rsa2048", "sha1", "20", 20, "sha1"),
    ("rsa2048", "sha256", "0", 0, "sha256"),
    ("rsa2048", "sha256", "20", 20, "sha1"),
    ("rsa3072", "sha384", "10", 10, "sha512"),
    ("rsa4096", "sha512", "64", 64, "sha512"),
    ("rsa4096", "sha1", "digest", 20, "sha256"),
]


@pytest.mark.parametrize(
    "alias,md,saltlen,expected_salt,mgf1", PSS_CASES,
    ids=["%s-%s-salt%s-mgf1%s" % (c[0], c[1], c[2], c[4]) for c in PSS_CASES])
def test_rsa_pss_signature_honours_salt_length_and_mgf1_digest(shared_ws, signer, alias, md,
                                                                saltlen, expected_salt, mgf1):
    ws = shared_ws
    opts = ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:%s" % saltlen,
            "-pkeyopt", "rsa_mgf1_md:%s" % mgf1]
    p, sig, dg = sign_digest(ws, signer.key_uri(alias), *opts, md=md)
    assert_ok(p)
    # The verifier insists on the exact salt length: a signature with another salt fails.
    strict = ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
              "rsa_pss_saltlen:%d" % expected_salt, "-pkeyopt", "rsa_mgf1_md:%s" % mgf1]
    assert_verified(verify_digest(ws, signer.cert(alias), dg, sig, *strict, md=md))
    pubkey(signer, alias).verify(
        sig.read_bytes(), dg.read_bytes(),
        padding.PSS(mgf=padding.MGF1(HASHES[mgf1]), salt_length=expected_salt),
        utils.Prehashed(HASHES[md]))


def test_ed25519_signature_over_raw_message_verifies(shared_ws, signer):
    ws = shared_ws
    msg, _ = digest_file(ws)
    sig = ws.path("ed25519.sig")
    assert_ok(ws.ossl("pkeyutl", "-sign", "-rawin", "-inkey", signer.key_uri("ed25519"),
                      "-in", msg, "-out", sig))
    assert len(sig.read_bytes()) == 64
    v = ws.ossl("pkeyutl", "-verify", "-rawin", "-certin", "-inkey", signer.cert("ed25519"),
                "-in", msg, "-sigfile", sig, providers=None)
    assert_verified(v)
    pubkey(signer, "ed25519").verify(sig.read_bytes(), msg.read_bytes())


@pytest.mark.parametrize("alias", ["rsa2048", "p384"])
def test_pkeyutl_rawin_digest_sign_verifies(shared_ws, signer, alias):
    ws = shared_ws
    msg, _ = digest_file(ws)
    sig = ws.path("rawin-%s.sig" % alias)
    assert_ok(ws.ossl("pkeyutl", "-sign", "-rawin", "-digest", "sha384", "-inkey",
                      signer.key_uri(alias), "-in", msg, "-out", sig))
    v = ws.ossl("dgst", "-sha384", "-verify", signer.pubkey_pem(alias), "-signature", sig, msg,
                providers=None)
    assert_ok(v)
    assert "Verified OK" in v.stdout, describe(v)


def test_sign_with_certificate_label_finds_key_with_same_id(ws, make_token):
    """Certificate-first: object=<certificate label>;type=private names the key whose
    id equals the certificate's, even though the key's own label differs."""
    tok = make_token("soft1")
    ws.generate(tok, "key-0001", "ec:P-256")
    cert = ws.self_signed(tok, "key-0001", subject="/CN=Alice")
    ws.import_cert(tok, "alice", cert)
    p, sig, dg = sign_digest(ws, tok.uri(object="alice", type="private"))
    assert_ok(p)
    assert_verified(verify_digest(ws, cert, dg, sig))


def test_sign_with_role_certificate_uses_shared_key(ws, make_token):
    """Two role certificates share one key: each certificate's label reaches that key."""
    tok = make_token("card")
    ws.generate(tok, "shared", "rsa:2048")
    sign_cert = ws.self_signed(tok, "shared", subject="/CN=Bob (signature)",
                               out=ws.path("role-sign.pem"))
    auth_cert = ws.self_signed(tok, "shared", subject="/CN=Bob (authentication)",
                               out=ws.path("role-auth.pem"))
    ws.import_cert(tok, "bob-sign", sign_cert)
    ws.import_cert(tok, "bob-auth", auth_cert)
    for label, cert in (("bob-sign", sign_cert), ("bob-auth", auth_cert)):
        p, sig, dg = sign_digest(ws, tok.uri(object=label, type="private"))
        assert_ok(p)
        assert_verified(verify_digest(ws, cert, dg, sig))
        # the same key: the other role certificate verifies it too
        other = auth_cert if cert == sign_cert else sign_cert
        assert_verified(verify_digest(ws, other, dg, sig))


def test_sign_with_key_named_by_id(ws, make_token):
    tok = make_token("soft1")
    kid = ws.add_key(tok, "k1", "ec:P-384")
    p, sig, dg = sign_digest(ws, tok.uri(id=kid, type="private"), md="sha384")
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig, md="sha384"))


def test_sign_with_token_named_by_its_id(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    p, sig, dg = sign_digest(ws, tok.key_uri("k1", token_id=True))
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig))


def test_sign_with_key_of_second_token(ws, make_token):
    """Several tokens in one config: the URI's token decides which key signs."""
    t1 = make_token("first", {"k1": "ec:P-256"})
    t2 = make_token("second", {"k1": "ec:P-256"})
    p, sig, dg = sign_digest(ws, t2.key_uri("k1"))
    assert_ok(p)
    assert_verified(verify_digest(ws, t2.cert("k1"), dg, sig))
    wrong = verify_digest(ws, t1.cert("k1"), dg, sig)
    assert wrong.returncode != 0, "signed with the first token's key"


def test_certificate_first_on_a_token_with_several_keys_signs_with_the_certified_key(
        ws, make_token):
    """Three keys of one type, four certificates (one a role certificate) whose labels are not
    the keys' labels, imported in another order: each certificate's label reaches exactly
    the key with the certificate's id. Each signature verifies with that certificate's
    public key and with no other key's certificate."""
    tok = make_token("soft1")
    for alias in ("key-a", "key-b", "key-c"):
        ws.generate(tok, alias, "ec:P-256")
    owner = {"alice": "key-b", "bob": "key-c", "carol": "key-a", "bob-role": "key-c"}
    certs = {}
    for label, key in owner.items():
        certs[label] = ws.self_signed(tok, key, subject="/CN=%s" % label,
                                      out=ws.path("%s.pem" % label))
        ws.import_cert(tok, label, certs[label])
    for label, key in owner.items():
        p, sig, dg = sign_digest(ws, tok.uri(object=label, type="private"))
        assert_ok(p)
        assert_verified(verify_digest(ws, certs[label], dg, sig))
        load_cert(certs[label]).public_key().verify(sig.read_bytes(), dg.read_bytes(),
                                                    ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        for other, other_key in owner.items():
            if other_key != key:
                v = verify_digest(ws, certs[other], dg, sig)
                assert v.returncode != 0, "%s's key signed for %s" % (other_key, label)


def test_soft_token_signature_loads_no_p11_kit_and_a_pkcs11_uri_does(ws, make_token):
    """p11-kit is loaded on first use (store/p11kit_lazy.c): for a pkcs11: URI, never for a
    ctok: URI on a soft token. ld.so reports every library it loads (LD_DEBUG=files)."""
    tok = make_token("soft1", {"k1": "ec:P-256"})
    p, sig, dg = sign_digest(ws, tok.key_uri("k1"), env={"LD_DEBUG": "files"})
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig))
    loaded = [l for l in p.stderr.splitlines() if "file=" in l and "libp11-kit" in l]
    assert not loaded, "a ctok: URI on a soft token loaded p11-kit:\n%s" % "\n".join(loaded)
    # the same check sees p11-kit once a pkcs11: URI is read (this one p11-kit refuses, so
    # no module is looked for)
    p, _, _ = sign_digest(ws, "pkcs11:id=%zz;type=private", env={"LD_DEBUG": "files"})
    assert p.returncode != 0 and "pkcs11:id=%zz" in p.stderr, describe(p)
    assert [l for l in p.stderr.splitlines() if "file=" in l and "libp11-kit" in l], describe(p)


def test_file_key_with_ctok_loaded_maps_no_jansson_and_a_soft_token_key_does(ws, make_token):
    """jansson is loaded on first use (store/jansson_lazy.c): a process that loads ctok and signs
    with an ordinary PEM file never reads the tokens config, so it never maps libjansson; a
    soft-token key (the config read) does. ld.so reports every library it loads."""
    def jansson_loaded(p):
        return [l for l in p.stderr.splitlines() if "file=" in l and "libjansson" in l]

    tok = make_token("soft1", {"k1": "ec:P-256"})
    pem = ws.path("file-key.pem")
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", pem, providers=None))
    p, _, _ = sign_digest(ws, pem, env={"LD_DEBUG": "files"})
    assert_ok(p)
    assert [l for l in p.stderr.splitlines() if "file=" in l and "ctok.so" in l], describe(p)
    assert not jansson_loaded(p), "a PEM key with ctok loaded mapped jansson:\n%s" % "\n".join(
        jansson_loaded(p))
    p, sig, dg = sign_digest(ws, tok.key_uri("k1"), env={"LD_DEBUG": "files"})
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig))
    assert jansson_loaded(p), describe(p)
