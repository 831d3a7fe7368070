"""Decryption (CKM_RSA_PKCS_OAEP) and key agreement (CKM_ECDH1_DERIVE, session objects)
through ctok-p11.so (issue 14), on a soft keystore token and a SoftHSM-backed ctok pkcs11
token: python3-cryptography encrypts and agrees on its side, the module decrypts and derives
through the token layer, OpenSC's pkcs11-tool and tests/p11mod_crypto_client.py drive it."""

import json
import re
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.x963kdf import X963KDF

from ctoktest import assert_ok, describe, run
from p11modtest import MODULE, make_face

CRYPTO_CLIENT = Path(__file__).resolve().parent / "p11mod_crypto_client.py"


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    return make_face(request.param, tmp_path_factory, build)


@pytest.fixture
def soft(tmp_path_factory, build):
    return make_face("soft", tmp_path_factory, build)


@pytest.fixture
def hsm(tmp_path_factory, build):
    return make_face("hsm", tmp_path_factory, build)


def story(face, name, *args):
    p = assert_ok(run([sys.executable, str(CRYPTO_CLIENT), str(MODULE), name,
                       *[str(a) for a in args]], face.env(), input="\n"))
    return json.loads(p.stdout.strip().splitlines()[-1])


def peer():
    """A software peer on P-256 (the faces' EC key's curve) and the secret it agrees on with
    the token's key, computed here."""
    return ec.generate_private_key(ec.SECP256R1())


def point(priv):
    return priv.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint)


def expected(face, priv):
    pub = serialization.load_pem_public_key(face.pubkey("ec").read_bytes())
    return priv.exchange(ec.ECDH(), pub)


# ---- OAEP ----

def test_the_oaep_mechanism_decrypts_where_rsa_keys_decrypt(face):
    p = assert_ok(face.tool("-M"))
    line = next(l for l in p.stdout.splitlines() if l.strip().startswith("RSA-PKCS-OAEP"))
    assert "decrypt" in line and "hw" in line, describe(p)
    line = next(l for l in p.stdout.splitlines() if l.strip().startswith("ECDH1-DERIVE"))
    assert "derive" in line, describe(p)


@pytest.mark.parametrize("label", ["", "63746f6b2d6c6162656c"])
def test_sha256_oaep_with_and_without_a_label_on_a_soft_token(soft, label):
    r = story(soft, "oaep", "rsa", soft.pubkey("rsa"), "SHA256", "SHA256", label)
    assert r["init"] == "OK" and r["query"] == ["OK", 256], r
    assert r["decrypt"] == "OK" and r["same"], r
    # a changed ciphertext: the spec's code, no plaintext, no crash
    assert r["bad_init"] == "OK" and r["bad"] == "ENCRYPTED_DATA_INVALID", r
    assert not r["bad_plain"], r


def test_sha1_oaep_on_softhsm_and_sha256_refused_at_init_with_the_clear_code(hsm):
    r = story(hsm, "oaep", "rsa", hsm.pubkey("rsa"), "SHA1", "SHA1", "")
    assert r["init"] == "OK" and r["decrypt"] == "OK" and r["same"], r
    assert r["bad"] == "ENCRYPTED_DATA_INVALID" and not r["bad_plain"], r
    # SoftHSM decrypts OAEP only with SHA-1 (and no label): known at C_DecryptInit
    for h, label in (("SHA256", ""), ("SHA1", "6c6162656c")):
        r = story(hsm, "oaep", "rsa", hsm.pubkey("rsa"), h, h, label)
        assert r["init"] == "MECHANISM_PARAM_INVALID", (h, label, r)


def test_oaep_parameters_are_checked_as_the_spec_has_them(face):
    r = story(face, "oaep_params", "rsa")
    assert r == {"none": "MECHANISM_PARAM_INVALID", "short": "MECHANISM_PARAM_INVALID",
                 "md5": "MECHANISM_PARAM_INVALID", "mgf": "MECHANISM_PARAM_INVALID",
                 "source": "MECHANISM_PARAM_INVALID", "label_null": "MECHANISM_PARAM_INVALID",
                 "source_none_label": "MECHANISM_PARAM_INVALID",
                 "sha1": "OK"}, r


def test_pkcs11_tool_decrypts_oaep(face, tmp_path):
    h = "SHA256" if face.kind == "soft" else "SHA-1"
    data = tmp_path / "data"
    data.write_bytes(b"decrypted through ctok-p11.so\n")
    ct = tmp_path / "ct"
    md = "sha256" if face.kind == "soft" else "sha1"
    assert_ok(run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", face.pubkey("rsa"),
                   "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:" + md,
                   "-pkeyopt", "rsa_mgf1_md:" + md, "-in", data, "-out", ct],
                  face.ws.env(config=False)))
    out = tmp_path / "out"
    p = assert_ok(face.tool("--login", "--decrypt", "-m", "RSA-PKCS-OAEP", "--hash-algorithm", h,
                            "--mgf", "MGF1-" + h.replace("-", ""), "--id",
                            face.key_ids["rsa"].hex(), "-i", ct, "-o", out))
    assert out.read_bytes() == data.read_bytes(), describe(p)


def test_pkcs11_tool_test_skips_the_oaep_a_token_refuses_and_passes(face):
    p = assert_ok(face.tool("--test", "--login"))
    assert "No errors" in p.stdout, describe(p)
    dec = p.stdout.partition("Decryption (currently only for RSA)")[2]
    # OpenSC tries SHA-256 OAEP with a label: the soft token decrypts it, SoftHSM refuses it
    # at C_DecryptInit (skipped as not supported) instead of aborting the test
    tried = re.findall(r"RSA-PKCS-OAEP: (?:mgf not set[^\n]*\n)?(.*)", dec)
    want = "OK" if face.kind == "soft" else "Mechanism not supported"
    assert tried and all(t == want for t in tried), describe(p)
    assert "RSA-PKCS: OK" in dec, describe(p)


# ---- ECDH ----

def test_pkcs11_tool_derives_the_secret_cryptography_computes(face, tmp_path):
    priv = peer()
    der = tmp_path / "peer.der"
    der.write_bytes(priv.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    for extra in ((), ("--derive-pass-der",)):
        out = tmp_path / "secret"
        p = assert_ok(face.tool("--login", "--derive", "-m", "ECDH1-DERIVE", "--id",
                                face.key_ids["ec"].hex(), "-i", der, "-o", out, *extra))
        assert out.read_bytes() == expected(face, priv), describe(p)


def test_a_derived_secret_is_a_session_object_gone_with_its_session(face):
    priv = peer()
    r = story(face, "derive", "ec", point(priv).hex(), 0, 0, 1)
    assert r["derive_attr"] == "01" and r["derive"] == "OK", r
    assert r["value"][0] == "OK", r
    assert bytes.fromhex(r["value"][1][0]["value"]) == expected(face, priv), r
    rvv, (cls, vlen, token, sens) = r["attrs"]
    assert rvv == "OK" and int.from_bytes(bytes.fromhex(cls["value"]), "little") == 4, r
    assert int.from_bytes(bytes.fromhex(vlen["value"]), "little") == 32, r
    assert token["value"] == "00" and sens["value"] == "00", r
    assert r["found"] and r["other_sees"], r
    assert r["close"] == "OK" and r["after_close"] == {"found": False,
                                                       "attrs": "OBJECT_HANDLE_INVALID"}, r


def test_c_destroyobject_takes_a_derived_secret_in_a_read_only_session(face):
    r = story(face, "derive_destroy", "ec", point(peer()).hex())
    assert r == {"derive": "OK", "destroy": "OK",
                 "after": {"found": False, "attrs": "OBJECT_HANDLE_INVALID"},
                 "again": "0xb5"}, r  # no longer a session object: a token object's rule,
    # CKR_SESSION_READ_ONLY


def test_derived_secrets_go_with_all_sessions_closed_and_with_finalize(face):
    r = story(face, "derive_ends", "ec", point(peer()).hex())
    assert r == {"derive": "OK", "class": 1, "close_all": "OK", "after_close_all": 0,
                 "derive_again": "OK", "finalize": "OK", "after_finalize": 0}, r


def test_cka_value_len_truncates_the_secret(soft):
    priv = peer()
    r = story(soft, "derive", "ec", point(priv).hex(), 16, 0, 1)
    assert r["derive"] == "OK", r
    assert bytes.fromhex(r["value"][1][0]["value"]) == expected(soft, priv)[:16], r


@pytest.mark.parametrize("sensitive,extractable", [(1, 1), (0, 0)])
def test_a_sensitive_or_unextractable_secret_is_not_readable(face, sensitive, extractable):
    r = story(face, "derive", "ec", point(peer()).hex(), 0, sensitive, extractable)
    assert r["derive"] == "OK", r
    assert r["value"][0] == "ATTRIBUTE_SENSITIVE", r
    assert r["value"][1][0] == {"len": "unavailable", "value": None}, r


def test_a_private_derived_secret_goes_at_logout(soft):
    r = story(soft, "derive_logout", "ec", point(peer()).hex())
    assert r == {"derive": "OK", "before": True, "logout": "OK",
                 "after": "OBJECT_HANDLE_INVALID"}, r


def test_what_derive_refuses(face):
    r = story(face, "derive_refused", "ec", "rsa", point(peer()).hex())
    assert r == {"kdf_unknown": "MECHANISM_PARAM_INVALID", "kdf_no_len": "TEMPLATE_INCOMPLETE",
                 "kdf_aes_no_len": "TEMPLATE_INCOMPLETE", "kdf_aes_odd": "ATTRIBUTE_VALUE_INVALID",
                 "kdf_too_long": "ATTRIBUTE_VALUE_INVALID",
                 "null_kdf_shared": "MECHANISM_PARAM_INVALID",
                 "shared_no_len": "MECHANISM_PARAM_INVALID",
                 "shared_no_ptr": "MECHANISM_PARAM_INVALID", "off_curve": "MECHANISM_PARAM_INVALID",
                 "garbage": "MECHANISM_PARAM_INVALID", "infinity": "MECHANISM_PARAM_INVALID",
                 "too_long": "ATTRIBUTE_VALUE_INVALID",
                 "token": "ATTRIBUTE_VALUE_INVALID", "class": "TEMPLATE_INCONSISTENT",
                 "rsa_key": "KEY_TYPE_INCONSISTENT", "bool_size": "ATTRIBUTE_VALUE_INVALID",
                 "null_label": "ATTRIBUTE_VALUE_INVALID", "long_id": "ATTRIBUTE_VALUE_INVALID",
                 "local": "ATTRIBUTE_READ_ONLY", "modulus": "ATTRIBUTE_TYPE_INVALID",
                 "value": "TEMPLATE_INCONSISTENT", "aes_odd": "ATTRIBUTE_VALUE_INVALID",
                 "no_mech": "ARGUMENTS_BAD",
                 "no_out": "ARGUMENTS_BAD", "no_params": "MECHANISM_PARAM_INVALID",
                 "left": 0}, r


KDF_HASHES = {"SHA1": hashes.SHA1, "SHA224": hashes.SHA224, "SHA256": hashes.SHA256,
              "SHA384": hashes.SHA384, "SHA512": hashes.SHA512, "SHA3-224": hashes.SHA3_224,
              "SHA3-256": hashes.SHA3_256, "SHA3-384": hashes.SHA3_384, "SHA3-512": hashes.SHA3_512}
GENERIC, AES = 0x10, 0x1F


def test_each_x963_kdf_derives_what_cryptography_computes(face):
    """The token agrees on Z, the module applies the KDF: python-cryptography's ECDH and
    X963KDF, an independent implementation, give the same key."""
    priv = peer()
    info = b"ctok X9.63 shared info".hex()
    # 48 bytes: more than one digest block for the shorter hashes; 132: the most a session
    # object holds; no shared data; AES keys of each size
    cases = ["%s:48:%d:%s" % (h, GENERIC, info) for h in KDF_HASHES] + [
        "SHA256:32:%d:" % GENERIC, "SHA512:132:%d:%s" % (GENERIC, info),
        "SHA1:16:%d:%s" % (AES, info), "SHA384:24:%d:" % AES, "SHA3-256:32:%d:%s" % (AES, info)]
    r = story(face, "derive_kdf", "ec", point(priv).hex(), *cases)
    z = expected(face, priv)
    for c in cases:
        h, n, _, shared = c.split(":")
        want = X963KDF(KDF_HASHES[h](), int(n), bytes.fromhex(shared) or None).derive(z)
        assert r[c] == ["OK", want.hex()], (c, r[c])


def test_threads_decrypt_and_derive_side_by_side(face):
    priv = peer()
    h = "SHA256" if face.kind == "soft" else "SHA1"
    r = story(face, "threads", "rsa", face.pubkey("rsa"), "ec", point(priv).hex(), 4, 10, h)
    assert r == {"decrypt OK": 40, "derive OK": 40, "read OK": 40, "close OK": 40, "left": 0}, r


# ---- an AWS KMS token (the local emulator) ----

@pytest.fixture
def kms(ws, tmp_path):
    """An awskms token (its credential without kms:Decrypt) over an emulator of its own: one
    RSA and one EC signing key."""
    from ctoktest import register_secret
    from kms_emulator import KmsEmulator
    from kmsfixtures import awskms_token
    from p11modtest import require_module

    require_module()
    with KmsEmulator(tmp_path / "kms-emulator", on_secret=register_secret) as emu:
        awskms_token(ws, emu)
        ws.emu = emu
        ws.ids = {"rsa-sign": emu.create_key("RSA_2048", alias="alias/rsa-sign"),
                  "ec-sign": emu.create_key("ECC_NIST_P256", alias="alias/ec-sign")}
        yield ws


def kms_pem(kms, alias, tmp_path):
    pub = serialization.load_der_public_key(kms.emu.public_key_der(kms.ids[alias]))
    out = tmp_path / (alias + ".pem")
    out.write_bytes(pub.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return out


def test_a_kms_key_decrypts_sha256_oaep_and_refuses_what_kms_does_not_offer(kms, tmp_path):
    from kms_emulator import SEED_ACTIONS
    from kmsfixtures import awskms_token

    kms.ids["rsa-dec"] = kms.emu.create_key("RSA_2048", usage="ENCRYPT_DECRYPT",
                                            alias="alias/rsa-dec")
    pem = kms_pem(kms, "rsa-dec", tmp_path)
    # the token's credential may not decrypt (no kms:Decrypt): refused at C_DecryptInit
    r = story(kms, "oaep", "rsa-dec", pem, "SHA256", "SHA256", "")
    assert r["init"] == "FUNCTION_REJECTED", r
    kms.config.unlink()
    awskms_token(kms, kms.emu, actions=SEED_ACTIONS | {"Decrypt"})
    r = story(kms, "oaep", "rsa-dec", pem, "SHA256", "SHA256", "")
    assert r["init"] == "OK" and r["decrypt"] == "OK" and r["same"], r
    assert r["bad"] == "ENCRYPTED_DATA_INVALID" and not r["bad_plain"], r
    # KMS takes no label and no SHA-384; a signing key decrypts nothing (its KeyUsage says so:
    # refused before any call)
    assert story(kms, "oaep", "rsa-dec", pem, "SHA256", "SHA256", "6c6162656c")["init"] == \
        "MECHANISM_PARAM_INVALID"
    assert story(kms, "oaep", "rsa-dec", pem, "SHA384", "SHA384", "")["init"] == \
        "MECHANISM_PARAM_INVALID"
    r = story(kms, "oaep", "rsa-sign", kms_pem(kms, "rsa-sign", tmp_path), "SHA256", "SHA256", "")
    assert r["init"] == "KEY_FUNCTION_NOT_PERMITTED", r
