"""A user keeps keys in a PKCS#11 HSM (SoftHSM2) and uses them through `ctok:` and RFC 7512
`pkcs11:` URIs with the real openssl binary: signatures of every key type and padding,
RSA decryption, ECDH, a CA, CMS and TLS servers; everything is checked with plain OpenSSL
or python-cryptography, and no private key ever leaves the token."""

import urllib.parse

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ctoktest import (
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_no_crash,
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    pkcs11_tool_public_der,
    load_cert,
    pct,
    public_der,
    sign_digest,
    tls_client,
    verify_digest,
)
from p11fixtures import MAIN_LABEL, PIN, SOFTHSM_LIB, main_hsm  # noqa: F401  (fixture)

def pubkey(tok, alias):
    return load_cert(tok.cert(alias)).public_key()


def p11_uri(object=None, id=None, type="private", token=MAIN_LABEL, query=None, **attrs):
    """An RFC 7512 URI naming the main token by its PKCS#11 token label."""
    parts = []
    if token is not None:
        parts.append("token=%s" % urllib.parse.quote(token, safe=""))
    for k, v in attrs.items():
        parts.append("%s=%s" % (k, urllib.parse.quote(v, safe="")))
    if object is not None:
        parts.append("object=%s" % urllib.parse.quote(object, safe=""))
    if id is not None:
        parts.append("id=%s" % pct(id))
    if type is not None:
        parts.append("type=%s" % type)
    u = "pkcs11:" + ";".join(parts)
    return u + ("?" + query if query else "")


# ---------------------------------------------------------------- signatures


# RSA PKCS#1 and PSS, ECDSA, dgst -sign, ECDH, CSR and CA, CMS signing, TLS servers and client
# authentication with HSM keys: the behaviour table over every token kind (test_behaviour.py).


def test_rsa_pss_with_an_mgf1_digest_softhsm_refuses_is_a_clear_error_not_a_crash(main_hsm):
    """SoftHSM 2.6 insists that the MGF1 digest equals the message digest: ctok says that
    the token refused the operation (token, key, call and CKR code), and writes no
    signature."""
    ws, tok = main_hsm.ws, main_hsm.tok
    opts = ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:20", "-pkeyopt",
            "rsa_mgf1_md:sha1"]
    p, sig, dg = sign_digest(ws, tok.key_uri("rsa2048"), *opts, md="sha384")
    assert_fails_with(p, "token 'hsm', key 'rsa2048': C_SignInit failed: CKR_ARGUMENTS_BAD")
    assert p.returncode == 1, describe(p)
    assert not sig.exists() or sig.read_bytes() == b"", describe(p)


def test_ed25519_signature_from_the_hsm_verifies_with_the_certificate(main_hsm):
    ws, tok = main_hsm.ws, main_hsm.tok
    msg, _ = digest_file(ws)
    sig = ws.path("hsm-ed25519.sig")
    assert_ok(ws.ossl("pkeyutl", "-sign", "-rawin", "-inkey", tok.key_uri("ed25519"), "-in", msg,
                      "-out", sig))
    assert len(sig.read_bytes()) == 64
    assert_verified(ws.ossl("pkeyutl", "-verify", "-rawin", "-certin", "-inkey",
                            tok.cert("ed25519"), "-in", msg, "-sigfile", sig, providers=None))
    pubkey(tok, "ed25519").verify(sig.read_bytes(), msg.read_bytes())


# ---------------------------------------------------------------- pkcs11: URIs


def _pkcs11_uris(main):
    slot = next(s for s in main.ws.slots() if s["token_label"] == MAIN_LABEL)
    kid = main.key_ids["p256"]
    return {
        "label-and-pin-value": p11_uri("p256", query="pin-value=%s" % main.tok.pin),
        "label-configured-auth": p11_uri("p256"),
        "id": p11_uri(id=kid),
        "id-and-label": p11_uri("p256", id=kid),
        "manufacturer-model-serial-pin-source": p11_uri(
            "p256", token=None, manufacturer=slot["manufacturer"], model=slot["model"],
            serial=slot["serial"], query="pin-source=file:%s" % main.tok.pin_file),
        "object-only": p11_uri("p256", token=None),
    }


PKCS11_URI_CASES = ["label-and-pin-value", "label-configured-auth", "id", "id-and-label",
                    "manufacturer-model-serial-pin-source", "object-only"]


@pytest.mark.parametrize("case", PKCS11_URI_CASES)
def test_pkcs11_uri_of_p11kit_users_signs_with_the_same_hsm_key(main_hsm, case):
    ws, tok = main_hsm.ws, main_hsm.tok
    uri = _pkcs11_uris(main_hsm)[case]
    p, sig, dg = sign_digest(ws, uri)
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("p256"), dg, sig))


P11_SIGN_CASES = {
    "rsa2048-pkcs1": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa3072-pkcs1": ("rsa3072", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa2048-pss": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                                "rsa_pss_saltlen:32"]),
    "rsa3072-pss": ("rsa3072", ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                                "rsa_pss_saltlen:32"]),
    "p256-ecdsa": ("p256", []),
    "p384-ecdsa": ("p384", []),
}


@pytest.mark.parametrize("case", list(P11_SIGN_CASES))
def test_pkcs11_uri_signs_with_every_key_type_and_padding(main_hsm, case):
    ws, tok = main_hsm.ws, main_hsm.tok
    alias, opts = P11_SIGN_CASES[case]
    p, sig, dg = sign_digest(ws, p11_uri(alias), *opts)
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert(alias), dg, sig, *opts))


@pytest.mark.parametrize("alias", ["rsa3072", "p384", "ed25519"])
def test_pkcs11_uri_public_key_is_the_certificate_public_key(main_hsm, alias):
    ws, tok = main_hsm.ws, main_hsm.tok
    out = ws.path("p11uri-%s.pub.pem" % alias)
    assert_ok(ws.ossl("pkey", "-in", p11_uri(alias, type="public"), "-pubin", "-out", out))
    pub = serialization.load_pem_public_key(out.read_bytes())
    assert public_der(pub) == public_der(pubkey(tok, alias))


def test_pkcs11_uri_rsa_decrypt_and_ed25519_sign(main_hsm, tmp_path):
    ws, tok = main_hsm.ws, main_hsm.tok
    pt = tmp_path / "pt"
    pt.write_bytes(b"for the HSM only")
    ct = tmp_path / "ct"
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", tok.cert("rsa2048"), "-in", pt,
                      "-out", ct, providers=None))
    out = tmp_path / "out"
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", p11_uri("rsa2048"), "-in", ct, "-out",
                      out))
    assert out.read_bytes() == pt.read_bytes()
    sig = tmp_path / "sig"
    assert_ok(ws.ossl("pkeyutl", "-sign", "-rawin", "-inkey", p11_uri("ed25519"), "-in", pt,
                      "-out", sig))
    pubkey(tok, "ed25519").verify(sig.read_bytes(), pt.read_bytes())


def test_pkcs11_uri_with_a_wrong_token_label_finds_nothing(main_hsm):
    ws = main_hsm.ws
    p, _, _ = sign_digest(ws, p11_uri("p256", token="no-such-token"))
    assert_no_crash(p)
    assert p.returncode != 0, describe(p)


# ---------------------------------------------------------------- decrypt and derive

SECRET = b"a 32-byte session key, honestly."

DECRYPT_CASES = {
    "rsa2048-pkcs1": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa3072-pkcs1": ("rsa3072", ["-pkeyopt", "rsa_padding_mode:pkcs1"]),
    "rsa2048-oaep-sha1": ("rsa2048", ["-pkeyopt", "rsa_padding_mode:oaep"]),
    "rsa3072-oaep-sha1": ("rsa3072", ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
                                      "rsa_oaep_md:sha1", "-pkeyopt", "rsa_mgf1_md:sha1"]),
}


@pytest.mark.parametrize("case", list(DECRYPT_CASES))
def test_rsa_decrypt_in_the_hsm_recovers_what_plain_openssl_encrypted(main_hsm, tmp_path, case):
    ws, tok = main_hsm.ws, main_hsm.tok
    alias, opts = DECRYPT_CASES[case]
    pt = tmp_path / "secret.bin"
    pt.write_bytes(SECRET)
    ct = tmp_path / "secret.enc"
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", tok.cert(alias), "-in", pt,
                      "-out", ct, *opts, providers=None))
    out = tmp_path / "secret.dec"
    p = assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", tok.key_uri(alias), "-in", ct, "-out",
                          out, *opts))
    assert out.read_bytes() == SECRET, describe(p)


def test_rsa_oaep_decrypt_of_python_ciphertext_in_the_hsm(main_hsm, tmp_path):
    ws, tok = main_hsm.ws, main_hsm.tok
    ct = tmp_path / "py.enc"
    ct.write_bytes(pubkey(tok, "rsa2048").encrypt(SECRET, padding.OAEP(
        mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)))
    out = tmp_path / "py.dec"
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", tok.key_uri("rsa2048"), "-in", ct, "-out",
                      out, "-pkeyopt", "rsa_padding_mode:oaep"))
    assert out.read_bytes() == SECRET


def test_rsa_oaep_sha256_that_softhsm_cannot_do_is_a_clear_error_not_a_crash(main_hsm,
                                                                             tmp_path):
    """SoftHSM 2.6 does OAEP with SHA-1 only: ctok says that the token refused the operation
    (an OpenSSL error line from ctok naming token, key, call and CKR code)."""
    ws, tok = main_hsm.ws, main_hsm.tok
    opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
            "rsa_mgf1_md:sha256"]
    pt = tmp_path / "secret.bin"
    pt.write_bytes(SECRET)
    ct = tmp_path / "secret.enc"
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", tok.cert("rsa2048"), "-in", pt,
                      "-out", ct, *opts, providers=None))
    out = tmp_path / "secret.dec"
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", tok.key_uri("rsa2048"), "-in", ct, "-out", out,
                *opts)
    assert_fails_with(p, "token 'hsm', key 'rsa2048': C_DecryptInit failed: CKR_ARGUMENTS_BAD")
    assert p.returncode == 1, describe(p)
    assert not out.exists() or out.read_bytes() != SECRET


def test_rsa_oaep_with_a_label_softhsm_ignores_fails_with_a_ctok_error(main_hsm, tmp_path):
    """SoftHSM 2.6 ignores the OAEP label, so its padding check fails: the user must see an
    error line from ctok (which token and key, which call), not only SoftHSM's leftovers,
    and no plaintext."""
    ws, tok = main_hsm.ws, main_hsm.tok
    opts = ["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt",
            "rsa_oaep_label:63746f6b2d6c6162656c"]
    pt = tmp_path / "secret.bin"
    pt.write_bytes(SECRET)
    ct = tmp_path / "secret.enc"
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", tok.cert("rsa2048"), "-in", pt,
                      "-out", ct, *opts, providers=None))
    out = tmp_path / "secret.dec"
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", tok.key_uri("rsa2048"), "-in", ct, "-out", out,
                *opts)
    assert_fails_with(p, ":ctok:", "token 'hsm', key 'rsa2048': C_Decrypt failed: CKR_")
    assert p.returncode == 1, describe(p)
    assert not out.exists() or out.read_bytes() != SECRET


def test_ecdh_derive_through_a_pkcs11_uri(main_hsm, tmp_path):
    ws, tok = main_hsm.ws, main_hsm.tok
    peer = tmp_path / "peer.pem"
    peer_pub = tmp_path / "peer.pub.pem"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", peer, providers=None))
    assert_ok(ws.ossl("pkey", "-in", peer, "-pubout", "-out", peer_pub, providers=None))
    ours = tmp_path / "ours.bin"
    assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", p11_uri("p256"), "-peerkey", peer_pub,
                      "-out", ours))
    peer_key = serialization.load_pem_private_key(peer.read_bytes(), None)
    assert ours.read_bytes() == peer_key.exchange(ec.ECDH(), pubkey(tok, "p256"))


# ---------------------------------------------------------------- CA, CMS

CA_EXTS = ["-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign"]


@pytest.mark.parametrize("alias", ["ed25519"])
def test_ca_key_in_the_hsm_issues_a_leaf_that_openssl_verify_accepts(main_hsm, tmp_path, alias):
    ws, tok = main_hsm.ws, main_hsm.tok
    ca = tmp_path / "ca.pem"
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", tok.key_uri(alias), "-subj",
                      "/O=ctok tests/CN=HSM CA %s" % alias, "-days", "30", *CA_EXTS, "-out", ca))
    key = tmp_path / "leaf.key"
    csr = tmp_path / "leaf.csr"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None))
    assert_ok(ws.ossl("req", "-new", "-key", key, "-subj", "/CN=leaf.example", "-out", csr,
                      providers=None))
    leaf = tmp_path / "leaf.pem"
    assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", tok.key_uri(alias),
                      "-CAcreateserial", "-days", "10", "-out", leaf))
    v = assert_ok(ws.ossl("verify", "-CAfile", ca, leaf, providers=None))
    assert "%s: OK" % leaf in v.stdout, describe(v)
    assert public_der(load_cert(ca).public_key()) == public_der(pubkey(tok, alias))


def test_cms_enveloped_for_an_hsm_rsa_certificate_is_decrypted_by_the_hsm(main_hsm, tmp_path):
    ws, tok = main_hsm.ws, main_hsm.tok
    pt = tmp_path / "pt"
    pt.write_bytes(SECRET * 4)
    env = tmp_path / "env.p7m"
    assert_ok(ws.ossl("cms", "-encrypt", "-in", pt, "-aes-256-cbc", "-binary", "-outform", "DER",
                      "-out", env, tok.cert("rsa2048"), providers=None))
    out = tmp_path / "out"
    assert_ok(ws.ossl("cms", "-decrypt", "-in", env, "-inform", "DER", "-recip",
                      tok.cert("rsa2048"), "-inkey", tok.key_uri("rsa2048"), "-binary", "-out",
                      out))
    assert out.read_bytes() == pt.read_bytes()


# ---------------------------------------------------------------- TLS

TLS_CASES = {
    "tls13-ed25519": ("ed25519", "-tls1_3", [], "Ed25519"),
}


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_tls_server_with_its_key_in_the_hsm_completes_the_handshake(main_hsm, case):
    ws, tok = main_hsm.ws, main_hsm.tok
    alias, proto, client_opts, sigtype = TLS_CASES[case]
    cert = tok.cert(alias)
    with TlsServer(ws, tok.key_uri(alias), cert, proto) as srv:
        cli = tls_client(ws, srv.port, cert, proto, *client_opts)
        assert_handshake(cli, srv)
    assert ("Protocol  : %s" % ("TLSv1.3" if proto == "-tls1_3" else "TLSv1.2")) in cli.stdout
    assert ("peer signature type: %s" % sigtype).lower() in cli.stdout.lower(), cli.stdout


def test_benchmark_program_signs_with_an_hsm_key_on_two_threads(main_hsm):
    """bench/: ctok-bench-sign measures ctok on the HSM key (a short smoke run)."""
    ws, tok = main_hsm.ws, main_hsm.tok
    bench = ws.build / "bench" / "ctok-bench-sign"
    if not bench.exists():
        pytest.skip("no %s" % bench)
    from ctoktest import run

    p = assert_ok(run([bench, "--key", tok.key_uri("p256"), "--alg", "ecdsa", "--threads", "2",
                       "--seconds", "0.3", "--provider-path", ws.build, "--provider", "ctok",
                       "--provider", "default"], ws.env()))
    assert "threads=2" in p.stdout and float(p.stdout.split("ops_per_sec=")[1].split()[0]) > 0


def p11_bench(ws, *args):
    bench = ws.build / "bench" / "ctok-bench-p11"
    if not bench.exists():
        pytest.skip("no %s" % bench)
    from ctoktest import run

    pin = ws.path("bench-pin")
    pin.write_text(PIN + "\n")
    return run([bench, "--pin", "file:%s" % pin, "--label", "p256", "--mech", "ecdsa", *args],
               ws.env())


def test_p11_benchmark_gives_ctok_p11_and_softhsm_turns_in_one_process(main_hsm):
    """bench/: ctok-bench-p11 --versus (make bench's p11mod section) signs on ctok-p11.so and
    on SoftHSM's own module, token object and session copies, in the same threads: every side
    signs, and each gets about a third of the wall time (slices taken in turn)."""
    ws = main_hsm.ws
    raw = "module=%s,token=%s" % (SOFTHSM_LIB, MAIN_LABEL)
    p = assert_ok(p11_bench(ws, "--module", ws.build / "ctok-p11.so", "--token", "hsm",
                            "--threads", "2", "--seconds", "1.2", "--slice-ms", "50",
                            "--versus", raw, "--versus", raw + ",copy=session"))
    sides = {}
    for line in p.stdout.splitlines():
        f = dict(t.split("=", 1) for t in line.split() if "=" in t)
        if "side" in f:
            sides[int(f["side"])] = (int(f["sigs"]), float(f["seconds"]))
    assert sorted(sides) == [0, 1, 2], p.stdout
    total = sum(sec for _, sec in sides.values())
    for k, (sigs, sec) in sides.items():
        assert sigs > 0, p.stdout
        assert 0.2 < sec / total < 0.47, "side %d had %.2f of the time\n%s" % (k, sec / total,
                                                                              p.stdout)


@pytest.mark.parametrize("spec", ["token=", "module=/x", "token=a,copy=twice", "bogus"])
def test_p11_benchmark_refuses_a_bad_versus_in_one_line(main_hsm, spec):
    p = p11_bench(main_hsm.ws, "--token", MAIN_LABEL, "--versus", spec)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().count("\n") == 0 and "--versus" in p.stderr, p.stderr


def test_tls_server_with_a_pkcs11_uri_key(main_hsm):
    ws, tok = main_hsm.ws, main_hsm.tok
    cert = tok.cert("p256")
    with TlsServer(ws, p11_uri("p256"), cert, "-tls1_3") as srv:
        cli = tls_client(ws, srv.port, cert, "-tls1_3")
        assert_handshake(cli, srv)


# ---------------------------------------------------------------- no export


@pytest.mark.parametrize("alias", ["rsa2048", "p256", "ed25519"])
def test_hsm_private_key_never_exports(main_hsm, alias):
    ws, tok = main_hsm.ws, main_hsm.tok
    p = assert_fails_with(ws.ossl("pkey", "-in", tok.key_uri(alias)),
                          "private key export not allowed")
    assert "PRIVATE KEY" not in p.stdout


def test_hsm_public_key_exports_and_matches_the_certificate(main_hsm):
    ws, tok = main_hsm.ws, main_hsm.tok
    out = ws.path("hsm-rsa3072.pub")
    assert_ok(ws.ossl("pkey", "-in", tok.key_uri("rsa3072"), "-pubout", "-out", out))
    pub = serialization.load_pem_public_key(out.read_bytes())
    assert public_der(pub) == public_der(pubkey(tok, "rsa3072"))


def test_allow_export_cannot_export_a_sensitive_hsm_key(main_hsm):
    from p11fixtures import copy_config, same_token_in

    ws = main_hsm.ws
    view = ws.view("export.json", copy_config(ws, hsm={"allow_export": True}))
    tok = same_token_in(view, main_hsm.tok)
    for alias in ("rsa2048", "p256"):
        p = view.ossl("pkey", "-in", tok.key_uri(alias))
        assert_no_crash(p)
        assert p.returncode != 0, describe(p)
        assert "PRIVATE KEY" not in p.stdout, describe(p)


# (Debian 12's pkcs11-tool cannot read a P-384 public key object)
@pytest.mark.parametrize("alias", ["rsa2048", "rsa3072", "p256"])
def test_certificates_the_tests_verify_with_hold_the_tokens_own_public_key(main_hsm, tmp_path,
                                                                          alias):
    """The certificates every signature test verifies against were made through ctok: their
    public key must be the one SoftHSM itself holds (read with pkcs11-tool, without ctok),
    or a ctok that exported a wrong public key would verify its own mistakes."""
    hsm, tok = main_hsm.hsm, main_hsm.tok
    out = tmp_path / "pub.der"
    token_pub = serialization.load_der_public_key(pkcs11_tool_public_der(
        lambda *a: hsm.tool("--token-label", MAIN_LABEL, *a), main_hsm.key_ids[alias].hex(), out))
    assert public_der(token_pub) == public_der(pubkey(tok, alias))
