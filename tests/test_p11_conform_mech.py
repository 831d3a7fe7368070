"""Issue 11 items 5 and 6: keys restricted by CKA_ALLOWED_MECHANISMS (made by pkcs11-tool
--allowed-mechanisms). ctok signs with the raw mechanism over its own digest when the key
allows it, else with the hash-and-sign mechanism over the whole message on the token; a key
allowed only PSS mechanisms is an RSA-PSS key with the digest they name. The shim's detail
log (mech= on C_SignInit) shows which mechanism was used."""

import pytest

from ctoktest import TlsServer, assert_handshake, assert_ok, describe, digest_file, tls_client
from p11conform import PROVIDER_SETS, ToolToken, ossl
from p11fixtures import ShimLog, copy_config, require_shim, same_token_in

KEYS = {
    # id: (key type, allowed mechanisms, label)
    "01": ("rsa:2048", ["SHA256-RSA-PKCS-PSS"], "pss-sha256"),
    "02": ("rsa:2048", ["SHA256-RSA-PKCS"], "pkcs1-sha256"),
    "03": ("rsa:2048", ["RSA-PKCS"], "raw-pkcs1"),
    "04": ("EC:prime256v1", ["ECDSA-SHA256"], "ecdsa-sha256"),
    "05": ("rsa:2048", ["RSA-PKCS", "SHA256-RSA-PKCS"], "raw-and-hashed"),
}


class Mech:
    def __init__(self, root, build):
        self.t = ToolToken(root, build, label="mech")
        for id_hex, (kt, allowed, label) in KEYS.items():
            self.t.keypair(kt, id_hex, label, allowed=allowed)
        self.ws = self.t.ws
        shim = require_shim()
        self.shim_ws = self.ws.view("shim.json", copy_config(self.ws, hsm={"library": str(shim)}))
        self.shim_tok = same_token_in(self.shim_ws, self.t.tok)

    def uri(self, id_hex):
        return self.t.uri(id_hex=id_hex)


@pytest.fixture(scope="module")
def mech(tmp_path_factory, build):
    return Mech(tmp_path_factory.mktemp("p11mech"), build)


def plain(ws, cmd, *args):
    """openssl with the built-in default provider only (what a relying party runs)."""
    return ws.ossl(cmd, *args, providers=None)


def shim_env(log):
    return log.env()


def sign_mechs(log):
    return [e.get("mech") for e in log.calls("C_SignInit")]


def self_signed(mech, pset, id_hex, tmp_path, *extra):
    cert = tmp_path / ("cert-%s-%s.pem" % (id_hex, pset))
    p = ossl(mech.ws, pset, "req", "-new", "-x509", "-key", mech.uri(id_hex), "-subj",
             "/CN=mech %s" % id_hex, "-days", "2", "-out", cert, *extra)
    assert_ok(p)
    return cert


# ---------------------------------------------------------------- item 6: RSA-PSS keys


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_pss_only_key_is_an_rsa_pss_key_with_its_digest(mech, pset, tmp_path):
    pub = tmp_path / "pub.pem"
    assert_ok(ossl(mech.ws, pset, "pkey", "-in", mech.uri("01"), "-pubout", "-out", pub))
    p = assert_ok(plain(mech.ws, "pkey", "-pubin", "-in", pub, "-text", "-noout"))
    assert "PSS parameter restrictions" in p.stdout, describe(p)
    assert "Hash Algorithm: SHA2-256" in p.stdout, describe(p)
    assert "Minimum Salt Length: 32" in p.stdout, describe(p)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_pss_only_key_makes_an_rsa_pss_certificate_plain_openssl_verifies(mech, pset, tmp_path):
    log = ShimLog(tmp_path / "shim.log")
    cert = tmp_path / "pss.pem"
    p = ossl(mech.shim_ws, pset, "req", "-new", "-x509", "-key", mech.uri("01"), "-subj",
             "/CN=pss", "-days", "2", "-out", cert, env=shim_env(log))
    assert_ok(p)
    t = assert_ok(plain(mech.ws, "x509", "-in", cert, "-text", "-noout"))
    assert "Public Key Algorithm: rsassaPss" in t.stdout, describe(t)
    assert "Signature Algorithm: rsassaPss" in t.stdout, describe(t)
    v = plain(mech.ws, "verify", "-CAfile", cert, cert)
    assert v.returncode == 0 and "OK" in v.stdout, describe(v)
    # hash-and-sign on the token: SoftHSM refuses everything else for this key
    assert sign_mechs(log) == ["CKM_SHA256_RSA_PKCS_PSS"], log.text()


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_pss_only_key_serves_tls(mech, pset, version, tmp_path):
    cert = self_signed(mech, pset, "01", tmp_path)
    providers, env = ("ctok-first", None) if pset == "ctok" else (
        None, {"OPENSSL_CONF": str(mech.ws.three_providers_cnf("base"))})
    # a client that accepts only the scheme of RSA-PSS keys (rsa_pss_pss_*) connects
    with TlsServer(mech.ws, mech.uri("01"), cert, version, providers=providers,
                   env=env) as srv:
        c = tls_client(mech.ws, srv.port, cert, version, "-sigalgs", "rsa_pss_pss_sha256")
        assert_handshake(c, srv)
        assert "Peer signature type: RSA-PSS" in c.stdout, describe(c)
    # and one that accepts only rsaEncryption keys' PSS scheme does not: the key is RSA-PSS
    with TlsServer(mech.ws, mech.uri("01"), cert, version, providers=providers,
                   env=env) as srv:
        c = tls_client(mech.ws, srv.port, cert, version, "-sigalgs", "rsa_pss_rsae_sha256")
        srv.finish()
        assert c.returncode != 0, describe(c) + srv.report()


# ---------------------------------------------------------------- item 5: mechanism choice


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("id_hex,mech_name,sigopt", [
    ("01", "CKM_SHA256_RSA_PKCS_PSS", []),
    ("02", "CKM_SHA256_RSA_PKCS", []),
    ("03", "CKM_RSA_PKCS", []),
    # both allowed: raw, over ctok's digest
    ("05", "CKM_RSA_PKCS", []),
])
def test_dgst_sign_uses_the_allowed_mechanism_and_verifies(mech, pset, id_hex, mech_name, sigopt,
                                                           tmp_path):
    log = ShimLog(tmp_path / "shim.log")
    msg, _ = digest_file(mech.ws)
    sig, pub = tmp_path / "sig.bin", tmp_path / "pub.pem"
    assert_ok(ossl(mech.shim_ws, pset, "dgst", "-sha256", "-sign", mech.uri(id_hex), *sigopt,
                   "-out", sig, msg, env=shim_env(log)))
    assert sign_mechs(log) == [mech_name], log.text()
    assert_ok(ossl(mech.ws, pset, "pkey", "-in", mech.uri(id_hex), "-pubout", "-out", pub))
    v = plain(mech.ws, "dgst", "-sha256", "-verify", pub, "-signature", sig, msg)
    assert v.returncode == 0 and "Verified OK" in v.stdout, describe(v)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_pkcs1_hash_and_sign_key_signs_certificates_and_tls12(mech, pset, tmp_path):
    cert = self_signed(mech, pset, "02", tmp_path, "-sha256")
    t = assert_ok(plain(mech.ws, "x509", "-in", cert, "-text", "-noout"))
    assert "sha256WithRSAEncryption" in t.stdout, describe(t)
    v = plain(mech.ws, "verify", "-CAfile", cert, cert)
    assert v.returncode == 0, describe(v)
    providers, env = ("ctok-first", None) if pset == "ctok" else (
        None, {"OPENSSL_CONF": str(mech.ws.three_providers_cnf("base"))})
    with TlsServer(mech.ws, mech.uri("02"), cert, "-tls1_2", providers=providers,
                   env=env) as srv:
        # the key signs only PKCS#1 v1.5 with SHA-256: the client offers just that
        c = tls_client(mech.ws, srv.port, cert, "-tls1_2", "-sigalgs", "RSA+SHA256")
        assert_handshake(c, srv)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("id_hex,allowed", [("01", "CKM_SHA256_RSA_PKCS_PSS"),
                                            ("02", "CKM_SHA256_RSA_PKCS")])
def test_bare_digest_on_a_hash_and_sign_key_is_one_clear_error(mech, pset, id_hex, allowed,
                                                               tmp_path):
    _, dg = digest_file(mech.ws)
    p = ossl(mech.ws, pset, "pkeyutl", "-sign", "-inkey", mech.uri(id_hex), "-in", dg,
             "-pkeyopt", "digest:sha256", "-out", tmp_path / "sig.bin")
    assert p.returncode != 0, describe(p)
    assert "token 'hsm', key '%s'" % KEYS[id_hex][2] in p.stderr, describe(p)
    assert "allows only %s" % allowed in p.stderr, describe(p)
    assert "dgst -sign" in p.stderr and "-rawin" in p.stderr, describe(p)
    # and what it says to do works: pkeyutl -rawin gives ctok the message
    msg, _ = digest_file(mech.ws)
    sig, pub = tmp_path / "sig2.bin", tmp_path / "pub.pem"
    assert_ok(ossl(mech.ws, pset, "pkeyutl", "-sign", "-rawin", "-digest", "sha256", "-inkey",
                   mech.uri(id_hex), "-in", msg, "-out", sig))
    assert_ok(ossl(mech.ws, pset, "pkey", "-in", mech.uri(id_hex), "-pubout", "-out", pub))
    v = plain(mech.ws, "dgst", "-sha256", "-verify", pub, "-signature", sig, msg)
    assert v.returncode == 0 and "Verified OK" in v.stdout, describe(v)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_raw_key_signs_a_bare_digest(mech, pset, tmp_path):
    _, dg = digest_file(mech.ws)
    sig, pub = tmp_path / "sig.bin", tmp_path / "pub.pem"
    assert_ok(ossl(mech.ws, pset, "pkeyutl", "-sign", "-inkey", mech.uri("03"), "-in", dg,
                   "-pkeyopt", "digest:sha256", "-out", sig))
    assert_ok(ossl(mech.ws, pset, "pkey", "-in", mech.uri("03"), "-pubout", "-out", pub))
    v = plain(mech.ws, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-in", dg, "-sigfile", sig,
              "-pkeyopt", "digest:sha256")
    assert v.returncode == 0, describe(v)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_a_mechanism_the_key_does_not_allow_is_one_clear_error(mech, pset, tmp_path):
    msg, _ = digest_file(mech.ws)
    p = ossl(mech.ws, pset, "dgst", "-sha256", "-sign", mech.uri("03"), "-sigopt",
             "rsa_padding_mode:pss", "-out", tmp_path / "sig.bin", msg)
    assert p.returncode != 0, describe(p)
    assert ("token 'hsm', key 'raw-pkcs1': the key allows only CKM_RSA_PKCS, neither "
            "CKM_RSA_PKCS_PSS nor CKM_SHA256_RSA_PKCS_PSS") in p.stderr, describe(p)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_ec_key_allowed_only_ecdsa_sha256_hashes_on_the_token(mech, pset, tmp_path):
    """SoftHSM has no CKM_ECDSA_SHA256 (it answers CKR_MECHANISM_INVALID): the shim's log
    shows ctok asked for it with the message, and the failure is ctok's clear error."""
    log = ShimLog(tmp_path / "shim.log")
    msg, _ = digest_file(mech.ws)
    p = ossl(mech.shim_ws, pset, "dgst", "-sha256", "-sign", mech.uri("04"), "-out",
             tmp_path / "sig.bin", msg, env=shim_env(log))
    assert sign_mechs(log) and set(sign_mechs(log)) == {"CKM_ECDSA_SHA256"}, log.text()
    assert p.returncode != 0, describe(p)
    assert ("token 'hsm', key 'ecdsa-sha256': C_SignInit failed: CKR_MECHANISM_INVALID"
            in p.stderr), describe(p)
    # a bare digest cannot be signed by it
    _, dg = digest_file(mech.ws)
    q = ossl(mech.ws, pset, "pkeyutl", "-sign", "-inkey", mech.uri("04"), "-in", dg,
             "-out", tmp_path / "sig2.bin")
    assert q.returncode != 0 and "allows only CKM_ECDSA_SHA256" in q.stderr, describe(q)



@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_a_message_beyond_64_mib_is_refused_for_a_hash_and_sign_key(mech, pset, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate((64 << 20) + 1)
    p = ossl(mech.ws, pset, "dgst", "-sha256", "-sign", mech.uri("02"), "-out",
             tmp_path / "sig.bin", big)
    assert p.returncode != 0, describe(p)
    assert ("token 'hsm', key 'pkcs1-sha256': the key signs the whole message on the token, "
            "and ctok keeps at most 64 MiB of it") in p.stderr, describe(p)
    # exactly 64 MiB is still signed
    with open(big, "r+b") as f:
        f.truncate(64 << 20)
    assert_ok(ossl(mech.ws, pset, "dgst", "-sha256", "-sign", mech.uri("02"), "-out",
                   tmp_path / "sig.bin", big))
