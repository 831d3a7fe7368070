"""Shared helpers of the test_cli_* modules (issue 5: the ctok tool's crypto token operations
for every token type). No tests here: the `kind` fixture gives each test a workspace with one
token of the parametrized type, pkcs12 (a soft keystore) or pkcs11 (a SoftHSM slot), made the
way a user makes it, with `ctok token create`."""

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from ctoktest import PIN, TIMEOUT, Token, Workspace, _text, assert_ok, describe
from p11fixtures import SO_PIN, SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

KINDS = ("pkcs12", "pkcs11")
NEW_PIN = "fresh-code-9051"
WRONG_PIN = "not-the-code-3141"
LABEL = "cli-slot"

# Every rule of the issue, in the config's spelling.
RULES = ("view", "use", "activate", "deactivate", "modify", "delete", "keygen", "keyremove",
         "keytest")


class Kind:
    """One workspace with tokens of one type. `tok` is the token the fixture made."""

    def __init__(self, kind, root, build):
        self.kind = kind
        if kind == "pkcs11":
            require_pkcs11_tools()
            self.hsm = SoftHsm(Path(root) / "softhsm")
            self.ws = P11Workspace(root, build, self.hsm)
        else:
            self.hsm = None
            self.ws = Workspace(root, build)
        self.labels = {}
        self.outputs = []  # every stdout/stderr seen: checked for secrets

    # ---- tokens

    def new_slot(self, name):
        """A SoftHSM token for a ctok token called name (pkcs11); nothing for pkcs12."""
        if self.kind == "pkcs11" and name not in self.labels:
            label = "%s-%s" % (LABEL, name)
            self.hsm.init_token(label, PIN, SO_PIN)
            self.labels[name] = label
        return self.labels.get(name)

    def location_args(self, name):
        """token create arguments that name the keystore or slot of token `name`."""
        if self.kind == "pkcs11":
            return ["--library", SOFTHSM_LIB, "--ref-type", "label", "--ref", self.new_slot(name)]
        return ["--keystore", self.ws.path("%s.p12" % name)]

    def create_argv(self, name):
        return ["token", "create", "--type", self.kind, "--name", name,
                *self.location_args(name)]

    def create(self, name="tok", extra=()):
        """A token whose auth is a code file (PIN)."""
        ws = self.ws
        pin_file = ws.write("%s.pin" % name, PIN)
        p = self.ctok(*self.create_argv(name), "--auth-file", pin_file, *extra)
        assert_ok(p)
        import re

        m = re.search(r"Created token '([^']+)' \((\w+), id ([0-9a-fA-F-]{36})\)", p.stdout)
        assert m and m.group(1) == name and m.group(2) == self.kind, describe(p)
        keystore = ws.path("%s.p12" % name) if self.kind == "pkcs12" else None
        return Token(ws, name, m.group(3), keystore, PIN, pin_file)

    def with_key(self, name="tok", alias="k1", spec="ec:P-256", cert=True, extra=()):
        tok = self.create(name, extra)
        self.ws.add_key(tok, alias, spec, cert=cert)
        return tok

    # ---- runners that remember what was printed

    def ctok(self, *args, env=None, config=True):
        p = self.ws.ctok(*args, env=env, config=config)
        self.outputs += [_text(p.stdout), _text(p.stderr)]
        return p

    def ossl(self, *args, **kw):
        p = self.ws.ossl(*args, **kw)
        self.outputs += [_text(p.stdout), _text(p.stderr)]
        return p

    def tty(self, args, answers, env=None):
        from ctoktest import run_with_tty

        code, out, prompts = run_with_tty([self.ws.build / "ctok", *args], self.ws.env(env),
                                          answers)
        self.outputs.append(out)
        return code, out, prompts

    def no_tty(self, *args, env=None):
        """ctok without a controlling terminal (its own session) and stdin /dev/null."""
        p = subprocess.run([str(self.ws.build / "ctok"), *[str(a) for a in args]],
                           env=self.ws.env(env), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, start_new_session=True, timeout=TIMEOUT)
        self.outputs += [p.stdout, p.stderr]
        return p

    # ---- state

    def entry(self, name="tok"):
        for t in self.ws.load_config()["tokens"]:
            if t.get("name") == name:
                return t
        return None

    def set_fields(self, name="tok", **fields):
        conf = self.ws.load_config()
        for t in conf["tokens"]:
            if t["name"] == name:
                t.update(fields)
        self.ws.save_config(conf)

    def set_permissions(self, rules, name="tok"):
        self.set_fields(name, permissions=list(rules))

    def storage_digest(self):
        """A digest of everything a token keeps: the config, the keystores, the objects of
        the SoftHSM token directory (not its token.object: SoftHSM counts failed logins
        there)."""
        h = hashlib.sha256()
        root = self.ws.root
        files = sorted(p for p in root.rglob("*") if p.is_file() and (
            p.suffix in (".p12", ".json") or (self.hsm and self.hsm.root in p.parents)))
        for p in files:
            if p.name.endswith(".lock") or p.name == "token.object":
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
        return h.hexdigest()

    def keys(self, name="tok"):
        return json.loads(assert_ok(self.ctok("key", "list", name, "--json")).stdout)

    def certs(self, name="tok"):
        return json.loads(assert_ok(self.ctok("cert", "list", name, "--json")).stdout)

    def can_login(self, name, code):
        """Whether the token's keystore or slot accepts code, checked without ctok where
        possible (pkcs11-tool / the PKCS#12 MAC with Python's cryptography)."""
        if self.kind == "pkcs11":
            return self.hsm.can_login(self.labels[name], code)
        from cryptography.hazmat.primitives.serialization import pkcs12

        try:
            pkcs12.load_key_and_certificates(self.ws.path("%s.p12" % name).read_bytes(),
                                             code.encode())
            return True
        except ValueError:
            return False

    def assert_no_secret(self, *secrets, extra=()):
        secrets = secrets or (PIN, NEW_PIN, WRONG_PIN)
        for text in [*self.outputs, *extra]:
            for s in secrets:
                assert s not in text, "a secret (%r) was printed:\n%s" % (s, text[-3000:])


@pytest.fixture(params=KINDS)
def kind(request, tmp_path, build):
    return Kind(request.param, tmp_path, build)


def error_line(p, *phrases, code=1):
    """The one 'ctok: ...' line of a failed tool run, checked for exit code and phrases."""
    from ctoktest import assert_tool_error

    return assert_tool_error(p, *phrases, code=code)


def write_secret(ws, name, value):
    p = ws.write(name, value)
    os.chmod(p, 0o600)
    return p
