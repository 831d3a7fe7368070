"""ctok-p11.so over an AWS KMS token (issue 14), against the local KMS emulator: the module
offers only what the keys sign, and what it signs verifies with plain openssl."""

import hashlib
import json
import sys

import pytest

from ctoktest import OPENSSL, assert_ok, describe, run
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
    tag = "%x" % (hash(request.node.name) & 0xFFFFFF)
    ws.aliases = {"rsa": "p11-rsa-" + tag, "ec": "p11-ec-" + tag}
    kms_emu.create_key("RSA_2048", alias="alias/" + ws.aliases["rsa"])
    kms_emu.create_key("ECC_NIST_P256", alias="alias/" + ws.aliases["ec"])
    return ws


def tool(ws, *args):
    return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]], ws.env())


def test_a_kms_token_offers_only_what_its_keys_sign(kms):
    p = run([sys.executable, str(CLIENT), str(MODULE), "mechanisms"], kms.env(), input="\n")
    r = json.loads(assert_ok(p).stdout)
    # a cloud token shows its keys once logged in (its credentials are its code): before,
    # there is nothing to sign with; RSA and EC keys it can make (CreateKey) either way
    keygen = ["0x0", "0x1040"]  # CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_EC_KEY_PAIR_GEN
    assert r["before"] == keygen and r["login"] == "OK", r
    # and what its RSA keys may decrypt (KMS does not derive: no ECDH)
    assert r["after"] == sorted(keygen + ["RSA_PKCS", "RSA_PKCS_OAEP", "SHA256_RSA_PKCS",
                                 "SHA384_RSA_PKCS",
                                 "SHA512_RSA_PKCS", "RSA_PKCS_PSS", "SHA256_RSA_PKCS_PSS",
                                 "SHA384_RSA_PKCS_PSS", "SHA512_RSA_PKCS_PSS", "ECDSA",
                                 "ECDSA_SHA256", "ECDSA_SHA384", "ECDSA_SHA512"]), r


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
        assert_ok(tool(kms, "--login", "--read-object", "--type", "pubkey", "--id", kid,
                       "-o", pub))
        assert_ok(tool(kms, "--login", "--sign", "-m", mech, "--id", kid, "-i", given[mech],
                       "-o", sig, "--signature-format", "openssl"))
        v = assert_ok(run([OPENSSL, "dgst", "-sha256", "-keyform", "DER", "-verify", pub,
                           "-signature", sig, msg], kms.env()))
        assert "Verified OK" in v.stdout, describe(v)
