"""Key references and URIs as an attacker hands them in (issue 8, defects 1, 3 and 6).

Every PEM an application reads while ctok is loaded passes ctok's key-reference decoder,
so its input is hostile: it must not write out of bounds (checked under valgrind, because
the writes happen inside the system libcrypto, which ASan cannot see), must not log in or
read files the reference names, and nothing ctok prints may carry an auth code."""

import shutil

import pytest

from appfixtures import keyref_pem
from ctoktest import TIMEOUT, assert_fails_with, describe, run

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
