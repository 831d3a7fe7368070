"""Issue 12, the tool's conventions for auth codes, progress and lock files: `token create
--auth-file` refuses what the provider would refuse, with the provider's own line;
`activate --remember` keeps the configured source and `deactivate` brings it back; Ctrl-C at
the tool's prompt leaves the terminal echoing; slow operations show a spinner on a terminal
and nothing elsewhere; keystore and config writes leave no lock file behind and still take
turns."""

import json
import os
import pty
import re
import signal
import subprocess
import termios
import time

from ctoktest import (
    PIN,
    TIMEOUT,
    assert_ok,
    assert_tool_error,
    assert_verified,
    describe,
    sign_digest,
    tty_chunk,
    tty_read_until,
    tty_spawn,
    verify_digest,
    wait_stopped,
)

# ------------------------------------------------------------------ --auth-file at create


def provider_line(ws, tok):
    """What openssl (the provider) says when it reads the token's auth file."""
    p, _, _ = sign_digest(ws, tok.key_uri("k1"))
    assert p.returncode != 0, describe(p)
    m = re.search(r"token '%s': auth file .*" % tok.name, p.stderr)
    assert m, describe(p)
    return m.group(0)


def recreate(ws, tok, pin_file):
    """token create again, same name and keystore, with pin_file as its auth file."""
    return ws.ctok("token", "create", "--type", "pkcs12", "--name", tok.name, "--keystore",
                   tok.keystore, "--auth-file", pin_file)


def test_create_refuses_an_auth_file_others_can_read_with_the_providers_line(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    os.chmod(tok.pin_file, 0o644)
    said = provider_line(ws, tok)
    assert "readable by others" in said
    assert_ok(ws.ctok("token", "delete", tok.name))
    line = assert_tool_error(recreate(ws, tok, tok.pin_file), "readable by others")
    assert said in line, (said, line)
    assert tok.name not in ws.config.read_text()


def test_create_refuses_an_auth_file_that_is_a_symbolic_link(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    link = ws.path("link.pin")
    link.symlink_to(tok.pin_file)
    ws.set_token_fields(tok, auth={"file": str(link)})
    said = provider_line(ws, tok)
    assert "symbolic link" in said
    assert_ok(ws.ctok("token", "delete", tok.name))
    line = assert_tool_error(recreate(ws, tok, link), "symbolic link")
    assert said in line, (said, line)


def test_create_refuses_an_auth_file_in_a_folder_others_can_write(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    shared = ws.path("shared")
    shared.mkdir()
    os.chmod(shared, 0o777)  # not sticky: anyone may swap the file
    pin = shared / "code.pin"
    pin.write_bytes(tok.pin_file.read_bytes())
    os.chmod(pin, 0o600)
    assert_ok(ws.ctok("token", "delete", tok.name))
    assert_tool_error(recreate(ws, tok, pin), "token 'soft1': auth file", "writable by others")


def test_modify_refuses_an_auth_file_the_provider_would_refuse(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    bad = ws.write("bad.pin", PIN, mode=0o640)
    before = ws.config.read_text()
    assert_tool_error(ws.ctok("token", "modify", tok.name, "--auth-file", bad),
                      "token 'soft1': auth file", "readable by others")
    assert ws.config.read_text() == before


# ------------------------------------------------------------------ remember / deactivate


def entry(ws, name):
    return next(t for t in ws.load_config()["tokens"] if t["name"] == name)


def test_remember_keeps_the_auth_file_and_deactivate_restores_it(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    cert = tok.cert("k1")
    configured = entry(ws, "soft1")["auth"]
    assert configured == {"file": str(tok.pin_file)}
    assert_ok(ws.ctok("token", "activate", "soft1", "--auth-file", tok.pin_file, "--remember"))
    auth = entry(ws, "soft1")["auth"]
    assert set(auth) == {"stored", "fallback"} and auth["fallback"] == configured
    # the stored code is what activates it now: the file can go
    code = tok.pin_file.read_bytes()
    tok.pin_file.unlink()
    p, sig, dg = sign_digest(ws, tok.key_uri("k1"))
    assert_ok(p)
    assert_verified(verify_digest(ws, cert, dg, sig))
    # a second --remember keeps the first fallback, not the stored code
    again = ws.write("again.pin", code)
    assert_ok(ws.ctok("token", "activate", "soft1", "--auth-file", again, "--remember"))
    assert entry(ws, "soft1")["auth"]["fallback"] == configured
    p = assert_ok(ws.ctok("token", "deactivate", "soft1"))
    assert "configured source is used again (file %s)" % tok.pin_file in p.stdout, describe(p)
    assert entry(ws, "soft1")["auth"] == configured
    # the file source is back: without the file nothing signs, with it everything does
    p, _, _ = sign_digest(ws, tok.key_uri("k1"))
    assert p.returncode != 0 and "auth file" in p.stderr, describe(p)
    ws.write(tok.pin_file.name, code)
    p, sig, dg = sign_digest(ws, tok.key_uri("k1"))
    assert_ok(p)
    assert_verified(verify_digest(ws, cert, dg, sig))


def test_deactivate_json_names_the_restored_source(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    assert_ok(ws.ctok("token", "activate", "soft1", "--auth-file", tok.pin_file, "--remember"))
    p = assert_ok(ws.ctok("--json", "token", "deactivate", "soft1"))
    assert json.loads(p.stdout) == {"token": "soft1", "active": False,
                                    "auth": "file %s" % tok.pin_file}


def test_a_stored_code_written_before_fallbacks_deactivates_to_the_prompt(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    assert_ok(ws.ctok("token", "activate", "soft1", "--auth-file", tok.pin_file, "--remember"))
    old_style = {"stored": entry(ws, "soft1")["auth"]["stored"]}
    ws.set_token_fields(tok, auth=old_style)
    tok.pin_file.unlink()
    p, _, _ = sign_digest(ws, tok.key_uri("k1"))
    assert_ok(p)  # still readable, still auto-activates
    assert_ok(ws.ctok("token", "deactivate", "soft1"))
    assert entry(ws, "soft1")["auth"] == {"prompt": True}


def test_a_fallback_without_a_stored_code_is_a_config_error(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    ws.set_token_fields(tok, auth={"file": str(tok.pin_file), "fallback": {"prompt": True}})
    assert_tool_error(ws.ctok("key", "list", "soft1"), "fallback")


# ------------------------------------------------------------------ Ctrl-C at the prompt


def wait_exit(pid, deadline):
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError("ctok did not end on the terminal in time")


def spawn_on_tty(ws, *args):
    """ctok on a new pseudo terminal, its controlling tty: (pid, master fd)."""
    return tty_spawn([ws.build / "ctok", *args], ws.env())


def echo_on(fd):
    return bool(termios.tcgetattr(fd)[3] & termios.ECHO)


def test_ctrl_c_at_the_prompt_leaves_the_terminal_echoing(ws, make_token):
    make_token("soft1", {"k1": "ec:P-256"})
    pid, fd = spawn_on_tty(ws, "token", "activate", "soft1")
    deadline = time.monotonic() + TIMEOUT
    try:
        out = tty_read_until(fd, b"Authentication code for token 'soft1':", deadline)
        assert b"Authentication code" in out, out
        time.sleep(0.3)  # the prompt is printed before echo goes off
        assert not echo_on(fd), "the prompt did not turn echo off"
        os.write(fd, b"par\x03")
        status = wait_exit(pid, deadline)
        # interrupted as a program is by Ctrl-C, and the terminal echoes again
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT, status
        assert echo_on(fd), "ctok left the terminal without echo"
    finally:
        os.close(fd)


def test_a_code_typed_at_the_prompt_is_not_echoed_and_activates(ws, make_token):
    make_token("soft1", {"k1": "ec:P-256"})
    pid, fd = spawn_on_tty(ws, "token", "activate", "soft1")
    deadline = time.monotonic() + TIMEOUT
    try:
        tty_read_until(fd, b"Authentication code for token 'soft1':", deadline)
        time.sleep(0.3)
        os.write(fd, PIN.encode() + b"\n")
        out = tty_read_until(fd, b"accepted", deadline)
        status = wait_exit(pid, deadline)
        assert os.waitstatus_to_exitcode(status) == 0, out
        assert b"authentication code accepted" in out and PIN.encode() not in out, out
        assert echo_on(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ progress


def run_on_pty(ws, args, stderr_tty):
    """ctok with stdin and stdout on a pseudo terminal; stderr on it too, or on a pipe.
    Returns (exit code, terminal bytes, stderr pipe bytes)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(ws.build / "ctok"), *[str(a) for a in args]], env=ws.env(),
                         stdin=slave, stdout=slave,
                         stderr=slave if stderr_tty else subprocess.PIPE,
                         start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            chunk = tty_chunk(master, 0.1)
            if chunk == b"" or (chunk is None and p.poll() is not None):
                break
            out += chunk or b""
        err = p.stderr.read() if p.stderr is not None else b""
        return p.wait(TIMEOUT), out, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        os.close(master)


def test_rsa4096_generation_spins_on_a_terminal_and_clears_the_line(ws, make_token):
    make_token("soft1")
    code, out, _ = run_on_pty(ws, ["key", "generate", "soft1", "big", "rsa:4096"], True)
    assert code == 0, out
    assert re.search(rb"\rGenerating the key [|/\\-]", out), out
    # erased before the result is printed, so the result line stands alone
    before, result = out.rsplit(b"\r\x1b[K", 1)
    assert b"Generated RSA-4096 key 'big'" in result and b"Generating" not in result, out


def test_no_spinner_when_stderr_is_a_pipe(ws, make_token):
    make_token("soft1")
    code, out, err = run_on_pty(ws, ["key", "generate", "soft1", "big", "rsa:4096"], False)
    assert code == 0, (out, err)
    assert err == b"", err
    assert b"Generating the key" not in out and b"\r\x1b[K" not in out, out


def test_no_spinner_with_json_even_on_a_terminal(ws, make_token):
    make_token("soft1")
    code, out, _ = run_on_pty(ws, ["--json", "key", "generate", "soft1", "k", "ec:P-256"], True)
    assert code == 0, out
    assert b"Generating" not in out and b"\x1b[K" not in out, out
    assert json.loads(out.decode().replace("\r\n", "\n"))["alias"] == "k"


# ------------------------------------------------------------------ lock files


def lock_files(ws):
    return sorted(p.name for p in ws.root.rglob("*.lock"))


def test_key_generation_and_token_edits_leave_no_lock_file(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    assert_ok(ws.ctok("key", "generate", "soft1", "k2", "ec:P-256"))
    assert_ok(ws.ctok("token", "activate", "soft1", "--auth-file", tok.pin_file, "--remember"))
    assert_ok(ws.ctok("key", "remove", "soft1", "k2"))
    assert_ok(ws.ctok("token", "deactivate", "soft1"))
    assert lock_files(ws) == []


def test_writers_still_take_turns_when_the_lock_file_is_removed_between_them(ws, make_token):
    """A holds the lock (stopped inside its keystore write); B waits for it. A finishes and
    removes the lock file: B, which waited on the removed file, must lock afresh, so that C,
    arriving while B writes, waits for B instead of taking a lock file of its own."""
    make_token("soft1", {"k1": "ec:P-256"})
    ctok = str(ws.build / "ctok")

    def start(alias, stop):
        env = ws.env({"CTOK_TEST_STOP_AT": "keystore-write"} if stop else None)
        return subprocess.Popen([ctok, "key", "generate", "soft1", alias, "ec:P-256"], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    procs = []
    try:
        a = start("a", True)
        procs.append(a)
        assert wait_stopped(a.pid), "A never stopped in its keystore write"
        b = start("b", True)
        procs.append(b)
        time.sleep(1.0)
        assert b.poll() is None and not wait_stopped(b.pid, 0.2), "B did not wait for A"
        os.kill(a.pid, signal.SIGCONT)
        assert_ok(subprocess.CompletedProcess(a.args, a.wait(TIMEOUT), *a.communicate()))
        assert wait_stopped(b.pid), "B never got the lock after A"
        c = start("c", False)
        procs.append(c)
        time.sleep(1.5)
        assert c.poll() is None, "C wrote while B held the lock: %s" % (c.communicate(),)
        os.kill(b.pid, signal.SIGCONT)
        for p in (b, c):
            out, err = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, (out, err)
    finally:
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
                p.wait(10)
    listed = assert_ok(ws.ctok("--json", "key", "list", "soft1"))
    assert sorted(k["alias"] for k in json.loads(listed.stdout)) == ["a", "b", "c", "k1"]
    assert lock_files(ws) == []
