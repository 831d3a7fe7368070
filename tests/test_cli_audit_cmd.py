"""Issue 12: `ctok audit TOKEN [--json] [--since TIME] [--operation OP]` prints the token's
audit trail (the JSON lines of its "audit_file", store/audit.c): text, one aligned line per
entry (TIME  OPERATION  OBJECT  OUTCOME  PROGRAM[PID]  DETAIL), or with --json the entries
as stored; --since and --operation filter; lines that are not JSON objects are skipped and
counted; the 'view' rule guards it; a hostile file never crashes it."""

import json
import os
import re
from pathlib import Path

import pytest

from ctoktest import PIN, assert_no_crash, assert_ok, describe, sign_digest
from test_cli_support import NEW_PIN, WRONG_PIN, Kind, error_line


@pytest.fixture
def soft(tmp_path, build):
    return Kind("pkcs12", tmp_path, build)


def audited(soft, name="tok"):
    """A soft token with an audit file (and audit_use): the token and the file's path."""
    tok = soft.create(name)
    path = soft.ws.path("audit-%s.jsonl" % name)
    assert_ok(soft.ctok("token", "modify", name, "--audit-file", path, "--audit-use"))
    return tok, path


def stored(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def audit_json(soft, *args):
    p = assert_ok(soft.ctok("audit", "tok", "--json", *args))
    return json.loads(p.stdout)


def test_audit_lists_a_tokens_operations_in_order(soft):
    tk, path = audited(soft)
    assert_ok(soft.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    cert = soft.ws.self_signed(tk, "k1")
    assert_ok(soft.ctok("cert", "import", "tok", "k1", cert))
    wrong = soft.ws.write("wrong.pin", WRONG_PIN)
    error_line(soft.ctok("token", "activate", "tok", "--auth-file", wrong),
               "wrong authentication code")
    assert_ok(soft.ctok("token", "activate", "tok", "--auth-file", tk.pin_file))
    p, _, _ = sign_digest(soft.ws, tk.key_uri("k1"))
    assert_ok(p)
    assert_ok(soft.ctok("key", "remove", "tok", "k1"))

    p = assert_ok(soft.ctok("audit", "tok"))
    rows = [l.split() for l in p.stdout.splitlines()]
    # the operations ctok did, in order (activations the commands needed in between)
    seen = [(r[1], r[2], r[3]) for r in rows if r[1] != "activate"]
    # (the self-signed certificate is a signature too)
    assert seen == [("key_generate", "k1", "success"), ("key_use", "k1", "success"),
                    ("cert_import", "k1", "success"), ("key_use", "k1", "success"),
                    ("key_remove", "k1", "success")], p.stdout
    acts = [r[3] for r in rows if r[1] == "activate"]
    assert "failure" in acts and "success" in acts, p.stdout
    use = [r for r in rows if r[1] == "key_use"][0]
    assert use[4].startswith("openssl[") and use[5] == "sign", p.stdout
    assert [r for r in rows if r[1] == "key_generate"][0][4].startswith("ctok["), p.stdout
    # aligned: every column starts at the same place on every line
    starts = [[m.start() for m in re.finditer(r"\S+", l)][:5] for l in p.stdout.splitlines()]
    assert all(s == starts[0] for s in starts), "columns are not aligned:\n" + p.stdout
    assert len(rows) == len(stored(path))

    assert audit_json(soft) == stored(path)
    for secret in (PIN, NEW_PIN, WRONG_PIN):
        assert secret not in p.stdout


def test_since_and_operation_filter(soft):
    _, path = audited(soft)
    lines = [{"time": "2026-11-28T23:59:59.999Z", "token": "tok", "operation": "key_generate",
              "object": "a", "outcome": "success", "process": {"pid": 7, "program": "ctok"}},
             {"time": "2026-11-29T00:00:00.000Z", "token": "tok", "operation": "key_use",
              "object": "a", "outcome": "success", "process": {"pid": 8, "program": "nginx"},
              "detail": "sign"},
             {"time": "2026-11-29T12:00:00.500Z", "token": "tok", "operation": "key_generate",
              "object": "b", "outcome": "failure", "process": {"pid": 9, "program": "ctok"}}]
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert audit_json(soft, "--since", "2026-11-29") == lines[1:]
    assert audit_json(soft, "--since", "2026-11-29T12:00:00Z") == lines[2:]
    assert audit_json(soft, "--since", "2026-11-29T12:00:01Z") == []
    assert audit_json(soft, "--operation", "key_generate") == [lines[0], lines[2]]
    assert audit_json(soft, "--operation", "key_generate", "--since", "2026-11-29") == lines[2:]
    p = assert_ok(soft.ctok("audit", "tok", "--operation", "key_use"))
    assert p.stdout.split() == ["2026-11-29T00:00:00.000Z", "key_use", "a", "success",
                                "nginx[8]", "sign"], p.stdout
    for bad in ("yesterday", "2026-11-29T12:00", "2026-13-01", "2026-11-29T12:00:00+01:00"):
        error_line(soft.ctok("audit", "tok", "--since", bad), "ISO-8601", code=2)
    error_line(soft.ctok("audit", "tok", "--operation", "keygen"), "key_generate", code=2)


def test_help_lists_exactly_the_operations_ctok_writes_and_accepts(soft):
    _, path = audited(soft)
    path.write_text("")
    help_text = assert_ok(soft.ctok("audit", "--help")).stdout
    ops = [o.strip() for o in help_text.split("OP is one of:")[1].split(",")]
    # what store/ writes: every ctok_audit(..., "operation", ...) of the token layer
    src = Path(__file__).resolve().parent.parent / "store"
    written = set()
    for f in src.glob("*.c"):
        for call in re.findall(r"ctok_audit\((.*?)\);", f.read_text(), re.S):
            written |= set(re.findall(r'"([a-z_]+)"', call.split(",", 2)[1]))
    assert written and set(ops) == written, (ops, written)
    for op in ops:
        assert_ok(soft.ctok("audit", "tok", "--operation", op))
    root = src.parent
    completion = (root / "completion" / "ctok").read_text()
    offered = re.search(r"--operation\)\s*mapfile -t COMPREPLY < <\(compgen -W '([^']*)'",
                        completion).group(1).split()
    assert offered == ops
    man = (root / "docs" / "man" / "ctok.1.scd").read_text()
    assert all(op in man.split("*audit*", 1)[1].split("*doctor*")[0] for op in ops)


def test_malformed_lines_are_skipped_and_counted(soft):
    _, path = audited(soft)
    assert_ok(soft.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    good = stored(path)
    with open(path, "a") as f:
        f.write("not json\n[1, 2]\n\"a string\"\n{\"truncated\": \n")
    p = assert_ok(soft.ctok("audit", "tok", "--json"))
    assert json.loads(p.stdout) == good
    assert "warning: 4 malformed lines skipped" in p.stderr, describe(p)
    p = assert_ok(soft.ctok("audit", "tok"))
    assert len(p.stdout.splitlines()) == len(good)
    assert "warning: 4 malformed lines skipped" in p.stderr, describe(p)


def test_an_empty_audit_file_prints_nothing(soft):
    _, path = audited(soft)
    path.write_text("")
    os.chmod(path, 0o600)
    p = assert_ok(soft.ctok("audit", "tok"))
    assert p.stdout == "" and p.stderr == "", describe(p)
    assert audit_json(soft) == []


def test_a_token_without_an_audit_file_is_one_clear_error(soft):
    soft.create("x")
    line = error_line(soft.ctok("audit", "x"), "token 'x' has no audit file",
                      "ctok token modify x --audit-file F")
    assert "audit" in line


def test_a_missing_audit_file_names_token_and_file(soft):
    _, path = audited(soft)
    assert not path.exists()
    error_line(soft.ctok("audit", "tok"), "token 'tok': audit file", str(path))


def test_the_view_rule_guards_the_audit_trail(soft):
    _, path = audited(soft)
    assert_ok(soft.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    soft.set_permissions(["use", "keygen", "modify"])
    line = error_line(soft.ctok("audit", "tok"), "rule 'view' is not permitted", "audit")
    assert "tok" in line
    assert path.exists()


def test_an_audit_file_others_may_write_or_a_link_is_refused(soft):
    _, path = audited(soft)
    assert_ok(soft.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    os.chmod(path, 0o622)
    error_line(soft.ctok("audit", "tok"), "writable by others")
    os.chmod(path, 0o600)
    real = soft.ws.path("real.jsonl")
    os.rename(path, real)
    os.symlink(real, path)
    error_line(soft.ctok("audit", "tok"), "symbolic link")


def test_a_hostile_audit_file_never_crashes(soft):
    _, path = audited(soft)
    assert_ok(soft.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    good = path.read_bytes()
    entry = json.loads(good.splitlines()[0])
    evil = dict(entry, object="\x1b]0;pwned\x07\x1b[2J", detail="a\rb")
    with open(path, "ab") as f:
        f.write(b"{\"object\": \"" + b"A" * (1 << 20) + b"\"}\n")  # 1 MiB line
        f.write(b"{\"object\": \"\xff\xfe bad utf-8\"}\n")
        f.write(b"{\"object\": \"nul\x00byte\"}\n")
        f.write(b"\x00" * 100 + b"\n")
        f.write(b"{" * 100000 + b"\n")  # deep nesting
        f.write(json.dumps(evil).encode() + b"\n")
        f.write(b"{\"time\": 5, \"operation\": [], \"process\": \"x\"}\n")
        f.write(b"{\"no newline at the end\": 1}")
    for args in ((), ("--json",), ("--since", "2026-01-01"), ("--operation", "key_generate")):
        p = soft.ws.ctok("audit", "tok", *args)
        assert_no_crash(p)
        assert p.returncode == 0, describe(p)
        assert "warning: 5 malformed lines skipped" in p.stderr, describe(p)
    p = assert_ok(soft.ctok("audit", "tok"))
    assert "\x1b" not in p.stdout and "\x07" not in p.stdout and "\r" not in p.stdout
    assert "?]0;pwned??[2J" in p.stdout
    entries = audit_json(soft)
    assert entries[-3] == evil and entries[-1] == {"no newline at the end": 1}
