"""ctok_aws_call (kms/awscall.c over kms/http.c, kms/sigv4.c, kms/creds.c) against the KMS
emulator, through the tests/aws_call.c driver: signing, error mapping, retries, time-outs,
instance-role credentials and their refresh, connection reuse, fork, and no secret in traces."""
import json
import socket
import subprocess
import time

import pytest

from calldriver import quiet, run_driver, stats
from ctoktest import BUILD, free_port, register_secret, secrets_in
from kmsfixtures import kms_credential, kms_emu  # noqa: F401 (fixture)
from kms_emulator import SEED_ACTIONS

DRIVER = BUILD / "tests" / "aws_call"


@pytest.fixture(autouse=True)
def calm(kms_emu):
    """Each test starts with no faults and zero counters."""
    quiet(kms_emu)
    yield
    kms_emu.latency(0)


def config(tmp_path, emu, actions=SEED_ACTIONS, session_token=False, secret=None, role=False,
           **extra):
    conf = {"tokname": "kt", "region": emu.region, "endpoint": emu.url, "ca_file": emu.ca_file}
    if role:
        conf.update(use_role=True, imds_endpoint=emu.imds_url)
    else:
        akid, real, token = kms_credential(emu, actions, session_token)
        code = (secret or real) + ("\n" + token if token else "")
        sf = tmp_path / "secret"
        sf.write_text(code)
        sf.chmod(0o600)
        conf.update(access_key_id=akid, secret_file=str(sf))
    conf.update(extra)
    path = tmp_path / ("conf-%d.json" % time.monotonic_ns())
    path.write_text(json.dumps(conf))
    return path


def call(conf, op="ListAliases", body="{}", obj=None, opts=(), env=None, timeout=120):
    return run_driver([DRIVER, *opts, conf, op, body] + ([obj] if obj else []), env, timeout)


def test_signed_call_is_accepted_and_answered(tmp_path, kms_emu):
    kms_emu.create_key("ECC_NIST_P256", alias="call-ok")
    p = call(config(tmp_path, kms_emu))
    assert p.returncode == 0, p.stderr
    aliases = json.loads(p.stdout.splitlines()[0])["Aliases"]
    assert "alias/call-ok" in [a["AliasName"] for a in aliases]
    assert kms_emu.requests() == {"ListAliases": 1}


def test_session_token_is_signed_and_sent(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu, session_token=True))
    assert p.returncode == 0, p.stderr


def test_wrong_secret_is_a_credentials_error(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu, secret=register_secret("not-the-secret-key-at-all")))
    assert p.returncode == 1
    assert "error: invalid or expired credentials: token 'kt': ListAliases: HTTP 400 " \
           "InvalidSignatureException: The request signature we calculated" in p.stderr
    assert kms_emu.requests() == {"ListAliases": 1}  # never retried


def test_action_outside_the_policy_is_denied(tmp_path, kms_emu):
    conf = config(tmp_path, kms_emu, actions=SEED_ACTIONS - {"ListAliases"})
    p = call(conf)
    assert p.returncode == 1
    assert "error: access denied by the service: token 'kt': ListAliases: HTTP 400 " \
           "AccessDeniedException" in p.stderr
    assert "[type 'AccessDeniedException']" in p.stderr


def test_unknown_key_is_not_found_and_names_the_key(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu), "GetPublicKey", '{"KeyId": "alias/nope"}', "alias/nope")
    assert p.returncode == 1
    assert "error: object not found: token 'kt': key 'alias/nope': GetPublicKey: HTTP 400 " \
           "NotFoundException" in p.stderr


def test_disabled_key_is_a_backend_error_with_the_service_message(tmp_path, kms_emu):
    kid = kms_emu.create_key("ECC_NIST_P256", alias="call-disabled")
    kms_emu.set_key_state(kid, "Disabled")
    p = call(config(tmp_path, kms_emu), "GetPublicKey", json.dumps({"KeyId": kid}), kid)
    assert p.returncode == 1
    assert "error: token operation failed: token 'kt': key '%s': GetPublicKey: HTTP 400 " \
           "DisabledException: " % kid in p.stderr
    assert kms_emu.requests() == {"GetPublicKey": 1}


def test_throttling_within_the_retry_budget_is_survived(tmp_path, kms_emu):
    kms_emu.throttle(2)
    p = call(config(tmp_path, kms_emu, max_retries=3))
    assert p.returncode == 0, p.stderr
    assert kms_emu.requests() == {"ListAliases": 3}


def test_throttling_beyond_the_budget_is_throttled_after_max_retries_plus_one(tmp_path, kms_emu):
    kms_emu.throttle(10)
    p = call(config(tmp_path, kms_emu, max_retries=2))
    assert p.returncode == 1
    assert "error: throttled by the service: token 'kt': ListAliases: HTTP 400 " \
           "ThrottlingException" in p.stderr
    assert "(3 attempts," in p.stderr
    assert kms_emu.requests() == {"ListAliases": 3}
    # backoff from 500 ms (throttling): at least 250 + 500 ms of waiting
    assert p.elapsed >= 0.75


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_burst_is_retried(tmp_path, kms_emu, status):
    kms_emu.fail5xx(2, status=status)
    p = call(config(tmp_path, kms_emu))
    assert p.returncode == 0, p.stderr
    assert kms_emu.requests() == {"ListAliases": 3}


def test_5xx_beyond_the_budget_names_the_status(tmp_path, kms_emu):
    kms_emu.fail5xx(10, status=502)
    p = call(config(tmp_path, kms_emu, max_retries=1))
    assert p.returncode == 1
    assert "token 'kt': ListAliases: HTTP 502" in p.stderr and "(2 attempts," in p.stderr
    assert kms_emu.requests() == {"ListAliases": 2}


def test_connection_reset_is_retried(tmp_path, kms_emu):
    kms_emu.reset_connections(1)
    p = call(config(tmp_path, kms_emu))
    assert p.returncode == 0, p.stderr


def test_connection_refused_is_a_prompt_network_error(tmp_path, kms_emu):
    url = "https://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, kms_emu, endpoint=url, max_retries=2))
    assert p.returncode == 1
    assert "error: network error: token 'kt': ListAliases: cannot reach %s/: " % url in p.stderr
    assert "(3 attempts," in p.stderr
    assert p.elapsed < 3


def test_proxy_from_the_environment_is_used_and_named(tmp_path, kms_emu):
    proxy = "http://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, kms_emu, max_retries=0),
             env={"https_proxy": "http://user:proxy-password@" + proxy[7:]})
    assert p.returncode == 1
    assert "error: network error: token 'kt': ListAliases: cannot reach %s/ through proxy %s: " \
           % (kms_emu.url, proxy) in p.stderr
    assert "proxy-password" not in p.stderr
    assert kms_emu.requests() == {}


def test_latency_beyond_the_time_out_is_a_time_out_within_the_bound(tmp_path, kms_emu):
    kms_emu.latency(3000)
    p = call(config(tmp_path, kms_emu, timeout_ms=300, max_retries=1))
    assert p.returncode == 1
    assert "error: timed out: token 'kt': ListAliases %s/ timed out after 300 ms (2 attempts," \
           % kms_emu.url in p.stderr
    # timeout_ms * (max_retries + 1), one backoff (at most 100 ms), slack
    assert p.elapsed < 0.3 * 2 + 0.1 + 1.0


def test_instance_role_credentials_come_from_imdsv2(tmp_path, kms_emu):
    kms_emu.set_role("ctok-call-role")
    p = call(config(tmp_path, kms_emu, role=True))
    assert p.returncode == 0, p.stderr
    imds = kms_emu.imds_requests()
    assert imds["PUT /latest/api/token"] == 1
    assert imds["GET /latest/meta-data/iam/security-credentials/"] == 1
    assert imds["GET /latest/meta-data/iam/security-credentials/ctok-call-role"] == 1


def test_instance_role_credentials_are_refreshed_before_they_expire(tmp_path, kms_emu):
    kms_emu.set_role("ctok-short-role", ttl_seconds=2)
    p = call(config(tmp_path, kms_emu, role=True), opts=["--loop", "30", "--sleep-ms", "200"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 30
    # refreshed before Expiration: no call was turned away with ExpiredTokenException first
    assert kms_emu.requests() == {"ListAliases": 30}
    fetched = kms_emu.imds_requests()["GET /latest/meta-data/iam/security-credentials/"
                                      "ctok-short-role"]
    assert 3 <= fetched <= 12  # about every second over six seconds, not per call


def test_instance_role_without_imds_is_a_network_error(tmp_path, kms_emu):
    url = "http://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, kms_emu, role=True, imds_endpoint=url))
    assert p.returncode == 1
    assert "error: network error: token 'kt': instance role: instance metadata service %s: " \
           % url in p.stderr


def test_instance_role_with_a_silent_imds_times_out_after_one_second(tmp_path, kms_emu):
    with socket.socket() as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = "http://127.0.0.1:%d" % silent.getsockname()[1]
        p = call(config(tmp_path, kms_emu, role=True, imds_endpoint=url, timeout_ms=10000))
    assert p.returncode == 1
    assert "error: timed out: token 'kt': instance role: instance metadata service %s: " % url \
        in p.stderr
    assert 0.9 < p.elapsed < 3


def test_imds_is_never_asked_through_a_proxy(tmp_path, kms_emu):
    kms_emu.set_role("ctok-proxy-role")
    dead = "http://127.0.0.1:%d" % free_port()
    p = call(config(tmp_path, kms_emu, role=True, max_retries=0),
             env={"http_proxy": dead, "https_proxy": dead})
    # the role credentials arrived directly; KMS itself is asked through the (dead) proxy
    assert kms_emu.imds_requests()["PUT /latest/api/token"] == 1
    assert "cannot reach %s/ through proxy %s" % (kms_emu.url, dead) in p.stderr


def test_imds_endpoint_from_the_environment(tmp_path, kms_emu):
    kms_emu.set_role("ctok-env-role")
    conf = config(tmp_path, kms_emu, role=True)
    c = json.loads(conf.read_text())
    del c["imds_endpoint"]
    conf.write_text(json.dumps(c))
    p = call(conf, env={"AWS_EC2_METADATA_SERVICE_ENDPOINT": kms_emu.imds_url})
    assert p.returncode == 0, p.stderr


def test_one_thousand_calls_use_one_connection(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu), opts=["--loop", "1000"], timeout=300)
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 1000
    assert kms_emu.connections() <= 1
    print("1000 ListAliases on one thread: %d ms, %d TLS connection(s)"
          % (stats(p)["ms"], kms_emu.connections()))


def test_threads_share_the_pool(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu), opts=["--threads", "4", "--loop", "50"])
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 200
    assert kms_emu.connections() <= 4


def test_forked_child_makes_its_own_connection(tmp_path, kms_emu):
    p = call(config(tmp_path, kms_emu), opts=["--fork"], env={"AWS_CALL_CHILD_LOOPS": "3"})
    assert p.returncode == 0, p.stdout + p.stderr
    # the child holds its own connection only (its copy of the parent's is closed, not kept),
    # and an exec would not inherit it
    assert "child calls=3 ok=3 failed=0 tcp=1 inheritable=0" in p.stdout
    assert kms_emu.requests() == {"ListAliases": 5}
    # the parent's one connection (used before and after the fork) and the child's own
    assert kms_emu.connections() == 2


def test_debug_trace_has_no_secret(tmp_path, kms_emu):
    conf = config(tmp_path, kms_emu, session_token=True)
    ok = call(conf, env={"CTOK_DEBUG": "1"})
    kms_emu.set_role("ctok-debug-role", ttl_seconds=2)
    role = call(config(tmp_path, kms_emu, role=True), opts=["--loop", "3", "--sleep-ms", "700"],
                env={"CTOK_DEBUG": "1"})
    bad = call(config(tmp_path, kms_emu, actions=frozenset({"Sign"}), session_token=True),
               env={"CTOK_DEBUG": "1"})
    assert ok.returncode == 0 and role.returncode == 0 and bad.returncode == 1
    out = "".join(p.stdout + p.stderr for p in (ok, role, bad))
    assert "aws ListAliases: HTTP 200, 1 attempt(s)" in out
    assert "instance role credentials fetched" in out
    assert secrets_in(out) == []
    assert "Signature=" not in out and "Authorization" not in out and "AWS4" not in out


# ---- the response parsers alone (no network): what the fuzz targets run, with expected results


def parse(mode, stdin, *args):
    p = subprocess.run([str(DRIVER), mode, *args], input=stdin, capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout.rstrip("\n")


@pytest.mark.parametrize("body,header,want", [
    ('{"__type":"com.amazonaws.kms#NotFoundException","message":"gone"}', None,
     "NotFoundException|gone"),
    ('{"__type":"AccessDeniedException","Message":"no"}', None, "AccessDeniedException|no"),
    ('{"code":"ThrottlingException","message":"slow down"}', None, "ThrottlingException|slow down"),
    ('<html>Bad Gateway</html>', "InternalFailure", "InternalFailure|"),
    ('{"message":"line\\nbreak"}', "ValidationException", "ValidationException|line break"),
    ('', None, "|"),
])
def test_error_bodies_give_type_and_message(body, header, want):
    assert parse("--parse-error", body, *([header] if header else [])) == (0, want)


def test_imds_document_with_fractional_expiration_parses():
    doc = json.dumps({"Code": "Success", "AccessKeyId": "ASIAPARSE", "SecretAccessKey": "s",
                      "Token": "t", "Expiration": "2026-11-29T13:00:00.250Z"})
    assert parse("--parse-imds", doc) == (0, "ok ASIAPARSE 1795957200")


@pytest.mark.parametrize("doc,why", [
    ({"Code": "AssumeRoleUnauthorizedAccess"}, "Code 'AssumeRoleUnauthorizedAccess'"),
    ({"Code": "Success", "AccessKeyId": "A", "SecretAccessKey": "s", "Expiration": "x"},
     "lacks Token"),
    ({"Code": "Success", "AccessKeyId": "A", "SecretAccessKey": "s", "Token": "t",
      "Expiration": "2026-13-01T00:00:00Z"}, "Expiration is not an ISO 8601 time"),
    ([], "not a JSON object"),
])
def test_bad_imds_documents_are_refused_with_the_reason(doc, why):
    rc, out = parse("--parse-imds", json.dumps(doc))
    assert rc == 1 and out.startswith("refused: ") and why in out


@pytest.mark.parametrize("order", ["ctok,default", "default,ctok", "three"])
def test_calls_work_with_ctok_active_in_the_process_openssl_cnf(tmp_path, kms_emu, ws, order):
    """libcurl's TLS runs through OpenSSL with ctok activated for the process by openssl.cnf
    (in either order, and ctok sorted first among three): no recursion, no hang."""
    if order == "three":
        cnf = ws.three_providers_cnf()
    else:
        sects = "".join("%s = %s_sect\n" % (n, n) for n in order.split(","))
        cnf = tmp_path / "openssl.cnf"
        cnf.write_text("openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n"
                       "[provider_sect]\n" + sects + "[default_sect]\nactivate = 1\n"
                       "[ctok_sect]\nmodule = %s\nactivate = 1\n" % (ws.build / "ctok.so"))
    ws.write("tokens.json", '{"tokens": []}', mode=0o644)
    p = call(config(tmp_path, kms_emu), opts=["--threads", "2", "--loop", "20"],
             env={"OPENSSL_CONF": str(cnf), "CTOK_CONFIG": str(ws.config),
                  "CTOK_DEBUG": "1"}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert stats(p)["ok"] == 40
    # ctok.so was loaded and saw the process' TLS, yet never had an operation to do
    assert "provider loaded as 'ctok'" in p.stderr
    assert "signature:" not in p.stderr and "asym-cipher:" not in p.stderr
