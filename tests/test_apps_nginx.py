"""An administrator serves HTTPS with Debian's nginx 1.22, which knows no provider URIs:
`ssl_certificate_key` names a ctok key-reference PEM (`ctok ref`), ctok is active through
OPENSSL_CONF (the repository's openssl.cnf.d/ctok.cnf), and the workers run as www-data,
forked after the master loaded the key. curl, openssl s_client and gnutls-cli complete
requests and verify the chain up to the CA."""

import os
import re

import pytest

from appfixtures import (
    KEYS,
    TOKENS,
    WORKER_USER,
    Nginx,
    assert_curl_ok,
    assert_s_client_ok,
    curl,
    gnutls_cli,
    handshake_storm,
    keyref_pem,
    proc_uid,
    s_client,
    summarize,
    worker_ids,
    world,  # noqa: F401  (fixture)
)
from ctoktest import OPENSSL, describe, run

CASES = [(t, k, proto) for t in TOKENS for k in KEYS for proto in ("TLSv1.3", "TLSv1.2")]
SIGTYPE = {("rsa", "TLSv1.3"): "RSA-PSS", ("rsa", "TLSv1.2"): "RSA-PSS",
           ("ec", "TLSv1.3"): "ECDSA", ("ec", "TLSv1.2"): "ECDSA"}
PROTO_OPT = {"TLSv1.3": "-tls1_3", "TLSv1.2": "-tls1_2"}
CURL_OPT = {"TLSv1.3": ["--tlsv1.3", "--tls-max", "1.3"],
            "TLSv1.2": ["--tlsv1.2", "--tls-max", "1.2"]}

# Log lines that must never appear: a worker that died, or an SSL error nginx logged as
# serious (a handshake that failed on the server's side is [crit]; stale errors [alert]).
BAD_LOG = re.compile(r"exited on signal|\[(alert|crit|emerg)\]")


def bad_log_lines(text):
    return [l for l in text.splitlines() if BAD_LOG.search(l)]


@pytest.mark.parametrize("token,alias,proto", CASES,
                         ids=["%s-%s-%s" % c for c in CASES])
def test_nginx_serves_https_with_a_key_reference_pem_to_curl_and_s_client(world, token, alias,
                                                                          proto):
    key = world.key(token, alias)
    with Nginx(world, key.cert, key.ref, workers=1) as ngx:
        c = curl(world, ngx.port, *CURL_OPT[proto])
        s = s_client(world, ngx.port, PROTO_OPT[proto])
        log = ngx.error_log()
    assert_curl_ok(c, proto, "nginx worker")
    assert_s_client_ok(s, proto, SIGTYPE[(alias, proto)], "nginx worker")
    assert "CN = %s" % key.subject in s.stdout or "CN=%s" % key.subject in s.stdout, s.stdout
    assert not bad_log_lines(log), ngx.report()


@pytest.mark.parametrize("token", TOKENS)
def test_nginx_tls12_rsa_key_exchange_decrypts_with_the_token_key(world, token):
    """A TLS 1.2 client that offers only RSA key transport: the token key decrypts the
    premaster secret inside nginx."""
    key = world.key(token, "rsa")
    with Nginx(world, key.cert, key.ref, workers=1) as ngx:
        s = s_client(world, ngx.port, "-tls1_2", "-cipher", "AES128-GCM-SHA256")
        log = ngx.error_log()
    assert s.returncode == 0 and "Verify return code: 0 (ok)" in s.stdout, describe(s) + \
        ngx.report()
    assert "Cipher is AES128-GCM-SHA256" in s.stdout, describe(s)
    assert "nginx worker" in s.stdout, describe(s)
    assert not bad_log_lines(log), ngx.report()


GNUTLS_CASES = [("soft", "rsa", "TLS1.3"), ("soft", "ec", "TLS1.2"), ("hsm", "rsa", "TLS1.2"),
                ("hsm", "ec", "TLS1.3")]


@pytest.mark.parametrize("token,alias,proto", GNUTLS_CASES,
                         ids=["%s-%s-%s" % c for c in GNUTLS_CASES])
def test_gnutls_cli_completes_a_handshake_with_nginx_holding_a_token_key(world, token, alias,
                                                                         proto):
    """A second TLS implementation checks the handshake signatures made by the token."""
    key = world.key(token, alias)
    priority = "NORMAL:-VERS-ALL:+VERS-%s" % proto
    with Nginx(world, key.cert, key.ref, workers=1) as ngx:
        g = gnutls_cli(world, ngx.port, priority)
        log = ngx.error_log()
    assert g.returncode == 0, describe(g) + ngx.report()
    assert "Handshake was completed" in g.stdout, describe(g)
    assert "The certificate is trusted" in g.stdout, describe(g)
    assert "(%s-X.509)" % proto in g.stdout, describe(g)
    assert ("ECDSA" if alias == "ec" else "RSA") in \
        re.search(r"- Description: (.*)", g.stdout).group(1), describe(g)
    assert "HTTP/1.1 200 OK" in g.stdout and "nginx worker" in g.stdout, describe(g)
    assert not bad_log_lines(log), ngx.report()


# ---------------------------------------------------------------- workers as www-data


@pytest.mark.parametrize("token,alias", [("soft", "ec"), ("soft", "rsa"), ("hsm", "rsa"),
                                         ("hsm", "ec")])
def test_every_handshake_in_every_nginx_worker_running_as_www_data_succeeds(world, token, alias):
    """Workers are forked after the master (root) loaded the key and then run as www-data;
    connections are spread over them (reuseport) from their very first handshake on."""
    key = world.key(token, alias)
    uid, _ = worker_ids()
    # what stays root's alone: the ctok config is not writable by others, the auth code
    # (and the soft keystore) are readable by root only
    tok = world.tokens[token]
    private = [tok.pin_file] + ([tok.keystore] if tok.keystore else [])
    for f in private:
        st = os.stat(f)
        assert st.st_uid == 0 and st.st_mode & 0o077 == 0, "%s: %o" % (f, st.st_mode)
    assert os.stat(world.ws.config).st_mode & 0o022 == 0
    with Nginx(world, key.cert, key.ref, workers=2) as ngx:
        workers = ngx.worker_pids()
        results, elapsed = handshake_storm(ngx.port, world.ca, 200, concurrency=8, time_limit=40)
        # read once they have served: a worker forked a moment ago may not have switched yet
        uids = {pid: proc_uid(pid) for pid in workers}
        log = ngx.error_log()
        master_alive = ngx.server.alive()
        workers_after = ngx.worker_pids()
    assert len(workers) == 2, ngx.report()
    assert set(uids.values()) == {uid}, "workers do not run as %s: %s" % (WORKER_USER, uids)
    ok, bad, by_worker, text = summarize(results)
    assert not bad, text + "\n" + ngx.report()
    assert set(by_worker) == set(workers), "not every worker served: " + text
    assert master_alive and sorted(workers_after) == sorted(workers), \
        "a worker was replaced (crashed?)\n" + ngx.report()
    assert not bad_log_lines(log), ngx.report()


def test_nginx_with_four_workers_completes_2000_new_handshakes_with_a_softhsm_key(world):
    key = world.key("hsm", "rsa")
    with Nginx(world, key.cert, key.ref, workers=4) as ngx:
        workers = ngx.worker_pids()
        results, elapsed = handshake_storm(ngx.port, world.ca, 2000, concurrency=12,
                                           time_limit=75)
        log = ngx.error_log()
        workers_after = ngx.worker_pids()
    ok, bad, by_worker, text = summarize(results)
    assert len(workers) == 4, ngx.report()
    assert len(ok) == 2000, "%s in %.1f s\n%s" % (text, elapsed, ngx.report())
    assert set(by_worker) == set(workers), text
    assert sorted(workers_after) == sorted(workers), "a worker was replaced\n" + ngx.report()
    assert not bad_log_lines(log), ngx.report()


@pytest.fixture(scope="module")
def unreadable_hsm_nginx(world):
    """nginx whose SoftHSM token directory only root can read (the administrator did not
    give the worker user access): the master loads the key, the workers cannot reach it."""
    private = world.private_softhsm_copy("hsm-private")
    key = world.key("hsm", "rsa")
    ngx = Nginx(world, key.cert, key.ref, workers=2, env=world.app_env(softhsm=private))
    ngx.start()
    try:
        results, _ = handshake_storm(ngx.port, world.ca, 6, concurrency=2, time_limit=30)
        yield ngx, results, ngx.error_log(), ngx.server.alive()
    finally:
        ngx.stop()


def ctok_error_lines(log):
    """nginx error-log lines that carry an error raised by ctok."""
    return [l for l in log.splitlines() if ":ctok::" in l]


def test_nginx_worker_that_cannot_read_the_softhsm_token_fails_handshakes_without_crashing(
        unreadable_hsm_nginx):
    ngx, results, log, master_alive = unreadable_hsm_nginx
    ok, bad, by_worker, text = summarize(results)
    assert not ok, "handshakes succeeded without access to the token?\n" + text
    assert master_alive, ngx.report()
    assert "exited on signal" not in log, ngx.report()
    # each failed handshake is logged with ctok's error, naming the token or its module
    errors = ctok_error_lines(log)
    assert errors, ngx.report()
    assert all("token 'hsm'" in l or "libsofthsm2.so" in l for l in errors), ngx.report()


def test_nginx_error_log_names_the_worker_user_when_it_cannot_read_the_softhsm_token(
        unreadable_hsm_nginx):
    """The administrator reads in the error log why the worker cannot use the token. The
    token works for root (the master loaded the key; softhsm2-util --show-slots shows it),
    so "C_Initialize failed: CKR_GENERAL_ERROR" or "no token present" alone sends them
    looking in the wrong place: the message must name the token and point at the worker's
    user or at file permissions."""
    ngx, results, log, master_alive = unreadable_hsm_nginx
    errors = ctok_error_lines(log)
    assert errors, ngx.report()
    hint = re.compile(r"permission|%s|uid %d" % (WORKER_USER, worker_ids()[0]), re.I)
    assert any("token 'hsm'" in l and hint.search(l) for l in errors), \
        "no error names the token and the worker user / permissions:\n%s" % "\n".join(
            l[l.find("error:"):][:400] for l in errors[:3])


# ---------------------------------------------------------------- references that fail


@pytest.mark.parametrize("uri,phrase", [
    ("ctok:token=soft;object=no-such-key;type=private", "object not found"),
    ("ctok:token=no-such-token;object=rsa;type=private", "unknown token"),
], ids=["missing-object", "unknown-token"])
def test_nginx_refuses_to_start_with_a_key_reference_to_a_missing_key_and_says_why(world, uri,
                                                                                   phrase):
    ref = world.ws.write("missing-%s.ref.pem" % phrase.replace(" ", "-"),
                         keyref_pem(uri))
    ngx = Nginx(world, world.key("soft", "rsa").cert, ref)
    p = ngx.test_config()
    assert p.returncode != 0, describe(p)
    assert p.returncode not in (134, 139) and p.returncode > 0, describe(p)
    out = p.stderr + p.stdout
    assert "cannot load certificate key" in out, describe(p)
    assert phrase in out.lower(), describe(p)


@pytest.mark.parametrize("uri,phrase", [
    ("ctok:token=soft;object=no-such-key;type=private", "object not found"),
    ("ctok:token=no-such-token;object=rsa;type=private", "unknown token"),
], ids=["missing-object", "unknown-token"])
def test_openssl_pkey_gives_the_same_error_for_a_key_reference_as_for_its_uri(world, uri,
                                                                             phrase):
    """openssl pkey -in REF (a file, read through OSSL_STORE's file loader and the
    decoders) fails with the error the URI gives."""
    ref = world.ws.write("same-%s.ref.pem" % phrase.replace(" ", "-"), keyref_pem(uri))
    env = world.app_env()
    b = run([OPENSSL, "pkey", "-pubout", "-in", uri], env)
    assert b.returncode != 0 and phrase in b.stderr.lower(), describe(b)
    a = run([OPENSSL, "pkey", "-pubout", "-in", ref], env)
    assert a.returncode != 0, describe(a)
    assert phrase in a.stderr.lower(), "the reference fails otherwise than its URI:\n" + \
        describe(a) + "\n" + describe(b)
