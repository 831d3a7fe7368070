"""Helpers of the ctok-p11.so tests (tests/test_p11mod_*.py): the module, the tokens it is
tried on (a soft keystore token and a SoftHSM-backed ctok pkcs11 token, each with RSA, EC and
Ed25519 keys that have certificates), and the real PKCS#11 consumers that run on it."""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctoktest import BUILD, OPENSSL, PIN, SANITIZE_CFLAGS, Workspace, assert_ok, run

MODULE = BUILD / "ctok-p11.so"
CLIENT = Path(__file__).resolve().parent / "p11mod_client.py"
THREADS_SRC = Path(__file__).resolve().parent / "p11mod_threads.c"

# alias -> ctok key spec; each key gets a self-signed certificate under its alias
KEYS = {"rsa": "rsa:2048", "ec": "ec:P-256", "ed": "ed25519"}


@dataclass
class Face:
    """A ctok token as applications see it through the module."""
    ws: Workspace
    name: str       # the token's name: the PKCS#11 token label
    kind: str       # "soft" | "hsm"
    key_ids: dict   # alias -> id bytes
    pin_file: Path  # the token's auth file (its PIN)

    def env(self, extra=None):
        return self.ws.env(extra)

    def tool(self, *args, env=None):
        """OpenSC's pkcs11-tool on the module."""
        return run(["pkcs11-tool", "--module", str(MODULE), *[str(a) for a in args]],
                   self.env(env))

    def pubkey(self, alias):
        """The key's public key (PEM), from its certificate, without ctok."""
        return _pubkey(self.ws, self.cert(alias))

    def config_with(self, path, **fields):
        """A copy of the config at path, the token's entry with fields changed."""
        conf = self.ws.load_config()
        for e in conf["tokens"]:
            if e["name"] == self.name:
                e.update(fields)
        Path(path).write_text(json.dumps(conf))
        Path(path).chmod(0o600)
        return path

    def cert(self, alias):
        return self.ws.path("%s-%s.pem" % (self.name, alias))

    def client(self, story, *args, pin="", env=None):
        """tests/p11mod_client.py: one story of a ctypes application; the PIN on stdin
        ("": a NULL PIN, the code from the config; a story may read several lines)."""
        p = run([sys.executable, str(CLIENT), str(MODULE), story, *[str(a) for a in args]],
                self.env(env), input=pin + "\n")
        assert_ok(p)
        return json.loads(p.stdout.strip().splitlines()[-1])


def _pubkey(ws, cert):
    out = Path(str(cert) + ".pub.pem")
    if not out.exists():
        assert_ok(run([OPENSSL, "x509", "-in", str(cert), "-pubkey", "-noout", "-out", str(out)],
                      ws.env(config=False)))
    return out


def fill(ws, tok, keys=None):
    """keys (default KEYS) on the token, each with a self-signed certificate (ws.add_key)."""
    return {alias: ws.add_key(tok, alias, spec) for alias, spec in (keys or KEYS).items()}


def require_tools(package, *tools):
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (apt-get install %s)" % (tool, package))


def require_module():
    if not MODULE.exists():
        pytest.fail("ctok-p11.so was not built: %s" % MODULE)


def tool_sections(out):
    """pkcs11-tool -L: {token label: its lines of key/value}."""
    slots = {}
    cur = None
    for line in out.splitlines():
        m = re.match(r"\s+(.+?)\s+: (.*)$", line)
        if not m:
            continue
        if m.group(1) == "token label":
            cur = slots.setdefault(m.group(2).strip(), {})
        if cur is not None:
            cur[m.group(1)] = m.group(2).strip()
    return slots


def tool_objects(out):
    """pkcs11-tool -O: a list of (kind, label, id hex)."""
    objs = []
    for block in re.split(r"\n(?=\S)", out):
        m = re.match(r"(Certificate|Public Key|Private Key) Object", block)
        if not m:
            continue
        label = re.search(r"label:\s+(.*)", block)
        oid = re.search(r"ID:\s+([0-9a-f]+)", block)
        objs.append((m.group(1), label.group(1).strip() if label else None,
                     oid.group(1) if oid else None))
    return objs


_faces = {}


def make_face(kind, tmp_path_factory, build, keys=None, tag=""):
    """One token of each kind per test session (tests do not change it): 'soft' a keystore
    token, 'hsm' a ctok pkcs11 token over a SoftHSM token; both with KEYS and an auth file
    (so the module shows CKF_PROTECTED_AUTHENTICATION_PATH). keys and a tag: a face of its
    own with those keys instead."""
    require_module()
    face = kind + tag
    if face not in _faces:
        ws, tok = empty_token(kind, tmp_path_factory.mktemp("p11mod-" + face), build, "p11mod")
        _faces[face] = Face(ws, tok.name, kind, fill(ws, tok, keys), tok.pin_file)
    return _faces[face]


def empty_token(kind, root, build, label):
    """A workspace under root and a token without keys in it: a keystore ("soft"), or a
    SoftHSM token labelled label behind a ctok pkcs11 token ("hsm")."""
    if kind == "soft":
        ws = Workspace(root, build)
        return ws, ws.create_token("soft1")
    from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

    require_pkcs11_tools()
    hsm = SoftHsm(root / "softhsm")
    hsm.init_token(label, PIN)
    ws = P11Workspace(root, build, hsm)
    return ws, ws.create_p11_token("hsm1", SOFTHSM_LIB, "label", label)


def threads_binary(out_dir):
    """tests/p11mod_threads.c built with gcc, instrumented as ctok is in a checked run."""
    out = Path(out_dir) / "p11mod_threads"
    cflags = subprocess.run(["pkg-config", "--cflags", "p11-kit-1"], capture_output=True,
                            text=True, timeout=30).stdout.split()
    p = subprocess.run(["gcc", "-O1", "-g", "-Wall", *cflags, *SANITIZE_CFLAGS, "-o", str(out),
                        str(THREADS_SRC), "-lpthread", "-ldl"], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        pytest.fail("cannot build p11mod_threads:\n%s" % p.stderr)
    return out


LIMIT = 60  # seconds any daemon a test starts may live


def wait_listening(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Daemon:
    """A daemon started under timeout(1), stopped at the end of the test."""

    def __init__(self, argv, env, log):
        self.log = log
        self.proc = subprocess.Popen(["timeout", str(LIMIT), *argv], env=env,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def text(self):
        return Path(self.log).read_text(errors="replace")
