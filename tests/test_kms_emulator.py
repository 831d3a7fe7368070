"""The KMS emulator is faithful to AWS KMS: proven with the official SDK (Debian's boto3), whose
SigV4 signer the emulator must accept and whose response parser must accept the emulator's
answers, for every action ctok uses; negative cases come back as the SDK's ClientError codes;
IMDSv2 through botocore's own instance-metadata credential provider."""

import base64
import datetime
import hashlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

boto3 = pytest.importorskip("boto3")
import botocore  # noqa: E402
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials, InstanceMetadataFetcher  # noqa: E402
from botocore.credentials import InstanceMetadataProvider  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils  # noqa: E402

from ctoktest import secrets_in  # noqa: E402
from kms_emulator import SEED_ACTIONS, KmsEmulator  # noqa: E402
from kmsfixtures import awskms_token, kms_credential, kms_emu  # noqa: E402,F401

HERE = Path(__file__).resolve().parent
ALL_ACTIONS = SEED_ACTIONS | {"Decrypt", "ListKeys", "DescribeKey"}
# Every signing algorithm of every key spec ctok generates (the curve fixes the ECDSA hash).
SIGNING = {
    "RSA_2048": ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384",
                 "RSASSA_PKCS1_V1_5_SHA_512", "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384",
                 "RSASSA_PSS_SHA_512"],
    "RSA_3072": ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PSS_SHA_384"],
    "RSA_4096": ["RSASSA_PKCS1_V1_5_SHA_512", "RSASSA_PSS_SHA_512"],
    "ECC_NIST_P256": ["ECDSA_SHA_256"],
    "ECC_NIST_P384": ["ECDSA_SHA_384"],
    "ECC_NIST_P521": ["ECDSA_SHA_512"],
}
HASH = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
MESSAGE = b"ctok: the KMS emulator signs what boto3 asks\n"
NO_RETRY = Config(retries={"mode": "standard", "max_attempts": 1})


def client(emu, akid, secret, token=None, region=None, config=NO_RETRY):
    return boto3.session.Session().client(
        "kms", endpoint_url=emu.url, region_name=region or emu.region, aws_access_key_id=akid,
        aws_secret_access_key=secret, aws_session_token=token, verify=emu.ca_file,
        config=config)


@pytest.fixture(scope="module")
def kms(kms_emu):
    """An SDK client holding all the actions the emulator serves."""
    akid, secret, _ = kms_credential(kms_emu, ALL_ACTIONS)
    return client(kms_emu, akid, secret)


@pytest.fixture(scope="module")
def seed_kms(kms_emu):
    """An SDK client holding exactly the seed policy's six actions."""
    akid, secret, _ = kms_credential(kms_emu, SEED_ACTIONS)
    return client(kms_emu, akid, secret)


@pytest.fixture(scope="module")
def keys(kms):
    """spec -> key id, one SIGN_VERIFY key per spec, made through CreateKey."""
    out = {}
    for spec in SIGNING:
        md = kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY", Description=spec)
        out[spec] = md["KeyMetadata"]["KeyId"]
    return out


def error_of(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"], e.value


def verify(public_der, alg, digest, sig):
    pub = serialization.load_der_public_key(public_der)
    h = HASH[alg[-3:]]()
    pre = utils.Prehashed(h)
    if alg.startswith("ECDSA"):
        pub.verify(sig, digest, ec.ECDSA(pre))
    elif alg.startswith("RSASSA_PSS"):
        # AWS's PSS salt is the digest length: verifying with exactly that salt proves it.
        pub.verify(sig, digest, padding.PSS(padding.MGF1(h), h.digest_size), pre)
    else:
        pub.verify(sig, digest, padding.PKCS1v15(), pre)


# ---------------------------------------------------------------- the actions ctok uses


@pytest.mark.parametrize("spec,alg", [(s, a) for s, algs in SIGNING.items() for a in algs])
def test_sign_digest_verifies_against_get_public_key(kms_emu, seed_kms, keys, spec, alg):
    kid = keys[spec]
    pk = seed_kms.get_public_key(KeyId=kid)
    assert pk["KeySpec"] == spec and pk["KeyUsage"] == "SIGN_VERIFY"
    assert alg in pk["SigningAlgorithms"]
    assert pk["KeyId"] == kms_emu.key_arn(kid)
    assert pk["PublicKey"] == kms_emu.public_key_der(kid)
    digest = hashlib.new("sha" + alg[-3:], MESSAGE).digest()
    out = seed_kms.sign(KeyId=kid, Message=digest, MessageType="DIGEST", SigningAlgorithm=alg)
    assert out["SigningAlgorithm"] == alg and out["KeyId"] == kms_emu.key_arn(kid)
    verify(pk["PublicKey"], alg, digest, out["Signature"])
    with pytest.raises(InvalidSignature):
        verify(pk["PublicKey"], alg, hashlib.new("sha" + alg[-3:], b"other").digest(),
               out["Signature"])
    raw = seed_kms.sign(KeyId=kid, Message=MESSAGE, MessageType="RAW", SigningAlgorithm=alg)
    verify(pk["PublicKey"], alg, digest, raw["Signature"])


def test_ecdsa_signature_is_der(seed_kms, keys):
    out = seed_kms.sign(KeyId=keys["ECC_NIST_P256"], Message=hashlib.sha256(b"x").digest(),
                        MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")
    r, s = utils.decode_dss_signature(out["Signature"])
    assert utils.encode_dss_signature(r, s) == out["Signature"]


@pytest.mark.parametrize("spec,alg", [("ECC_NIST_P521", "ECDSA_SHA_256"),
                                      ("ECC_NIST_P256", "ECDSA_SHA_384"),
                                      ("ECC_NIST_P384", "ECDSA_SHA_512"),
                                      ("RSA_2048", "ECDSA_SHA_256")])
def test_sign_refuses_a_hash_the_curve_does_not_take(seed_kms, keys, spec, alg):
    code, msg, _ = error_of(seed_kms.sign, KeyId=keys[spec], Message=b"\0" * 64,
                            MessageType="DIGEST", SigningAlgorithm=alg)
    assert code == "InvalidKeyUsageException" and alg in msg


def test_sign_digest_length_must_match_the_algorithm(seed_kms, keys):
    code, msg, _ = error_of(seed_kms.sign, KeyId=keys["RSA_2048"], Message=b"\1" * 32,
                            MessageType="DIGEST", SigningAlgorithm="RSASSA_PSS_SHA_384")
    assert code == "ValidationException" and "Digest is invalid length" in msg


def test_sign_message_is_at_most_4096_bytes(seed_kms, keys):
    ok = seed_kms.sign(KeyId=keys["ECC_NIST_P256"], Message=b"m" * 4096, MessageType="RAW",
                       SigningAlgorithm="ECDSA_SHA_256")
    assert ok["Signature"]
    code, _, _ = error_of(seed_kms.sign, KeyId=keys["ECC_NIST_P256"], Message=b"m" * 4097,
                          MessageType="RAW", SigningAlgorithm="ECDSA_SHA_256")
    assert code == "ValidationException"


def test_get_public_key_by_id_arn_alias_and_alias_arn(kms_emu, seed_kms, keys):
    kid = keys["ECC_NIST_P384"]
    seed_kms.create_alias(AliasName="alias/by-name-p384", TargetKeyId=kid)
    alias_arn = "arn:aws:kms:%s:111122223333:alias/by-name-p384" % kms_emu.region
    for ref in (kid, kms_emu.key_arn(kid), "alias/by-name-p384", alias_arn):
        pk = seed_kms.get_public_key(KeyId=ref)
        assert pk["KeyId"] == kms_emu.key_arn(kid), ref
        assert pk["PublicKey"] == kms_emu.public_key_der(kid)


def test_list_aliases_pages_with_limit_and_marker(kms_emu, seed_kms):
    kid = kms_emu.create_key("ECC_NIST_P256")
    names = ["alias/page-%02d" % i for i in range(7)]
    for n in names:
        seed_kms.create_alias(AliasName=n, TargetKeyId=kid)
    seen, marker, pages = [], None, 0
    while True:
        kw = {"KeyId": kid, "Limit": 3}
        if marker:
            kw["Marker"] = marker
        out = seed_kms.list_aliases(**kw)
        pages += 1
        for a in out["Aliases"]:
            assert a["TargetKeyId"] == kid
            assert a["AliasArn"].endswith(":" + a["AliasName"])
            assert isinstance(a["CreationDate"], datetime.datetime)
            seen.append(a["AliasName"])
        if not out["Truncated"]:
            assert "NextMarker" not in out
            break
        marker = out["NextMarker"]
    assert seen == names and pages == 3
    # The SDK's own paginator walks the same pages.
    pag = seed_kms.get_paginator("list_aliases").paginate(KeyId=kid,
                                                         PaginationConfig={"PageSize": 2})
    assert [a["AliasName"] for p in pag for a in p["Aliases"]] == names
    everything = [a["AliasName"] for p in seed_kms.get_paginator("list_aliases").paginate()
                  for a in p["Aliases"]]
    assert set(names) <= set(everything)


def test_create_key_and_alias_as_ctok_generates(kms_emu, seed_kms):
    for spec in ("RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521"):
        md = seed_kms.create_key(KeySpec=spec, KeyUsage="SIGN_VERIFY",
                                 Description="ctok key")["KeyMetadata"]
        assert md["KeySpec"] == spec and md["KeyState"] == "Enabled" and md["Enabled"]
        assert md["Arn"] == kms_emu.key_arn(md["KeyId"])
        assert isinstance(md["CreationDate"], datetime.datetime)
        seed_kms.create_alias(AliasName="alias/gen-" + spec.lower(), TargetKeyId=md["KeyId"])
        pk = seed_kms.get_public_key(KeyId="alias/gen-" + spec.lower())
        assert pk["KeySpec"] == spec


def test_create_alias_rules(kms_emu, seed_kms, keys):
    kid = keys["ECC_NIST_P256"]
    seed_kms.create_alias(AliasName="alias/taken", TargetKeyId=kid)
    code, msg, _ = error_of(seed_kms.create_alias, AliasName="alias/taken", TargetKeyId=kid)
    assert code == "AlreadyExistsException" and "alias/taken" in msg
    code, _, _ = error_of(seed_kms.create_alias, AliasName="noprefix", TargetKeyId=kid)
    assert code == "InvalidAliasNameException"
    code, _, _ = error_of(seed_kms.create_alias, AliasName="alias/aws/mine", TargetKeyId=kid)
    assert code == "NotAuthorizedException"
    code, _, _ = error_of(seed_kms.create_alias, AliasName="alias/nokey",
                          TargetKeyId="00000000-0000-4000-8000-000000000000")
    assert code == "NotFoundException"


def test_schedule_key_deletion_window_and_state(kms_emu, seed_kms):
    kid = kms_emu.create_key("ECC_NIST_P256", alias="alias/to-delete")
    code, _, _ = error_of(seed_kms.schedule_key_deletion, KeyId=kid, PendingWindowInDays=6)
    assert code == "ValidationException"
    code, _, _ = error_of(seed_kms.schedule_key_deletion, KeyId=kid, PendingWindowInDays=31)
    assert code == "ValidationException"
    before = time.time()
    out = seed_kms.schedule_key_deletion(KeyId=kid, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion" and out["PendingWindowInDays"] == 7
    assert out["KeyId"] == kms_emu.key_arn(kid)
    when = out["DeletionDate"].timestamp()
    assert before + 7 * 86400 - 2 <= when <= time.time() + 7 * 86400 + 2
    for call, kw in ((seed_kms.get_public_key, {}),
                     (seed_kms.sign, {"Message": b"\0" * 32, "MessageType": "DIGEST",
                                      "SigningAlgorithm": "ECDSA_SHA_256"})):
        code, msg, _ = error_of(call, KeyId="alias/to-delete", **kw)
        assert code == "KMSInvalidStateException" and "pending deletion" in msg
    code, _, _ = error_of(seed_kms.schedule_key_deletion, KeyId=kid)
    assert code == "KMSInvalidStateException"
    kid2 = kms_emu.create_key("ECC_NIST_P256")
    out = seed_kms.schedule_key_deletion(KeyId=kid2)
    assert out["PendingWindowInDays"] == 30


def test_disabled_unknown_and_wrong_usage_keys(kms_emu, kms, seed_kms):
    kid = kms_emu.create_key("ECC_NIST_P256", alias="alias/disabled")
    kms_emu.set_key_state(kid, "Disabled")
    sign = {"Message": b"\0" * 32, "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}
    code, msg, _ = error_of(seed_kms.sign, KeyId="alias/disabled", **sign)
    assert code == "DisabledException" and kid in msg
    code, _, _ = error_of(seed_kms.get_public_key, KeyId=kid)
    assert code == "DisabledException"
    kms_emu.set_key_state(kid, "Enabled")
    assert seed_kms.sign(KeyId=kid, **sign)["Signature"]
    code, msg, _ = error_of(seed_kms.sign, KeyId="alias/never-made", **sign)
    assert code == "NotFoundException" and "alias/never-made" in msg
    code, _, _ = error_of(seed_kms.get_public_key, KeyId="00000000-0000-4000-8000-000000000000")
    assert code == "NotFoundException"
    enc = kms_emu.create_key("RSA_2048", usage="ENCRYPT_DECRYPT")
    code, _, _ = error_of(seed_kms.sign, KeyId=enc, Message=b"\0" * 32, MessageType="DIGEST",
                          SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert code == "InvalidKeyUsageException"
    assert kms.get_public_key(KeyId=enc)["EncryptionAlgorithms"] == ["RSAES_OAEP_SHA_1",
                                                                     "RSAES_OAEP_SHA_256"]


@pytest.mark.parametrize("alg,h", [("RSAES_OAEP_SHA_1", hashes.SHA1),
                                   ("RSAES_OAEP_SHA_256", hashes.SHA256)])
def test_decrypt_oaep(kms_emu, kms, alg, h):
    kid = kms_emu.create_key("RSA_2048", usage="ENCRYPT_DECRYPT")
    pub = serialization.load_der_public_key(kms.get_public_key(KeyId=kid)["PublicKey"])
    ct = pub.encrypt(b"premaster secret", padding.OAEP(padding.MGF1(h()), h(), None))
    out = kms.decrypt(KeyId=kid, CiphertextBlob=ct, EncryptionAlgorithm=alg)
    assert out["Plaintext"] == b"premaster secret" and out["EncryptionAlgorithm"] == alg
    code, _, _ = error_of(kms.decrypt, KeyId=kid, CiphertextBlob=b"\1" * 256,
                          EncryptionAlgorithm=alg)
    assert code == "InvalidCiphertextException"


def test_list_keys_and_describe_key(kms_emu, kms):
    made = [kms_emu.create_key("ECC_NIST_P256") for _ in range(3)]
    listed = [k["KeyId"] for p in kms.get_paginator("list_keys").paginate(
        PaginationConfig={"PageSize": 2}) for k in p["Keys"]]
    assert set(made) <= set(listed) and len(listed) == len(set(listed))
    kms_emu.set_key_state(made[0], "PendingDeletion")
    md = kms.describe_key(KeyId=made[0])["KeyMetadata"]
    assert md["KeyState"] == "PendingDeletion" and not md["Enabled"]
    assert isinstance(md["DeletionDate"], datetime.datetime)
    assert md["SigningAlgorithms"] == ["ECDSA_SHA_256"]
