"""The azurekv token type end to end: the ctok tool and the real openssl binary, s_server and
nginx against the Key Vault + Azure AD emulator (tests/akv_emulator.py) over TLS.

A user's story each: create the token with the tool (client secret, certificate with the
binding key in a soft keystore or a SoftHSM token, managed identity), generate/list/test/remove
keys, sign and verify with ctok: URIs (a version pinned as object=name/version), CSRs and CA
signing, TLS servers on a vault key and its vault certificate, one HTTP request per signature
and one token request per token lifetime after warm-up, and one clear line for each way a call
can fail."""

import json
import re
import time

import pytest

from akvfixtures import akv_client, akv_emu, azurekv_token  # noqa: F401
from ctoktest import (TlsServer, assert_fails_with, assert_handshake, assert_no_secret,
                      assert_ok, assert_verified, describe, free_port, register_secret,
                      sign_digest, tls_client, verify_digest)
from p11fixtures import SOFTHSM_LIB, fresh_hsm, sign_loop, sign_loop_binary  # noqa: F401

_n = [0]


def unique(prefix):
    """Key names are per emulator (module): each test takes its own."""
    _n[0] += 1
    return "%s%d" % (prefix, _n[0])


def uri(name, token="akv", type=None):
    return "ctok:token=%s;object=%s%s" % (token, name, ";type=" + type if type else "")


def pubkey(ws, name, token="akv"):
    """The key's public half as ctok exports it (openssl pkey -pubout)."""
    out = ws.path("%s-%s.pub.pem" % (token, name.replace("/", "_")))
    assert_ok(ws.ossl("pkey", "-in", uri(name, token), "-pubout", "-out", out))
    return out


def tool_token(ws, emu, name="akv", auth_method="secret", secret=None, **fields):
    """`ctok token create --type azurekv` as a user runs it; returns the tool's process."""
    args = ["token", "create", "--type", "azurekv", "--name", name, "--vault-url",
            emu.vault_url, "--tenant-id", emu.tenant_id, "--login-url", emu.authority,
            "--ca-file", emu.ca_file, "--auth-method", auth_method]
    if auth_method == "secret":
        cid, real = akv_client(emu)
        args += ["--client-id", cid, "--auth-file",
                 ws.write("%s.secret" % name, register_secret(secret or real))]
    for k, v in fields.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return ws.ctok(*args)


# ---- the tool


def test_tool_creates_the_token_and_manages_keys(ws, akv_emu):
    p = assert_ok(tool_token(ws, akv_emu))
    assert re.search(r"Created token 'akv' \(azurekv", p.stdout), describe(p)
    entry = ws.load_config()["tokens"][0]
    assert entry["type"] == "azurekv" and entry["vault_url"] == akv_emu.vault_url
    rsa, p256, p384 = unique("rsa"), unique("p256"), unique("p384")
    for name, spec in ((rsa, "rsa:2048"), (p256, "ec:P-256"), (p384, "ec:P-384")):
        assert_ok(ws.ctok("key", "generate", "akv", name, spec))
    # Key Vault's create would make a new version: an existing name is refused first
    before = akv_emu.requests().get("create_key", 0)
    assert_fails_with(ws.ctok("key", "generate", "akv", rsa, "rsa:2048"), "token 'akv'",
                      "key '%s' exists already" % rsa)
    assert akv_emu.requests().get("create_key", 0) == before
    p = assert_ok(ws.ctok("key", "list", "akv"))
    for name in (rsa, p256, p384):
        assert name in p.stdout, describe(p)
        assert_ok(ws.ctok("key", "test", "akv", name))
    p = assert_ok(ws.ctok("key", "remove", "akv", p384))
    assert re.search(r"soft-deleted; purge scheduled for \d{4}-\d\d-\d\d \(recovery id \S+",
                     p.stdout + p.stderr), describe(p)
    assert p384 not in assert_ok(ws.ctok("key", "list", "akv")).stdout


def test_tool_creates_a_managed_identity_token_without_any_code(ws, akv_emu):
    cid = "ctok-mi-" + unique("x")
    akv_emu.add_client(cid)
    akv_emu.enable_managed_identity(cid)
    p = assert_ok(tool_token(ws, akv_emu, auth_method="managed_identity", client_id=cid,
                             mi_endpoint=akv_emu.mi_url))
    assert ws.load_config()["tokens"][0]["auth_method"] == "managed_identity", describe(p)
    name = unique("mi")
    akv_emu.create_key(name, kty="EC", crv="P-256")
    pub = pubkey(ws, name)
    p, sig, dg = sign_digest(ws, uri(name))
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))


def test_token_create_refuses_a_secret_azure_ad_does_not_take(ws, akv_emu):
    p = tool_token(ws, akv_emu, secret="not-the-client-secret-0123456789")
    assert_fails_with(p, "token 'akv'", "invalid_client")


@pytest.mark.parametrize("field,value,says", [
    ("auth_method", "password", "must be one of secret, certificate, managed_identity"),
    ("vault_type", "gold", "must be one of standard, premium"),
    ("vault_url", "http://127.0.0.1:1", "\"vault_url\" must be an https:// URL"),
    ("vault_url", "https://" + "v" * 292 + ".vault.azure.net", "is longer than 299 characters"),
    ("timeout_ms", 5, "\"timeout_ms\" must be an integer from 100"),
    ("binding", "ctok:token=x;object=y", "is for auth_method certificate only"),
])
def test_config_errors_name_the_token_and_field(ws, akv_emu, field, value, says):
    azurekv_token(ws, akv_emu)
    conf = ws.load_config()
    conf["tokens"][0][field] = value
    ws.save_config(conf)
    assert_fails_with(ws.ctok("key", "list", "akv"), "token 'akv'", says)


# ---- certificate authentication: the binding key in another token


def bound_token(ws, emu, key_token, name):
    """An azurekv token whose client assertion is signed by key_token's RSA key `name` (with
    its self-signed certificate, registered with the app)."""
    ws.add_key(key_token, name, "rsa:2048")
    cert_pem = key_token.cert(name).read_text()
    return azurekv_token(ws, emu, auth_method="certificate", cert_pem=cert_pem,
                         binding="ctok:token=%s;object=%s" % (key_token.name, name))


def sign_and_verify(ws, emu, kty="RSA", crv=None):
    key = unique("vault")
    emu.create_key(key, kty=kty, crv=crv)
    pub = pubkey(ws, key)
    p, sig, dg = sign_digest(ws, uri(key))
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))


def test_certificate_auth_with_the_binding_key_in_a_soft_keystore(ws, akv_emu):
    bound_token(ws, akv_emu, ws.create_token("soft"), "app")
    before = akv_emu.token_requests()
    sign_and_verify(ws, akv_emu)
    assert akv_emu.token_requests() > before


def test_certificate_auth_with_the_binding_key_in_softhsm(fresh_hsm, akv_emu):
    ws = fresh_hsm
    ws.hsm.init_token("bind")
    hsm = ws.create_p11_token("hsm", SOFTHSM_LIB, "label", "bind")
    bound_token(ws, akv_emu, hsm, "app")
    sign_and_verify(ws, akv_emu, kty="EC", crv="P-256")


def test_an_assertion_signed_by_another_key_is_refused(ws, akv_emu):
    soft = ws.create_token("soft")
    ws.add_key(soft, "other", "rsa:2048")
    registered = akv_emu.create_certificate(unique("registered"))  # not soft's key
    azurekv_token(ws, akv_emu, auth_method="certificate", cert_pem=registered,
                  binding="ctok:token=soft;object=other")
    p, _, _ = sign_digest(ws, uri("anything"))
    assert_fails_with(p, "token 'akv'", "invalid_client")


def test_a_binding_naming_the_token_itself_is_refused(ws, akv_emu):
    soft = ws.create_token("soft")
    ws.add_key(soft, "app", "rsa:2048")
    azurekv_token(ws, akv_emu, auth_method="certificate", cert_pem=soft.cert("app").read_text(),
                  binding="ctok:token=akv;object=app")
    p, _, _ = sign_digest(ws, uri("anything"))
    assert_fails_with(p, "token 'akv'", "must name another token")


# ---- signatures


@pytest.mark.parametrize("kty,size,crv,md,opts", [
    ("RSA", 2048, None, "sha256", ()),
    ("RSA", 2048, None, "sha384", ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                                   "rsa_pss_saltlen:digest")),
    ("RSA-HSM", 3072, None, "sha512", ("-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                                       "rsa_pss_saltlen:digest")),
    ("EC", None, "P-256", "sha256", ()),
    ("EC-HSM", None, "P-384", "sha384", ()),
    ("EC", None, "P-521", "sha512", ()),
])
def test_sign_with_uri_verifies_with_the_exported_public_key(ws, akv_emu, kty, size, crv, md,
                                                             opts):
    azurekv_token(ws, akv_emu)
    name = unique("k")
    akv_emu.create_key(name, kty=kty, size=size or 2048, crv=crv)
    pub = pubkey(ws, name)
    # the public key ctok hands out is the vault's
    assert open(pub, "rb").read() == akv_emu.public_key_pem(name)
    p, sig, dg = sign_digest(ws, uri(name), *opts, md=md)
    assert_ok(p)
    # ES* come back r || s from the vault: what leaves ctok is DER, which openssl verifies
    assert_verified(verify_digest(ws, pub, dg, sig, *opts, md=md, certin=False))


def test_pss_with_another_salt_length_is_refused_clearly(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("pss")
    akv_emu.create_key(name)
    pubkey(ws, name)
    before = akv_emu.requests().get("sign", 0)
    p, _, _ = sign_digest(ws, uri(name), "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                          "rsa_pss_saltlen:max")
    assert_fails_with(p, "token 'akv': key '%s'" % name,
                      "Key Vault signs RSA-PSS only with salt length = digest length (32), not 222")
    assert akv_emu.requests().get("sign", 0) == before


def test_a_version_is_pinned_as_name_slash_version(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("rot")
    old = akv_emu.create_key(name, kty="EC", crv="P-256").rstrip("/").rsplit("/", 1)[1]
    old_pub = pubkey(ws, "%s/%s" % (name, old))
    akv_emu.create_key(name, kty="EC", crv="P-256")  # the new current version
    cur_pub = pubkey(ws, name)
    assert open(cur_pub, "rb").read() != open(old_pub, "rb").read()
    p, sig, dg = sign_digest(ws, uri("%s/%s" % (name, old)))
    assert_ok(p)
    assert_verified(verify_digest(ws, old_pub, dg, sig, certin=False))
    p, sig, dg = sign_digest(ws, uri(name))
    assert_ok(p)
    assert_verified(verify_digest(ws, cur_pub, dg, sig, certin=False))


@pytest.mark.parametrize("opts", [
    ("-pkeyopt", "rsa_padding_mode:oaep"),  # RSA-OAEP (SHA-1)
    ("-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
     "rsa_mgf1_md:sha256"),  # RSA-OAEP-256
    (),  # RSA1_5
])
def test_decrypt_with_a_key_whose_ops_allow_it(ws, akv_emu, opts):
    azurekv_token(ws, akv_emu)
    name = unique("enc")
    akv_emu.create_key(name, ops=["sign", "verify", "encrypt", "decrypt"])
    pub = pubkey(ws, name)
    secret = ws.write("plain.bin", b"a session key of 32 bytes.......")
    ct, out = ws.path("ct.bin"), ws.path("out.bin")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in", secret, "-out", ct,
                      *opts, providers=None))
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", uri(name), "-in", ct, "-out", out, *opts))
    assert out.read_bytes() == secret.read_bytes()


def test_decrypt_with_a_sign_only_key_is_refused_before_any_call(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("signonly")
    akv_emu.create_key(name, ops=["sign", "verify"])
    pub = pubkey(ws, name)
    ct = ws.path("ct.bin")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", pub, "-in",
                      ws.write("p.bin", b"x" * 32), "-out", ct, providers=None))
    before = akv_emu.requests().get("decrypt", 0)
    p = ws.ossl("pkeyutl", "-decrypt", "-inkey", uri(name), "-in", ct, "-out", ws.path("o"))
    # the key's usage (its key_ops) as the token layer has it refuses before the backend
    assert_fails_with(p, "token 'akv', key '%s'" % name, "usage on the token does not include "
                      "decrypt")
    assert akv_emu.requests().get("decrypt", 0) == before


def test_csr_and_ca_signing_with_vault_keys(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    ca, leaf = unique("ca"), unique("leaf")
    akv_emu.create_key(ca)
    akv_emu.create_key(leaf, kty="EC", crv="P-256")
    ca_cert, csr, cert = ws.path("ca.pem"), ws.path("leaf.csr"), ws.path("leaf.pem")
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", uri(ca), "-subj", "/CN=AKV CA", "-days",
                      "2", "-out", ca_cert))
    assert_ok(ws.ossl("req", "-new", "-key", uri(leaf), "-subj", "/CN=leaf", "-out", csr))
    assert_ok(ws.ossl("req", "-in", csr, "-verify", "-noout", providers=None))
    assert_ok(ws.ossl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", uri(ca),
                      "-CAcreateserial", "-days", "1", "-out", cert))
    p = assert_ok(ws.ossl("verify", "-CAfile", ca_cert, cert, providers=None))
    assert "OK" in p.stdout


@pytest.mark.parametrize("kty,crv", [("RSA", None), ("EC", "P-256")])
@pytest.mark.parametrize("version", ["-tls1_3", "-tls1_2"])
def test_tls_server_on_a_vault_key_and_its_vault_certificate(ws, akv_emu, kty, crv, version):
    azurekv_token(ws, akv_emu)
    name = unique("tls")
    cert_pem = akv_emu.create_certificate(name, kty=kty, crv=crv)
    cafile = ws.write("%s.pem" % name, cert_pem, mode=0o644)
    # the certificate is the vault's, found through the token under its key's name
    p = assert_ok(ws.ossl("storeutl", "-certs", uri(name)))
    assert "Total found: 1" in p.stdout, describe(p)
    akv_emu.clear_counters()
    with TlsServer(ws, uri(name), uri(name, type="cert"), version) as server:
        server.wait_ready()
        client = tls_client(ws, server.port, cafile, version)
        assert_handshake(client, server)
    req = akv_emu.requests()
    assert req.get("sign", 0) >= 1 and "list_keys" not in req, req


def test_nginx_workers_serve_https_with_a_vault_key_reference(build, akv_emu):
    from appfixtures import Nginx, assert_curl_ok, curl
    import shutil
    import tempfile
    from pathlib import Path
    from test_kms_backend import KmsWorld

    root = Path(tempfile.mkdtemp(prefix="ctok-akv-nginx-", dir="/tmp"))
    try:
        w = KmsWorld(root, build, akv_emu)
        azurekv_token(w.ws, akv_emu, ca_file=str(w.ca))
        name = unique("ngx")
        akv_emu.create_key(name, kty="EC", crv="P-256")
        cert = w.root / "server.pem"
        assert_ok(w.ws.ossl("req", "-new", "-x509", "-key", uri(name), "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "2",
                            "-out", cert))
        cert.chmod(0o644)
        w.ca.write_text(w.ca.read_text() + cert.read_text())  # curl trusts the leaf
        ref = w.ws.write("server.ref.pem", assert_ok(w.ws.ctok("ref", "akv", name)).stdout,
                         0o644)
        akv_emu.clear_counters()
        with Nginx(w, cert, ref, workers=1) as ngx:
            c = curl(w, ngx.port, "--tlsv1.3")
            log = ngx.error_log()
        assert_curl_ok(c, "TLSv1.3", "nginx worker")
        assert "exited on signal" not in log, log
        assert akv_emu.requests().get("sign", 0) >= 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_one_request_per_signature_and_one_token_per_lifetime_after_warm_up(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    names = [unique("loop") for _ in range(2)]
    for n in names:
        akv_emu.create_key(n, kty="EC", crv="P-256")
    binary = sign_loop_binary(ws.root)
    uris = "|".join(uri(n) for n in names)

    def run_loop(count):
        akv_emu.clear_counters()
        p, kv = sign_loop(ws, binary, "sign", uris, "4", str(count), timeout=300)
        assert_ok(p)
        assert kv.get("ok") == str(count) and kv.get("failed") == "0", describe(p)
        req = akv_emu.requests()
        return (req.pop("sign", 0), req, akv_emu.token_requests(), akv_emu.connections())

    signs, warm_up, _, _ = run_loop(4)
    assert signs == 4
    signs, other, tokens, conns = run_loop(1000)
    # exactly one request per signature: the rest is the warm-up's, whatever the count
    assert signs == 1000, other
    assert other == warm_up, (other, warm_up)
    # a key named by its name is looked up alone: one GET each, never a listing
    assert other.get("get_key") == len(names) and "list_keys" not in other, other
    assert tokens == 1, tokens  # one access token, shared by the four threads
    assert conns <= 4 + 1, conns  # a connection per thread, and Azure AD's


def test_an_expired_access_token_is_refreshed_without_a_failure(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("ttl")
    akv_emu.create_key(name, kty="EC", crv="P-256")
    binary = sign_loop_binary(ws.root)
    # tokens that live 2 s: each is refreshed before it expires, or after a 401 (once)
    akv_emu.token_ttl(2)
    akv_emu.latency(100)  # 40 signatures: 4 s at least
    try:
        akv_emu.clear_counters()
        p, kv = sign_loop(ws, binary, "sign", uri(name), "1", "40", timeout=120)
    finally:
        akv_emu.token_ttl(3600)
        akv_emu.latency(0)
    assert_ok(p)
    assert kv.get("failed") == "0", describe(p)
    assert akv_emu.token_requests() >= 2


# ---- each failure its own clear line, promptly


def timed_sign(ws, name, env=None, limit=20):
    t0 = time.monotonic()
    p, _, _ = sign_digest(ws, uri(name), env=env)
    took = time.monotonic() - t0
    assert took < limit, "took %.1f s\n%s" % (took, describe(p))
    return p


@pytest.mark.parametrize("fault", ["throttle", "fail5xx", "reset_connections"])
def test_bursts_within_the_retry_budget_are_survived(ws, akv_emu, fault):
    azurekv_token(ws, akv_emu, max_retries=3)
    name = unique("burst")
    akv_emu.create_key(name, kty="EC", crv="P-256")
    pub = pubkey(ws, name)
    getattr(akv_emu, fault)(2)
    try:
        p, sig, dg = sign_digest(ws, uri(name))
    finally:
        getattr(akv_emu, fault)(0)
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))


def test_an_invalid_client_secret_says_so(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    ws.write("akv.azure-secret", register_secret("wrong~client~secret~0123456789"))
    assert_fails_with(timed_sign(ws, "any"), "token 'akv'", "invalid_client")


def test_an_unknown_key_is_not_found(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    assert_fails_with(timed_sign(ws, "no-such-key"), "token 'akv'", "no-such-key")


def test_a_disabled_key_says_so(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("off")
    akv_emu.create_key(name, kty="EC", crv="P-256", enabled=False)
    assert_fails_with(timed_sign(ws, name), "token 'akv': key '%s' is disabled" % name)


def test_a_forbidden_operation_names_token_key_and_cause(ws, akv_emu):
    azurekv_token(ws, akv_emu, forbidden=("sign",))
    name = unique("nosign")
    akv_emu.create_key(name, kty="EC", crv="P-256")
    assert_fails_with(timed_sign(ws, name), "token 'akv'", name, "403", "Forbidden")


def test_connection_refused_is_a_network_error(ws, akv_emu):
    azurekv_token(ws, akv_emu, vault_url="https://127.0.0.1:%d" % free_port(), max_retries=1)
    assert_fails_with(timed_sign(ws, "any"), "token 'akv'", "network")


def test_time_out_is_honoured(ws, akv_emu):
    azurekv_token(ws, akv_emu, timeout_ms=500, max_retries=0)
    name = unique("slow")
    akv_emu.create_key(name, kty="EC", crv="P-256")
    akv_emu.latency(3000)
    try:
        p = timed_sign(ws, name, limit=10)
    finally:
        akv_emu.latency(0)
    assert_fails_with(p, "token 'akv'", "timed out")


def test_debug_output_shows_no_secret(ws, akv_emu):
    azurekv_token(ws, akv_emu)
    name = unique("dbg")
    akv_emu.create_key(name)
    p, _, _ = sign_digest(ws, uri(name), debug=True)
    assert_ok(p)
    assert "ctok[" in p.stderr, describe(p)  # tracing was on
    assert_no_secret(p)
    p = ws.ctok("key", "list", "akv", env={"CTOK_DEBUG": "1"})
    assert_ok(p)
    assert_no_secret(p)


def test_discovery_lists_keys_with_their_shape_and_certificate(ws, akv_emu):
    assert_ok(tool_token(ws, akv_emu))
    name, certd = unique("disc"), unique("discc")
    akv_emu.create_key(name, kty="EC", crv="P-384")
    akv_emu.create_certificate(certd)
    p = assert_ok(ws.ctok("slots", "--token", "akv", "--json"))
    found = {e["name"]: e for e in json.loads(p.stdout) if isinstance(e, dict) and "name" in e}
    assert found[name]["kty"] == "EC" and found[name]["crv"] == "P-384", describe(p)
    assert found[name]["enabled"] is True and found[name]["certificate"] is False
    assert found[certd]["key_size"] == 2048 and found[certd]["certificate"] is True
    # the vault's certificates are the token's: the tool lists and exports them
    p = assert_ok(ws.ctok("cert", "list", "akv"))
    assert certd in p.stdout and name not in p.stdout, describe(p)
