"""PKCS#11 conformance (issue 11, items 2, 3, 10) with keys made by pkcs11-tool: ECDH into a
buffer shorter than the shared secret truncates as OpenSSL's ECDH does; raw RSA signing takes
exactly the modulus size; `openssl pkey -text` of a token private key prints what it can
without letting private material out. Every openssl-CLI test runs with default + ctok and
default + ctok + base."""
import os

import pytest

from ctoktest import compile_evp_driver, OPENSSL, assert_fails_with, assert_ok, run
from p11conform import PROVIDER_SETS, ToolToken, ossl

SRC = os.path.join(os.path.dirname(__file__), "conform_misc.c")
EC, RSA, ED = "01", "02", "03"


@pytest.fixture(scope="module")
def tt(tmp_path_factory, build):
    t = ToolToken(tmp_path_factory.mktemp("conform-misc"), build)
    t.keypair("EC:prime256v1", EC, "ec1")
    t.keypair("rsa:2048", RSA, "rsa1")
    t.keypair("EC:edwards25519", ED, "ed1")
    return t


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    out = tmp_path_factory.mktemp("conform-misc-driver") / "conform_misc"
    return compile_evp_driver(SRC, out)


def public_pem(tt, pset, id_hex, name):
    """The token key's public half, written by `openssl pkey -pubout` through ctok."""
    out = tt.ws.path("%s-%s.pub.pem" % (name, pset))
    assert_ok(ossl(tt.ws, pset, "pkey", "-in", tt.uri(id_hex), "-pubout", "-out", out))
    return out


def plain(ws, *args):
    return assert_ok(run([OPENSSL, *[str(a) for a in args]], ws.env(config=False)))


# ---- item 2: ECDH truncates to the caller's buffer

def peer_key(ws, name="peer"):
    key, pub = ws.path(name + ".pem"), ws.path(name + ".pub.pem")
    plain(ws, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key)
    plain(ws, "pkey", "-in", key, "-pubout", "-out", pub)
    return key, pub


def call_driver(ws, driver, mode, key_uri, path, outlen, pset):
    """The C driver (EVP calls the CLI cannot make); its fields, and its stderr."""
    args = [driver, mode, ws.build, key_uri, path, str(outlen)] + (["base"] if pset != "ctok"
                                                                   else [])
    p = assert_ok(run(args, ws.env()))
    got = dict(kv.split("=", 1) for kv in p.stdout.split())
    got["stderr"] = p.stderr
    return got


def derive_c(ws, driver, key_uri, peer_pub, outlen, pset):
    return call_driver(ws, driver, "derive", key_uri, peer_pub, outlen, pset)


def full_secret_by_default(ws, peer_key_pem, token_pub):
    """The shared secret as OpenSSL's default provider computes it, from the peer's side."""
    out = ws.path("z.bin")
    plain(ws, "pkeyutl", "-derive", "-inkey", peer_key_pem, "-peerkey", token_pub, "-out", out)
    return out.read_bytes()


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("outlen", [32, 20, 16, 1, 64])
def test_ecdh_into_short_buffer_gives_prefix_of_shared_secret(tt, driver, pset, outlen):
    ws = tt.ws
    key, pub = peer_key(ws)
    z = full_secret_by_default(ws, key, public_pem(tt, pset, EC, "ec"))
    assert len(z) == 32
    got = derive_c(ws, driver, tt.uri(EC), pub, outlen, pset)
    assert got["ok"] == "1" and got["errors"] == "0", got
    assert got["size"] == "32"
    assert int(got["len"]) == min(outlen, 32)
    assert bytes.fromhex(got["out"]) == z[:outlen]


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_ecdh_cli_derive_matches_default_provider(tt, pset):
    ws = tt.ws
    key, pub = peer_key(ws, "peer-cli")
    z = full_secret_by_default(ws, key, public_pem(tt, pset, EC, "ec"))
    out = ws.path("zz-%s.bin" % pset)
    assert_ok(ossl(ws, pset, "pkeyutl", "-derive", "-inkey", tt.uri(EC), "-peerkey", pub,
                   "-out", out))
    assert out.read_bytes() == z


def test_soft_keystore_ecdh_truncates_the_same_way(tt, driver):
    """The soft keystore goes through the same token-layer door: the same truncation."""
    ws = tt.ws
    tok = ws.create_token("soft-ecdh")
    ws.add_key(tok, "e1", "ec:P-256")
    key, pub = peer_key(ws, "peer-soft")
    z = full_secret_by_default(ws, key, tok.pubkey_pem("e1"))
    got = derive_c(ws, driver, tok.key_uri("e1"), pub, 16, "ctok")
    assert got["ok"] == "1" and got["errors"] == "0", got
    assert bytes.fromhex(got["out"]) == z[:16]


# ---- item 3: raw RSA takes exactly the modulus size

def raw_sign_c(tt, driver, pset, data, name):
    inp = tt.ws.path(name + ".in")
    inp.write_bytes(data)
    return call_driver(tt.ws, driver, "rawsign", tt.uri(RSA), inp, 0, pset)


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_raw_rsa_of_modulus_size_signs_and_recovers(tt, driver, pset):
    data = b"\x00\x01" + os.urandom(254)
    got = raw_sign_c(tt, driver, pset, data, "raw-ok-" + pset)
    assert got["ok"] == "1" and got["errors"] == "0" and got["len"] == "256", got
    sig = tt.ws.path("raw-ok-%s.sig" % pset)
    sig.write_bytes(bytes.fromhex(got["out"]))
    pub = public_pem(tt, pset, RSA, "rsa")
    rec = tt.ws.path("raw-rec-%s.bin" % pset)
    plain(tt.ws, "pkeyutl", "-verifyrecover", "-pubin", "-inkey", pub, "-pkeyopt",
          "rsa_padding_mode:none", "-in", sig, "-out", rec)
    assert rec.read_bytes() == data


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("size,why", [(255, "shorter than"), (1, "shorter than"),
                                      (257, "longer than")])
def test_raw_rsa_of_other_size_fails_with_ctok_reason(tt, driver, pset, size, why):
    got = raw_sign_c(tt, driver, pset, b"\x01" * size, "raw-bad-%s-%d" % (pset, size))
    assert got["ok"] == "0", got
    assert ("token 'hsm', key 'rsa1': raw RSA input of %d bytes is %s the 256-byte modulus"
            % (size, why)) in got["stderr"], got["stderr"]


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_raw_rsa_input_not_below_modulus_fails(tt, driver, pset):
    got = raw_sign_c(tt, driver, pset, b"\xff" * 256, "raw-big-" + pset)
    assert got["ok"] == "0", got
    assert "numerically not below the 256-byte modulus" in got["stderr"], got["stderr"]


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_pkeyutl_raw_rsa_of_a_digest_size_fails_with_ctok_reason(tt, pset):
    """pkeyutl passes at most a digest's worth: the token never left-pads it."""
    ws = tt.ws
    inp, sig = ws.path("raw-cli.in"), ws.path("raw-cli-%s.sig" % pset)
    inp.write_bytes(os.urandom(32))
    p = ossl(ws, pset, "pkeyutl", "-sign", "-inkey", tt.uri(RSA), "-pkeyopt", "pad-mode:none",
             "-in", inp, "-out", sig)
    assert_fails_with(p, "token 'hsm', key 'rsa1': raw RSA input of 32 bytes is shorter than "
                      "the 256-byte modulus")


# ---- item 10: pkey -text of a token private key

TEXT_EXPECT = {
    EC: ["Private-Key: (256 bit, on token 'hsm', not exportable)", "Public-Key: (256 bit)",
         "NIST CURVE: P-256", "pub:"],
    RSA: ["Private-Key: (2048 bit, on token 'hsm', not exportable)", "Public-Key: (2048 bit)",
          "Modulus:", "Exponent: 65537"],
    ED: ["Private-Key: (256 bit, on token 'hsm', not exportable)", "ED25519 Public-Key:"],
}
PRIVATE_WORDS = ["priv:", "privateExponent", "prime1", "BEGIN PRIVATE KEY"]


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("kid", [EC, RSA, ED])
def test_pkey_text_of_token_private_key_prints_public_part(tt, pset, kid):
    p = assert_ok(ossl(tt.ws, pset, "pkey", "-in", tt.uri(kid), "-text", "-noout"))
    for e in TEXT_EXPECT[kid]:
        assert e in p.stdout, p.stdout
    for w in PRIVATE_WORDS:
        assert w not in p.stdout
    assert p.stderr.strip() == "", p.stderr


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_pkey_text_without_noout_still_refuses_the_private_pem(tt, pset):
    """Without -noout openssl writes the private key PEM first: that stays refused."""
    p = ossl(tt.ws, pset, "pkey", "-in", tt.uri(RSA), "-text")
    assert_fails_with(p, "private key export not allowed")
    assert "PRIVATE KEY" not in p.stdout


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("kid", [EC, RSA])
def test_pkey_text_pub_and_pubout_keep_working(tt, pset, kid):
    p = assert_ok(ossl(tt.ws, pset, "pkey", "-in", tt.uri(kid), "-text_pub", "-noout"))
    assert TEXT_EXPECT[kid][1] in p.stdout and "on token" not in p.stdout, p.stdout
    p = assert_ok(ossl(tt.ws, pset, "pkey", "-in", tt.uri(kid), "-pubout", "-text"))
    assert "BEGIN PUBLIC KEY" in p.stdout and TEXT_EXPECT[kid][1] in p.stdout, p.stdout


def test_pkey_text_of_exportable_key_prints_it_whole(tt):
    """allow_export tokens keep their behaviour: the key prints as OpenSSL prints it."""
    ws = tt.ws
    tok = ws.create_token("mig-text", allow_export=True)
    ws.add_key(tok, "k1", "ec:P-256", cert=False)
    p = assert_ok(ws.ossl("pkey", "-in", tok.key_uri("k1"), "-text", "-noout"))
    assert "priv:" in p.stdout and "on token" not in p.stdout, p.stdout


@pytest.mark.parametrize("pset", PROVIDER_SETS)
@pytest.mark.parametrize("alg", ["RSA", "EC", "ED25519"])
@pytest.mark.parametrize("opt", ["-text", "-text_pub"])
def test_file_key_text_is_what_openssl_alone_prints(tt, pset, alg, opt):
    """A file key that lands in ctok's key management (with base) prints as without ctok."""
    ws = tt.ws
    key = ws.path("file-%s.pem" % alg)
    if not key.exists():
        extra = ["-pkeyopt", "ec_paramgen_curve:P-256"] if alg == "EC" else []
        plain(ws, "genpkey", "-algorithm", alg, *extra, "-out", key)
    want = plain(ws, "pkey", "-in", key, opt, "-noout").stdout
    got = assert_ok(ossl(ws, pset, "pkey", "-in", key, opt, "-noout"))
    assert got.stdout == want and "on token" not in got.stdout
