"""A smart card locks after a few wrong PINs, so ctok spends PIN tries with care (issue 8,
defects 5 and 10). A code a token rejected is never sent again by the same process, whichever
path would send it (first login, the re-login after a reconnect, each key reference, each
thread); the error names where the code came from. A locked PIN is not tried, the final try is
never spent by an automatic source (file, variable, stored code, key reference, re-login),
only by a code typed at `ctok token activate`, and a low retry count is reported once.

The card's retry counter is the PKCS#11 test shim's (CTOK_SHIM_PIN_TRIES, a counter file that
all processes share, as a card's is); the calls a process made are the shim's log. Signing
applications are the p11_sign_loop C driver (tests/p11_sign_loop.c), whose `reload` mode
loads the key afresh for every signature, in several threads."""

import json
import os
import signal
import subprocess
import time

import pytest

from ctoktest import (
    PIN,
    assert_fails_with,
    assert_ok,
    describe,
    run_with_tty,
    sign_digest,
    stored_auth,
)
from p11fixtures import (  # noqa: F401  (fixtures)
    ShimLog,
    copy_config,
    fresh_hsm,
    logins,
    main_hsm,
    require_shim,
    same_token_in,
    sign_loop,
    sign_loop_bin,
)

NEW_PIN = "changed-behind-ctoks-back"
WRONG_PIN = "not-the-pin-0000"


@pytest.fixture
def log(tmp_path):
    return ShimLog(tmp_path / "shim.log")


def detail(p, log):
    return describe(p) + "\n--- shim log summary ---\n" + log.summary()


def rejected(log):
    return [c for c in logins(log) if c["rv"] == "CKR_PIN_INCORRECT"]


class Counter:
    """The card's retry counter (CTOK_SHIM_PIN_TRIES=<tries>:<file>) of one token label."""

    def __init__(self, path, label, tries=3):
        self.path, self.label, self.tries = path, label, tries

    def env(self, log, **shim):
        return log.env(pin_tries="%d:%s" % (self.tries, self.path), **shim)

    def set(self, wrong):
        self.path.write_text("%d %s\n" % (wrong, self.label) if wrong else "")

    def wrong(self):
        if not self.path.exists():
            return 0
        for line in self.path.read_text().splitlines():
            n, _, label = line.partition(" ")
            if label == self.label:
                return int(n)
        return 0


@pytest.fixture
def counter(tmp_path, main_hsm):
    return Counter(tmp_path / "pin-tries", main_hsm.label)


def view_with_auth(main_hsm, name, auth):
    ws = main_hsm.shim_ws
    view = ws.view(name, copy_config(ws, hsm={"auth": auth}))
    return view, same_token_in(view, main_hsm.shim_tok)


def wait_stopped(proc, timeout=60):
    """Waits until proc stops itself (CTOK_TEST_STOP_AT) or ends; True if it stopped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with open("/proc/%d/stat" % proc.pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    return True
        except OSError:
            return False
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the process neither stopped nor ended in %ds" % timeout)


def run_stopping_at(ws, argv, env, point, while_stopped, timeout=120):
    """Runs argv; when it stops at the test point, calls while_stopped() and lets it go on.
    Returns (CompletedProcess, whether it stopped)."""
    proc = subprocess.Popen([str(a) for a in argv], env=ws.env(dict(env, CTOK_TEST_STOP_AT=point)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        stopped = wait_stopped(proc)
        if stopped:
            while_stopped()
            os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), stopped


def kv_of(p):
    return dict(w.split("=", 1) for w in p.stdout.split() if "=" in w)


# ---------------------------------------------------------------- defect 5: never resend


def test_pin_changed_behind_ctoks_back_is_tried_once_by_the_reconnect_and_never_again(
        fresh_hsm, sign_loop_bin, log):
    """The PIN is changed while a signer runs; the HSM then disconnects. The re-login sends
    the old PIN from the auth file once; the signer keeps loading the key and signing, and
    no later load sends that PIN again. The errors name the auth file."""
    ws = fresh_hsm
    ws.hsm.init_token("pinsafe")
    tok = ws.create_p11_token("card", library=require_shim(), ref="pinsafe")
    ws.generate(tok, "k", "ec:P-256")

    def change_pin():
        assert_ok(ws.hsm.tool("--token-label", "pinsafe", "--login", "--pin", PIN,
                              "--change-pin", "--new-pin", NEW_PIN))

    argv = [sign_loop_bin, "--provider-path", ws.build, "reload", tok.key_uri("k"), "1", "12"]
    p, stopped = run_stopping_at(ws, argv, log.env(disconnect_every=3), "p11-reconnect",
                                 change_pin)
    assert stopped, detail(p, log)
    kv = kv_of(p)
    assert kv.get("ok") == "3" and kv.get("failed") == "9", detail(p, log)
    # one good login, then the old PIN once, by the re-login; nine more key loads sent nothing
    assert [c["rv"] for c in logins(log)] == ["CKR_OK", "CKR_PIN_INCORRECT"], log.text()
    assert len(log.calls("C_Initialize", "CKR_OK")) == 2, log.summary()
    assert "the PIN from auth file %s was rejected" % tok.pin_file in p.stderr, describe(p)
    assert ("rejected the authentication code from auth file %s before; ctok does not send it "
            "again" % tok.pin_file) in p.stderr, describe(p)
    assert "typed at a prompt" not in p.stderr, describe(p)
    assert NEW_PIN not in p.stderr + p.stdout and PIN not in p.stderr + p.stdout


@pytest.mark.parametrize("threads", [1, 4])
def test_wrong_configured_pin_is_sent_once_however_often_one_process_loads_the_key(
        main_hsm, sign_loop_bin, log, threads):
    view, tok = view_with_auth(main_hsm, "wrong-once.json",
                               {"file": str(main_hsm.shim_ws.write("wrong.pin", WRONG_PIN))})
    p, kv = sign_loop(view, sign_loop_bin, "reload", tok.key_uri("p256"), str(threads), "20",
                      env=log.env())
    assert kv.get("ok") == "0" and kv.get("load_failed") == "20", detail(p, log)
    assert len(rejected(log)) == 1 and len(logins(log)) == 1, log.text()
    assert "does not send it again" in p.stderr, describe(p)


@pytest.mark.parametrize("threads", [1, 4])
def test_wrong_keystore_code_is_tried_once_however_often_one_process_loads_the_key(
        make_token, sign_loop_bin, threads):
    """The soft token has no retry counter, but the rule is the same: every try of a code is
    one "activate" line in the token's audit file."""
    tok = make_token("soft", keys={"k": "ec:P-256"})
    ws = tok.ws
    audit = ws.path("audit.jsonl")
    ws.set_token_fields(tok, audit_file=str(audit), auth={"file": str(ws.write("bad", WRONG_PIN))})
    p, kv = sign_loop(ws, sign_loop_bin, "reload", tok.key_uri("k"), str(threads), "20")
    assert kv.get("ok") == "0" and kv.get("load_failed") == "20", describe(p)
    tries = [json.loads(line) for line in audit.read_text().splitlines()]
    tries = [e for e in tries if e["operation"] == "activate"]
    assert [e["outcome"] for e in tries] == ["failure"], tries
    assert "does not send it again" in p.stderr, describe(p)


# ---------------------------------------------------------------- defect 10: lockout guard


@pytest.mark.parametrize("auth", ["file", "env", "stored"])
def test_final_try_is_never_spent_by_an_automatic_source(main_hsm, log, counter, auth):
    ws, env = main_hsm.shim_ws, counter.env(log)
    if auth == "file":
        conf = copy_config(ws, hsm={"auth": {"file": str(main_hsm.shim_tok.pin_file)}})
        source = "auth file %s" % main_hsm.shim_tok.pin_file
    elif auth == "env":
        conf = copy_config(ws, hsm={"auth": {"env": "HSM_PIN_FOR_TEST"}})
        env["HSM_PIN_FOR_TEST"] = PIN
        source = "environment variable HSM_PIN_FOR_TEST"
    else:
        key = os.urandom(32)
        conf = copy_config(ws)
        conf["master_key"] = str(ws.write("final-master.key", key))
        conf["tokens"][0]["auth"] = {"stored": stored_auth(key, conf["tokens"][0]["id"], PIN)}
        source = "stored"
    view = ws.view("final-%s.json" % auth, conf)
    tok = same_token_in(view, main_hsm.shim_tok)
    counter.set(2)
    p, _, _ = sign_digest(view, tok.key_uri("p256"), env=env)
    assert_fails_with(p, "one PIN try is left", source, "ctok token activate hsm",
                      "ctok pin unlock hsm")
    assert logins(log) == [], log.text()
    assert counter.wrong() == 2


def test_locked_pin_is_not_tried(main_hsm, log, counter):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    counter.set(3)
    p, _, _ = sign_digest(ws, tok.key_uri("p256"), env=counter.env(log))
    assert_fails_with(p, "PIN is locked", "ctok pin unlock hsm")
    assert logins(log) == [], log.text()


def test_low_retry_count_is_reported_once_and_a_good_pin_resets_it(main_hsm, sign_loop_bin, log,
                                                                    counter):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    counter.set(1)
    p, kv = sign_loop(ws, sign_loop_bin, "reload", tok.key_uri("p256"), "1", "6",
                      env=counter.env(log))
    assert p.returncode == 0 and kv.get("ok") == "6", detail(p, log)
    warnings = [ln for ln in p.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "PIN count low" in warnings[0], describe(p)
    assert warnings[0].startswith("ctok["), describe(p)
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()
    assert counter.wrong() == 0


def test_processes_with_a_wrong_pin_stop_before_the_card_locks(main_hsm, log, counter):
    """Five processes in a row with a wrong PIN in the auth file: the first two spend a try
    each, the rest find the final try left and do not spend it. The card never locks."""
    view, tok = view_with_auth(main_hsm, "wrong-procs.json",
                               {"file": str(main_hsm.shim_ws.write("wrong2.pin", WRONG_PIN))})
    errors = []
    for _ in range(5):
        p, _, _ = sign_digest(view, tok.key_uri("p256"), env=counter.env(log))
        assert p.returncode != 0 and p.returncode not in (134, 139), describe(p)
        errors.append(p.stderr)
    assert len(rejected(log)) == 2 and len(logins(log)) == 2, log.text()
    assert counter.wrong() == 2
    assert all("one PIN try is left" in e for e in errors[2:]), errors


def test_reconnect_does_not_spend_the_final_try(main_hsm, sign_loop_bin, log, counter):
    """Wrong tries made elsewhere while a signer runs leave one try: the signer's re-login
    after a disconnect does not spend it, not even with the code that worked before."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    argv = [sign_loop_bin, "--provider-path", ws.build, "sign", tok.key_uri("p256"), "1", "6"]
    p, stopped = run_stopping_at(ws, argv, counter.env(log, disconnect_every=3), "p11-reconnect",
                                 lambda: counter.set(2))
    assert stopped, detail(p, log)
    assert kv_of(p).get("ok") == "3", detail(p, log)
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()
    assert "one PIN try is left" in p.stderr, describe(p)
    assert counter.wrong() == 2


def test_admin_spends_the_final_try_only_by_typing_the_pin_at_token_activate(main_hsm, log,
                                                                             counter):
    ws = main_hsm.shim_ws
    counter.set(2)
    # a code from a file is refused even here
    p = ws.ctok("token", "activate", "hsm", "--auth-file", main_hsm.shim_tok.pin_file,
                env=counter.env(log))
    assert p.returncode != 0 and "one PIN try is left" in p.stderr, describe(p)
    assert logins(log) == [], log.text()
    # typed at the terminal: a warning, then the try
    code, out, prompts = run_with_tty([ws.build / "ctok", "token", "activate", "hsm"],
                                      ws.env(counter.env(log)), answers=[PIN])
    assert code == 0, out
    assert len(prompts) == 1 and "warning" in out and "one PIN try is left" in out, out
    assert "accepted" in out, out
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()
    assert counter.wrong() == 0


def test_threads_that_listed_the_token_before_another_threads_login_still_find_the_key(
        main_hsm, sign_loop_bin, log):
    """Eight threads load the key at once; all but the first pause after listing the token
    (CTOK_TEST_DELAY_AT), so the first logs in meanwhile. Each paused thread listed the token
    while its private keys were hidden and must list it again, not fail 'no object matches'."""
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    p, kv = sign_loop(ws, sign_loop_bin, "reload", tok.key_uri("p256"), "8", "40",
                      env=dict(log.env(), CTOK_TEST_DELAY_AT="lookup-listed:300"))
    assert p.returncode == 0 and kv.get("ok") == "40" and kv.get("load_failed") == "0", \
        detail(p, log)
    assert [c["rv"] for c in logins(log)] == ["CKR_OK"], log.text()
