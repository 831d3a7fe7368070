"""A smart card locks after a few wrong PINs, so ctok spends PIN tries with care (issue 8,
defect 5). A code a token rejected is never sent again by the same process, whichever path
would send it (first login, the re-login after a reconnect, each key reference, each thread);
the error names where the code came from.

The calls a process made are the PKCS#11 test shim's log. Signing applications are the
p11_sign_loop C driver (tests/p11_sign_loop.c), whose `reload` mode loads the key afresh for
every signature, in several threads."""

import json
import os
import signal
import subprocess
import time

import pytest

from ctoktest import (
    PIN,
    assert_ok,
    describe,
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
