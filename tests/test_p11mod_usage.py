"""What a key's own token lets it do, through ctok-p11.so (issue 14): a SoftHSM key made by
pkcs11-tool with its usage (CKA_SIGN / CKA_DECRYPT) and CKA_ALLOWED_MECHANISMS narrowed shows
them narrowed, and the module refuses the rest at C_SignInit / C_DecryptInit
(CKR_KEY_FUNCTION_NOT_PERMITTED, CKR_MECHANISM_INVALID) before any call to the token."""

import json
import sys

import pytest

from ctoktest import assert_ok, run
from p11conform import ToolToken
from p11modtest import CLIENT, MODULE, require_module

RSA_SIGNS = sorted(["RSA_PKCS", "SHA256_RSA_PKCS", "SHA384_RSA_PKCS", "SHA512_RSA_PKCS",
                    "RSA_PKCS_PSS", "SHA256_RSA_PKCS_PSS", "SHA384_RSA_PKCS_PSS",
                    "SHA512_RSA_PKCS_PSS"])


@pytest.fixture(scope="module")
def tt(tmp_path_factory, build):
    require_module()
    t = ToolToken(tmp_path_factory.mktemp("p11mod-usage"), build, label="usage")
    # a key allowed only raw PKCS#1 v1.5, and one the token does not restrict (pkcs11-tool
    # cannot say CKA_SIGN or CKA_DECRYPT false: SoftHSM's defaults are true)
    t.keypair("rsa:2048", "01", "raw-only", allowed=["RSA-PKCS"])
    t.keypair("rsa:2048", "02", "any-use")
    # keys whose usage is narrowed: made by ctok with an attribute file (EJBCA's syntax)
    conf = t.ws.load_config()
    for alias, attr in (("sign-only", "CKA_DECRYPT"), ("decrypt-only", "CKA_SIGN")):
        f = t.ws.write(alias + ".cfg", "attributes(generate, CKO_PRIVATE_KEY, CKK_RSA) = {\n"
                       "  %s = false\n}\n" % attr, mode=0o644)
        conf["tokens"][0]["attributes"] = str(f)
        t.ws.save_config(conf)
        t.ws.generate(t.tok, alias, "rsa:2048")
    return t


def usage(tt, *args):
    p = run([sys.executable, str(CLIENT), str(MODULE), "usage", *args], tt.ws.env(),
            input="\n")
    return json.loads(assert_ok(p).stdout)


def test_a_hsm_keys_usage_and_allowed_mechanisms_narrow_it(tt):
    r = usage(tt, "raw-only=SHA256_RSA_PKCS", "any-use=SHA256_RSA_PKCS",
              "sign-only=SHA256_RSA_PKCS", "decrypt-only=SHA256_RSA_PKCS")
    raw, anyuse, sign, dec = r["raw-only"], r["any-use"], r["sign-only"], r["decrypt-only"]
    assert r["login"] == "OK", r
    # the token's own CKA_ALLOWED_MECHANISMS, as the token has it: other mechanisms are refused
    assert raw["allowed"] == ["RSA_PKCS"] and raw["sign"] and raw["decrypt"], r
    assert raw["sign_init"] == "MECHANISM_INVALID" and raw["decrypt_init"] == "OK", r
    # (SoftHSM decrypts with OAEP too)
    assert anyuse["allowed"] == sorted(RSA_SIGNS + ["RSA_PKCS_OAEP"]) and anyuse["sign"] and anyuse["decrypt"], r
    assert anyuse["sign_init"] == "OK" and anyuse["decrypt_init"] == "OK", r
    # CKA_DECRYPT false / CKA_SIGN false on the token: the module says so and refuses
    assert sign["sign"] and not sign["decrypt"] and sign["allowed"] == RSA_SIGNS, r
    assert sign["sign_init"] == "OK", r
    assert sign["decrypt_init"] == "KEY_FUNCTION_NOT_PERMITTED", r
    assert not dec["sign"] and dec["decrypt"] and dec["allowed"] == ["RSA_PKCS", "RSA_PKCS_OAEP"], r
    assert dec["sign_init"] == "KEY_FUNCTION_NOT_PERMITTED" and dec["decrypt_init"] == "OK", r
