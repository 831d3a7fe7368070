"""Ordinary keys are untouched: with ctok loaded, in every provider order
(-provider ctok -provider default, the reverse, and an openssl.cnf with three providers
where ctok sorts first), OpenSSL works on file keys exactly as without ctok, and never
enters a ctok signature or asym-cipher function (CTOK_DEBUG=1 trace,
OPENSSL-PITFALLS.md item 8)."""

import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from ctoktest import (
    CAPTURE_TRACE,
    OPENSSL,
    PROVIDER_ORDERS,
    SIGNATURE_TRACE,
    TlsServer,
    Workspace,
    assert_handshake,
    assert_no_capture,
    assert_ok,
    assert_verified,
    describe,
    run,
    sign_digest,
    tls_client,
    verify_digest,
)
from p11fixtures import ShimLog, main_hsm  # noqa: F401  (fixture)


@pytest.fixture(params=PROVIDER_ORDERS)
def order(request):
    return request.param


@pytest.fixture(scope="module")
def files(tmp_path_factory, build):
    """Ordinary PEM key files with self-signed certificates, made without ctok."""
    ws = Workspace(tmp_path_factory.mktemp("filekeys"), build)
    keys = {}
    for name, args in {
        "rsa": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "ec": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "x25519": ["-algorithm", "X25519"],
        "ec-peer": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "x25519-peer": ["-algorithm", "X25519"],
    }.items():
        key = ws.path("%s.key" % name)
        assert_ok(ws.ossl("genpkey", *args, "-out", key, providers=None))
        pub = ws.path("%s.pub" % name)
        assert_ok(ws.ossl("pkey", "-in", key, "-pubout", "-out", pub, providers=None))
        keys[name] = key
        keys[name + ".pub"] = pub
        if name in ("rsa", "ec"):
            cert = ws.path("%s.crt" % name)
            assert_ok(ws.ossl("req", "-x509", "-key", key, "-subj", "/CN=file-%s" % name,
                              "-days", "2", "-out", cert, providers=None))
            keys[name + ".crt"] = cert
    return keys


def test_token_key_signature_is_traced_as_ctok(shared_ws, signer, order):
    """Positive control: the trace the other tests look for does appear for a token key,
    so ctok is loaded and tracing in this order."""
    p, sig, dg = sign_digest(shared_ws, signer.key_uri("p256"), providers=order, debug=True)
    assert_ok(p)
    assert SIGNATURE_TRACE.search(p.stderr), describe(p)
    assert_verified(verify_digest(shared_ws, signer.cert("p256"), dg, sig))


def test_token_key_decrypt_is_traced_as_ctok(shared_ws, signer, order, tmp_path):
    """Positive control for the asym-cipher trace."""
    ws = shared_ws
    pt, ct, out = tmp_path / "pt", tmp_path / "ct", tmp_path / "out"
    pt.write_bytes(b"control")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", signer.cert("rsa2048"), "-in",
                      pt, "-out", ct, providers=None))
    p = assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", signer.key_uri("rsa2048"), "-in", ct,
                          "-out", out, providers=order, debug=True))
    assert re.search(r"ctok\[\d+\]: *asym-cipher:", p.stderr), describe(p)
    assert out.read_bytes() == b"control"


GENPKEY = {
    "ec-p256": (["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"),
    "rsa-2048": (["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                 lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048),
    "x25519": (["-algorithm", "X25519"], lambda k: isinstance(k, x25519.X25519PrivateKey)),
}


@pytest.mark.parametrize("alg", list(GENPKEY))
def test_genpkey_makes_ordinary_key_file_with_ctok_loaded(ws, order, alg):
    args, is_right = GENPKEY[alg]
    key = ws.path("gen.pem")
    p = assert_ok(ws.ossl("genpkey", *args, "-out", key, providers=order, debug=True))
    assert_no_capture(p)
    k = serialization.load_pem_private_key(key.read_bytes(), None)
    assert is_right(k), type(k)
    check = ws.ossl("pkey", "-in", key, "-check", "-noout", providers=None)
    assert_ok(check)
    assert "Key is valid" in check.stdout + check.stderr, describe(check)


def test_file_key_pkcs1_signature_is_identical_with_and_without_ctok(ws, files, order):
    opts = ("-pkeyopt", "rsa_padding_mode:pkcs1")
    with_ctok, sig1, dg = sign_digest(ws, files["rsa"], *opts, providers=order, debug=True)
    assert_ok(with_ctok)
    assert_no_capture(with_ctok)
    plain, sig2, _ = sign_digest(ws, files["rsa"], *opts, providers=None)
    assert_ok(plain)
    assert sig1.read_bytes() == sig2.read_bytes()
    v = verify_digest(ws, files["rsa.crt"], dg, sig2, *opts, providers=order, debug=True)
    assert_verified(v)
    assert_no_capture(v)


@pytest.mark.parametrize("kind", ["rsa-pss", "ecdsa"])
def test_file_key_signatures_cross_verify_with_and_without_ctok(ws, files, order, kind):
    key, cert = (files["rsa"], files["rsa.crt"]) if kind == "rsa-pss" else (files["ec"],
                                                                              files["ec.crt"])
    opts = ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
            "rsa_pss_saltlen:32") if kind == "rsa-pss" else ()
    # signed with ctok loaded, verified without
    s1, sig1, dg = sign_digest(ws, key, *opts, providers=order, debug=True)
    assert_ok(s1)
    assert_no_capture(s1)
    assert_verified(verify_digest(ws, cert, dg, sig1, *opts, providers=None))
    # signed without ctok, verified with ctok loaded
    s2, sig2, _ = sign_digest(ws, key, *opts, providers=None)
    assert_ok(s2)
    v = verify_digest(ws, cert, dg, sig2, *opts, providers=order, debug=True)
    assert_verified(v)
    assert_no_capture(v)


@pytest.mark.parametrize("padding", ["pkcs1", "oaep"])
def test_file_key_rsa_encrypt_and_decrypt_with_ctok_loaded(ws, files, order, padding):
    opts = ("-pkeyopt", "rsa_padding_mode:%s" % padding)
    pt = ws.path("pt.bin")
    pt.write_bytes(b"ordinary secret")
    ct = ws.path("ct.bin")
    enc = assert_ok(ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", files["rsa.pub"], "-in",
                            pt, "-out", ct, *opts, providers=order, debug=True))
    assert_no_capture(enc)
    out = ws.path("out.bin")
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", files["rsa"], "-in", ct, "-out", out,
                      *opts, providers=None))
    assert out.read_bytes() == pt.read_bytes()
    dec = assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", files["rsa"], "-in", ct, "-out",
                            out, *opts, providers=order, debug=True))
    assert_no_capture(dec)
    assert out.read_bytes() == pt.read_bytes()


# ctok's key exchange entered. Not part of CAPTURE_TRACE: in TLS, an ephemeral key that
# ctok's keymgmt generated (pass-through) is derived through ctok's pass-through key exchange.
KEYEXCH_TRACE = re.compile(r"ctok\[\d+\]: *keyexch:")


def test_token_key_derive_is_traced_as_ctok(shared_ws, signer, order, tmp_path):
    """Positive control for the key-exchange trace the file-key derive test looks for."""
    ws = shared_ws
    peer, peer_pub = tmp_path / "peer.pem", tmp_path / "peer.pub"
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", peer, providers=None))
    assert_ok(ws.ossl("pkey", "-in", peer, "-pubout", "-out", peer_pub, providers=None))
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    p = assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", signer.key_uri("p256"), "-peerkey",
                          peer_pub, "-out", s1, providers=order, debug=True))
    assert re.search(r"ctok\[\d+\]: *keyexch: init \(token key\)", p.stderr), describe(p)
    assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", peer, "-peerkey", signer.pubkey_pem("p256"),
                      "-out", s2, providers=None))
    assert s1.read_bytes() == s2.read_bytes() and len(s1.read_bytes()) == 32


@pytest.mark.parametrize("kind", ["ec", "x25519"])
def test_file_key_derive_gives_same_secret_with_ctok_loaded(ws, files, order, kind):
    s1, s2 = ws.path("s1.bin"), ws.path("s2.bin")
    p = assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", files[kind], "-peerkey",
                          files[kind + "-peer.pub"], "-out", s1, providers=order, debug=True))
    assert_no_capture(p)
    hits = [l for l in p.stderr.splitlines() if KEYEXCH_TRACE.search(l)]
    assert not hits, "ctok's key exchange took a file key:\n%s" % "\n".join(hits)
    assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", files[kind], "-peerkey",
                      files[kind + "-peer.pub"], "-out", s2, providers=None))
    assert s1.read_bytes() == s2.read_bytes() and len(s1.read_bytes()) == 32


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_req_new_with_file_key_makes_valid_csr_with_ctok_loaded(ws, files, order, kind):
    csr = ws.path("file.csr")
    p = assert_ok(ws.ossl("req", "-new", "-key", files[kind], "-subj", "/CN=ordinary", "-out",
                          csr, providers=order, debug=True))
    assert_no_capture(p)
    v = assert_ok(ws.ossl("req", "-verify", "-in", csr, "-noout", providers=None))
    assert "verify OK" in v.stdout + v.stderr, describe(v)


def test_req_x509_with_file_key_makes_verifiable_certificate_with_ctok_loaded(ws, files, order):
    cert = ws.path("self.pem")
    p = assert_ok(ws.ossl("req", "-new", "-x509", "-key", files["rsa"], "-sigopt",
                          "rsa_padding_mode:pss", "-subj", "/CN=ordinary", "-days", "2",
                          "-out", cert, providers=order, debug=True))
    assert_no_capture(p)
    v = assert_ok(ws.ossl("verify", "-CAfile", cert, cert, providers=None))
    assert ": OK" in v.stdout


SUMMARY = re.compile(r"^(Peer signature type|Server Temp Key|New, .*Cipher is).*$", re.M)


def handshake(ws, files, keykind, proto, group, providers):
    """The server allows only `group` for the key exchange. The client also offers P-256
    after it: a TLS 1.2 ECDSA server needs its certificate's curve among the client's
    groups (RFC 8422), and the first group still makes the key share."""
    key, cert = files[keykind], files[keykind + ".crt"]
    client_groups = group if group == "P-256" else group + ":P-256"
    with TlsServer(ws, key, cert, proto, "-groups", group, providers=providers,
                   debug=providers is not None) as srv:
        cli = tls_client(ws, srv.port, cert, proto, "-groups", client_groups,
                         providers=providers, debug=providers is not None)
        assert_handshake(cli, srv)
    return cli, srv


@pytest.mark.parametrize("keykind", ["rsa", "ec"])
@pytest.mark.parametrize("group", ["P-256", "X25519"])
@pytest.mark.parametrize("proto", ["-tls1_3", "-tls1_2"])
def test_tls_handshake_with_file_keys_is_the_same_with_ctok_loaded(ws, files, order, proto,
                                                                   group, keykind):
    """Server and client both load ctok; the handshake negotiates what it negotiates
    without ctok, and no ctok operation runs."""
    cli, srv = handshake(ws, files, keykind, proto, group, order)
    assert_no_capture(cli)
    assert_no_capture(srv)
    temp = "X25519" if group == "X25519" else "ECDH, prime256v1"
    assert "Server Temp Key: %s" % temp in cli.stdout, cli.stdout
    base, _ = handshake(ws, files, keykind, proto, group, None)
    assert SUMMARY.findall(cli.stdout) and \
        sorted(set(m.group(0) for m in SUMMARY.finditer(cli.stdout))) == \
        sorted(set(m.group(0) for m in SUMMARY.finditer(base.stdout))), \
        "with ctok:\n%s\nwithout:\n%s" % (cli.stdout, base.stdout)


def test_file_keys_decoded_by_the_base_provider_are_only_delegated_never_sent_to_a_token(ws, files):
    """default + ctok + base: base sorts first and decodes file keys, but has no keymgmt.

    OpenSSL 3.0 then imports every decoded key into the keymgmt that wins the name fetch,
    ctok's (ctok < default), and keys a signature on the keymgmt, not on the key. No
    provider can refuse such keys without making file keys unloadable. What ctok promises
    here: the key stays an ordinary key in the default provider (pass-through), results
    are identical to plain OpenSSL, and no token is ever opened or used.
    """
    cnf = ws.three_providers_cnf(third="base")
    env = ws.env({"OPENSSL_CONF": str(cnf), "CTOK_DEBUG": "1"})
    opts = ("-pkeyopt", "rsa_padding_mode:pkcs1")
    plain, sig2, dg = sign_digest(ws, files["rsa"], *opts, providers=None)
    assert_ok(plain)
    sig = ws.path("base.sig")
    p = run([OPENSSL, "pkeyutl", "-sign", "-inkey", str(files["rsa"]), "-in", str(dg), "-out",
             str(sig), "-pkeyopt", "digest:sha256", *opts], env)
    assert_ok(p)
    assert sig.read_bytes() == sig2.read_bytes()
    trace = [l for l in p.stderr.splitlines() if "ctok[" in l]
    assert not any("token key" in l for l in trace), "\n".join(trace)
    assert not any(w in l for l in trace for w in ("store:", "lookup:", "pkcs11:")), "\n".join(trace)
    assert all("pass-through key" in l for l in trace if CAPTURE_TRACE.search(l)), "\n".join(trace)
    # positive control: tracing is on in this configuration, and the signature did pass
    # through ctok's code as the docstring says (so the checks above saw real trace lines)
    assert any(SIGNATURE_TRACE.search(l) and "pass-through key" in l for l in trace), \
        describe(p)


def test_token_keys_still_sign_in_the_token_with_base_loaded(shared_ws, signer):
    """Positive control of the default + ctok + base test: in that configuration a token key
    does reach the token (traced as a token key) and verifies with its certificate."""
    ws = shared_ws
    cnf = ws.three_providers_cnf(third="base")
    dg = ws.path("base-token.dgst")
    dg.write_bytes(bytes(range(32)))
    sig = ws.path("base-token.sig")
    p = run([OPENSSL, "pkeyutl", "-sign", "-inkey", signer.key_uri("p256"), "-in", str(dg),
             "-out", str(sig), "-pkeyopt", "digest:sha256"],
            ws.env({"OPENSSL_CONF": str(cnf), "CTOK_DEBUG": "1"}))
    assert_ok(p)
    assert any(SIGNATURE_TRACE.search(l) and "token key" in l and "pass-through" not in l
               for l in p.stderr.splitlines()), describe(p)
    assert_verified(verify_digest(ws, signer.cert("p256"), dg, sig))


def test_ordinary_keys_never_load_the_pkcs11_module_of_a_configured_token(main_hsm, files, order,
                                                                          tmp_path):
    """ctok loaded, its config naming a PKCS#11 token (through the shim, which logs every
    C_Initialize), only file keys used: key generation (which lands in ctok's keymgmt when
    ctok sorts first), signing and ECDH run without ctok ever loading the module. Positive
    control: a token key in the same setup does load it."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    log = ShimLog(tmp_path / "shim.log")
    key, s1 = tmp_path / "gen.pem", tmp_path / "s1.bin"
    runs = [ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", key, providers=order, env=log.env()),
            ws.ossl("pkeyutl", "-derive", "-inkey", files["ec"], "-peerkey",
                    files["ec-peer.pub"], "-out", s1, providers=order, env=log.env())]
    p, _, _ = sign_digest(ws, files["rsa"], providers=order, env=log.env())
    for r in runs + [p]:
        assert_ok(r)
    assert not log.entries(), "the PKCS#11 module was loaded for file keys:\n" + log.text()
    p, sig, dg = sign_digest(ws, tok.key_uri("p256"), providers=order, env=log.env())
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("p256"), dg, sig))
    assert log.calls("C_Initialize", "CKR_OK"), log.text()
