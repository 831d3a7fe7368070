"""Issue 8, "string params read with strcasecmp/atoi without checking the OSSL_PARAM's
length": an OSSL_PARAM string is data_size bytes, its terminator is not part of it. ctok's
signature, asym cipher and key exchange read string parameters within data_size (a value
without any NUL is read right, never over-read), and refuse a wrongly typed, too long or
unknown value with an error naming the parameter. tests/param_strings.c hands each parameter
to a token key's context in a heap block holding exactly the value's bytes; valgrind sees any
read past it."""

import os
import shutil
import subprocess

import pytest

from ctoktest import SANITIZE_RUNTIME, Workspace, describe

SRC = os.path.join(os.path.dirname(__file__), "param_strings.c")

# key, op, parameter, type, value -> expected line ("set=0" or "set=1 value=...")
CASES = [
    ("r1", "sign", "pad-mode", "utf8", "pss", "set=1 value=6"),
    ("r1", "sign", "pad-mode", "utf8", "PKCS1", "set=1 value=1"),
    ("r1", "sign", "saltlen", "utf8", "20", "set=1 value=20"),
    ("r1", "sign", "saltlen", "utf8", "digest", "set=1 value=-1"),
    ("r1", "sign", "digest", "utf8", "SHA256", "set=1 value=SHA2-256"),
    ("r1", "sign", "mgf1-digest", "utf8", "SHA384", "set=1"),
    ("r1", "sign", "pad-mode", "int", "6", "set=1 value=6"),
    ("r1", "sign", "pad-mode", "octet", "pss", "set=0"),
    ("r1", "sign", "digest", "int", "5", "set=0"),
    ("r1", "sign", "digest", "utf8", "A" * 5000, "set=0"),
    ("r1", "sign", "saltlen", "utf8", "12abc", "set=0"),
    ("r1", "sign", "saltlen", "utf8", "", "set=0"),
    ("r1", "decrypt", "pad-mode", "utf8", "oaep", "set=1 value=4"),
    ("r1", "decrypt", "digest", "utf8", "SHA256", "set=1"),
    ("r1", "decrypt", "mgf1-digest", "utf8", "SHA256", "set=1"),
    ("r1", "decrypt", "pad-mode", "octet", "oaep", "set=0"),
    ("r1", "decrypt", "digest", "octet", "SHA256", "set=0"),
    ("e1", "derive", "kdf-type", "utf8", "X963KDF", "set=1"),
    ("e1", "derive", "kdf-digest", "utf8", "SHA256", "set=1"),
    ("e1", "derive", "kdf-type", "octet", "X963KDF", "set=0"),
    ("e1", "derive", "kdf-digest", "utf8", "S" * 200, "set=0"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, build):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    if SANITIZE_RUNTIME:
        pytest.skip("valgrind cannot run a sanitizer build of ctok (make test-valgrind runs it)")
    root = tmp_path_factory.mktemp("params")
    out = root / "param_strings"
    p = subprocess.run(["gcc", "-O1", "-g", "-Wall", "-o", str(out), SRC, "-lcrypto"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    ws = Workspace(root / "ws", build)
    tok = ws.create_token("tok")
    ws.add_key(tok, "r1", "rsa:2048", cert=False)
    ws.add_key(tok, "e1", "ec:P-256", cert=False)
    results = {}
    for key in ("r1", "e1"):
        argv = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=no", str(out),
                str(build), tok.key_uri(key)]
        cases = [c for c in CASES if c[0] == key]
        for _, op, name, typ, value, _ in cases:
            argv += [op, name, typ, value]
        p = subprocess.run(argv, env=ws.env(), capture_output=True, text=True, timeout=600)
        results[key] = p
    return results


def test_no_string_parameter_is_read_past_its_data_size(setup):
    for key, p in setup.items():
        assert p.returncode == 0, "%s: %s" % (key, describe(p))
        assert "Invalid read" not in p.stderr, describe(p)


@pytest.mark.parametrize("key,op,name,typ,value,want", CASES,
                         ids=["%s-%s-%s-%d" % (c[1], c[2], c[3], len(c[4])) for c in CASES])
def test_each_parameter_is_read_within_its_length_or_refused(setup, key, op, name, typ, value,
                                                            want):
    p = setup[key]
    head = "%s %s %s: " % (op, name, typ)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith(head)]
    assert lines, describe(p)
    # cases of one (op, name, type) run in order: the i-th such case is the i-th line
    same = [c for c in CASES if c[0] == key and c[1:4] == (op, name, typ)]
    line = lines[same.index((key, op, name, typ, value, want))]
    got = line[len(head):]
    assert got == want or (want == "set=1" and got.startswith("set=1")), describe(p)
    if want == "set=0":
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith(head)]
        assert any("parameter '%s'" % name in ln for ln in errors), describe(p)
