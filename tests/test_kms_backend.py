"""The awskms token type end to end: the ctok tool and the real openssl binary against the KMS
emulator (tests/kms_emulator.py) over TLS with SigV4, exactly the seed's six actions granted.

A user's story each: create the token with the tool, generate/list/test/remove keys, sign and
verify with ctok: URIs, CSRs and CA signing, TLS servers, both auth methods, one HTTP request
per signature after warm-up, and one clear line for each way a call can fail."""

import datetime
import re
import time

import pytest

from ctoktest import (DEFAULT_FIRST, THREE_CNF, TlsServer, assert_fails_with, assert_handshake,
                      assert_no_secret, assert_ok, assert_tool_error, assert_verified, describe,
                      free_port, register_secret, sign_digest, tls_client, verify_digest)
from kms_emulator import SEED_ACTIONS, KmsEmulator
from kmsfixtures import awskms_token, kms_credential, kms_emu  # noqa: F401
from p11fixtures import sign_loop, sign_loop_binary

_n = [0]


def unique(prefix):
    """Aliases are per emulator (module): each test takes its own."""
    _n[0] += 1
    return "%s%d" % (prefix, _n[0])


def tool_token(ws, emu, name="kms", actions=SEED_ACTIONS, secret=None, **fields):
    """`ctok token create --type awskms` as a user runs it; returns the tool's process."""
    akid, real, _ = kms_credential(emu, actions)
    sec = ws.write("%s.secret" % name, register_secret(secret or real))
    args = ["token", "create", "--type", "awskms", "--name", name, "--region", emu.region,
            "--access-key-id", akid, "--endpoint", emu.url, "--ca-file", emu.ca_file,
            "--auth-file", sec]
    for k, v in fields.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return ws.ctok(*args)


def uri(alias, token="kms"):
    return "ctok:token=%s;object=%s" % (token, alias)


def pubkey(ws, alias, token="kms"):
    """The key's public half as ctok exports it (openssl pkey -pubout)."""
    out = ws.path("%s-%s.pub.pem" % (token, alias))
    assert_ok(ws.ossl("pkey", "-in", uri(alias, token), "-pubout", "-out", out))
    return out


def test_tool_creates_the_token_and_manages_keys(ws, kms_emu):
    p = assert_ok(tool_token(ws, kms_emu))
    assert re.search(r"Created token 'kms' \(awskms, id [0-9a-f-]{36}\)", p.stdout), describe(p)
    entry = ws.load_config()["tokens"][0]
    assert entry["type"] == "awskms" and entry["endpoint"] == kms_emu.url
    rsa, p256, p384 = unique("rsa"), unique("p256"), unique("p384")
    for alias, spec in ((rsa, "rsa:2048"), (p256, "ec:P-256"), (p384, "ec:P-384")):
        assert_ok(ws.ctok("key", "generate", "kms", alias, spec))
    listing = assert_ok(ws.ctok("key", "list", "kms")).stdout
    for alias, kind in ((rsa, "RSA-2048"), (p256, "EC P-256"), (p384, "EC P-384")):
        assert re.search(r"^%s\s+%s" % (alias, kind), listing, re.M), listing
        p = assert_ok(ws.ctok("key", "test", "kms", alias))
        assert "test passed" in p.stdout, describe(p)
    # an alias that exists is refused before any key is made
    before = kms_emu.requests().get("CreateKey", 0)
    assert_tool_error(ws.ctok("key", "generate", "kms", rsa, "rsa:2048"), "duplicate alias",
                      "alias '%s' exists already" % rsa)
    assert kms_emu.requests().get("CreateKey", 0) == before
    # removal schedules the deletion and says when; the key is gone from the list
    p = assert_ok(ws.ctok("key", "remove", "kms", p384))
    when = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=30)).date()
    assert "deletion scheduled for %s (30-day waiting period" % when.isoformat() in p.stdout, \
        describe(p)
    listing = assert_ok(ws.ctok("key", "list", "kms")).stdout
    assert not re.search(r"^%s\s" % p384, listing, re.M), listing
    assert re.search(r"^%s\s" % rsa, listing, re.M), listing


def test_tool_creates_a_role_token_without_any_code(ws, kms_emu):
    kms_emu.set_role("ctok-tool-role", ttl_seconds=3600)
    kms_emu.clear_counters()
    p = assert_ok(ws.ctok("token", "create", "--type", "awskms", "--name", "kms", "--region",
                          kms_emu.region, "--auth-method", "role", "--imds-endpoint",
                          kms_emu.imds_url, "--endpoint", kms_emu.url, "--ca-file",
                          kms_emu.ca_file, input=""))
    assert "Created token 'kms' (awskms" in p.stdout, describe(p)
    assert kms_emu.requests().get("ListAliases") == 1  # the role's access, proven
    alias = unique("rolekey")
    assert_ok(ws.ctok("key", "generate", "kms", alias, "ec:P-256"))
    assert "test passed" in assert_ok(ws.ctok("key", "test", "kms", alias)).stdout


def test_unsupported_key_spec_is_refused_with_the_supported_ones(ws, kms_emu):
    assert_ok(tool_token(ws, kms_emu))
    assert_tool_error(ws.ctok("key", "generate", "kms", unique("ed"), "ed25519"),
                      "rsa:2048, rsa:3072, rsa:4096, ec:P-256, ec:P-384 or ec:P-521")


def test_deletion_window_is_the_configured_one(ws, kms_emu):
    assert_ok(tool_token(ws, kms_emu, deletion_window_days=7))
    alias = unique("short")
    assert_ok(ws.ctok("key", "generate", "kms", alias, "ec:P-256"))
    p = assert_ok(ws.ctok("key", "remove", "kms", alias))
    assert "(7-day waiting period" in p.stdout, describe(p)


def test_token_create_refuses_credentials_that_do_not_work(ws, kms_emu):
    line = assert_tool_error(tool_token(ws, kms_emu, secret="not-the-secret-key-0000000000"),
                             "token 'kms'")
    assert "credentials" in line.lower() or "signature" in line.lower(), line
    assert not ws.config.exists() or not ws.load_config().get("tokens")


@pytest.mark.parametrize("field,value,says", [
    ("region", None, "needs \"region\""),
    ("auth_method", "password", "\"auth_method\" must be keys or role"),
    ("endpoint", "http://127.0.0.1:1", "must be an https:// URL"),
    ("timeout_ms", 5, "\"timeout_ms\" must be an integer from 100 to 600000"),
    ("max_retries", 11, "\"max_retries\" must be an integer from 0 to 10"),
    ("deletion_window_days", 31, "\"deletion_window_days\" must be an integer from 7 to 30"),
    ("access_key_id", None, "needs \"access_key_id\""),
])
def test_config_errors_name_the_token_and_field(ws, kms_emu, field, value, says):
    awskms_token(ws, kms_emu, **{field: value})
    line = assert_tool_error(ws.ctok("key", "list", "kms"), "configuration error", says)
    assert "token 'kms'" in line, line


@pytest.mark.parametrize("spec,md,opts", [
    ("RSA_2048", "sha256", ()),
    ("RSA_2048", "sha384", ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                            "rsa_pss_saltlen:digest")),
    ("RSA_3072", "sha512", ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                            "rsa_pss_saltlen:digest")),
    ("ECC_NIST_P256", "sha256", ()),
    ("ECC_NIST_P384", "sha384", ()),
])
def test_sign_with_uri_verifies_with_the_exported_public_key(ws, kms_emu, spec, md, opts):
    awskms_token(ws, kms_emu)
    alias = unique("k")
    key_id = kms_emu.create_key(spec, alias=alias)
    pub = pubkey(ws, alias)
    # the public key ctok hands out is the service's
    der = assert_ok(ws.ossl("pkey", "-pubin", "-in", pub, "-outform", "DER", providers=None,
                            text=False)).stdout
    assert der == kms_emu.public_key_der(key_id)
    p, sig, dg = sign_digest(ws, uri(alias), *opts, md=md)
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, *opts, md=md, certin=False))


@pytest.mark.parametrize("providers", [DEFAULT_FIRST, THREE_CNF])
def test_kms_signing_in_every_provider_order(ws, kms_emu, providers):
    # THREE_CNF activates ctok through openssl.cnf: libcurl's own TLS to the service runs
    # through an OpenSSL that has ctok loaded, and must neither recurse nor deadlock
    awskms_token(ws, kms_emu)
    alias = unique("order")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    pub = pubkey(ws, alias)
    p, sig, dg = sign_digest(ws, uri(alias), providers=providers)
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))


def test_pss_with_another_salt_length_is_refused_clearly(ws, kms_emu):
    awskms_token(ws, kms_emu)
    alias = unique("pss")
    kms_emu.create_key("RSA_2048", alias=alias)
    before = kms_emu.requests().get("Sign", 0)
    p, _, _ = sign_digest(ws, uri(alias), "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                          "rsa_pss_saltlen:max")
    assert_fails_with(p, "token 'kms': key 'alias/%s'" % alias,
                      "salt length = digest length (32), not 222")
    assert kms_emu.requests().get("Sign", 0) == before


def test_ecdsa_with_another_hash_than_the_curves_is_refused_clearly(ws, kms_emu):
    awskms_token(ws, kms_emu)
    alias = unique("p384")
    kms_emu.create_key("ECC_NIST_P384", alias=alias)
    p, _, _ = sign_digest(ws, uri(alias), md="sha256")
    assert_fails_with(p, "token 'kms': key 'alias/%s'" % alias, "only SHA384 digests")


def test_csr_and_ca_signing_with_kms_keys(ws, kms_emu):
    awskms_token(ws, kms_emu)
    ca, leaf = unique("ca"), unique("leaf")
    kms_emu.create_key("RSA_2048", alias=ca)
    kms_emu.create_key("ECC_NIST_P256", alias=leaf)
    ca_cert, csr, cert = ws.path("ca.pem"), ws.path("leaf.csr"), ws.path("leaf.pem")
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", uri(ca), "-subj", "/CN=KMS CA", "-days",
                      "2", "-out", ca_cert))
    assert_ok(ws.ossl("req", "-new", "-key", uri(leaf), "-subj", "/CN=leaf", "-out", csr))
    assert_ok(ws.ossl("req", "-in", csr, "-verify", "-noout", providers=None))
    assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", uri(ca),
                      "-CAcreateserial", "-days", "1", "-out", cert))
    p = assert_ok(ws.ossl("verify", "-CAfile", ca_cert, cert, providers=None))
    assert "OK" in p.stdout


@pytest.mark.parametrize("spec", ["RSA_2048", "ECC_NIST_P256"])
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_tls_server_on_a_kms_key_and_its_bound_certificate(ws, kms_emu, spec, version):
    alias = unique("tls")
    kms_emu.create_key(spec, alias=alias)
    certs = ws.path("certs")
    certs.mkdir()
    awskms_token(ws, kms_emu, certificates=[str(certs)])
    cert = certs / "server.pem"
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", uri(alias), "-subj", "/CN=127.0.0.1",
                      "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-out", cert))
    # the certificate is the key's, found through the token as an HSM's would be
    p = assert_ok(ws.ossl("storeutl", "-certs", uri(alias)))
    assert "Total found: 1" in p.stdout, describe(p)
    kms_emu.clear_counters()
    with TlsServer(ws, uri(alias), uri(alias), version) as server:
        server.wait_ready()
        client = tls_client(ws, server.port, cert, version)
        assert_handshake(client, server)
    req = kms_emu.requests()
    assert req.get("Sign", 0) >= 1 and "ListAliases" not in req, req


def test_role_credentials_are_fetched_and_refreshed(ws, kms_emu):
    alias = unique("role")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    # credentials that expire 2 s after IMDS hands them out; 40 signatures of >= 100 ms each
    # outlive them: a run that did not refresh them would fail with expired credentials
    awskms_token(ws, kms_emu, auth_method="role", role_ttl=2)
    kms_emu.clear_counters()
    kms_emu.latency(100)
    try:
        p, kv = sign_loop(ws, sign_loop_binary(ws.root), "sign", uri(alias), "1", "40")
    finally:
        kms_emu.latency(0)
    assert_ok(p)
    assert kv.get("ok") == "40", describe(p)
    imds = kms_emu.imds_requests()
    fetched = imds.get("GET /latest/meta-data/iam/security-credentials/ctok-kms-role", 0)
    assert fetched >= 2, imds


def test_each_public_key_is_fetched_once_per_process(ws, tmp_path):
    # an account of its own: exactly these keys
    with KmsEmulator(tmp_path / "own-account", on_secret=register_secret) as emu:
        awskms_token(ws, emu)
        aliases = ["a", "b", "c"]
        for a, spec in zip(aliases, ("RSA_2048", "ECC_NIST_P256", "ECC_NIST_P384")):
            emu.create_key(spec, alias=a)
        emu.create_key("ECC_NIST_P256")  # a key without an alias is no object
        emu.clear_counters()
        p = assert_ok(ws.ossl("storeutl", "-keys", "ctok:token=kms"))
        assert "Total found: 3" in p.stdout, describe(p)
        req = emu.requests()
    # listed once; each key described once, though listed and then loaded as a private key
    assert req == {"ListAliases": 1, "GetPublicKey": 3}, req


def test_listing_follows_every_page_and_skips_what_is_no_key(ws, tmp_path):
    with KmsEmulator(tmp_path / "big-account", on_secret=register_secret) as emu:
        awskms_token(ws, emu)
        aliases = ["p%03d" % i for i in range(101)]  # ctok asks 100 a page: two pages
        for a in aliases:
            emu.create_key("ECC_NIST_P256", alias=a)
        emu.create_key("RSA_2048", usage="ENCRYPT_DECRYPT", alias="aws/ebs")  # AWS's own
        gone = emu.create_key("ECC_NIST_P256", alias="gone")
        emu.set_key_state(gone, "PendingDeletion")
        emu.clear_counters()
        p = assert_ok(ws.ctok("key", "list", "kms", "--json"))
        req = emu.requests()
    import json

    listed = sorted(k["alias"] for k in json.loads(p.stdout))
    assert listed == aliases, listed
    assert req.get("ListAliases") == 2, req


def test_one_request_per_signature_after_warm_up(ws, kms_emu):
    awskms_token(ws, kms_emu)
    aliases = [unique("loop") for _ in range(2)]
    for a in aliases:
        kms_emu.create_key("ECC_NIST_P256", alias=a)
    binary = sign_loop_binary(ws.root)
    uris = "|".join(uri(a) for a in aliases)

    def run_loop(count):
        kms_emu.clear_counters()
        p, kv = sign_loop(ws, binary, "sign", uris, "4", str(count), timeout=300)
        assert_ok(p)
        assert kv.get("ok") == str(count) and kv.get("failed") == "0", describe(p)
        req = kms_emu.requests()
        return req.pop("Sign", 0), req, kms_emu.connections()

    signs, warm_up, _ = run_loop(4)
    assert signs == 4
    signs, other, conns = run_loop(1000)
    # exactly one request per signature: what else the process asked is the warm-up's,
    # whatever the number of signatures
    assert signs == 1000, other
    assert other == warm_up, (other, warm_up)
    # a key named by its alias is looked up alone: one GetPublicKey, never a listing
    assert other == {"GetPublicKey": len(aliases)}, other
    assert conns <= 4, conns


# ---- each failure its own clear line, promptly


def timed_sign(ws, alias, env=None, limit=20):
    t0 = time.monotonic()
    p, _, _ = sign_digest(ws, uri(alias), env=env)
    took = time.monotonic() - t0
    assert took < limit, "took %.1f s\n%s" % (took, describe(p))
    return p


@pytest.mark.parametrize("fault", ["throttle", "fail5xx", "reset_connections"])
def test_bursts_within_the_retry_budget_are_survived(ws, kms_emu, fault):
    awskms_token(ws, kms_emu, max_retries=3)
    alias = unique("burst")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    pub = pubkey(ws, alias)
    getattr(kms_emu, fault)(2)
    try:
        p, sig, dg = sign_digest(ws, uri(alias))
    finally:
        getattr(kms_emu, fault)(0)
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))


def test_throttling_beyond_the_retry_budget_says_so(ws, kms_emu):
    awskms_token(ws, kms_emu, max_retries=1)
    alias = unique("throttled")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    pubkey(ws, alias)
    kms_emu.throttle(100)
    try:
        p = timed_sign(ws, alias)
    finally:
        kms_emu.throttle(0)
    assert_fails_with(p, "token 'kms'", "throttl")


def test_access_denied_names_token_key_and_cause(ws, kms_emu):
    awskms_token(ws, kms_emu, actions=SEED_ACTIONS - {"Sign"})
    alias = unique("nosign")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    assert_fails_with(timed_sign(ws, alias), "token 'kms'", "alias/%s" % alias,
                      "AccessDeniedException")


def test_invalid_credentials_say_so(ws, kms_emu):
    awskms_token(ws, kms_emu)
    alias = unique("badcred")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    ws.write("kms.aws-secret", register_secret("wrong-secret-access-key-12345678"))
    p = timed_sign(ws, alias)
    assert_fails_with(p, "token 'kms'", "credentials")


def test_unknown_alias_is_not_found(ws, kms_emu):
    awskms_token(ws, kms_emu)
    assert_fails_with(timed_sign(ws, "no-such-alias"), "token 'kms'", "not found")


@pytest.mark.parametrize("state,says", [("Disabled", "Disabled"),
                                        ("PendingDeletion", "pending")])
def test_a_key_that_cannot_be_used_says_why(ws, kms_emu, state, says):
    awskms_token(ws, kms_emu)
    alias = unique("state")
    key_id = kms_emu.create_key("ECC_NIST_P256", alias=alias)
    kms_emu.set_key_state(key_id, state)
    p = timed_sign(ws, alias)
    assert_fails_with(p, "token 'kms'", "alias/%s" % alias, says)


def test_a_key_disabled_while_in_use_fails_its_next_signature_clearly(ws, kms_emu):
    awskms_token(ws, kms_emu)
    alias = unique("later")
    key_id = kms_emu.create_key("RSA_2048", alias=alias)
    assert_ok(sign_digest(ws, uri(alias))[0])
    kms_emu.set_key_state(key_id, "Disabled")
    # a new process knows the key only from the service: it must say why it cannot use it
    assert_fails_with(timed_sign(ws, alias), "token 'kms'", "Disabled")


def test_connection_refused_is_a_network_error(ws, kms_emu):
    awskms_token(ws, kms_emu, endpoint="https://127.0.0.1:%d" % free_port(), max_retries=1)
    assert_fails_with(timed_sign(ws, "any"), "token 'kms'", "network")


def test_time_out_is_honoured(ws, kms_emu):
    awskms_token(ws, kms_emu, timeout_ms=500, max_retries=0)
    alias = unique("slow")
    kms_emu.create_key("ECC_NIST_P256", alias=alias)
    kms_emu.latency(3000)
    try:
        p = timed_sign(ws, alias, limit=10)
    finally:
        kms_emu.latency(0)
    assert_fails_with(p, "token 'kms'", "timed out")


def test_debug_output_shows_no_secret(ws, kms_emu):
    awskms_token(ws, kms_emu)
    alias = unique("dbg")
    kms_emu.create_key("RSA_2048", alias=alias)
    p, _, _ = sign_digest(ws, uri(alias), debug=True)
    assert_ok(p)
    assert "ctok[" in p.stderr, describe(p)  # tracing was on
    assert_no_secret(p)
    p = ws.ctok("key", "list", "kms", env={"CTOK_DEBUG": "1"})
    assert_ok(p)
    assert_no_secret(p)


def test_alias_failure_after_create_key_schedules_the_orphan_key(ws, kms_emu):
    assert_ok(tool_token(ws, kms_emu, actions=SEED_ACTIONS - {"CreateAlias"}))
    kms_emu.clear_counters()
    assert_tool_error(ws.ctok("key", "generate", "kms", unique("orphan"), "ec:P-256"),
                      "AccessDeniedException")
    req = kms_emu.requests()
    assert req.get("CreateKey") == 1 and req.get("ScheduleKeyDeletion") == 1, req


def test_decrypt_with_an_encryption_key_when_granted(ws, kms_emu):
    awskms_token(ws, kms_emu, actions=SEED_ACTIONS | {"Decrypt"})
    alias = unique("enc")
    kms_emu.create_key("RSA_2048", usage="ENCRYPT_DECRYPT", alias=alias)
    pub = pubkey(ws, alias)
    secret = ws.write("plain.bin", b"a session key of 32 bytes.......")
    ct = ws.path("ct.bin")
    oaep = ("-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
            "rsa_mgf1_md:sha256")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", secret, "-out", ct,
                      *oaep, providers=None))
    out = ws.path("out.bin")
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", uri(alias), "-in", ct, "-out", out,
                      *oaep))
    assert out.read_bytes() == secret.read_bytes()
    # PKCS#1 v1.5 decryption is no KMS algorithm: refused before any call
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", uri(alias), "-in", ct, "-out", out)
    assert_fails_with(p, "token 'kms': key 'alias/%s'" % alias, "only RSA-OAEP")


def test_decrypt_with_a_signing_key_is_refused_by_its_usage_before_any_call(ws, kms_emu):
    awskms_token(ws, kms_emu, actions=SEED_ACTIONS | {"Decrypt"})
    alias = unique("signer")
    kms_emu.create_key("RSA_2048", alias=alias)  # KeyUsage SIGN_VERIFY
    ct = ws.path("ct.bin")
    oaep = ("-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
            "rsa_mgf1_md:sha256")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", pubkey(ws, alias), "-in",
                      ws.write("p.bin", b"x" * 32), "-out", ct, *oaep, providers=None))
    kms_emu.clear_counters()
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", uri(alias), "-in", ct, "-out", ws.path("o"),
                *oaep)
    assert_fails_with(p, "token 'kms', key '%s'" % alias, "usage on the token does not include "
                      "decrypt")
    assert kms_emu.requests().get("Decrypt", 0) == 0, kms_emu.requests()


@pytest.fixture
def nginx_root():
    """A folder under /tmp the worker user can reach (pytest's own are root's, 0700)."""
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp(prefix="ctok-kms-nginx-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


class KmsWorld:
    """What appfixtures.Nginx and its clients need of a world, for a KMS key: a folder the
    worker user can enter, the emulator's CA where it can read it (libcurl in the worker
    verifies the service with it), the server certificate and the key-reference PEM."""

    def __init__(self, root, build, emu):
        import os
        import shutil
        from ctoktest import Workspace

        self.root = root
        os.chmod(root, 0o755)
        self.ws = Workspace(root, build)
        self.ca = root / "kms-ca.pem"
        shutil.copy(emu.ca_file, self.ca)
        os.chmod(self.ca, 0o644)
        self.cnf = root / "ctok.cnf"
        self.cnf.write_text(
            "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n"
            "[provider_sect]\ndefault = default_sect\nctok = ctok_sect\n"
            "[default_sect]\nactivate = 1\n[ctok_sect]\nmodule = %s\nctok-config = %s\n"
            "activate = 1\n" % (build / "ctok.so", self.ws.config))
        self._n = 0

    def new_dir(self, prefix):
        import os

        self._n += 1
        d = self.root / ("%s-%d" % (prefix, self._n))
        d.mkdir()
        os.chmod(d, 0o755)
        return d

    def app_env(self, extra=None):
        env = self.ws.env(extra, config=False)
        env["OPENSSL_CONF"] = str(self.cnf)
        return env

    def plain_env(self):
        return self.ws.env(config=False)


@pytest.mark.parametrize("spec,proto", [("RSA_2048", "TLSv1.3"), ("ECC_NIST_P256", "TLSv1.2")])
def test_nginx_workers_serve_https_with_a_kms_key_reference(nginx_root, build, kms_emu, spec,
                                                            proto):
    from appfixtures import Nginx, assert_curl_ok, curl

    w = KmsWorld(nginx_root, build, kms_emu)
    awskms_token(w.ws, kms_emu, ca_file=str(w.ca))
    alias = unique("ngx")
    kms_emu.create_key(spec, alias=alias)
    cert = w.root / "server.pem"
    assert_ok(w.ws.ossl("req", "-new", "-x509", "-key", uri(alias), "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                        "-out", cert))
    cert.chmod(0o644)
    w.ca.write_text(w.ca.read_text() + cert.read_text())  # curl trusts the self-signed leaf
    ref = w.ws.write("server.ref.pem", assert_ok(w.ws.ctok("ref", "kms", alias)).stdout, 0o644)
    kms_emu.clear_counters()
    with Nginx(w, cert, ref, workers=1) as ngx:
        c = curl(w, ngx.port, "--tlsv1.2" if proto == "TLSv1.2" else "--tlsv1.3", "--tls-max",
                 proto[4:])
        log = ngx.error_log()
    assert_curl_ok(c, proto, "nginx worker")
    assert "exited on signal" not in log, log
    assert kms_emu.requests().get("Sign", 0) >= 1


def test_discovery_lists_the_accounts_aliases_and_generate_prints_the_whole_key_id(ws, kms_emu):
    """`ctok slots --token` logs in with the token's own auth source (nothing of a KMS account
    shows without credentials) and lists aliases with their key ids; `key generate` prints the
    whole key id (36 characters: 72 hex digits), not the first 20 bytes."""
    assert_ok(tool_token(ws, kms_emu))
    alias = unique("disc")
    p = assert_ok(ws.ctok("key", "generate", "kms", alias, "ec:P-256"))
    key_id = kms_emu.aliases()["alias/" + alias]
    assert "(id %s)" % key_id.encode().hex() in p.stdout, describe(p)
    p = assert_ok(ws.ctok("slots", "--token", "kms"))
    assert re.search(r"^%s\s+%s\s+ECC_NIST_P256\s+SIGN_VERIFY" % (alias, key_id), p.stdout,
                     re.M), describe(p)
