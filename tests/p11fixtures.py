"""PKCS#11 fixtures and helpers of the ctok acceptance suite (issue 3): SoftHSM2 token
directories made in a temp dir with softhsm2-util, ctok pkcs11 tokens made with the ctok tool,
the PKCS#11 test shim (build/tests/p11shim/ctok-p11shim.so) and its call log, OpenSC's
pkcs11-tool as the independent view of the token, and the p11_sign_loop C driver.

Nothing is set in this Python process's environment (OPENSSL-PITFALLS.md item 23): each
subprocess gets SOFTHSM2_CONF and the CTOK_SHIM_* settings of its workspace."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ctoktest import (
    BUILD,
    PIN,
    TIMEOUT,
    Token,
    SANITIZE_CFLAGS,
    Workspace,
    assert_ok,
    describe,
    register_secret,
    run,
)

SOFTHSM_LIB = Path("/usr/lib/softhsm/libsofthsm2.so")
SHIM_LIB = BUILD / "tests" / "p11shim" / "ctok-p11shim.so"
SO_PIN = register_secret("so-pin-8765")  # the SO PIN, which is the PUK of C_UnlockPIN
HERE = Path(__file__).resolve().parent
SIGN_LOOP_SRC = HERE / "p11_sign_loop.c"

# The tokens the shim makes of a two-PIN card (CTOK_SHIM_MULTIPIN).
EID_IDENT = "eID Card (identification)"
EID_SIGN = "eID Card (signature)"


# ---------------------------------------------------------------- SoftHSM


class SoftHsm:
    """A SoftHSM2 token directory of its own (SOFTHSM2_CONF)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "tokens").mkdir(parents=True, exist_ok=True)
        self.conf = self.root / "softhsm2.conf"
        self.conf.write_text("directories.tokendir = %s\nobjectstore.backend = file\n"
                             "log.level = ERROR\n" % (self.root / "tokens"))

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CTOK_") and not k.startswith("OPENSSL_")}
        env["SOFTHSM2_CONF"] = str(self.conf)
        return env

    def init_token(self, label, pin=PIN, so_pin=SO_PIN):
        p = run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
                 "--so-pin", so_pin], self.env())
        assert_ok(p)
        m = re.search(r"reassigned to slot (\d+)", p.stdout)
        return int(m.group(1)) if m else None

    def tool(self, *args, module=SOFTHSM_LIB, env=None):
        """OpenSC's pkcs11-tool on this token directory (default: SoftHSM itself)."""
        e = self.env()
        e.update({k: str(v) for k, v in (env or {}).items()})
        return run(["pkcs11-tool", "--module", module, *args], e)

    def objects(self, label, type, pin=None):
        """pkcs11-tool --list-objects: one dict per object with label, id (hex), usage and
        access (sets of words). With pin: after login, so private objects are seen too."""
        args = ["--token-label", label, "--list-objects", "--type", type]
        if pin is not None:
            args += ["--login", "--pin", pin]
        p = assert_ok(self.tool(*args))
        objs = []
        for line in p.stdout.splitlines():
            if re.match(r"^\S.* Object;", line):
                objs.append({"kind": line.strip(), "usage": set(), "access": set()})
                continue
            m = re.match(r"^\s+(label|ID|Usage|Access|subject):\s*(.*)$", line)
            if m and objs:
                key, val = m.group(1).lower(), m.group(2).strip()
                if key in ("usage", "access"):
                    objs[-1][key] = {w.strip() for w in val.split(",") if w.strip()}
                else:
                    objs[-1][key] = val
        return objs

    def can_login(self, label, pin):
        p = self.tool("--token-label", label, "--login", "--pin", pin, "--list-objects",
                      "--type", "privkey")
        return p.returncode == 0


# ---------------------------------------------------------------- the shim's call log


class ShimLog:
    """CTOK_SHIM_LOG: '<pid> <function> <CKR> [key=value ...]' per call."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if self.path.exists():
            self.path.unlink()

    def env(self, **shim):
        e = {"CTOK_SHIM_LOG": str(self.path), "CTOK_SHIM_LOG_DETAIL": "1"}
        e.update({"CTOK_SHIM_" + k.upper(): str(v) for k, v in shim.items()})
        return e

    def entries(self):
        out = []
        text = self.path.read_text() if self.path.exists() else ""
        for line in text.splitlines():
            parts = line.split(" ", 3)
            assert len(parts) >= 3, "malformed shim log line %r" % line
            detail = {}
            if len(parts) == 4:
                for m in re.finditer(r'(\w[\w-]*)(?:=("([^"]*)"|\S+))?', parts[3]):
                    detail[m.group(1)] = (m.group(3) if m.group(3) is not None
                                          else (m.group(2) or True))
            out.append({"pid": int(parts[0]), "fn": parts[1], "rv": parts[2], **detail})
        return out

    def calls(self, fn, rv=None, **detail):
        res = []
        for e in self.entries():
            if e["fn"] != fn or (rv is not None and e["rv"] != rv):
                continue
            if all(e.get(k) == v for k, v in detail.items()):
                res.append(e)
        return res

    def text(self):
        return self.path.read_text() if self.path.exists() else "(no shim log)"

    def summary(self):
        counts = {}
        for e in self.entries():
            k = "%s %s" % (e["fn"], e["rv"])
            counts[k] = counts.get(k, 0) + 1
        return "\n".join("%6d %s" % (n, k) for k, n in sorted(counts.items()))


def logins(log: ShimLog, user="CKU_USER"):
    """The user C_Login calls of a log."""
    return [e for e in log.calls("C_Login") if e.get("user", user) == user]


# ---------------------------------------------------------------- workspaces


class P11Workspace(Workspace):
    """A Workspace whose every subprocess sees one SoftHSM token directory and, optionally,
    fixed CTOK_SHIM_* settings. Several views (config files) can share one root."""

    def __init__(self, root, build, hsm: SoftHsm, config_name="tokens.json", fixed_env=None):
        super().__init__(root, build)
        self.config = self.root / config_name
        self.hsm = hsm
        self.fixed_env = {"SOFTHSM2_CONF": str(hsm.conf)}
        self.fixed_env.update({k: str(v) for k, v in (fixed_env or {}).items()})

    def env(self, extra=None, config=True):
        merged = dict(self.fixed_env)
        merged.update(extra or {})
        return super().env(merged, config)

    def view(self, config_name, conf=None, fixed_env=None):
        """Another config file in the same root over the same SoftHSM directory, written
        from conf (a dict) when given."""
        env = dict(self.fixed_env)
        env.update(fixed_env or {})
        env.pop("SOFTHSM2_CONF")
        v = P11Workspace(self.root, self.build, self.hsm, config_name, env)
        if conf is not None:
            v.config.write_text(json.dumps(conf, indent=2))
            os.chmod(v.config, 0o600)
        return v

    def create_p11_token(self, name, library=SOFTHSM_LIB, ref_type="label", ref=None, pin=PIN,
                         attributes=None, env=None) -> Token:
        pin_file = self.write("%s-%s.pin" % (self.config.stem, name), register_secret(pin))
        args = ["token", "create", "--type", "pkcs11", "--name", name, "--library", library,
                "--ref-type", ref_type, "--ref", ref, "--auth-file", pin_file]
        if attributes is not None:
            args += ["--attributes", attributes]
        p = assert_ok(self.ctok(*args, env=env))
        m = re.search(r"Created token '([^']+)' \(pkcs11, id ([0-9a-fA-F-]{36})\)", p.stdout)
        assert m and m.group(1) == name, describe(p)
        return Token(self, name, m.group(2), None, pin, pin_file)

    def slots(self, library=SOFTHSM_LIB, env=None):
        p = assert_ok(self.ctok("slots", "--library", library, "--json", env=env))
        return json.loads(p.stdout)

    def token_entry(self, name):
        for t in self.load_config()["tokens"]:
            if t["name"] == name:
                return t
        raise AssertionError("token %s not in %s" % (name, self.config))


def same_token_in(view: P11Workspace, tok: Token) -> Token:
    """The Token object of tok for another view (config) that has a token of that name."""
    entry = view.token_entry(tok.name)
    return Token(view, tok.name, entry["id"], None, tok.pin, tok.pin_file, dict(tok.certs))


def copy_config(ws: P11Workspace, **changes_by_token):
    """ws's config as a dict, with fields of some tokens changed: name={field: value}."""
    conf = json.loads(ws.config.read_text())
    for t in conf["tokens"]:
        t.update(changes_by_token.get(t["name"], {}))
    return conf


# ---------------------------------------------------------------- checks


def require_pkcs11_tools():
    for tool in ("softhsm2-util", "pkcs11-tool"):
        if shutil.which(tool) is None:
            pytest.fail("%s is not installed (apt-get install softhsm2 opensc)" % tool)
    if not SOFTHSM_LIB.exists():
        pytest.fail("no SoftHSM2 module at %s" % SOFTHSM_LIB)


def require_shim():
    if not SHIM_LIB.exists():
        pytest.fail("the PKCS#11 test shim was not built: %s" % SHIM_LIB)
    return SHIM_LIB


# ---------------------------------------------------------------- the C driver

_sign_loop = {}


def sign_loop_binary(out_dir: Path) -> Path:
    """tests/p11_sign_loop.c compiled with gcc (once per session), instrumented like ctok in
    a checked run (CTOK_SANITIZE_CFLAGS, e.g. -fsanitize=thread for make test-tsan)."""
    if "bin" not in _sign_loop:
        out = Path(out_dir) / "p11_sign_loop"
        # the p11-kit header: the soak modes count the token's objects through the module
        cflags = subprocess.run(["pkg-config", "--cflags", "p11-kit-1"], capture_output=True,
                                text=True, timeout=30).stdout.split()
        p = subprocess.run(["gcc", "-O1", "-g", "-Wall", *cflags, *SANITIZE_CFLAGS, "-o",
                            str(out), str(SIGN_LOOP_SRC), "-lcrypto", "-lpthread", "-ldl"],
                           capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            pytest.fail("cannot build p11_sign_loop:\n%s" % p.stderr)
        _sign_loop["bin"] = out
    return _sign_loop["bin"]


def sign_loop(ws: P11Workspace, binary, mode, uri, *args, passin=None, env=None,
              timeout=TIMEOUT * 2):
    """Runs the driver; returns (process, {key: value} of its output)."""
    argv = [binary, "--provider-path", ws.build]
    if passin is not None:
        argv += ["--passin", passin]
    argv += [mode, uri, *args]
    p = run(argv, ws.env(env), timeout=timeout)
    kv = {}
    for m in re.finditer(r"(\w+)=(\S+)", p.stdout):
        kv[m.group(1)] = m.group(2)
    return p, kv


# ---------------------------------------------------------------- shared session fixtures
#
# Test modules import these fixtures. Each is built once per session (a module-level
# cache), whichever module asks first, because a fixture imported into several modules is
# a separate fixture in each.

_once = {}

# Keys of the main token: alias -> ctok key spec. Every key has a self-signed certificate
# under its own alias.
MAIN_KEYS = {
    "rsa2048": "rsa:2048",
    "rsa3072": "rsa:3072",
    "p256": "ec:P-256",
    "p384": "ec:P-384",
    "ed25519": "ed25519",
}
MAIN_LABEL = "ctok-main"


class MainHsm:
    """One SoftHSM token 'ctok-main' with MAIN_KEYS and their certificates, plus role
    certificates: key 'role-key' (P-256) certified by 'role-a' and 'role-b', and the
    rsa2048 certificate imported a second time as 'rsa2048-copy'. Three configs over it:
      ws / tok            token 'hsm', SoftHSM2's own module
      shim_ws / shim_tok  token 'hsm', the same token through the shim
    Tests must not change the token."""

    def __init__(self, root, build):
        require_pkcs11_tools()
        self.hsm = SoftHsm(root / "softhsm")
        self.label = MAIN_LABEL
        self.slot_id = self.hsm.init_token(MAIN_LABEL, PIN)
        self.ws = P11Workspace(root, build, self.hsm)
        self.tok = self.ws.create_p11_token("hsm", SOFTHSM_LIB, "label", MAIN_LABEL)
        ws, tok = self.ws, self.tok
        self.key_ids = {}
        for alias, spec in MAIN_KEYS.items():
            self.key_ids[alias] = ws.add_key(tok, alias, spec)
        self.key_ids["role-key"] = ws.generate(tok, "role-key", "ec:P-256")
        for role in ("role-a", "role-b"):
            c = ws.self_signed(tok, "role-key", subject="/CN=%s" % role,
                               out=ws.path("%s.pem" % role))
            ws.import_cert(tok, role, c)
        ws.import_cert(tok, "rsa2048-copy", tok.cert("rsa2048"))
        shim = require_shim()
        self.shim_ws = ws.view("shim.json", copy_config(ws, hsm={"library": str(shim)}))
        self.shim_tok = same_token_in(self.shim_ws, tok)
        self.shim = shim


@pytest.fixture(scope="session")
def main_hsm(tmp_path_factory, build):
    if "main" not in _once:
        _once["main"] = MainHsm(tmp_path_factory.mktemp("p11main"), build)
    return _once["main"]


@pytest.fixture(scope="session")
def sign_loop_bin(tmp_path_factory):
    return sign_loop_binary(tmp_path_factory.mktemp("p11bin"))


@pytest.fixture
def fresh_hsm(tmp_path, build):
    """An empty SoftHSM directory and a workspace over it, for tests that change tokens."""
    require_pkcs11_tools()
    hsm = SoftHsm(tmp_path / "softhsm")
    return P11Workspace(tmp_path, build, hsm)
