"""Issue 5: every key generation, removal, certificate import, activation, deactivation and
code change of a token with an "audit_file" is appended to that file as one JSON line (time,
token, operation, object, outcome, process), and with "audit_use" every private key use too;
the file never holds a secret (the tests grep it, and everything printed, for the codes)."""

import json
import re
import subprocess

from ctoktest import PIN, assert_ok, describe, sign_digest
from p11fixtures import sign_loop_bin  # noqa: F401
from test_cli_support import NEW_PIN, WRONG_PIN, error_line, kind  # noqa: F401

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
OPERATIONS = {"key_generate", "key_remove", "cert_import", "activate", "deactivate",
              "code_change", "key_use"}


class Audit:
    def __init__(self, kind, name="tok", use=False):
        self.kind = kind
        self.path = kind.ws.path("audit-%s.jsonl" % name)
        args = ["token", "modify", name, "--audit-file", self.path]
        if use:
            args.append("--audit-use")
        assert_ok(kind.ctok(*args))
        self.seen = 0

    def lines(self):
        if not self.path.exists():
            return []
        text = self.path.read_text()
        assert text == "" or text.endswith("\n"), "last audit line is not terminated"
        out = []
        for raw in text.splitlines():
            try:
                e = json.loads(raw)
            except ValueError as exc:
                raise AssertionError("audit line is not JSON (%s): %r" % (exc, raw))
            assert isinstance(e, dict), raw
            out.append(e)
        return out

    def new(self):
        """The lines appended since the last call."""
        lines = self.lines()
        fresh = lines[self.seen:]
        self.seen = len(lines)
        return fresh

    def check_fields(self, e, token="tok"):
        for k in ("time", "token", "operation", "object", "outcome", "process"):
            assert k in e, "audit line without %r: %s" % (k, e)
        assert TIME.match(e["time"]), e
        assert e["token"] == token, e
        assert e["operation"] in OPERATIONS, e
        assert e["outcome"] in ("success", "failure"), e
        assert isinstance(e["process"].get("pid"), int) and e["process"]["pid"] > 0, e
        assert e["process"].get("program") in ("ctok", "openssl"), e


def ops(lines, op):
    return [e for e in lines if e["operation"] == op]


def one(lines, op, **want):
    hits = ops(lines, op)
    assert len(hits) == 1, "expected one %r line, got %d:\n%s" % (
        op, len(hits), "\n".join(json.dumps(e) for e in lines))
    for k, v in want.items():
        assert hits[0].get(k) == v, "%s: %r != %r in %s" % (k, hits[0].get(k), v, hits[0])
    return hits[0]


def test_each_token_operation_appends_one_json_line(kind):
    tok = kind.create("tok")
    audit = Audit(kind)
    ws = kind.ws

    assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    new = audit.new()
    e = one(new, "key_generate", object="k1", outcome="success")
    assert e["process"]["program"] == "ctok"
    assert set(x["operation"] for x in new) <= {"key_generate", "activate"}, new

    cert = ws.self_signed(tok, "k1")
    audit.new()
    assert_ok(kind.ctok("cert", "import", "tok", "k1", cert))
    new = audit.new()
    one(new, "cert_import", object="k1", outcome="success")
    assert set(x["operation"] for x in new) <= {"cert_import", "activate"}, new

    wrong = ws.write("wrong.pin", WRONG_PIN)
    error_line(kind.ctok("token", "activate", "tok", "--auth-file", wrong),
               "wrong authentication code")
    assert [(x["operation"], x["outcome"]) for x in audit.new()] == [("activate", "failure")]

    assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", tok.pin_file, "--remember"))
    assert [(x["operation"], x["outcome"]) for x in audit.new()] == [("activate", "success")]

    assert_ok(kind.ctok("token", "deactivate", "tok"))
    assert [(x["operation"], x["outcome"]) for x in audit.new()] == [("deactivate", "success")]

    new_file = ws.write("new.pin", NEW_PIN)
    assert_ok(kind.ctok("pin", "change", "tok", "--auth-file", tok.pin_file, "--new-auth-file",
                        new_file))
    new = audit.new()
    one(new, "code_change", outcome="success")
    assert set(x["operation"] for x in new) <= {"code_change", "activate"}, new

    assert_ok(kind.ctok("key", "remove", "tok", "k1", "--auth-file", new_file))
    new = audit.new()
    one(new, "key_remove", object="k1", outcome="success")

    for e in audit.lines():
        audit.check_fields(e)
    text = audit.path.read_text()
    for secret in (PIN, NEW_PIN, WRONG_PIN):
        assert secret not in text, "a code is in the audit file"
    kind.assert_no_secret()


def test_failed_operations_are_audited_as_failures(kind):
    kind.with_key("tok", "k1", "ec:P-256", cert=False)
    audit = Audit(kind)
    error_line(kind.ctok("key", "remove", "tok", "nosuch"), "nosuch")
    one(audit.new(), "key_remove", object="nosuch", outcome="failure")
    wrong = kind.ws.write("wrong.pin", WRONG_PIN)
    new = kind.ws.write("new.pin", NEW_PIN)
    error_line(kind.ctok("pin", "change", "tok", "--auth-file", wrong, "--new-auth-file", new),
               "wrong authentication code")
    lines = audit.new()
    assert ("activate", "failure") in [(x["operation"], x["outcome"]) for x in lines], lines
    assert not [x for x in lines if x["operation"] == "code_change" and
                x["outcome"] == "success"], lines
    assert WRONG_PIN not in audit.path.read_text() and NEW_PIN not in audit.path.read_text()


def test_audit_file_is_created_readable_only_by_its_owner(kind):
    kind.create("tok")
    audit = Audit(kind)
    assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    assert audit.path.stat().st_mode & 0o077 == 0, oct(audit.path.stat().st_mode)


def test_audit_file_is_never_written_through_a_symbolic_link(kind):
    """A root process appending to a link somebody planted would write wherever it points."""
    kind.create("tok")
    audit = Audit(kind)
    target = kind.ws.path("elsewhere.txt")
    target.write_text("untouched\n")
    audit.path.symlink_to(target)
    assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256"))
    assert target.read_text() == "untouched\n"


def test_audit_use_logs_each_signature_made_by_openssl(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    audit = Audit(kind, use=True)
    for _ in range(2):
        p, _, _ = sign_digest(kind.ws, tok.key_uri("k1"))
        assert_ok(p)
    lines = audit.new()
    uses = ops(lines, "key_use")
    assert len(uses) == 2, "expected one key_use line per signature:\n%s" % "\n".join(
        json.dumps(e) for e in lines)
    for e in uses:
        audit.check_fields(e)
        assert e["object"] == "k1" and e["outcome"] == "success" and e.get("detail") == "sign"
        assert e["process"]["program"] == "openssl"
    assert PIN not in audit.path.read_text()


def test_audit_use_logs_decryption_and_key_agreement(kind, tmp_path):
    tok = kind.with_key("tok", "rsa", "rsa:2048")
    kind.ws.add_key(tok, "ec", "ec:P-256")
    audit = Audit(kind, use=True)
    ws = kind.ws
    pt = ws.write("secret.bin", b"a 32-byte session key, honestly.")
    ct = ws.path("secret.enc")
    assert_ok(ws.ossl("pkeyutl", "-encrypt", "-certin", "-inkey", tok.cert("rsa"), "-in", pt,
                      "-out", ct, providers=None))
    out = ws.path("secret.dec")
    assert_ok(ws.ossl("pkeyutl", "-decrypt", "-inkey", tok.key_uri("rsa"), "-in", ct, "-out",
                      out))
    assert out.read_bytes() == pt.read_bytes()
    one(audit.new(), "key_use", object="rsa", outcome="success", detail="decrypt")

    peer, peer_pub = ws.path("peer.pem"), ws.path("peer.pub.pem")
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", peer, providers=None))
    assert_ok(ws.ossl("pkey", "-in", peer, "-pubout", "-out", peer_pub, providers=None))
    assert_ok(ws.ossl("pkeyutl", "-derive", "-inkey", tok.key_uri("ec"), "-peerkey", peer_pub,
                      "-out", ws.path("shared.bin")))
    one(audit.new(), "key_use", object="ec", outcome="success", detail="derive")


def test_without_audit_use_a_signature_is_not_logged(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    audit = Audit(kind, use=False)
    p, _, _ = sign_digest(kind.ws, tok.key_uri("k1"))
    assert_ok(p)
    assert ops(audit.new(), "key_use") == []


def test_refused_use_is_not_logged_as_a_success(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    audit = Audit(kind, use=True)
    kind.set_permissions(["view"])
    p, _, _ = sign_digest(kind.ws, tok.key_uri("k1"))
    assert p.returncode != 0, describe(p)
    assert not [e for e in audit.new() if e["operation"] == "key_use" and
                e["outcome"] == "success"]


def test_audit_lines_of_concurrent_processes_never_interleave(build, tmp_path, sign_loop_bin):
    """Many writers at once, in processes and threads, with long lines: every line must parse
    and every process must have exactly as many lines as it made signatures. A line written
    with its newline in a second write(2) is caught: another writer lands in between."""
    from test_cli_support import Kind

    k = Kind("pkcs12", tmp_path, build)
    tok = k.create("tok")
    alias = "an-audited-key-with-a-long-label-" + "x" * 160
    k.ws.add_key(tok, alias, "ec:P-256", cert=False)
    audit = Audit(k, use=True)
    nproc, threads, count = 6, 4, 400
    argv = [str(sign_loop_bin), "--provider-path", str(k.ws.build), "sign",
            tok.key_uri(alias), str(threads), str(count)]
    signers = [subprocess.Popen(argv, env=k.ws.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
               for _ in range(nproc)]
    activators = [subprocess.Popen([str(k.ws.build / "ctok"), "token", "activate", "tok",
                                    "--auth-file", str(tok.pin_file)], env=k.ws.env(),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL) for _ in range(8)]
    for p in signers + activators:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, (out, err)
    lines = audit.new()  # raises on any line that is not one JSON object
    per_pid = {}
    for e in lines:
        per_pid.setdefault(e["process"]["pid"], []).append(e)
    for p in signers:
        mine = per_pid.get(p.pid, [])
        assert {e["operation"] for e in mine} <= {"key_use", "activate"}, mine
        uses = ops(mine, "key_use")
        assert len(uses) == count, "process %d: %d audit lines for %d signatures" % (
            p.pid, len(uses), count)
        assert all(e["object"] == alias and e["outcome"] == "success" for e in uses)
    for p in activators:
        assert [(e["operation"], e["outcome"]) for e in per_pid.get(p.pid, [])] == [
            ("activate", "success")]
    assert len(ops(lines, "key_use")) == nproc * count


def test_each_token_writes_only_to_its_own_audit_file(kind):
    tokname = "other"
    kind.create("tok")
    kind.create(tokname)
    a = Audit(kind, "tok")
    b = Audit(kind, tokname)
    assert_ok(kind.ctok("key", "generate", tokname, "k9", "ec:P-256"))
    assert ops(a.new(), "key_generate") == []
    e = one(b.new(), "key_generate", object="k9")
    assert e["token"] == tokname
