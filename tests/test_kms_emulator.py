"""The KMS emulator is faithful to AWS KMS: proven with the official SDK (Debian's boto3), whose
SigV4 signer the emulator must accept and whose response parser must accept the emulator's
answers, for every action ctok uses; negative cases come back as the SDK's ClientError codes;
IMDSv2 through botocore's own instance-metadata credential provider."""

import base64
import datetime
import hashlib
import hmac
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

from ctoktest import checked_env, secrets_in  # noqa: E402
from kms_emulator import SEED_ACTIONS, KmsEmulator, signing_key  # noqa: E402
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
NO_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 1})


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


def test_managed_aliases_have_no_target_key(tmp_path):
    """Opt-in: AWS managed aliases listed without TargetKeyId parse in the SDK; no key behind."""
    with KmsEmulator(tmp_path, managed_aliases=True) as emu:
        akid, secret, _ = kms_credential(emu, SEED_ACTIONS)
        c = client(emu, akid, secret)
        kid = emu.create_key("ECC_NIST_P256", alias="alias/mine")
        aliases = {a["AliasName"]: a.get("TargetKeyId") for a in c.list_aliases()["Aliases"]}
        assert aliases["alias/mine"] == kid and aliases["alias/aws/ebs"] is None
        code, _, _ = error_of(c.get_public_key, KeyId="alias/aws/ebs")
        assert code == "NotFoundException"


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
    assert kms_emu.key_metadata(kid)["KeyState"] == "PendingDeletion"
    assert kms_emu.key_metadata(kid)["DeletionDate"] == when
    assert kms_emu.aliases()["alias/to-delete"] == kid  # AWS keeps the alias until deletion
    kid2 = kms_emu.create_key("ECC_NIST_P256", alias="alias/delete-by-id-only")
    code, _, _ = error_of(seed_kms.schedule_key_deletion, KeyId="alias/delete-by-id-only")
    assert code == "NotFoundException"
    out = seed_kms.schedule_key_deletion(KeyId=kms_emu.key_arn(kid2))
    assert out["PendingWindowInDays"] == 30
    kms_emu.set_key_state(kid2, "Enabled")
    assert "DeletionDate" not in kms_emu.key_metadata(kid2)


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


# ---------------------------------------------------------------- SigV4 as AWS checks it


def raw_request(emu, akid, secret, body=b"{}", target="TrentService.ListAliases", token=None,
                region=None, extra_headers=None, path="/", tamper=None, date=None):
    """One request signed by botocore's own SigV4 signer (every header it is given is signed),
    sent over http.client; tamper(headers, body) may change it after signing.
    Returns (status, parsed body)."""
    host = emu.url[len("https://"):]
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target,
               "Host": host}
    headers.update(extra_headers or {})
    req = AWSRequest(method="POST", url=emu.url + path, data=body, headers=headers)
    creds = Credentials(akid, secret, token)
    if date is None:
        SigV4Auth(creds, "kms", region or emu.region).add_auth(req)
    else:
        with mock.patch("botocore.auth.datetime") as dt:
            dt.datetime.utcnow.return_value = date
            SigV4Auth(creds, "kms", region or emu.region).add_auth(req)
    hdrs = dict(req.headers.items())
    if tamper:
        hdrs, body = tamper(hdrs, body)
    ctx = ssl.create_default_context(cafile=emu.ca_file)
    conn = http.client.HTTPSConnection(host, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        assert r.getheader("x-amzn-RequestId"), "no x-amzn-RequestId"
        return r.status, json.loads(data)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cred(kms_emu):
    return kms_credential(kms_emu, SEED_ACTIONS)


def test_wrong_secret_is_invalid_signature(kms_emu, cred):
    code, msg, e = error_of(client(kms_emu, cred[0], cred[1] + "x").list_aliases)
    assert code == "InvalidSignatureException"
    assert msg.startswith("The request signature we calculated does not match the signature "
                          "you provided")
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_access_key_is_unrecognized_client(kms_emu, cred):
    code, msg, _ = error_of(client(kms_emu, "AKIAUNKNOWNUNKNOWN00", cred[1]).list_aliases)
    assert code == "UnrecognizedClientException"
    assert msg == "The security token included in the request is invalid."


def test_wrong_region_in_credential_scope(kms_emu, cred):
    code, msg, _ = error_of(client(kms_emu, cred[0], cred[1], region="eu-west-3").list_aliases)
    assert code == "InvalidSignatureException" and "region" in msg


@pytest.mark.parametrize("minutes", [-16, 16])
def test_date_more_than_15_minutes_off_is_refused(kms_emu, cred, minutes):
    stale = datetime.datetime.utcnow() + datetime.timedelta(minutes=minutes)
    with mock.patch("botocore.auth.datetime") as dt:
        dt.datetime.utcnow.return_value = stale
        code, msg, _ = error_of(client(kms_emu, cred[0], cred[1]).list_aliases)
    assert code == "InvalidSignatureException"
    assert msg.startswith("Signature expired" if minutes < 0 else "Signature not yet current")
    # 14 minutes off is inside AWS's window.
    ok = datetime.datetime.utcnow() + datetime.timedelta(minutes=14 * (minutes // 16))
    status, out = raw_request(kms_emu, cred[0], cred[1], date=ok)
    assert status == 200 and "Aliases" in out, out


def test_every_signed_header_is_checked(kms_emu, cred):
    extra = {"X-Ctok-Extra": "  two   spaces  ", "X-Amz-Meta": "b"}
    status, out = raw_request(kms_emu, cred[0], cred[1], extra_headers=extra)
    assert status == 200, out

    def change_extra(h, b):
        h["X-Ctok-Extra"] = "other"
        return h, b

    def change_body(h, b):
        return h, b'{"Limit": 1}'

    def drop_host(h, b):
        h["Authorization"] = h["Authorization"].replace("host;", "")
        return h, b

    for tamper in (change_extra, change_body):
        status, out = raw_request(kms_emu, cred[0], cred[1], extra_headers=extra, tamper=tamper)
        assert (status, out["__type"]) == (400, "InvalidSignatureException"), tamper.__name__
    status, out = raw_request(kms_emu, cred[0], cred[1], tamper=drop_host)
    assert out["__type"] == "InvalidSignatureException" and "Host" in out["message"]
    # A query string is part of the canonical request.
    status, out = raw_request(kms_emu, cred[0], cred[1], path="/?b=2&a=1%20x")
    assert status == 200, out
    status, out = raw_request(kms_emu, cred[0], cred[1], path="/?b=2&a=1",
                              tamper=lambda h, b: (h, b))
    assert status == 200, out


def test_libcurl_sigv4_and_expect_100_continue(kms_emu, cred, keys, tmp_path):
    """libcurl (what ctok's kms/ is built on) signs with its own SigV4 (--aws-sigv4); a 4096-byte
    RAW message makes a body past libcurl's Expect: 100-continue threshold, forced here too."""
    body = tmp_path / "sign.json"
    body.write_text(json.dumps({"KeyId": keys["ECC_NIST_P256"], "MessageType": "RAW",
                                "Message": base64.b64encode(b"m" * 4096).decode(),
                                "SigningAlgorithm": "ECDSA_SHA_256"}))
    cfg = tmp_path / "curl.cfg"  # the secret stays out of argv
    cfg.write_text('user = "%s:%s"\n' % (cred[0], cred[1]))
    os.chmod(cfg, 0o600)
    argv = ["curl", "-sS", "-K", str(cfg), "--aws-sigv4", "aws:amz:%s:kms" % kms_emu.region,
            "--cacert", kms_emu.ca_file, "--max-time", "20", "-H",
            "Content-Type: application/x-amz-json-1.1", "-H", "X-Amz-Target: TrentService.Sign",
            "-H", "Expect: 100-continue", "--data-binary", "@%s" % body, kms_emu.url + "/"]
    p = subprocess.run(argv, env=checked_env(argv, dict(os.environ)), capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    verify(kms_emu.public_key_der(keys["ECC_NIST_P256"]), "ECDSA_SHA_256",
           hashlib.sha256(b"m" * 4096).digest(), base64.b64decode(out["Signature"]))


def test_missing_or_malformed_authorization(kms_emu, cred):
    def strip(h, b):
        h.pop("Authorization")
        return h, b

    status, out = raw_request(kms_emu, cred[0], cred[1], tamper=strip)
    assert out["__type"] == "MissingAuthenticationTokenException"

    def garble(h, b):
        h["Authorization"] = "AWS4-HMAC-SHA256 Credential=x"
        return h, b

    status, out = raw_request(kms_emu, cred[0], cred[1], tamper=garble)
    assert out["__type"] == "IncompleteSignatureException"


def test_session_token_is_required_and_checked(kms_emu):
    akid, secret, token = kms_credential(kms_emu, SEED_ACTIONS, session_token=True)
    assert client(kms_emu, akid, secret, token).list_aliases()["Aliases"] is not None
    for bad in (None, token[:-2] + "xx"):
        code, msg, _ = error_of(client(kms_emu, akid, secret, bad).list_aliases)
        assert code == "UnrecognizedClientException"
        assert msg == "The security token included in the request is invalid."


def test_expired_temporary_credentials(kms_emu):
    akid, secret, token = kms_credential(kms_emu, SEED_ACTIONS, session_token=True,
                                         expires_at=time.time() - 1)
    code, _, _ = error_of(client(kms_emu, akid, secret, token).list_aliases)
    assert code == "ExpiredTokenException"


# ---------------------------------------------------------------- the policy


def test_seed_policy_allows_six_actions_and_denies_others(kms_emu, seed_kms, keys):
    kid = keys["RSA_2048"]
    code, msg, _ = error_of(seed_kms.decrypt, KeyId=kid, CiphertextBlob=b"\0" * 256,
                            EncryptionAlgorithm="RSAES_OAEP_SHA_256")
    assert code == "AccessDeniedException"
    assert msg.startswith("User: arn:aws:iam::111122223333:user/")
    assert "is not authorized to perform: kms:Decrypt on resource: %s" % kms_emu.key_arn(kid) \
        in msg
    for call, kw in ((seed_kms.list_keys, {}), (seed_kms.describe_key, {"KeyId": kid})):
        code, msg, _ = error_of(call, **kw)
        assert code == "AccessDeniedException"
    akid, secret, _ = kms_credential(kms_emu, SEED_ACTIONS - {"Sign"})
    code, msg, _ = error_of(client(kms_emu, akid, secret).sign, KeyId=kid, Message=b"\0" * 32,
                            MessageType="DIGEST", SigningAlgorithm="RSASSA_PSS_SHA_256")
    assert code == "AccessDeniedException" and "kms:Sign" in msg


# ---------------------------------------------------------------- faults and counters


def retrying(emu, cred, attempts=3):
    return client(emu, cred[0], cred[1],
                  config=Config(retries={"mode": "standard", "total_max_attempts": attempts}))


def test_throttling_is_retried_by_the_sdk_and_counted(kms_emu, cred, keys):
    c = retrying(kms_emu, cred)
    sign = {"KeyId": keys["ECC_NIST_P256"], "Message": b"\0" * 32, "MessageType": "DIGEST",
            "SigningAlgorithm": "ECDSA_SHA_256"}
    kms_emu.clear_counters()
    kms_emu.throttle(2)
    out = c.sign(**sign)
    assert out["ResponseMetadata"]["RetryAttempts"] == 2
    assert kms_emu.requests() == {"Sign": 3}
    kms_emu.clear_counters()
    kms_emu.throttle(5)
    code, msg, _ = error_of(c.sign, **sign)
    assert (code, msg) == ("ThrottlingException", "Rate exceeded")
    assert kms_emu.requests() == {"Sign": 3}
    kms_emu.throttle(0)
    assert c.sign(**sign)["ResponseMetadata"]["RetryAttempts"] == 0


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retried_by_the_sdk_and_counted(kms_emu, cred, status):
    c = retrying(kms_emu, cred)
    kms_emu.clear_counters()
    kms_emu.fail5xx(1, status=status)
    out = c.list_aliases()
    assert out["ResponseMetadata"]["RetryAttempts"] == 1
    assert kms_emu.requests() == {"ListAliases": 2}
    kms_emu.fail5xx(3, status=status)
    code, _, e = error_of(retrying(kms_emu, cred, 2).list_aliases)
    assert e.response["ResponseMetadata"]["HTTPStatusCode"] == status
    kms_emu.fail5xx(0)


def test_connection_reset_closes_without_answer(kms_emu, cred):
    c = retrying(kms_emu, cred)
    c.list_aliases()
    kms_emu.clear_counters()
    kms_emu.reset_connections(1)
    out = c.list_aliases()
    assert out["ResponseMetadata"]["RetryAttempts"] == 1
    assert kms_emu.requests() == {"ListAliases": 2}
    assert kms_emu.connections() == 1  # the retry needed a new connection
    kms_emu.reset_connections(1)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        retrying(kms_emu, cred, 1).list_aliases()


def test_latency_delays_every_request_until_cleared(kms_emu, cred):
    c = client(kms_emu, cred[0], cred[1])
    c.list_aliases()
    kms_emu.latency(300)
    try:
        for _ in range(2):
            t = time.monotonic()
            c.list_aliases()
            assert time.monotonic() - t >= 0.3
    finally:
        kms_emu.latency(0)
    t = time.monotonic()
    c.list_aliases()
    assert time.monotonic() - t < 0.25


def test_keep_alive_one_tls_connection_per_client(kms_emu, cred, keys):
    c = client(kms_emu, cred[0], cred[1])
    kms_emu.clear_counters()
    for _ in range(50):
        c.sign(KeyId=keys["ECC_NIST_P256"], Message=b"\0" * 32, MessageType="DIGEST",
               SigningAlgorithm="ECDSA_SHA_256")
    assert kms_emu.requests() == {"Sign": 50}
    assert kms_emu.connections() == 1
    client(kms_emu, cred[0], cred[1]).list_aliases()
    assert kms_emu.connections() == 2


def test_counters_are_thread_safe(kms_emu, cred):
    kms_emu.clear_counters()
    errors = []

    def work():
        try:
            c = client(kms_emu, cred[0], cred[1])
            for _ in range(20):
                c.list_aliases(Limit=1)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert kms_emu.requests() == {"ListAliases": 80}
    assert kms_emu.connections() == 4


# ---------------------------------------------------------------- IMDSv2


def imds(emu, method, path, headers=None):
    host = emu.imds_url[len("http://"):]
    conn = http.client.HTTPConnection(host, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def test_imdsv2_needs_a_session_token(kms_emu):
    kms_emu.set_role("imds-raw-role")
    base = "/latest/meta-data/iam/security-credentials/"
    assert imds(kms_emu, "PUT", "/latest/api/token")[0] == 400
    assert imds(kms_emu, "GET", base)[0] == 401
    assert imds(kms_emu, "GET", base, {"X-aws-ec2-metadata-token": "guess"})[0] == 401
    status, token = imds(kms_emu, "PUT", "/latest/api/token",
                         {"X-aws-ec2-metadata-token-ttl-seconds": "21600"})
    assert status == 200 and token
    h = {"X-aws-ec2-metadata-token": token}
    assert imds(kms_emu, "GET", base, h) == (200, "imds-raw-role")
    status, text = imds(kms_emu, "GET", base + "imds-raw-role", h)
    doc = json.loads(text)
    assert status == 200 and doc["Code"] == "Success" and doc["Type"] == "AWS-HMAC"
    assert doc["AccessKeyId"].startswith("ASIA") and doc["Token"]
    exp = datetime.datetime.strptime(doc["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
    assert 3500 < (exp - datetime.datetime.utcnow()).total_seconds() <= 3600
    assert imds(kms_emu, "GET", base + "other-role", h)[0] == 404


def test_instance_role_through_botocore_metadata_provider(kms_emu):
    """botocore's own IMDSv2 client fetches the role's credentials and boto3 signs with them;
    they stop working at Expiration, and the provider's refresh brings new ones that work."""
    # botocore stretches credentials that expire within ~20 minutes (its static stability),
    # so the role's lifetime is longer and the passing of time is played on both sides.
    kms_emu.set_role("ctok-instance-role", ttl_seconds=1500)
    kms_emu.clear_counters()
    fetcher = InstanceMetadataFetcher(
        timeout=2, num_attempts=1, config={"ec2_metadata_service_endpoint": kms_emu.imds_url})
    creds = InstanceMetadataProvider(iam_role_fetcher=fetcher).load()
    assert creds is not None and creds.method == "iam-role"
    frozen = creds.get_frozen_credentials()
    assert frozen.access_key.startswith("ASIA") and frozen.token
    assert kms_emu.imds_requests()["PUT /latest/api/token"] == 1
    session = botocore.session.get_session()
    session._credentials = creds
    c = boto3.session.Session(botocore_session=session).client(
        "kms", endpoint_url=kms_emu.url, region_name=kms_emu.region, verify=kms_emu.ca_file,
        config=NO_RETRY)
    c.list_aliases()
    kms_emu.expire_role_credentials()
    code, _, _ = error_of(client(kms_emu, frozen.access_key, frozen.secret_key,
                                 frozen.token).list_aliases)
    assert code == "ExpiredTokenException"
    # 1000 s later by botocore's clock: inside its mandatory refresh window.
    later = creds._time_fetcher() + datetime.timedelta(seconds=1000)
    creds._time_fetcher = lambda: later
    c.list_aliases()
    assert creds.get_frozen_credentials().access_key != frozen.access_key
    assert kms_emu.imds_requests()[
        "GET /latest/meta-data/iam/security-credentials/ctok-instance-role"] >= 2


# ---------------------------------------------------------------- the fixtures ctok's tests use


def test_awskms_token_fixture_writes_a_loadable_entry(kms_emu, tmp_path):
    from ctoktest import BUILD, Workspace

    ws = Workspace(tmp_path, BUILD)
    name = awskms_token(ws, kms_emu, name="kms1", timeout_ms=2000)
    conf = ws.load_config()
    (entry,) = conf["tokens"]
    assert entry["type"] == "awskms" and entry["name"] == name == "kms1"
    assert entry["endpoint"] == kms_emu.url and entry["ca_file"] == kms_emu.ca_file
    assert entry["region"] == kms_emu.region and entry["timeout_ms"] == 2000
    assert ws.config.stat().st_mode & 0o022 == 0
    secret_file = Path(entry["auth"]["file"])
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text()
    assert secrets_in("the secret is " + secret) == [secret]  # registered with the scan
    out = client(kms_emu, entry["access_key_id"], secret).list_aliases()
    assert "Aliases" in out
    awskms_token(ws, kms_emu, name="kms2", session_token=True)
    e2 = ws.load_config()["tokens"][1]
    s2, tok2 = Path(e2["auth"]["file"]).read_text().split("\n")
    client(kms_emu, e2["access_key_id"], s2, tok2).list_aliases()
    awskms_token(ws, kms_emu, name="kms3", auth_method="role", ca_file=None)
    e3 = ws.load_config()["tokens"][2]
    assert e3["auth_method"] == "role" and e3["imds_endpoint"] == kms_emu.imds_url
    assert "ca_file" not in e3 and "auth" not in e3 and "access_key_id" not in e3


def test_standalone_serves_until_terminated(tmp_path):
    port_file = tmp_path / "emu.json"
    creds = tmp_path / "creds"
    creds.write_text("AKIASTANDALONE000001:sa-secret-1\n")
    proc = subprocess.Popen([sys.executable, str(HERE / "kms_emulator.py"), "--workdir",
                             str(tmp_path), "--credential-file", str(creds),
                             "--key", "ECC_NIST_P256:bench", "--port-file", str(port_file),
                             "--max-seconds", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if port_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        assert set(info) >= {"url", "ca_file", "imds_url"}
        c = boto3.session.Session().client(
            "kms", endpoint_url=info["url"], region_name="us-east-1",
            aws_access_key_id="AKIASTANDALONE000001", aws_secret_access_key="sa-secret-1",
            verify=info["ca_file"], config=NO_RETRY)
        assert [a["AliasName"] for a in c.list_aliases()["Aliases"]] == ["alias/bench"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_standalone_stops_after_max_seconds(tmp_path):
    t = time.monotonic()
    p = subprocess.run([sys.executable, str(HERE / "kms_emulator.py"), "--workdir",
                        str(tmp_path), "--max-seconds", "1"], capture_output=True, timeout=30)
    assert p.returncode == 0 and time.monotonic() - t < 15
    assert "url" in json.loads(p.stdout)


# ---------------------------------------------------------------- speed


def test_sign_round_trip_is_fast(kms_emu, cred, keys):
    """One client thread on a keep-alive connection: a Sign round trip well under 5 ms."""
    host = kms_emu.url[len("https://"):]
    kid = keys["ECC_NIST_P256"]
    conn = http.client.HTTPSConnection(host, context=ssl.create_default_context(
        cafile=kms_emu.ca_file), timeout=10)
    body = json.dumps({"KeyId": kid, "Message": base64.b64encode(b"\0" * 32).decode(),
                       "MessageType": "DIGEST", "SigningAlgorithm": "ECDSA_SHA_256"}).encode()
    times = []
    try:
        for i in range(300):
            amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            h = {"Host": host, "Content-Type": "application/x-amz-json-1.1",
                 "X-Amz-Target": "TrentService.Sign", "X-Amz-Date": amz}
            signed = "content-type;host;x-amz-date;x-amz-target"
            canon = "POST\n/\n\n%s\n\n%s\n%s" % (
                "\n".join("%s:%s" % (k.lower(), h[k]) for k in sorted(h, key=str.lower)),
                signed, hashlib.sha256(body).hexdigest())
            scope = "%s/%s/kms/aws4_request" % (amz[:8], kms_emu.region)
            sts = "AWS4-HMAC-SHA256\n%s\n%s\n%s" % (amz, scope,
                                                    hashlib.sha256(canon.encode()).hexdigest())
            sig = hmac.new(signing_key(cred[1], amz[:8], kms_emu.region),
                           sts.encode(), hashlib.sha256).hexdigest()
            h["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, "
                                  "Signature=%s" % (cred[0], scope, signed, sig))
            t = time.perf_counter()
            conn.request("POST", "/", body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            times.append(time.perf_counter() - t)
            assert r.status == 200, data
    finally:
        conn.close()
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
    print("\nemulator Sign ECDSA P-256, 1 client thread: p50 %.2f ms, p99 %.2f ms, %.0f req/s"
          % (p50 * 1e3, p99 * 1e3, len(times) / sum(times)))
    assert p50 < 0.005
