"""Issue 9: the behaviour every token type owes its users, written once and run over every kind
(tests/tokenkinds.py: soft, softhsm, awskms, azurekv). Signatures per algorithm through `openssl
pkeyutl` and `openssl dgst`, CSRs, CA signing, CMS, TLS 1.3 and 1.2 servers and client
authentication, ECDH, and bad input. Everything made with a token key is verified without
ctok (plain OpenSSL and python-cryptography) against the public key read from where the kind
keeps it. What a kind cannot do (KMS and Key Vault: raw RSA, PSS with another salt, SHA-1,
ECDSA with another hash than the curve's, ECDH) is not skipped: the attempt must fail with one clear
error naming the token and the key, and write nothing."""

import re

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from cryptography.x509.oid import SignatureAlgorithmOID

from ctoktest import (
    CTOK_FIRST,
    SIGNATURE_TRACE,
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    load_cert,
    public_der,
    sign_digest,
    tls_client,
    verify_digest,
)
from tokenkinds import (  # noqa: F401  (fixture token_kind)
    ECDH,
    ECDSA_HASH,
    PSS_SALT,
    RAW_RSA,
    SHA1,
    md_of,
    token_kind,
)

HASHES = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
          "sha512": hashes.SHA512()}
MD_LEN = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}


def pkcs1(md):
    return ["-pkeyopt", "rsa_padding_mode:pkcs1"]


def pss(salt, md):
    return ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:%s" % salt,
            "-pkeyopt", "rsa_mgf1_md:%s" % md]


def assert_refused(p, kind, alias, feature, out=None):
    """What a kind cannot do fails cleanly: non-zero exit, no crash, ctok's error naming the
    token and the key (reason "unsupported operation"), and no output written."""
    assert kind.cannot(feature), feature
    assert_fails_with(p, "token '%s'" % kind.tok.name, "unsupported operation")
    lines = [l for l in p.stderr.splitlines() if "token '%s'" % kind.tok.name in l]
    assert any(alias in l for l in lines), "the error does not name key %r\n%s" % (
        alias, describe(p))
    if out is not None:
        assert not out.exists() or out.stat().st_size == 0, "output was written\n" + describe(p)


# ---------------------------------------------------------------- pkeyutl -sign
#
# id: (key, digest, pkeyutl options, python padding or None for ECDSA, what a kind may lack)
SIGN_CASES = {
    "rsa2048-pkcs1-sha256": ("rsa2048", "sha256", pkcs1, "pkcs1", None),
    "rsa2048-pkcs1-sha384": ("rsa2048", "sha384", pkcs1, "pkcs1", None),
    "rsa2048-pkcs1-sha512": ("rsa2048", "sha512", pkcs1, "pkcs1", None),
    "rsa3072-pkcs1-sha384": ("rsa3072", "sha384", pkcs1, "pkcs1", None),
    "rsa3072-pkcs1-sha512": ("rsa3072", "sha512", pkcs1, "pkcs1", None),
    "rsa2048-pkcs1-sha1": ("rsa2048", "sha1", pkcs1, "pkcs1", SHA1),
    "rsa2048-pss-sha256-saltdigest": ("rsa2048", "sha256", lambda md: pss("digest", md),
                                      MD_LEN["sha256"], None),
    "rsa2048-pss-sha384-saltdigest": ("rsa2048", "sha384", lambda md: pss("digest", md),
                                      MD_LEN["sha384"], None),
    "rsa3072-pss-sha512-salt64": ("rsa3072", "sha512", lambda md: pss("64", md), 64, None),
    "rsa3072-pss-sha256-salt32": ("rsa3072", "sha256", lambda md: pss("32", md), 32, None),
    "rsa2048-pss-sha256-saltmax": ("rsa2048", "sha256", lambda md: pss("max", md),
                                   256 - 32 - 2, PSS_SALT),
    "rsa2048-pss-sha384-salt20": ("rsa2048", "sha384", lambda md: pss("20", md), 20, PSS_SALT),
    "rsa3072-pss-sha256-salt0": ("rsa3072", "sha256", lambda md: pss("0", md), 0, PSS_SALT),
    "p256-ecdsa-sha256": ("p256", "sha256", lambda md: [], None, None),
    "p384-ecdsa-sha384": ("p384", "sha384", lambda md: [], None, None),
    "p521-ecdsa-sha512": ("p521", "sha512", lambda md: [], None, None),
    "p256-ecdsa-sha1": ("p256", "sha1", lambda md: [], None, SHA1),
    "p256-ecdsa-sha384": ("p256", "sha384", lambda md: [], None, ECDSA_HASH),
    "p384-ecdsa-sha256": ("p384", "sha256", lambda md: [], None, ECDSA_HASH),
    "p384-ecdsa-sha512": ("p384", "sha512", lambda md: [], None, ECDSA_HASH),
}


def python_padding(pad, md):
    if pad == "pkcs1":
        return padding.PKCS1v15()
    return padding.PSS(mgf=padding.MGF1(HASHES[md]), salt_length=pad)


@pytest.mark.parametrize("case", list(SIGN_CASES))
def test_signature_verifies_with_the_tokens_public_key(token_kind, case):
    kind, ws = token_kind, token_kind.ws
    alias, md, opts, pad, feature = SIGN_CASES[case]
    p, sig, dg = sign_digest(ws, kind.key_uri(alias), *opts(md), md=md)
    if feature and kind.cannot(feature):
        assert_refused(p, kind, alias, feature, sig)
        return
    assert_ok(p)
    pub = kind.pubkey_pem(alias)
    # the verifier insists on the exact salt length: a signature with another salt fails
    vopts = opts(md) if pad in ("pkcs1", None) else pss(str(pad), md)
    assert_verified(verify_digest(ws, pub, dg, sig, *vopts, md=md, certin=False))
    key = kind.public_key(alias)
    if pad is None:
        assert sig.read_bytes()[0] == 0x30, "ECDSA signature is not a DER SEQUENCE"
        key.verify(sig.read_bytes(), dg.read_bytes(), ec.ECDSA(utils.Prehashed(HASHES[md])))
    else:
        key.verify(sig.read_bytes(), dg.read_bytes(), python_padding(pad, md),
                   utils.Prehashed(HASHES[md]))


def test_signature_over_other_data_does_not_verify(token_kind):
    """Control: the verification of the table really checks the signature."""
    kind, ws = token_kind, token_kind.ws
    p, sig, dg = sign_digest(ws, kind.key_uri("p256"))
    assert_ok(p)
    _, other = digest_file(ws, data=b"something else")
    v = verify_digest(ws, kind.pubkey_pem("p256"), other, sig, certin=False)
    assert v.returncode != 0 and "Signature Verified Successfully" not in v.stdout


def test_raw_rsa_signature_is_the_textbook_rsa_of_the_input(token_kind, tmp_path):
    kind, ws = token_kind, token_kind.ws
    block = b"\x00" + bytes(range(1, 256))  # one modulus-sized block, below the modulus
    data = tmp_path / "block.bin"
    data.write_bytes(block)
    sig = tmp_path / "raw.sig"
    # (pkeyutl refuses input longer than a digest; rsautl -raw is EVP_PKEY_sign without padding)
    p = ws.ossl("rsautl", "-sign", "-raw", "-inkey", kind.key_uri("rsa2048"), "-in", data, "-out",
                sig)
    if kind.cannot(RAW_RSA):
        assert_refused(p, kind, "rsa2048", RAW_RSA, sig)
        return
    assert_ok(p)
    nums = kind.public_key("rsa2048").public_numbers()
    s = int.from_bytes(sig.read_bytes(), "big")
    assert pow(s, nums.e, nums.n) == int.from_bytes(block, "big")


# ---------------------------------------------------------------- dgst -sign (digest-sign)

DGST_CASES = {
    "rsa2048-pkcs1-sha256": ("rsa2048", "sha256", [], None),
    "rsa3072-pss-sha256-salt32": ("rsa3072", "sha256", ["-sigopt", "rsa_padding_mode:pss",
                                                        "-sigopt", "rsa_pss_saltlen:32"], None),
    "rsa2048-pss-sha512-saltdigest": ("rsa2048", "sha512", ["-sigopt", "rsa_padding_mode:pss",
                                                            "-sigopt", "rsa_pss_saltlen:digest"],
                                      None),
    "p256-sha256": ("p256", "sha256", [], None),
    "p384-sha384": ("p384", "sha384", [], None),
    "p521-sha512": ("p521", "sha512", [], None),
    "p384-sha256": ("p384", "sha256", [], ECDSA_HASH),
    "p521-sha256": ("p521", "sha256", [], ECDSA_HASH),
}


@pytest.mark.parametrize("case", list(DGST_CASES))
def test_dgst_sign_of_a_whole_file_verifies_with_dgst_verify(token_kind, case):
    """`openssl dgst -sign` hashes the message itself (digest-sign in the provider)."""
    kind, ws = token_kind, token_kind.ws
    alias, md, opts, feature = DGST_CASES[case]
    msg, _ = digest_file(ws)
    sig = ws.path("dgst-%s.sig" % case)
    p = ws.ossl("dgst", "-" + md, "-sign", kind.key_uri(alias), *opts, "-out", sig, msg)
    if feature and kind.cannot(feature):
        assert_refused(p, kind, alias, feature, sig)
        return
    assert_ok(p)
    v = ws.ossl("dgst", "-" + md, "-verify", kind.pubkey_pem(alias), *opts, "-signature", sig,
                msg, providers=None)
    assert_ok(v)
    assert "Verified OK" in v.stdout, describe(v)


# ---------------------------------------------------------------- CSR, CA, CMS

KEYS = ["rsa2048", "rsa3072", "p256", "p384", "p521"]
CA_EXTS = ["-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,keyCertSign,cRLSign"]


@pytest.mark.parametrize("alias", KEYS)
def test_csr_signed_with_token_key_verifies_and_carries_its_public_key(token_kind, tmp_path,
                                                                       alias):
    kind, ws = token_kind, token_kind.ws
    csr = tmp_path / "req.csr"
    assert_ok(ws.ossl("req", "-new", "-key", kind.key_uri(alias), "-" + md_of(alias), "-subj",
                      "/CN=from token", "-out", csr))
    v = assert_ok(ws.ossl("req", "-verify", "-in", csr, "-noout", providers=None))
    assert "verify OK" in v.stdout + v.stderr, describe(v)
    from cryptography import x509

    req = x509.load_pem_x509_csr(csr.read_bytes())
    assert public_der(req.public_key()) == public_der(kind.public_key(alias))


def make_ca(kind, alias, out, extra=()):
    ws = kind.ws
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", kind.key_uri(alias), "-" + md_of(alias),
                      "-subj", "/O=ctok tests/CN=%s CA %s" % (kind.name, alias), "-days", "30",
                      *CA_EXTS, "-out", out, *extra))
    return out


def leaf_csr(ws, tmp_path):
    key, csr = tmp_path / "leaf.key", tmp_path / "leaf.csr"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None))
    assert_ok(ws.ossl("req", "-new", "-key", key, "-subj", "/CN=leaf.example", "-out", csr,
                      providers=None))
    return csr


def assert_verifies(ws, ca, leaf):
    v = assert_ok(ws.ossl("verify", "-CAfile", ca, leaf, providers=None))
    assert "%s: OK" % leaf in v.stdout, describe(v)


@pytest.mark.parametrize("alias", KEYS)
def test_ca_key_in_token_issues_a_leaf_that_openssl_verify_accepts(token_kind, tmp_path, alias):
    kind, ws = token_kind, token_kind.ws
    ca = make_ca(kind, alias, tmp_path / "ca.pem")
    assert_verifies(ws, ca, ca)
    assert public_der(load_cert(ca).public_key()) == public_der(kind.public_key(alias))
    leaf = tmp_path / "leaf.pem"
    assert_ok(ws.ossl("x509", "-req", "-in", leaf_csr(ws, tmp_path), "-CA", ca, "-CAkey",
                      kind.key_uri(alias), "-" + md_of(alias), "-CAcreateserial", "-days", "10",
                      "-out", leaf))
    assert_verifies(ws, ca, leaf)
    assert load_cert(leaf).issuer == load_cert(ca).subject


def test_ca_key_in_token_issues_rsa_pss_signed_leaf(token_kind, tmp_path):
    kind, ws = token_kind, token_kind.ws
    ca = make_ca(kind, "rsa3072", tmp_path / "ca.pem")
    leaf = tmp_path / "leaf.pem"
    assert_ok(ws.ossl("x509", "-req", "-in", leaf_csr(ws, tmp_path), "-CA", ca, "-CAkey",
                      kind.key_uri("rsa3072"), "-CAcreateserial", "-days", "10", "-sha384",
                      "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:48",
                      "-out", leaf))
    assert load_cert(leaf).signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert_verifies(ws, ca, leaf)


def test_self_signed_rsa_pss_certificate_made_with_token_key_verifies(token_kind, tmp_path):
    kind, ws = token_kind, token_kind.ws
    ca = make_ca(kind, "rsa2048", tmp_path / "ca-pss.pem",
                 extra=("-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"))
    assert load_cert(ca).signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert_verifies(ws, ca, ca)


# id: (key, cms -sign options, what a kind may lack)
CMS_CASES = {
    "rsa2048-pkcs1": ("rsa2048", [], None),
    "rsa2048-pss-salt32": ("rsa2048", ["-keyopt", "rsa_padding_mode:pss", "-keyopt",
                                       "rsa_pss_saltlen:32"], None),
    # OpenSSL's CMS default PSS salt is the maximum
    "rsa2048-pss-default-salt": ("rsa2048", ["-keyopt", "rsa_padding_mode:pss"], PSS_SALT),
    "p256": ("p256", [], None),
    "p384": ("p384", ["-md", "sha384"], None),
    "p521": ("p521", ["-md", "sha512"], None),
}


@pytest.mark.parametrize("case", list(CMS_CASES))
def test_cms_signature_made_with_token_key_verifies(token_kind, tmp_path, case):
    kind, ws = token_kind, token_kind.ws
    alias, opts, feature = CMS_CASES[case]
    msg = tmp_path / "contract.txt"
    msg.write_bytes(b"I agree to the terms.\r\n")
    sig = tmp_path / "contract.p7s"
    cert = kind.cert(alias)
    p = ws.ossl("cms", "-sign", "-binary", "-nodetach", "-in", msg, "-signer", cert, "-inkey",
                kind.key_uri(alias), *opts, "-outform", "DER", "-out", sig)
    if feature and kind.cannot(feature):
        assert_refused(p, kind, alias, feature, sig)
        return
    assert_ok(p)
    out = tmp_path / "verified.txt"
    v = assert_ok(ws.ossl("cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-CAfile",
                          cert, "-out", out, providers=None))
    assert "Verification successful" in v.stderr + v.stdout, describe(v)
    assert out.read_bytes() == msg.read_bytes()


# ---------------------------------------------------------------- ECDH


@pytest.mark.parametrize("alias,curve,size", [("p256", "P-256", 32), ("p384", "P-384", 48),
                                              ("p521", "P-521", 66)])
def test_ecdh_derive_with_token_key_matches_the_peer_side(token_kind, tmp_path, alias, curve,
                                                          size):
    kind, ws = token_kind, token_kind.ws
    peer, peer_pub = tmp_path / "peer.pem", tmp_path / "peer.pub.pem"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:%s" % curve,
                      "-out", peer, providers=None))
    assert_ok(ws.ossl("pkey", "-in", peer, "-pubout", "-out", peer_pub, providers=None))
    ours = tmp_path / "ours.bin"
    p = ws.ossl("pkeyutl", "-derive", "-inkey", kind.key_uri(alias), "-peerkey", peer_pub,
                "-out", ours)
    if kind.cannot(ECDH):
        assert_refused(p, kind, alias, ECDH, ours)
        return
    assert_ok(p)
    theirs = tmp_path / "theirs.bin"
    assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", peer, "-peerkey", kind.pubkey_pem(alias),
                      "-out", theirs, providers=None))
    assert len(ours.read_bytes()) == size
    assert ours.read_bytes() == theirs.read_bytes()
    peer_key = serialization.load_pem_private_key(peer.read_bytes(), None)
    assert ours.read_bytes() == peer_key.exchange(ec.ECDH(), kind.public_key(alias))


# ---------------------------------------------------------------- TLS

# id: (key, protocol, client options, expected peer signature type, what a kind may lack)
TLS_CASES = {
    "tls13-rsa2048-pss": ("rsa2048", "-tls1_3", [], "RSA-PSS", None),
    "tls12-rsa2048-pkcs1": ("rsa2048", "-tls1_2", ["-sigalgs", "rsa_pkcs1_sha256"], "RSA", None),
    "tls12-rsa3072-pkcs1-sha384": ("rsa3072", "-tls1_2", ["-sigalgs", "rsa_pkcs1_sha384"],
                                   "RSA", None),
    "tls12-rsa2048-pss": ("rsa2048", "-tls1_2", ["-sigalgs", "rsa_pss_rsae_sha256"], "RSA-PSS",
                          None),
    "tls13-p256-ecdsa": ("p256", "-tls1_3", [], "ECDSA", None),
    "tls13-p384-ecdsa": ("p384", "-tls1_3", [], "ECDSA", None),
    "tls13-p521-ecdsa": ("p521", "-tls1_3", [], "ECDSA", None),
    "tls12-p256-ecdsa": ("p256", "-tls1_2", [], "ECDSA", None),
    "tls12-p384-ecdsa-sha384": ("p384", "-tls1_2", ["-sigalgs", "ecdsa_secp384r1_sha384"],
                                "ECDSA", None),
    # TLS 1.2 does not bind ECDSA hashes to curves: a client may ask P-384 for SHA-256
    "tls12-p384-ecdsa-sha256": ("p384", "-tls1_2", ["-sigalgs", "ecdsa_secp256r1_sha256"],
                                "ECDSA", ECDSA_HASH),
}


def peer_signature_type(out):
    m = re.search(r"^Peer signature type: (\S+)", out, re.M)
    return m.group(1) if m else None


@pytest.mark.parametrize("case", list(TLS_CASES))
def test_tls_server_with_token_key_completes_the_handshake(token_kind, case):
    kind, ws = token_kind, token_kind.ws
    alias, proto, client_opts, sigtype, feature = TLS_CASES[case]
    cert = kind.cert(alias)
    with TlsServer(ws, kind.key_uri(alias), cert, proto, debug=True) as srv:
        cli = tls_client(ws, srv.port, cert, proto, *client_opts)
        if feature and kind.cannot(feature):
            srv.finish()
            assert cli.returncode != 0, "the handshake succeeded\n" + describe(cli)
            lines = [l for l in srv.stderr.splitlines() if "token '%s'" % kind.tok.name in l]
            assert any(alias in l for l in lines), "s_server does not say why\n" + srv.report()
            return
        assert_handshake(cli, srv)
    assert ("Protocol  : %s" % ("TLSv1.3" if proto == "-tls1_3" else "TLSv1.2")) in cli.stdout
    assert (peer_signature_type(cli.stdout) or "").lower() == sigtype.lower(), cli.stdout
    # the handshake signature was made by the token key inside ctok
    assert SIGNATURE_TRACE.search(srv.stderr), srv.report()


@pytest.mark.parametrize("alias,proto", [("p256", "-tls1_3"), ("rsa2048", "-tls1_2"),
                                         ("rsa2048", "-tls1_3")])
def test_tls_client_authenticates_with_token_key(token_kind, tmp_path, alias, proto):
    """s_client -key ctok:... : the token key signs CertificateVerify for the client."""
    kind, ws = token_kind, token_kind.ws
    skey, scert = tmp_path / "server.key", tmp_path / "server.pem"
    assert_ok(ws.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", skey, "-subj", "/CN=localhost", "-days", "1", "-out",
                      scert, providers=None))
    ccert = kind.cert(alias)
    with TlsServer(ws, skey, scert, proto, "-Verify", "1", "-verify_return_error", "-CAfile",
                   ccert, providers=None) as srv:
        cli = tls_client(ws, srv.port, scert, proto, "-cert", ccert, "-key",
                         kind.key_uri(alias), providers=CTOK_FIRST)
        assert_handshake(cli, srv)
    said = bytes(srv.out).decode(errors="replace") + srv.stderr
    assert "CN = %s" % alias in said or "CN=%s" % alias in said, srv.report()


def test_server_refuses_a_certificate_that_does_not_match_the_token_key(token_kind):
    """The key/certificate consistency check compares the public keys for real."""
    import subprocess

    from ctoktest import free_port

    kind, ws = token_kind, token_kind.ws
    try:
        p = ws.ossl("s_server", "-accept", "127.0.0.1:%d" % free_port(), "-naccept", "1",
                    "-key", kind.key_uri("p256"), "-cert", kind.cert("p384"), timeout=20)
    except subprocess.TimeoutExpired:
        raise AssertionError("s_server accepted a certificate for another key and served")
    assert_fails_with(p)
    assert "mismatch" in p.stderr.lower() or "does not match" in p.stderr.lower(), p.stderr


# ---------------------------------------------------------------- bad input


def ctok_error_lines(p, kind):
    return [l for l in p.stderr.splitlines() if "token '%s'" % kind.tok.name in l]


def test_unknown_object_is_one_error_naming_the_token_and_the_object(token_kind):
    kind, ws = token_kind, token_kind.ws
    kind.key("p256")
    p, sig, _ = sign_digest(ws, kind.tok.key_uri("no-such-key"))
    assert_fails_with(p, "object not found")
    lines = ctok_error_lines(p, kind)
    assert len(lines) == 1, "expected one error line naming the token\n" + describe(p)
    assert "no-such-key" in lines[0], "the error does not name the object\n" + describe(p)
    assert not sig.exists() or sig.stat().st_size == 0


def test_a_key_asked_for_as_a_certificate_is_not_found_as_one(token_kind, tmp_path):
    """Wrong type: the key has no certificate on the token; type=cert finds nothing."""
    kind, ws = token_kind, token_kind.ws
    uri = kind.tok.uri(object="p256", type="cert")
    kind.key("p256")
    out = tmp_path / "cert.pem"
    p = ws.ossl("x509", "-in", uri, "-out", out)
    assert_fails_with(p)
    lines = ctok_error_lines(p, kind)
    assert len(lines) == 1 and "p256" in lines[0] and "certificate" in lines[0], describe(p)
    assert not out.exists() or out.stat().st_size == 0


@pytest.mark.parametrize("alias,opts", [
    ("p256", ["-pkeyopt", "rsa_padding_mode:pss"]),
    ("rsa2048", ["-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:banana"]),
], ids=["rsa-padding-on-an-ec-key", "unknown-rsa-padding"])
def test_an_option_of_the_wrong_key_type_fails_cleanly(token_kind, tmp_path, alias, opts):
    kind, ws = token_kind, token_kind.ws
    _, dg = digest_file(ws)
    sig = tmp_path / "wrong.sig"
    p = ws.ossl("pkeyutl", "-sign", "-inkey", kind.key_uri(alias), "-in", dg, "-out", sig, *opts)
    assert_fails_with(p)
    assert not sig.exists() or sig.stat().st_size == 0, describe(p)


@pytest.mark.parametrize("alias", ["rsa2048", "p256"])
def test_a_digest_of_the_wrong_length_is_refused_before_signing(token_kind, tmp_path, alias):
    kind, ws = token_kind, token_kind.ws
    short = tmp_path / "short.bin"
    short.write_bytes(b"\x01" * 31)
    sig = tmp_path / "short.sig"
    p = ws.ossl("pkeyutl", "-sign", "-inkey", kind.key_uri(alias), "-in", short, "-out", sig,
                "-pkeyopt", "digest:sha256")
    assert_fails_with(p)
    assert not sig.exists() or sig.stat().st_size == 0, describe(p)
