"""ctok_az_call and the Azure AD token cache (kms/azcall.c, kms/aad.c over kms/cloud.c and
kms/http.c) against the Key Vault emulator, through the tests/az_call.c driver: the three ways
to get an access token, AAD and Key Vault errors, the token's lifetime, retries with
Retry-After, time-outs, connection reuse, fork, and no secret in traces."""
import datetime
import json
import secrets
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from akvfixtures import akv_emu  # noqa: F401 (fixture)
from calldriver import quiet, run_driver, stats
from ctoktest import BUILD, free_port, register_secret, secrets_in

DRIVER = BUILD / "tests" / "az_call"


@pytest.fixture(autouse=True)
def calm(akv_emu):
    """Each test starts with no faults, default token lifetime and zero counters."""
    quiet(akv_emu)
    akv_emu.token_ttl(3600)
    yield
    akv_emu.latency(0)


def key_and_cert(tmp_path, name):
    """An RSA key file and its self-signed certificate (PEM files), as a binding would hold."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dn = x509.Name.from_rfc4514_string("CN=%s" % name)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    kf, cf = tmp_path / ("%s.key" % name), tmp_path / ("%s.crt" % name)
    kf.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    cf.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return kf, cf


def config(tmp_path, emu, auth="secret", secret=None, forbidden=(), **extra):
    """A driver config for a new app registration in emu."""
    conf = {"tokname": "az", "vault_url": emu.vault_url, "tenant_id": emu.tenant_id,
            "login_url": emu.authority, "ca_file": emu.ca_file, "auth": auth}
    cid = "call-" + secrets.token_hex(6)
    if auth == "secret":
        real = register_secret("ctok~" + secrets.token_urlsafe(30))
        emu.add_client(cid, secret=real, forbidden=forbidden)
        sf = tmp_path / ("secret-%s" % cid)
        sf.write_text(secret or real)
        sf.chmod(0o600)
        conf["secret_file"] = str(sf)
    elif auth == "certificate":
        kf, cf = key_and_cert(tmp_path, cid)
        emu.add_client(cid, cert_pem=cf.read_bytes(), forbidden=forbidden)
        conf.update(key_file=str(kf), cert_file=str(cf))
    else:
        emu.add_client(cid, forbidden=forbidden)
        emu.enable_managed_identity(cid)
        conf["mi_endpoint"] = emu.mi_url
    conf["client_id"] = cid
    conf.update(extra)
    path = tmp_path / ("conf-%d.json" % time.monotonic_ns())
    path.write_text(json.dumps(conf))
    return path


def call(conf, method="GET", path="/keys", body=None, obj=None, opts=(), env=None, timeout=120):
    argv = [DRIVER, *opts, conf, method, path]
    if body is not None or obj is not None:
        argv.append(json.dumps(body) if body is not None else "-")
    return run_driver(argv + ([obj] if obj is not None else []), env, timeout)


def tokens(p):
    return int([ln for ln in p.stdout.splitlines() if ln.startswith("tokens=")][-1][7:])


def digest_b64u():
    return "J8AkGmzTH2fUZ6T8jmHUjhyfRKyRlXNqeI47ocbWwvU"  # 32 bytes


# ---- the three ways to an access token


def test_client_secret_gets_a_token_and_the_vault_answers(tmp_path, akv_emu):
    kid = akv_emu.create_key("call-list", kty="EC", crv="P-256")
    p = call(config(tmp_path, akv_emu))
    assert p.returncode == 0, p.stderr
    assert kid.rsplit("/", 1)[0] in [k["kid"] for k in json.loads(p.stdout.splitlines()[0])["value"]]
    assert tokens(p) == 1 and akv_emu.token_requests() == 1
    assert akv_emu.requests() == {"list_keys": 1}


def test_sign_sends_the_digest_and_returns_the_signature(tmp_path, akv_emu):
    akv_emu.create_key("call-sign", kty="EC", crv="P-256")
    p = call(config(tmp_path, akv_emu), "POST", "/keys/call-sign/sign",
             {"alg": "ES256", "value": digest_b64u()}, "call-sign")
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout.splitlines()[0])["value"]) == 86  # 64 bytes r||s


def test_query_and_next_link_get_the_api_version_once(tmp_path, akv_emu):
    for i in range(3):
        akv_emu.create_key("call-page-%d" % i, kty="EC", crv="P-256")
    conf = config(tmp_path, akv_emu)
    first = call(conf, path="/keys?maxresults=1")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout.splitlines()[0])
    assert len(page["value"]) == 1 and page["nextLink"].startswith(akv_emu.vault_url + "/keys?")
    # the nextLink, a full URL with its own api-version, is followed as given
    second = call(conf, path=page["nextLink"])
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.splitlines()[0])["value"] != page["value"]
    assert call(conf, path="https://elsewhere.example/keys").returncode == 1


def test_client_assertion_signed_by_the_binding_key(tmp_path, akv_emu):
    akv_emu.create_key("call-cert", kty="RSA")
    p = call(config(tmp_path, akv_emu, auth="certificate"), path="/keys/call-cert")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["key"]["kty"] == "RSA"
    assert akv_emu.token_requests() == 1


def test_managed_identity_token(tmp_path, akv_emu):
    akv_emu.create_key("call-mi", kty="EC", crv="P-384")
    p = call(config(tmp_path, akv_emu, auth="managed_identity"), path="/keys/call-mi")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["key"]["crv"] == "P-384"
    assert akv_emu.token_requests() == 1


# ---- Azure AD refuses


def test_wrong_secret_is_a_credentials_error_naming_aadsts7000215(tmp_path, akv_emu):
    wrong = register_secret("ctok~" + secrets.token_urlsafe(30))
    p = call(config(tmp_path, akv_emu, secret=wrong))
    assert p.returncode == 1
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1, p.stderr
    assert line[0].startswith("error: invalid or expired credentials: token 'az': login: "
                              "Azure AD token: HTTP 401 invalid_client: AADSTS7000215: Invalid "
                              "client secret provided.")
    assert "[code 'invalid_client']" in line[0]
    assert secrets_in(p.stdout + p.stderr) == []
    assert akv_emu.token_requests() == 1  # a 401 from Azure AD is not retried
    assert akv_emu.requests() == {}


def test_assertion_signed_by_the_wrong_key_is_aadsts700027(tmp_path, akv_emu):
    conf = config(tmp_path, akv_emu, auth="certificate")
    c = json.loads(conf.read_text())
    other, _ = key_and_cert(tmp_path, "other")
    c["key_file"] = str(other)  # the registered certificate, another key
    conf.write_text(json.dumps(c))
    p = call(conf)
    assert p.returncode == 1
    assert "error: invalid or expired credentials: token 'az': login: Azure AD token: HTTP 401 " \
           "invalid_client: " in p.stderr
    assert "AADSTS700027: Client assertion failed signature validation" in p.stderr


def test_unknown_tenant_is_named(tmp_path, akv_emu):
    p = call(config(tmp_path, akv_emu, tenant_id="00000000-dead-4000-8000-000000000000"))
    assert p.returncode == 1
    assert "HTTP 400 invalid_request: " in p.stderr and "Tenant '00000000-dead" in p.stderr


# ---- Key Vault refuses


def test_unknown_key_is_not_found_with_the_vault_code(tmp_path, akv_emu):
    p = call(config(tmp_path, akv_emu), path="/keys/no-such-key", obj="no-such-key",
             body=None)
    assert p.returncode == 1
    assert "error: object not found: token 'az': key 'no-such-key': get: HTTP 404 KeyNotFound: " \
        in p.stderr


def test_forbidden_sign_is_denied_naming_key_operation_and_message(tmp_path, akv_emu):
    akv_emu.create_key("call-deny", kty="EC", crv="P-256")
    p = call(config(tmp_path, akv_emu, forbidden=("sign",)), "POST", "/keys/call-deny/sign",
             {"alg": "ES256", "value": digest_b64u()}, "call-deny")
    assert p.returncode == 1
    assert "error: access denied by the service: token 'az': key 'call-deny': sign: HTTP 403 " \
           "Forbidden: The user, group or application" in p.stderr
    assert akv_emu.requests() == {"sign": 1}  # a 403 is never retried


# ---- the token's lifetime


def test_token_is_renewed_once_before_it_expires_and_no_call_fails(tmp_path, akv_emu):
    akv_emu.token_ttl(6)  # renewed at half its life: 2-3 s after the login (whole seconds)
    p = call(config(tmp_path, akv_emu), opts=["--loop", "14", "--sleep-ms", "250"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 14
    # about 3.5 s of calls: the first token and exactly one renewal; no call met a 401
    assert akv_emu.token_requests() == 2 and tokens(p) == 2
    assert "challenge" not in akv_emu.requests()


def test_threads_share_one_token(tmp_path, akv_emu):
    p = call(config(tmp_path, akv_emu), opts=["--threads", "8", "--loop", "20"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 160
    assert akv_emu.token_requests() == 1


def test_threads_renew_the_shared_token_once(tmp_path, akv_emu):
    akv_emu.token_ttl(6)  # renewed 2-3 s after the login (whole seconds), next at 5 s at best
    p = call(config(tmp_path, akv_emu), opts=["--threads", "8", "--loop", "14", "--sleep-ms",
                                              "250"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 112
    # one thread fetched the renewal while the other seven signed on with the valid token
    assert akv_emu.token_requests() == 2
    assert "challenge" not in akv_emu.requests()


def test_token_that_expires_between_calls_is_fetched_again_first(tmp_path, akv_emu):
    akv_emu.token_ttl(1)
    p = call(config(tmp_path, akv_emu), opts=["--loop", "3", "--sleep-ms", "1100"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 3
    assert "challenge" not in akv_emu.requests()


def test_a_401_from_the_vault_fetches_one_new_token_then_names_the_cause(tmp_path, akv_emu):
    # a token for the Managed HSM audience: the vault refuses it, whichever token is fetched
    p = call(config(tmp_path, akv_emu, scope="https://managedhsm.azure.net/.default"),
             path="/keys/k", obj="k")
    assert p.returncode == 1
    assert "error: invalid or expired credentials: token 'az': key 'k': get: HTTP 401 " \
           "Unauthorized: AKV10022: Invalid audience." in p.stderr
    # the first token, and once the new one (each refusal counted as the request and its challenge)
    assert akv_emu.requests() == {"get_key": 2, "challenge": 2}
    assert akv_emu.token_requests() == 2 and tokens(p) == 2


# ---- retries


def test_429_with_retry_after_is_waited_for_and_survived(tmp_path, akv_emu):
    akv_emu.throttle(2, retry_after=1)
    p = call(config(tmp_path, akv_emu))
    assert p.returncode == 0, p.stderr
    assert akv_emu.requests() == {"list_keys": 3}
    assert p.elapsed >= 2.0  # Retry-After: 1, twice


def test_429_beyond_the_retries_is_throttled(tmp_path, akv_emu):
    akv_emu.throttle(5, retry_after=0)
    p = call(config(tmp_path, akv_emu, max_retries=2))
    assert p.returncode == 1
    assert "error: throttled by the service: token 'az': get: HTTP 429 Throttled: " in p.stderr
    assert "(3 attempts," in p.stderr
    assert akv_emu.requests() == {"list_keys": 3}


@pytest.mark.parametrize("status,retried", [(503, True), (500, True), (504, True),
                                            (501, False), (505, False)])
def test_5xx_is_retried_except_501_and_505(tmp_path, akv_emu, status, retried):
    akv_emu.fail5xx(1, status=status)
    p = call(config(tmp_path, akv_emu))
    assert (p.returncode == 0) == retried, p.stderr
    assert akv_emu.requests() == {"list_keys": 2 if retried else 1}
    if not retried:
        assert "error: token operation failed: token 'az': get: HTTP %d " % status in p.stderr


def test_connection_reset_is_retried(tmp_path, akv_emu):
    akv_emu.reset_connections(1)
    p = call(config(tmp_path, akv_emu))
    assert p.returncode == 0, p.stderr
    assert akv_emu.requests() == {"list_keys": 2}


def test_connection_refused_is_a_prompt_network_error(tmp_path, akv_emu):
    url = "https://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, akv_emu, vault_url=url, max_retries=2))
    assert p.returncode == 1
    assert "error: network error: token 'az': get: cannot reach %s: " % url in p.stderr
    assert "(3 attempts," in p.stderr
    assert p.elapsed < 3


def test_azure_ad_refused_is_a_network_error_naming_it(tmp_path, akv_emu):
    url = "https://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, akv_emu, login_url=url, max_retries=0))
    assert p.returncode == 1
    assert "error: network error: token 'az': login: Azure AD token: cannot reach " \
           "%s/%s/oauth2/v2.0/token: " % (url, akv_emu.tenant_id) in p.stderr


def test_latency_beyond_the_time_out_is_a_time_out_within_the_bound(tmp_path, akv_emu):
    akv_emu.latency(3000)
    p = call(config(tmp_path, akv_emu, timeout_ms=300, max_retries=1))
    assert p.returncode == 1
    assert "error: timed out: token 'az': get %s timed out after 300 ms (2 attempts," \
           % akv_emu.vault_url in p.stderr
    assert p.elapsed < 0.3 * 2 + 0.1 + 1.5  # the token fetch, one backoff, slack


def test_silent_identity_endpoint_times_out_promptly(tmp_path, akv_emu):
    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = "http://127.0.0.1:%d/metadata/identity/oauth2/token" % silent.getsockname()[1]
        p = call(config(tmp_path, akv_emu, auth="managed_identity", mi_endpoint=url,
                        timeout_ms=1000, max_retries=0))
    assert p.returncode == 1
    assert "error: timed out: token 'az': login: managed identity token %s timed out" % url \
        in p.stderr
    assert p.elapsed < 3


# ---- connections


def test_one_thousand_calls_use_one_vault_connection_and_one_token(tmp_path, akv_emu):
    akv_emu.create_key("call-many", kty="EC", crv="P-256")
    p = call(config(tmp_path, akv_emu), "POST", "/keys/call-many/sign",
             {"alg": "ES256", "value": digest_b64u()}, "call-many",
             opts=["--loop", "1000"], timeout=300)
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 1000
    assert akv_emu.token_requests() == 1
    assert akv_emu.connections() <= 2  # one to Azure AD, one to the vault
    assert akv_emu.requests() == {"sign": 1000}
    print("1000 signs on one thread: %d ms, %d TLS connection(s) (vault + Azure AD)"
          % (stats(p)["ms"], akv_emu.connections()))


def test_forked_child_makes_its_own_connection(tmp_path, akv_emu):
    p = call(config(tmp_path, akv_emu), opts=["--fork"], env={"AZ_CALL_CHILD_LOOPS": "3"})
    assert p.returncode == 0, p.stdout + p.stderr
    assert "child calls=3 ok=3 failed=0 tcp=1 inheritable=0" in p.stdout
    assert akv_emu.requests() == {"list_keys": 5}
    assert akv_emu.token_requests() == 1  # the child inherits the valid token


def test_debug_trace_has_no_secret_token_or_assertion(tmp_path, akv_emu):
    akv_emu.token_ttl(2)
    ok = call(config(tmp_path, akv_emu), opts=["--loop", "3", "--sleep-ms", "700"],
              env={"CTOK_DEBUG": "1"})
    cert = call(config(tmp_path, akv_emu, auth="certificate"), env={"CTOK_DEBUG": "1"})
    mi = call(config(tmp_path, akv_emu, auth="managed_identity"), env={"CTOK_DEBUG": "1"})
    bad = call(config(tmp_path, akv_emu, secret=register_secret("ctok~wrong-" + "x" * 24)),
               env={"CTOK_DEBUG": "1"})
    assert (ok.returncode, cert.returncode, mi.returncode, bad.returncode) == (0, 0, 0, 1)
    out = "".join(p.stdout + p.stderr for p in (ok, cert, mi, bad))
    assert "azure GET /keys: HTTP 200, 1 attempt(s)" in out
    assert "azure Azure AD token: HTTP 200" in out and "azure managed identity token" in out
    assert secrets_in(out) == []
    assert "Bearer" not in out and "Authorization" not in out and "eyJ" not in out


# ---- the parsers alone (no network): what the fuzz targets run, with expected results


def parse(mode, stdin):
    p = subprocess.run([str(DRIVER), mode], input=stdin, capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout.rstrip("\n")


@pytest.mark.parametrize("body,want", [
    ('{"error":{"code":"KeyNotFound","message":"A key with (name/id) k was not found"}}',
     "KeyNotFound|A key with (name/id) k was not found"),
    ('{"error":"invalid_client","error_description":"AADSTS7000215: Invalid\\r\\nsecret",'
     '"error_codes":[7000215]}', "invalid_client|AADSTS7000215: Invalid  secret"),
    ('{"error":{"code":"Forbidden"}}', "Forbidden|"),
    ('{"error":42}', "|"),
    ("<html>Bad Gateway</html>", "|"),
    ("", "|"),
])
def test_error_bodies_give_code_and_message(body, want):
    assert parse("--parse-error", body) == (0, want)


@pytest.mark.parametrize("body,want", [
    ('{"token_type":"Bearer","expires_in":3599,"access_token":"abc.def"}', "ok 3599 7"),
    ('{"access_token":"abc","expires_in":"3599","token_type":"Bearer","resource":"r"}',
     "ok 3599 3"),
    ('{"token_type":"Bearer","expires_in":3599}', "refused: the token response has no "
     "access_token"),
    ('{"token_type":"Bearer","expires_in":0,"access_token":"a"}', "refused: the token response "
     "has no positive expires_in"),
    ('{"token_type":"Bearer","expires_in":"soon","access_token":"a"}', "refused: the token "
     "response has no positive expires_in"),
    ('{"token_type":"pop","expires_in":60,"access_token":"a"}', "refused: the token_type is not "
     "Bearer"),
    ('{"token_type":"Bearer","expires_in":60,"access_token":"a\\r\\nX-Evil: 1"}',
     "refused: the access_token is not a header value"),
    ('{"access_token":"a","access_token":"b","expires_in":60}', "refused: the token response is "
     "not a JSON object"),
    ("[]", "refused: the token response is not a JSON object"),
])
def test_token_responses_are_parsed_or_refused_with_the_reason(body, want):
    rc, out = parse("--parse-token", body)
    assert out == want and rc == (0 if want.startswith("ok") else 1)
