"""ctok-p11.so over an Azure Key Vault token (issue 14), against the local Key Vault and Azure
AD emulator: the slot's mechanisms before login are what Key Vault does (RSA 2048..4096 signing
and PKCS#1 v1.5 decryption, EC P-256..P-521 signing), a key's key_ops decide what it does
(refused at C_DecryptInit before any call); OpenSC's pkcs11-tool lists, signs and decrypts."""

import json
import secrets
import sys

import pytest

from akvfixtures import akv_emu, azurekv_token  # noqa: F401 (fixture)
from ctoktest import OPENSSL, assert_ok, describe, pkcs11_tool_public_der, run
from p11modtest import CLIENT, MODULE, require_module, tool_objects


@pytest.fixture
def akv(ws, akv_emu):  # noqa: F811
    """An azurekv token of a vault with an RSA key for anything, a sign-only RSA key and a
    P-256 key (the vault is this module's: each test's keys are its own)."""
    require_module()
    azurekv_token(ws, akv_emu)
    tag = secrets.token_hex(3)
    ws.keys = {"rsa": "p11-rsa-" + tag, "signonly": "p11-signonly-" + tag, "ec": "p11-ec-" + tag}
    akv_emu.create_key(ws.keys["rsa"], ops=["sign", "verify", "encrypt", "decrypt"])
    akv_emu.create_key(ws.keys["signonly"], ops=["sign", "verify"])
    akv_emu.create_key(ws.keys["ec"], kty="EC", crv="P-256")
    return ws


def test_key_vault_mechanisms_show_before_login_and_key_ops_decide(akv):
    k = akv.keys
    p = run([sys.executable, str(CLIENT), str(MODULE), "usage", k["rsa"] + "=SHA256_RSA_PKCS",
             k["signonly"] + "=SHA384_RSA_PKCS", k["ec"] + "=ECDSA_SHA256"], akv.env(),
            input="\n")
    r = json.loads(assert_ok(p).stdout)
    assert r["before"]["RSA_PKCS"] == ["OK", 2048, 4096, ["sign", "decrypt"]], r
    assert r["before"]["ECDSA"] == ["OK", 256, 521, ["sign"]], r
    # 12 signing, OAEP decryption (PKCS#1 v1.5 is RSA_PKCS's), RSA and EC key pair generation
    assert len(r["before"]["mechs"]) == 15 and r["after"] == r["before"], r
    assert {"RSA_PKCS_OAEP", "0x0", "0x1040"} <= set(r["before"]["mechs"]), r
    rsa, signonly, ec = r[k["rsa"]], r[k["signonly"]], r[k["ec"]]
    assert rsa["sign"] and rsa["decrypt"], r
    assert rsa["sign_init"] == "OK" and rsa["decrypt_init"] == "OK", r
    # key_ops [sign, verify]: no decryption, said by CKA_DECRYPT and refused at C_DecryptInit
    assert signonly["sign"] and not signonly["decrypt"] and signonly["sign_init"] == "OK", r
    assert "RSA_PKCS" in signonly["allowed"], r  # it signs with it
    assert signonly["decrypt_init"] == "KEY_FUNCTION_NOT_PERMITTED", r
    assert ec["sign"] and not ec["decrypt"] and ec["sign_init"] == "OK", r
    assert ec["decrypt_init"] == "KEY_TYPE_INCONSISTENT", r


def tool(ws, *args):
    return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]], ws.env())


def test_pkcs11_tool_lists_signs_and_decrypts_with_key_vault_keys(akv, tmp_path):
    """pkcs11-tool -O, --sign and --decrypt (its --test cannot pass on a cloud: it signs a
    SHA-1 DigestInfo with CKM_RSA_PKCS, and Key Vault, as KMS, signs only SHA-2 digests)."""
    objs = {label: kid for kind, label, kid in
            tool_objects(assert_ok(tool(akv, "-O", "--login")).stdout) if kind == "Private Key"}
    assert set(akv.keys.values()) <= set(objs), objs
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed by Key Vault through ctok-p11.so\n")
    for name, mech in (("rsa", "SHA256-RSA-PKCS"), ("signonly", "SHA256-RSA-PKCS-PSS"),
                       ("ec", "ECDSA-SHA256")):
        kid, sig, pub = objs[akv.keys[name]], tmp_path / (name + ".sig"), tmp_path / name
        pkcs11_tool_public_der(lambda *a: tool(akv, *a), kid, pub)
        assert_ok(tool(akv, "--sign", "-m", mech, "--id", kid, "-i", msg, "-o", sig,
                       "--signature-format", "openssl", *(["--mgf", "MGF1-SHA256"]
                                                          if "PSS" in mech else [])))
        extra = (["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:32"]
                 if "PSS" in mech else [])
        v = assert_ok(run([OPENSSL, "dgst", "-sha256", "-keyform", "DER", "-verify", pub,
                           *extra, "-signature", sig, msg], akv.env()))
        assert "Verified OK" in v.stdout, describe(v)
    # decryption: the key whose key_ops allow it; the sign-only one is refused by the module
    secret = tmp_path / "secret"
    secret.write_bytes(b"a session key of 32 bytes.......")
    for name in ("rsa", "signonly"):
        kid, ct, out = objs[akv.keys[name]], tmp_path / (name + ".ct"), tmp_path / (name + ".pt")
        assert_ok(run([OPENSSL, "pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey",
                       tmp_path / name, "-in", secret, "-out", ct], akv.env()))
        p = tool(akv, "--decrypt", "-m", "RSA-PKCS", "--id", kid, "-i", ct, "-o", out)
        if name == "rsa":
            assert_ok(p)
            assert out.read_bytes() == secret.read_bytes()
        else:
            assert p.returncode != 0 and "CKR_KEY_FUNCTION_NOT_PERMITTED" in p.stderr, describe(p)
