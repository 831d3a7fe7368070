"""A user's network HSM fails (the PKCS#11 test shim injects CKR_* codes and disconnects):
ctok re-initializes the module, logs in again with the auth code it knows and retries once,
so signing goes on; a token whose PIN was only typed in says it must be activated again.
PIN errors are named and a rejected PIN is sent once. A process that forks after loading a
key signs in the child. Signing runs in the p11_sign_loop C driver (tests/p11_sign_loop.c):
one key loaded through OSSL_STORE, a fresh EVP_PKEY_CTX per signature, each signature
verified with OpenSSL's default provider."""

import os

import pytest

from ctoktest import (
    assert_fails_with,
    assert_no_crash,
    assert_ok,
    assert_verified,
    describe,
    sign_digest,
    stored_auth,
    verify_digest,
)
from p11fixtures import (  # noqa: F401  (fixtures)
    ShimLog,
    copy_config,
    fresh_hsm,
    logins,
    main_hsm,
    same_token_in,
    sign_loop,
    sign_loop_bin,
    require_shim,
)

RECONNECT_CODES = ["CKR_DEVICE_ERROR", "CKR_DEVICE_REMOVED", "CKR_TOKEN_NOT_PRESENT",
                   "CKR_SESSION_HANDLE_INVALID", "CKR_SESSION_CLOSED",
                   "CKR_CRYPTOKI_NOT_INITIALIZED"]


@pytest.fixture
def log(tmp_path):
    return ShimLog(tmp_path / "shim.log")


def detail(p, log):
    return describe(p) + "\n--- shim log summary ---\n" + log.summary()


# ---------------------------------------------------------------- reconnect


def test_ten_thousand_signatures_in_four_threads_survive_a_disconnect_every_500(
        main_hsm, sign_loop_bin, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, kv = sign_loop(ws, sign_loop_bin, "sign", tok.key_uri("p256"), "4", "10000",
                      env=log.env(disconnect_every=500), timeout=300)
    assert p.returncode == 0, detail(p, log)
    assert kv.get("ok") == "10000" and kv.get("failed") == "0", detail(p, log)
    assert len(log.calls("C_Sign", "CKR_OK")) == 10000, log.summary()
    # 19 disconnects in the run (the 20th comes after the last signature): one
    # re-initialization each, not one per thread
    inits = log.calls("C_Initialize", "CKR_OK")
    assert 20 <= len(inits) <= 23, log.summary()
    # and a new login after each, with the PIN from the auth file
    ok_logins = [c for c in logins(log) if c["rv"] == "CKR_OK"]
    assert len(ok_logins) == len(inits), log.summary()
    assert all(c["rv"] in ("CKR_OK", "CKR_USER_ALREADY_LOGGED_IN") for c in logins(log)), \
        log.summary()


@pytest.mark.parametrize("code", RECONNECT_CODES)
def test_hsm_failure_triggers_reinitialize_login_and_retry(main_hsm, sign_loop_bin, log, code):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, kv = sign_loop(ws, sign_loop_bin, "sign", tok.key_uri("rsa2048"), "1", "7",
                      env=log.env(disconnect_every="2:%s" % code))
    assert p.returncode == 0, detail(p, log)
    assert kv.get("ok") == "7", detail(p, log)
    assert len(log.calls("C_Initialize", "CKR_OK")) == 4, log.summary()
    assert len(log.calls("C_Finalize")) >= 3, log.summary()
    assert len([c for c in logins(log) if c["rv"] == "CKR_OK"]) == 4, log.summary()


@pytest.mark.parametrize("auth", ["env", "stored", "pin-value", "pin-source"])
def test_reconnect_logs_in_again_with_the_auth_code_it_knows(main_hsm, sign_loop_bin, log, auth):
    ws = main_hsm.shim_ws
    pin = main_hsm.shim_tok.pin
    env = log.env(disconnect_every=3)
    query = None
    if auth == "env":
        conf = copy_config(ws, hsm={"auth": {"env": "HSM_PIN_FOR_TEST"}})
        env["HSM_PIN_FOR_TEST"] = pin
    elif auth == "stored":
        key = os.urandom(32)
        mk = ws.write("reconnect-master.key", key)
        conf = copy_config(ws)
        tok_id = conf["tokens"][0]["id"]
        conf["master_key"] = str(mk)
        conf["tokens"][0]["auth"] = {"stored": stored_auth(key, tok_id, pin)}
    else:
        conf = copy_config(ws, hsm={"auth": {"prompt": True}})
        query = ("pin-value=%s" % pin if auth == "pin-value"
                 else "pin-source=file:%s" % main_hsm.shim_tok.pin_file)
    view = ws.view("reconnect-%s.json" % auth, conf)
    tok = same_token_in(view, main_hsm.shim_tok)
    p, kv = sign_loop(view, sign_loop_bin, "sign", tok.key_uri("p256", query=query), "1", "10",
                      env=env)
    assert p.returncode == 0, detail(p, log)
    assert kv.get("ok") == "10", detail(p, log)
    inits = log.calls("C_Initialize", "CKR_OK")
    assert len(inits) == 4, log.summary()
    assert len([c for c in logins(log) if c["rv"] == "CKR_OK"]) == 4, log.summary()


def test_hsm_that_fails_again_after_reconnect_gives_a_clear_error_after_one_retry(main_hsm,
                                                                                  log):
    """The shim fails the first C_Sign after every C_Initialize: ctok re-initializes once,
    retries once, and then reports the token's error instead of looping."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, sig, dg = sign_digest(ws, tok.key_uri("p384"), md="sha384",
                             env=log.env(fail="C_Sign:1:CKR_DEVICE_ERROR"))
    assert_fails_with(p, "CKR_DEVICE_ERROR")
    assert "ctok" in p.stderr
    # the first try and one retry; at most one more initialization to leave the module ready
    assert len([c for c in log.calls("C_Sign") if not c.get("length-query")]) == 2, log.summary()
    assert len(log.calls("C_Initialize")) in (2, 3), log.summary()


def test_openssl_cms_with_two_signers_survives_a_disconnect_between_the_signatures(main_hsm,
                                                                                   log, tmp_path):
    """The HSM disconnects after the first signature of `openssl cms -sign` with two token
    keys: the second is made after re-initialization and login, and the CMS verifies."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    msg = tmp_path / "msg.txt"
    msg.write_text("signed by two HSM keys\n")
    out = tmp_path / "two.p7m"
    p = ws.ossl("cms", "-sign", "-in", msg, "-binary", "-nodetach", "-outform", "DER", "-out", out,
                "-signer", tok.cert("p256"), "-inkey", tok.key_uri("p256"),
                "-signer", tok.cert("rsa2048"), "-inkey", tok.key_uri("rsa2048"),
                env=log.env(disconnect_every=1))
    assert p.returncode == 0, detail(p, log)
    assert len(log.calls("C_Initialize", "CKR_OK")) == 2, log.summary()
    assert len([c for c in logins(log) if c["rv"] == "CKR_OK"]) == 2, log.summary()
    cas = tmp_path / "cas.pem"
    cas.write_text(tok.cert("p256").read_text() + tok.cert("rsa2048").read_text())
    content = tmp_path / "content"
    assert_ok(ws.ossl("cms", "-verify", "-in", out, "-inform", "DER", "-binary", "-CAfile", cas,
                      "-out", content, providers=None))
    assert content.read_bytes() == msg.read_bytes()


def test_prompt_only_token_whose_hsm_disconnects_must_be_activated_again(main_hsm, log):
    """The PIN came from -passin and is not kept: after the module was re-initialized the
    token cannot log in again and says so, without crashing."""
    ws = main_hsm.shim_ws
    view = ws.view("prompt.json", copy_config(ws, hsm={"auth": {"prompt": True}}))
    tok = same_token_in(view, main_hsm.shim_tok)
    # without a failure the typed PIN works
    p, sig, dg = sign_digest(view, tok.key_uri("p256"), "-passin", "pass:%s" % tok.pin)
    assert_ok(p)
    assert_verified(verify_digest(view, tok.cert("p256"), dg, sig))
    p, _, _ = sign_digest(view, tok.key_uri("p256"), "-passin", "pass:%s" % tok.pin,
                          env=log.env(fail="C_Sign:1:CKR_DEVICE_REMOVED"))
    assert_fails_with(p, "must be activated again")
    assert "ctok" in p.stderr
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()


def test_prompt_only_token_in_a_long_running_signer_fails_clearly_after_disconnect(
        main_hsm, sign_loop_bin, log):
    ws = main_hsm.shim_ws
    view = ws.view("prompt2.json", copy_config(ws, hsm={"auth": {"prompt": True}}))
    tok = same_token_in(view, main_hsm.shim_tok)
    p, kv = sign_loop(view, sign_loop_bin, "sign", tok.key_uri("p256"), "2", "40",
                      passin=tok.pin, env=log.env(disconnect_every=10))
    assert_no_crash(p)
    assert p.returncode == 1, detail(p, log)
    assert int(kv.get("ok", 0)) >= 10, detail(p, log)
    assert int(kv.get("failed", 0)) > 0, detail(p, log)
    assert "must be activated again" in p.stderr, detail(p, log)
    # the typed PIN was never sent again after the reconnect
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()


# ---------------------------------------------------------------- PIN errors


def test_wrong_pin_makes_exactly_one_failed_login_and_names_it(main_hsm, log):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, _, _ = sign_digest(ws, tok.key_uri("p256", query="pin-value=not-the-pin"), env=log.env())
    assert_fails_with(p, "CKR_PIN_INCORRECT")
    assert "ctok" in p.stderr
    assert [c["rv"] for c in log.calls("C_Login")] == ["CKR_PIN_INCORRECT"], log.text()


def test_wrong_pin_in_the_auth_file_is_sent_once_per_process(main_hsm, log):
    ws = main_hsm.shim_ws
    bad = ws.write("bad.pin", "not-the-pin")
    view = ws.view("badpin.json", copy_config(ws, hsm={"auth": {"file": str(bad)}}))
    tok = same_token_in(view, main_hsm.shim_tok)
    p = view.ossl("storeutl", "-keys", tok.uri(), env=log.env())
    assert_no_crash(p)
    assert [c["rv"] for c in log.calls("C_Login")] == ["CKR_PIN_INCORRECT"], log.text()
    log2 = ShimLog(log.path.with_name("shim2.log"))
    p = view.ossl("dgst", "-sha256", "-sign", tok.key_uri("rsa2048"), "-out",
                  view.path("never.sig"), view.config, env=log2.env())
    assert_fails_with(p, "CKR_PIN_INCORRECT")
    assert [c["rv"] for c in log2.calls("C_Login")] == ["CKR_PIN_INCORRECT"], log2.text()


@pytest.mark.parametrize("code", ["CKR_PIN_LOCKED", "CKR_PIN_EXPIRED"])
def test_locked_or_expired_pin_is_named_in_the_error(main_hsm, log, code):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, _, _ = sign_digest(ws, tok.key_uri("p256"), env=log.env(fail="C_Login:1:%s" % code))
    assert_fails_with(p, code)
    assert "ctok" in p.stderr
    assert [c["rv"] for c in log.calls("C_Login")] == [code], log.text()


def test_debug_trace_shows_the_module_and_the_login(main_hsm):
    ws, tok = main_hsm.ws, main_hsm.tok
    p, _, _ = sign_digest(ws, tok.key_uri("p256"), debug=True)
    assert_ok(p)
    assert "ctok[" in p.stderr and "libsofthsm2.so" in p.stderr, describe(p)


# ---------------------------------------------------------------- fork


@pytest.mark.parametrize("through", ["softhsm", "shim"])
@pytest.mark.parametrize("alias", ["p256", "rsa2048"])
def test_child_process_signs_with_a_key_its_parent_loaded(main_hsm, sign_loop_bin, log, through,
                                                          alias):
    ws, tok = ((main_hsm.ws, main_hsm.tok) if through == "softhsm"
               else (main_hsm.shim_ws, main_hsm.shim_tok))
    p, kv = sign_loop(ws, sign_loop_bin, "fork", tok.key_uri(alias), "20", env=log.env())
    assert p.returncode == 0, detail(p, log)
    assert kv.get("child_ok") == "20" and kv.get("child_exit") == "0", detail(p, log)
    assert kv.get("parent_after") == "1", detail(p, log)
    if through == "shim":
        child = int(kv["child_pid"])
        child_calls = [e for e in log.entries() if e["pid"] == child]
        # the child initialized the module itself before its first use, and logged in
        assert child_calls and child_calls[0]["fn"] in ("C_Initialize", "C_Finalize"), log.text()
        assert [c["rv"] for c in child_calls if c["fn"] == "C_Login"] == ["CKR_OK"], log.text()
        assert len([c for c in child_calls if c["fn"] == "C_Sign" and c["rv"] == "CKR_OK"
                    and not c.get("length-query")]) == 20, log.text()


@pytest.mark.parametrize("alias", ["p256", "rsa2048"])
def test_eight_threads_of_a_forked_child_start_signing_at_once(main_hsm, sign_loop_bin, log,
                                                               alias):
    """httpd's worker MPM: the parent loads the key and signs, then forks; in each of 30
    children 8 threads make their first token call at the same moment. The shim refuses
    the parent's module state in a child (as real HSM libraries do), so each child must
    re-initialize the module exactly once before any thread signs."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, kv = sign_loop(ws, sign_loop_bin, "forkthreads", tok.key_uri(alias), "8", "4", "30",
                      env=log.env(), timeout=240)
    assert_no_crash(p)
    assert p.returncode == 0, detail(p, log)
    assert kv.get("rounds_ok") == "30" and kv.get("failed") == "0", detail(p, log)
    parent = min(e["pid"] for e in log.entries())
    by_child = {}
    for e in log.entries():
        if e["pid"] != parent:
            by_child.setdefault(e["pid"], []).append(e)
    assert len(by_child) == 30, log.summary()
    for pid, calls in by_child.items():
        # one re-initialization per child, not one per thread, and one login
        assert len([c for c in calls if c["fn"] == "C_Initialize"]) == 1, log.text()
        # before its first call: not by recovering from the parent's state being refused
        assert "CKR_CRYPTOKI_NOT_INITIALIZED" not in [c["rv"] for c in calls], log.text()
        assert len([c for c in calls if c["fn"] == "C_Finalize"]) <= 1, log.text()
        assert [c["rv"] for c in calls if c["fn"] == "C_Login"] == ["CKR_OK"], log.text()
        assert len([c for c in calls if c["fn"] == "C_Sign" and c["rv"] == "CKR_OK"
                    and not c.get("length-query")]) == 32, log.text()


# ---------------------------------------------------------------- object cache


def test_failed_object_refresh_names_its_cause_and_the_next_use_works(fresh_hsm, sign_loop_bin):
    """A key found before login (CKA_PRIVATE false, no certificate, URI naming no token) is
    loaded after the login, which makes the object cache be read again; the module fails
    one C_FindObjects of that refresh. The key load names that failure (not 'no private
    key'), and the next load in the same process reads the objects again and signs."""
    ws = fresh_hsm
    ws.hsm.init_token("refresh")
    attrs = ws.write("attrs.cfg", "attributes(generate, CKO_PRIVATE_KEY, CKK_EC) = {\n"
                     "  CKA_PRIVATE = false\n}\n", mode=0o644)
    tok = ws.create_p11_token("hsm", require_shim(), "label", "refresh", attributes=attrs)
    ws.generate(tok, "visible", "ec:P-256")
    uri = "ctok:object=visible;type=private"
    # where the refresh after the login is: a run that fails nothing, with every call logged
    dry = ShimLog(ws.path("dry.log"))
    p, kv = sign_loop(ws, sign_loop_bin, "cycles", uri, "1", "1", env=dry.env(log_all=1))
    assert p.returncode == 0, detail(p, dry)
    finds = [e["fn"] for e in dry.entries() if e["fn"] in ("C_FindObjects", "C_Login")]
    n = finds.index("C_Login") + 1  # the first C_FindObjects after the login, counted from 1
    assert finds[n] == "C_FindObjects", dry.text()
    log = ShimLog(ws.path("shim.log"))
    p, kv = sign_loop(ws, sign_loop_bin, "cycles", uri, "3", "1",
                      env=log.env(fail_once="C_FindObjects:%d:CKR_DEVICE_MEMORY" % n))
    assert_no_crash(p)
    assert kv.get("ok") == "2" and kv.get("failed") == "1", detail(p, log)
    assert "token 'hsm': reading its objects failed: C_FindObjects returned CKR_DEVICE_MEMORY" \
        in p.stderr, detail(p, log)
    assert "no private key" not in p.stderr, detail(p, log)
