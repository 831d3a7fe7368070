"""ctok-p11.so over an AWS KMS token (issue 14), against the local KMS emulator: the module
offers only what the keys sign, and what it signs verifies with plain openssl."""

import hashlib
import json
import sys

import pytest

from ctoktest import OPENSSL, assert_ok, describe, pkcs11_tool_public_der, register_secret, run
from kmsfixtures import awskms_token, kms_emu  # noqa: F401 (fixture)
from p11modtest import CLIENT, MODULE, require_module, tool_objects


# DER of DigestInfo { sha256, NULL } up to the digest's 32 bytes (RFC 8017, 9.2 note 1)
SHA256_DIGEST_INFO = "3031300d060960864801650304020105000420"


@pytest.fixture
def kms(ws, kms_emu, request):  # noqa: F811
    """An awskms token whose account holds one RSA and one EC key, aliased after the test (the
    emulator is the module's: each test's aliases are its own)."""
    require_module()
    awskms_token(ws, kms_emu)
    ws.kms_emu = kms_emu
    tag = "%x" % (hash(request.node.name) & 0xFFFFFF)
    ws.aliases = {"rsa": "p11-rsa-" + tag, "ec": "p11-ec-" + tag}
    kms_emu.create_key("RSA_2048", alias="alias/" + ws.aliases["rsa"])
    kms_emu.create_key("ECC_NIST_P256", alias="alias/" + ws.aliases["ec"])
    return ws


def tool(ws, *args):
    return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]], ws.env())


KMS_SIGNS = sorted(["RSA_PKCS", "SHA256_RSA_PKCS", "SHA384_RSA_PKCS", "SHA512_RSA_PKCS",
                    "RSA_PKCS_PSS", "SHA256_RSA_PKCS_PSS", "SHA384_RSA_PKCS_PSS",
                    "SHA512_RSA_PKCS_PSS", "ECDSA", "ECDSA_SHA256", "ECDSA_SHA384", "ECDSA_SHA512"])


# and what it decrypts (OAEP only) and the key pairs it makes (CKM_RSA_PKCS_KEY_PAIR_GEN,
# CKM_EC_KEY_PAIR_GEN); no ECDH
KMS_MECHS = sorted(KMS_SIGNS + ["RSA_PKCS_OAEP", "0x0", "0x1040"])


def test_a_kms_token_offers_only_what_kms_does(kms):
    p = run([sys.executable, str(CLIENT), str(MODULE), "mechanisms"], kms.env(), input="\n")
    r = json.loads(assert_ok(p).stdout)
    # a cloud token shows its keys once logged in (its credentials are its code), but what it
    # signs is known before: applications read the list before C_Login
    assert r["before"] == KMS_MECHS and r["login"] == "OK", r
    assert r["after"] == KMS_MECHS, r


def test_kms_key_usage_decides_what_a_key_does_before_any_call(kms):
    """KeyUsage: a SIGN_VERIFY key signs and does not decrypt; an ENCRYPT_DECRYPT key does not
    sign (refused at C_SignInit, not at KMS) and decrypts with OAEP; KMS decrypts no PKCS#1 v1.5,
    so no key offers CKM_RSA_PKCS decryption. Sizes are what KMS holds (RSA 2048..4096, EC P-256..P-521)
    from before login."""
    enc = "p11-enc-" + kms.aliases["rsa"]
    kms_emu = kms.kms_emu
    kms_emu.create_key("RSA_3072", usage="ENCRYPT_DECRYPT", alias="alias/" + enc)
    p384 = "p11-p384-" + kms.aliases["ec"]
    kms_emu.create_key("ECC_NIST_P384", alias="alias/" + p384)
    p = run([sys.executable, str(CLIENT), str(MODULE), "usage",
             kms.aliases["rsa"] + "=SHA256_RSA_PKCS", enc + "=SHA256_RSA_PKCS",
             kms.aliases["ec"] + "=ECDSA_SHA256", p384 + "=ECDSA_SHA256"], kms.env(),
            input="\n")
    r = json.loads(assert_ok(p).stdout)
    assert r["before"]["RSA_PKCS"] == ["OK", 2048, 4096, ["sign"]], r
    assert r["before"]["ECDSA"] == ["OK", 256, 521, ["sign"]], r
    assert r["after"] == r["before"], r
    rsa, dec, ec = r[kms.aliases["rsa"]], r[enc], r[kms.aliases["ec"]]
    assert rsa["sign"] and not rsa["decrypt"] and rsa["sign_init"] == "OK", r
    assert rsa["allowed"] == sorted(m for m in KMS_SIGNS if "RSA" in m), r
    assert rsa["decrypt_init"] == "MECHANISM_INVALID", r
    assert not dec["sign"] and dec["decrypt"] and dec["allowed"] == ["RSA_PKCS_OAEP"], r
    assert dec["sign_init"] == "KEY_FUNCTION_NOT_PERMITTED", r
    assert ec["sign"] and ec["sign_init"] == "OK" and ec["decrypt_init"] == "MECHANISM_INVALID", r
    # KMS signs with an EC key only its curve's hash: ECDSA over a digest, or hash-and-sign
    # with that hash
    assert ec["allowed"] == ["ECDSA", "ECDSA_SHA256"], r
    assert r[p384]["allowed"] == ["ECDSA", "ECDSA_SHA384"], r
    assert r[p384]["sign_init"] == "MECHANISM_INVALID", r


def test_pkcs11_tool_lists_and_signs_with_kms_keys(kms, tmp_path):
    p = assert_ok(tool(kms, "-O", "--login"))
    assert "Private Key Object; RSA" in p.stdout and "Private Key Object; EC" in p.stdout, \
        describe(p)
    # the account's other keys show too: the test's keys by their labels
    objects = {label: kid for kind, label, kid in tool_objects(p.stdout) if kind == "Private Key"}
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed by KMS through ctok-p11.so\n")
    digest = hashlib.sha256(msg.read_bytes()).digest()
    # raw mechanisms: a DigestInfo (KMS signs it as the SHA-256 digest it names), a digest
    given = {"SHA256-RSA-PKCS": msg, "ECDSA-SHA256": msg,
             "RSA-PKCS": tmp_path / "digest-info", "ECDSA": tmp_path / "digest"}
    given["RSA-PKCS"].write_bytes(bytes.fromhex(SHA256_DIGEST_INFO) + digest)
    given["ECDSA"].write_bytes(digest)
    for label, mech in ((kms.aliases["rsa"], "SHA256-RSA-PKCS"), (kms.aliases["rsa"], "RSA-PKCS"),
                        (kms.aliases["ec"], "ECDSA-SHA256"), (kms.aliases["ec"], "ECDSA")):
        sig, pub = tmp_path / (mech + ".sig"), tmp_path / (mech + ".pub")
        kid = objects[label]
        pkcs11_tool_public_der(lambda *a: tool(kms, "--login", *a), kid, pub)
        assert_ok(tool(kms, "--login", "--sign", "-m", mech, "--id", kid, "-i", given[mech],
                       "-o", sig, "--signature-format", "openssl"))
        v = assert_ok(run([OPENSSL, "dgst", "-sha256", "-keyform", "DER", "-verify", pub,
                           "-signature", sig, msg], kms.env()))
        assert "Verified OK" in v.stdout, describe(v)


def test_pkcs11_tool_test_passes_on_a_kms_account_with_an_ecdsa_key(ws, tmp_path_factory):
    """OpenSC's `pkcs11-tool --test --login` on a KMS token (its own emulator: an account that
    holds one P-256 key) runs its whole sequence without an error. Its signature and decryption
    tests are RSA-only and say they skip the key; with an RSA key it cannot pass on any KMS: it
    signs a SHA-1 DigestInfo with CKM_RSA_PKCS, and KMS signs no SHA-1
    (test_pkcs11_tool_lists_and_signs_with_kms_keys signs with RSA and EC keys)."""
    from kms_emulator import KmsEmulator

    require_module()
    with KmsEmulator(tmp_path_factory.mktemp("kms-ec-only"), on_secret=register_secret) as emu:
        awskms_token(ws, emu)
        emu.create_key("ECC_NIST_P256", alias="alias/p11-test-ec")
        p = assert_ok(tool(ws, "--test", "--login"))
        assert p.stdout.rstrip().endswith("No errors"), describe(p)
        assert "testing key 0 (p11-test-ec)  -- non-RSA, skipping" in p.stdout, describe(p)
