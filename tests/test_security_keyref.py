"""Key references and URIs as an attacker hands them in (issue 8, defects 1, 3 and 6).

Every PEM an application reads while ctok is loaded passes ctok's key-reference decoder,
so its input is hostile: it must not write out of bounds (checked under valgrind, because
the writes happen inside the system libcrypto, which ASan cannot see), must not log in or
read files the reference names, and nothing ctok prints may carry an auth code."""

import os
import re
import shutil
import threading

import pytest

from appfixtures import keyref_pem
from ctoktest import (TIMEOUT, assert_fails_with, assert_no_crash, assert_ok, describe, run,
                      sign_digest)
from p11fixtures import MAIN_LABEL, ShimLog, copy_config, logins, main_hsm  # noqa: F401

VALGRIND = shutil.which("valgrind")


def valgrind_ossl(ws, *args, env=None):
    """openssl with ctok loaded (and tracing: OpenSSL's file loader may drop ctok's error
    from its own report), under valgrind memcheck: exit 99 on any memory error."""
    argv = [VALGRIND, "-q", "--error-exitcode=99", *ws.ossl_argv(*args)]
    return run(argv, ws.ossl_env(env=env, debug=True), timeout=TIMEOUT * 3)


def pem_with_lines(lines):
    return "-----BEGIN CTOK URI-----\n%s\n-----END CTOK URI-----\n" % "\n".join(lines)


# ---------------------------------------------------------------- defect 1: PEM step bounds


@pytest.mark.skipif(VALGRIND is None, reason="no valgrind")
def test_key_reference_pem_whose_base64_is_buffered_across_lines_writes_nothing_out_of_bounds(ws):
    # 682 aligned lines decode to 8184 bytes; then 63 characters in lines of three are kept
    # by EVP_DecodeUpdate (no 4-character group completes), and the last character flushes
    # 48 bytes at once: a per-line bound lets that write 40 chosen bytes past 8192.
    hostile = ws.write("hostile.pem", pem_with_lines(["A" * 16] * 682 + ["QUF"] * 21 + ["B"]))
    p = valgrind_ossl(ws, "pkey", "-in", hostile)
    assert p.returncode != 99, "valgrind saw a memory error\n" + describe(p)
    assert "Invalid write" not in p.stderr, describe(p)
    assert_fails_with(p, "'CTOK URI' PEM block is damaged or longer than")


@pytest.mark.skipif(VALGRIND is None, reason="no valgrind")
def test_key_reference_pem_with_one_very_long_body_is_refused_cleanly(ws):
    hostile = ws.write("long.pem", pem_with_lines(["QUFB" * 16] * 400))
    p = valgrind_ossl(ws, "pkey", "-in", hostile)
    assert p.returncode != 99, "valgrind saw a memory error\n" + describe(p)
    assert_fails_with(p, "'CTOK URI' PEM block is damaged or longer than")


@pytest.mark.parametrize("body", [
    ["\x01\x02 not base64 at all \xff"],
    ["QUFB", "-----BEGIN CTOK URI-----", "QUFB"],
    ["QUFB=QUFB"],
], ids=["binary-junk", "nested-begin", "padding-in-the-middle"])
def test_junk_in_a_key_reference_pem_is_one_clear_error_and_no_decode(ws, body):
    hostile = ws.write("junk.pem", pem_with_lines(body))
    p = ws.ossl("pkey", "-in", hostile, debug=True, text=False)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode not in (0, 134, 139) and p.returncode > 0, describe(p)
    assert "invalid ctok URI: a 'CTOK URI' PEM block" in err, describe(p)
    assert "key-reference PEM found" not in err, describe(p)


# ---------------------------------------------------------------- defect 6: no PIN echoed

SECRET = "s3cr3t-4711-pin"
# ctok's own output on an openssl run: its traces and its entries of the error queue
# (openssl itself echoes the URI it was given, which is not ctok's to redact).
CTOK_LINE = re.compile(r"^ctok\[\d+\]:|:error:[0-9A-F]+:ctok:")


def ctok_lines(p):
    return [l for l in p.stderr.splitlines() if CTOK_LINE.search(l)]


@pytest.fixture
def audited(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    audit = ws.path("audit.jsonl")
    assert_ok(ws.ctok("token", "modify", "soft1", "--audit-file", audit, "--audit-use"))
    return tok, audit


@pytest.mark.parametrize("uri", [
    "ctok:token=soft1;object=k1;type=bogus?pin-value=" + SECRET,
    "ctok:token=soft1;object=k1?" + SECRET,
    "ctok:token=soft1;object=k1?pin-source=x&" + SECRET,
    "ctok:token=soft1;" + SECRET,
    "ctok:token=soft1;object=k1?pin%2Dvalue=" + SECRET,
    "pkcs11:token=soft1;object=%zz;pin-value=" + SECRET,
    "pkcs11:token=soft1;object=%zz;pin%2Dvalue=" + SECRET,
    "pkcs11:token=soft1;object=k1?pin-value=" + SECRET + "&" + SECRET,
], ids=["query-pin-value", "query-attribute-without-equals", "second-query-attribute",
        "path-attribute-without-equals", "percent-encoded-name", "pkcs11-path-pin-value",
        "pkcs11-path-percent-encoded-name", "pkcs11-query-attribute-without-equals"])
@pytest.mark.parametrize("cmd", ["pkey", "storeutl"])
def test_no_auth_code_in_a_uri_reaches_an_error_trace_or_audit_line(ws, audited, uri, cmd):
    _, audit = audited
    args = ["-pubout", "-in", uri] if cmd == "pkey" else [uri]
    p = ws.ossl(cmd, *args, debug=True)
    assert_fails_with(p)
    mine = ctok_lines(p)
    assert any("invalid ctok URI" in l for l in mine), describe(p)  # the URI was echoed
    leaked = [l for l in mine if SECRET in l]
    assert not leaked, "auth code in ctok's output:\n%s" % "\n".join(leaked)
    assert SECRET not in p.stdout, describe(p)
    assert not audit.exists() or SECRET not in audit.read_text()


def test_a_pin_value_that_works_is_in_no_trace_or_audit_line(ws, audited):
    tok, audit = audited
    p = ws.ossl("pkey", "-pubout", "-in",
                "ctok:token=soft1;object=k1;type=private?pin-value=" + tok.pin, debug=True)
    assert_ok(p)
    assert any("store: open" in l for l in ctok_lines(p)), describe(p)
    assert tok.pin not in "\n".join(ctok_lines(p)) + p.stdout, describe(p)
    assert '"activate"' in audit.read_text() and tok.pin not in audit.read_text()


# ---------------------------------------------------------------- defect 3: a PEM never acts

class Fifo:
    """A named pipe as a pin-source: whether anybody opened it for reading is known, and a
    reader never blocks for long (a writer waits on the other end)."""

    def __init__(self, path):
        self.path = path
        os.mkfifo(path, 0o600)
        self.opened = threading.Event()
        self._done = False
        self._t = threading.Thread(target=self._write, daemon=True)
        self._t.start()

    def _write(self):
        fd = os.open(self.path, os.O_WRONLY)  # returns once a reader has opened the pipe
        if not self._done:
            self.opened.set()
        try:
            os.write(fd, b"000000\n")
        except OSError:
            pass
        os.close(fd)

    def close(self):
        self._done = True
        if not self.opened.is_set():
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer
            self._t.join(5)
            os.close(fd)


def ref_file(ws, name, uri):
    return ws.write(name, keyref_pem(uri), mode=0o644)


READERS = {
    "pkey": lambda ref: ["pkey", "-pubout", "-in", ref],
    "pkey-pubin": lambda ref: ["pkey", "-pubin", "-in", ref],
    "x509": lambda ref: ["x509", "-noout", "-in", ref],
}


@pytest.fixture
def shim_hsm(main_hsm, tmp_path):
    log = ShimLog(tmp_path / "shim.log")
    return main_hsm.shim_ws, main_hsm.shim_tok, log


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("where", ["query-pin-value", "query-pin-source-fifo",
                                   "pkcs11-path-pin-value"])
def test_a_key_reference_carrying_an_auth_code_is_refused_without_login_or_file_read(
        shim_hsm, tmp_path, reader, where):
    ws, tok, log = shim_hsm
    fifo = Fifo(tmp_path / "pin.fifo")
    try:
        uri = {
            "query-pin-value": tok.key_uri("rsa2048", query="pin-value=000000"),
            "query-pin-source-fifo": tok.key_uri("rsa2048", query="pin-source=file:%s" % fifo.path),
            "pkcs11-path-pin-value": "pkcs11:token=%s;object=rsa2048;type=private;pin-value=000000"
                                     % MAIN_LABEL,
        }[where]
        ref = ref_file(ws, "hostile-%s.pem" % where, uri)
        p = ws.ossl(*READERS[reader](ref), env=log.env(), debug=True, timeout=30)
    finally:
        fifo.close()
    assert_fails_with(p)
    assert not fifo.opened.is_set(), "ctok read the pin-source a key reference named\n" + describe(p)
    assert not logins(log), "a key reference made ctok log in:\n%s\n%s" % (log.text(), describe(p))
    assert any("key references may not carry auth codes" in l for l in ctok_lines(p)), describe(p)


def test_a_key_reference_to_a_token_without_use_opens_and_logs_in_nothing(main_hsm, tmp_path):
    conf = copy_config(main_hsm.shim_ws, hsm={"permissions": ["view"]})
    ws = main_hsm.shim_ws.view("no-use.json", conf)
    log = ShimLog(tmp_path / "shim.log")
    ref = ref_file(ws, "no-use.pem", main_hsm.shim_tok.key_uri("rsa2048"))
    p = ws.ossl("pkey", "-pubout", "-in", ref, env=log.env(), debug=True)
    assert_fails_with(p)
    assert any("rule 'use' is not permitted" in l for l in ctok_lines(p)), describe(p)
    assert not log.entries(), "the token was opened:\n" + log.text()


@pytest.mark.parametrize("reader", ["pkey-pubin", "x509"])
def test_reading_a_valid_key_reference_as_something_else_logs_in_nowhere(shim_hsm, reader):
    ws, tok, log = shim_hsm
    ref = ref_file(ws, "valid-%s.pem" % reader, tok.key_uri("rsa2048"))
    p = ws.ossl(*READERS[reader](ref), env=log.env(), debug=True)
    assert_no_crash(p)
    assert not logins(log), "reading a key reference logged in:\n%s\n%s" % (log.text(),
                                                                           describe(p))


def test_a_valid_key_reference_still_signs_with_the_configured_auth(shim_hsm):
    ws, tok, log = shim_hsm
    ref = ref_file(ws, "valid.pem", tok.key_uri("p256"))
    sp, sig, dg = sign_digest(ws, ref, env=log.env())
    assert_ok(sp)
    assert len(logins(log)) == 1, log.text()
