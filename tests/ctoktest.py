"""Helpers for the ctok acceptance suite: runners for the real `openssl` binary and the
`ctok` tool, a workspace that builds real soft (PKCS#12) tokens in a temp dir, a TLS
server wrapper, and the assertions every test shares.

Nothing here touches the environment of this Python process (OPENSSL-PITFALLS.md item
23): every variable goes only to the subprocesses."""

import base64
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("CTOK_BUILD_DIR", str(REPO / "build"))).resolve()
OPENSSL = shutil.which("openssl", path="/usr/bin:/usr/local/bin:" + os.environ.get("PATH", ""))

PIN = "ctok-test-pin-4711"
TIMEOUT = 60

# One of these, or None for plain OpenSSL without ctok.
CTOK_FIRST = "ctok-first"
DEFAULT_FIRST = "default-first"
THREE_CNF = "three-providers-cnf"
PROVIDER_ORDERS = (CTOK_FIRST, DEFAULT_FIRST, THREE_CNF)

# A trace line from an entry into one of ctok's signature / asym-cipher init functions.
CAPTURE_TRACE = re.compile(r"ctok\[\d+\]: *(signature|asym-cipher):")
SIGNATURE_TRACE = re.compile(r"ctok\[\d+\]: *signature:")

CRASH_CODES = (134, 139)
WARNING_LINE = re.compile(r"ctok\[\d+\]: warning: ")  # abort / segfault as a shell would report them


# ---------------------------------------------------------------- checked runs
#
# `make test-sanitize`, `make test-tsan` and `make test-valgrind` run this same suite with
# ctok instrumented. The switch is read here, once:
#   CTOK_SANITIZE_RUNTIME  sanitizer runtime(s) (':'-separated) to LD_PRELOAD into every child:
#                          openssl, nginx, httpd, python, softhsm2-util are not instrumented,
#                          and ctok.so loaded into them needs its runtime first in the process.
#   CTOK_SANITIZE_CFLAGS   flags for C helpers the suite compiles itself (p11_sign_loop.c).
#   CTOK_VALGRIND=1        every `openssl` the suite starts runs under valgrind memcheck.
# Every report goes to a file in REPORT_DIR (never only to a stderr a test expects to hold an
# error); conftest.py fails the test during which a report appeared. The exit code of a
# reporting process is also set apart (86 sanitizers, 99 valgrind) from ctok's own failures.
# These variables are the one thing put into this process's environment (so that children
# started by any fixture inherit them): LD_PRELOAD does not change the running Python.
SANITIZE_RUNTIME = os.environ.get("CTOK_SANITIZE_RUNTIME", "")
SANITIZE_CFLAGS = os.environ.get("CTOK_SANITIZE_CFLAGS", "").split()
VALGRIND = os.environ.get("CTOK_VALGRIND") == "1"
REPORT_DIR = None
if SANITIZE_RUNTIME or VALGRIND:
    import tempfile

    REPORT_DIR = Path(tempfile.mkdtemp(prefix="ctok-reports-", dir="/tmp"))
    os.chmod(REPORT_DIR, 0o1777)  # tests run openssl as nobody too (setpriv)
_SUPP = Path(__file__).resolve().parent


def _sanitizer_env(leaks):
    """The sanitizer variables of a child. Leaks are checked (leaks=True) in the ctok tool, all
    ctok's own code over libcrypto and the PKCS#11 module, with the slow unwinder: Debian's
    libcrypto and SoftHSM have no frame pointers, and a leak's stack must reach the code that
    made it for lsan.supp to tell SoftHSM's leaks from ctok's. Host programs (openssl, nginx,
    httpd, python) run with detect_leaks=0: at the slow unwinder's cost (7x on openssl req)
    the suite would not fit in CI, and with the fast one their leaks cannot be attributed."""
    common = "exitcode=86:log_path=%s" % (REPORT_DIR / "%s")
    return {
        "LD_PRELOAD": SANITIZE_RUNTIME,
        "ASAN_OPTIONS": (common % "asan") + ":suppressions=%s" % (_SUPP / "asan.supp") +
        ":abort_on_error=0:detect_stack_use_after_return=0"
        ":strict_string_checks=1" + (":detect_leaks=1:fast_unwind_on_malloc=0" if leaks else
                                     ":detect_leaks=0") + os.environ.get("CTOK_ASAN_EXTRA", ""),
        "LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % (_SUPP / "lsan.supp"),
        "UBSAN_OPTIONS": (common % "ubsan") + ":halt_on_error=1:print_stacktrace=1",
        "TSAN_OPTIONS": (common % "tsan") + ":suppressions=%s:second_deadlock_stack=1"
        % (_SUPP / "tsan.supp"),
    }


if SANITIZE_RUNTIME:
    os.environ.update(_sanitizer_env(leaks=False))

VALGRIND_ARGV = [
    "valgrind", "-q", "--error-exitcode=99", "--leak-check=full", "--show-leak-kinds=definite",
    "--errors-for-leak-kinds=definite", "--num-callers=30",
    "--suppressions=%s" % (_SUPP / "valgrind.supp"),
    "--log-file=%s" % (REPORT_DIR / "valgrind.%p" if REPORT_DIR else "/dev/null"),
]


def checked_argv(argv):
    """argv, under valgrind when the suite runs with CTOK_VALGRIND=1 and argv is openssl."""
    argv = [str(a) for a in argv]
    if VALGRIND and argv and argv[0] == OPENSSL:
        return VALGRIND_ARGV + argv
    return argv


# Debian 12's curl hangs at start-up in setlocale() with any ASan runtime preloaded (gcc's and
# clang's alike, even `curl --version` without ctok), and an ASan started late, when curl
# loads ctok.so, reports SoftHSM's frees of memory allocated before it as invalid. So curl
# runs without the preload, and a curl that would load ctok (its OPENSSL_CONF names ctok) is
# not run at all in a sanitizer run: the test is skipped, saying why. valgrind cannot run a
# process with the ASan runtime in it: the tests that run valgrind themselves are skipped.
# gnutls-cli (GnuTLS, never loads ctok) does not exit after its connection with the runtime
# preloaded: it runs without it.
NO_PRELOAD = ("curl", "gnutls-cli", "node")  # curl hangs with libasan preloaded
NOT_UNDER_SANITIZER = ("valgrind",)


def _loads_ctok(env):
    try:
        return "ctok" in Path(env.get("OPENSSL_CONF", "")).read_text()
    except OSError:
        return False


def checked_env(argv, env):
    """env of argv in a sanitizer run: leak checking in the ctok tool, the exceptions above."""
    if not (SANITIZE_RUNTIME and env is not None and argv):
        return env
    import pytest

    name = Path(str(argv[0])).name
    if name == "ctok":
        env = dict(env, ASAN_OPTIONS=_sanitizer_env(leaks=True)["ASAN_OPTIONS"])
    elif name in NOT_UNDER_SANITIZER or (name in NO_PRELOAD and _loads_ctok(env)):
        pytest.skip("%s cannot run with ctok under a sanitizer (tests/ctoktest.py)" % name)
    elif name in NO_PRELOAD:
        env = {k: v for k, v in env.items() if k != "LD_PRELOAD"}
    return env


def new_reports(seen):
    """Report files (sanitizer or non-empty valgrind logs) not in `seen`, as {path: text}."""
    if REPORT_DIR is None:
        return {}
    out = {}
    for f in sorted(REPORT_DIR.iterdir()):
        if f in seen or f.stat().st_size == 0:
            continue
        out[f] = f.read_text(errors="replace")
    return out


# ---------------------------------------------------------------- assertions


def describe(p):
    argv = p.args if isinstance(p.args, (list, tuple)) else [p.args]
    return "command: %s\nexit: %s\n--- stdout ---\n%s\n--- stderr ---\n%s" % (
        " ".join(str(a) for a in argv),
        p.returncode,
        _text(p.stdout)[-4000:],
        _text(p.stderr)[-4000:],
    )


def _text(b):
    if b is None:
        return ""
    if isinstance(b, bytes):
        return b.decode("utf-8", "replace")
    return b


def assert_ok(p):
    """The command succeeded: exit code 0 (a SoftHSM/teardown crash shows as 139)."""
    assert p.returncode == 0, "expected success\n" + describe(p)
    return p


def assert_no_crash(p):
    assert p.returncode >= 0, "killed by signal %d\n%s" % (-p.returncode, describe(p))
    assert p.returncode not in CRASH_CODES, "crashed\n" + describe(p)


def assert_fails_with(p, *phrases):
    """The command failed cleanly (non-zero exit, no crash) and stderr names the cause."""
    assert_no_crash(p)
    assert p.returncode != 0, "expected failure\n" + describe(p)
    err = _text(p.stderr)
    for phrase in phrases:
        assert phrase.lower() in err.lower(), "stderr does not say %r\n%s" % (phrase, describe(p))
    return p


def assert_tool_error(p, *phrases, code=1):
    """The ctok tool failed with exit `code` and one line on stderr starting 'ctok: '
    (besides warnings such as a token's low PIN retry count, which are no errors)."""
    assert_fails_with(p, *phrases)
    assert p.returncode == code, "expected exit %d\n%s" % (code, describe(p))
    lines = [l for l in _text(p.stderr).splitlines()
             if l.strip() and not WARNING_LINE.match(l)]
    assert len(lines) == 1, "expected one error line\n" + describe(p)
    assert lines[0].startswith("ctok: "), describe(p)
    return lines[0]


def assert_no_capture(*procs):
    """No ctok signature / asym-cipher function was entered."""
    for p in procs:
        hits = [l for l in _text(p.stderr).splitlines() if CAPTURE_TRACE.search(l)]
        assert not hits, "ctok captured an ordinary key operation:\n%s\n%s" % (
            "\n".join(hits[:10]),
            describe(p),
        )


# ---------------------------------------------------------------- misc helpers


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(data: bytes) -> str:
    """Percent-encodes bytes for an id= attribute: %01%a2..."""
    return "".join("%%%02x" % b for b in data)


def key_id_of_cert(cert_path) -> bytes:
    """RFC 5280 method 1: SHA-1 over the subjectPublicKey BIT STRING contents."""
    cert = load_cert(cert_path)
    return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def load_cert(path):
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def public_der(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def count_items(storeutl_out, kind):
    """Counts storeutl lines 'N: <kind>' (kind: Certificate, Private key, Public key)."""
    return len(re.findall(r"^\d+: %s\s*$" % re.escape(kind), storeutl_out, re.M))


def pem_blocks(text, label):
    return re.findall(
        r"-----BEGIN %s-----.*?-----END %s-----" % (label, label), text, re.S
    )


# ---------------------------------------------------------------- secret hygiene
#
# Every process the suite runs has its stdout and stderr searched for the auth codes the suite
# knows (issue 8: no PIN, auth code, PUK or master key in any output, error or trace). A code
# is known once registered: PIN here, each token's code by create_token, the SO PIN (PUK) by
# p11fixtures, others by the test that makes them. The master key is the file a config uses.

SECRETS = set()
MIN_SECRET_LEN = 6  # shorter codes ("1111") match unrelated text; test_secret_hygiene has them


def compile_store_driver(build, src, out):
    """A test driver (tests/*.c) on the token layer: the table of types (store/backends.c),
    then the backend libraries and the token layer's, in the order static linking needs
    (CMakeLists.txt). The driver may look inside the token layer (CTOK_TOKEN_LAYER)."""
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson", "p11-kit-1"],
                           capture_output=True, text=True, check=True).stdout.split()
    # an instrumented token layer (make test-sanitize) links only with its sanitizer runtime
    cache = (build / "CMakeCache.txt").read_text() if (build / "CMakeCache.txt").exists() else ""
    sanitize = ["-fsanitize=address,undefined"] if "CTOK_SANITIZE:BOOL=ON" in cache else []
    store = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "store")
    libs = [os.path.join(store, "backends.c"), str(build / "libctok_p11.a"),
            str(build / "kms" / "libctok_kms.a"), str(build / "libctok_token.a"), "-lcurl"]
    p = subprocess.run(["gcc", "-O1", "-Wall", "-Wextra", *sanitize, "-DCTOK_TOKEN_LAYER", "-I",
                        store, "-o", str(out), str(src), *libs, "-lcrypto", *flags, "-ldl",
                        "-lpthread"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return out


def compile_evp_driver(src, out):
    """A test driver (tests/*.c) that uses only libcrypto, loading ctok as a provider."""
    p = subprocess.run(["gcc", "-O1", "-Wall", "-o", str(out), str(src), "-lcrypto"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return out


def register_secret(code):
    if code is not None and len(str(code)) >= MIN_SECRET_LEN:
        SECRETS.add(str(code))
    return code


register_secret(PIN)


def _master_key_forms(env):
    """The master key of the config a child uses (master_key, else master.key beside it), in
    each form a message could show it: hex and base64."""
    conf = (env or {}).get("CTOK_CONFIG")
    if not conf:
        return []
    try:
        path = Path(json.loads(Path(conf).read_text()).get("master_key") or
                    Path(conf).parent / "master.key")
        key = path.read_bytes()
    except (OSError, ValueError, AttributeError):
        return []
    if len(key) < 16:
        return []
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode()]


def secrets_in(text, env=None):
    """The known codes that appear in text."""
    text = _text(text)
    return sorted(c for c in SECRETS.union(_master_key_forms(env)) if c and c in text)


CTOK_LINE = re.compile(r"ctok(\[\d+\])?: |:ctok:")


def ctok_said(p):
    """The output of p that is ctok's: all of the ctok tool's; of a host program (openssl),
    its lines without the arguments it echoes as given (openssl prints "Could not read
    private key from <-inkey>"), except lines that are ctok's own trace or errors."""
    argv = p.args if isinstance(p.args, (list, tuple)) else [p.args]
    out = _text(p.stdout) + _text(p.stderr)
    if argv and Path(str(argv[0])).name == "ctok":
        return out
    given = sorted((str(a) for a in argv[1:] if len(str(a)) >= MIN_SECRET_LEN), key=len,
                   reverse=True)
    lines = []
    for line in out.splitlines():
        if not CTOK_LINE.search(line):
            for a in given:
                line = line.replace(a, "<arg>")
        lines.append(line)
    return "\n".join(lines)


def assert_no_secret(p, env=None):
    found = secrets_in(ctok_said(p), env)
    assert not found, "an auth code appears in the output: %r\n%s" % (found, describe(p))
    return p


# ---------------------------------------------------------------- runners


def run(argv, env, input=None, timeout=TIMEOUT, cwd=None, text=True):
    """Runs argv to its end; fails when its output shows a known auth code."""
    p = subprocess.run(
        checked_argv(argv),
        env=checked_env(argv, env),
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=cwd,
        text=text,
        errors="replace" if text else None,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return assert_no_secret(p, env)


def wait_stopped(pid, timeout=60):
    """Waits until process pid has stopped itself (CTOK_TEST_STOP_AT): "T", or None if it
    ended or did not stop within timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return None
        if state == "T":
            return state
        time.sleep(0.05)
    return None


def tty_spawn(argv, env):
    """argv on a new pseudo terminal, its controlling tty: (pid, master fd)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        try:
            os.execve(str(argv[0]), [str(a) for a in argv], env)
        finally:
            os._exit(127)
    return pid, fd


def tty_chunk(fd, wait):
    """One read from a pseudo terminal's master: the bytes; b"" at its end (EIO: every slave
    side is closed, the program is gone); None when nothing came within wait seconds."""
    r, _, _ = select.select([fd], [], [], wait)
    if not r:
        return None
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def tty_read_until(fd, want, deadline):
    """What the terminal printed until want appeared, it ended, or the deadline passed."""
    out = b""
    while want not in out and time.monotonic() < deadline:
        chunk = tty_chunk(fd, 0.1)
        if chunk == b"":
            break
        out += chunk or b""
    return out


def run_with_tty(argv, env, answers, timeout=30):
    """Runs argv on a pseudo terminal (its controlling tty); each time the program
    prints a prompt (output ending in ':'), the next answer is typed. Returns
    (exit code, everything printed on the terminal, the prompts answered)."""
    pid, fd = tty_spawn(argv, env)
    out = b""
    prompts = []
    answered = 0
    since = 0
    deadline = time.monotonic() + timeout
    status = None
    try:
        while time.monotonic() < deadline:
            chunk = tty_chunk(fd, 0.2)
            if chunk == b"":
                break
            out += chunk or b""
            tail = out[since:].rstrip()
            if answered < len(answers) and tail.endswith(b":"):
                time.sleep(0.3)  # let the program switch echo off, as a person would
                prompts.append(_text(out[since:]))
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
                since = len(out)
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
                # drain what is left
                while chunk := tty_chunk(fd, 0.2):
                    out += chunk
                break
    finally:
        # the terminal closed (EOF) or time ran out: collect the exit, kill on timeout
        while status is None and time.monotonic() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            else:
                time.sleep(0.05)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    if status is None:
        raise AssertionError("timed out on the terminal; output so far:\n" + _text(out))
    code = os.waitstatus_to_exitcode(status)
    return code, _text(out), prompts


# ---------------------------------------------------------------- tokens


@dataclass
class Token:
    ws: "Workspace"
    name: str
    id: str
    keystore: Path
    pin: str
    pin_file: Path
    certs: dict = field(default_factory=dict)  # alias -> cert path

    def uri(self, object=None, type=None, id=None, query=None, token_id=False):
        parts = ["token-id=%s" % self.id if token_id else "token=%s" % self.name]
        if object is not None:
            parts.append("object=%s" % urllib.parse.quote(object, safe=""))
        if id is not None:
            parts.append("id=%s" % pct(id))
        if type is not None:
            parts.append("type=%s" % type)
        u = "ctok:" + ";".join(parts)
        if query:
            u += "?" + query
        return u

    def key_uri(self, alias, **kw):
        return self.uri(object=alias, type="private", **kw)

    def cert(self, alias):
        return self.certs[alias]

    def pubkey_pem(self, alias):
        """Public key PEM file of a key, taken from its certificate without ctok."""
        out = self.ws.path("%s-%s.pub.pem" % (self.name, alias))
        if not out.exists():
            assert_ok(
                self.ws.ossl("x509", "-in", self.cert(alias), "-pubkey", "-noout", "-out", out,
                             providers=None)
            )
        return out

    def keys(self):
        return json.loads(assert_ok(self.ws.ctok("key", "list", self.name, "--json")).stdout)

    def keystore_bytes(self):
        return self.keystore.read_bytes()


class Workspace:
    """A temp folder with its own tokens.json, and runners bound to it."""

    def __init__(self, root: Path, build: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.build = Path(build)
        self.config = self.root / "tokens.json"
        # An empty config for every openssl run: whatever the machine's openssl.cnf
        # activates (perhaps an installed ctok), "without ctok" means without it.
        self.plain_cnf = self.root / "plain-openssl.cnf"
        self.plain_cnf.write_text("# no providers configured: built-in default only\n")
        self._three_cnf = None

    # ---- paths and env

    def path(self, name):
        return self.root / name

    def write(self, name, data, mode=0o600):
        p = self.path(name)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
        os.chmod(p, mode)
        return p

    def env(self, extra=None, config=True):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("OPENSSL_") and not k.startswith("CTOK_")
        }
        env["OPENSSL_CONF"] = str(self.plain_cnf)
        if config:
            env["CTOK_CONFIG"] = str(self.config)
        if extra:
            for k, v in extra.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = str(v)
        return env

    def three_providers_cnf(self, third="legacy"):
        """openssl.cnf with default, ctok and a third provider all active.

        With three providers OpenSSL 3.0 orders them by name: with "legacy" as the third,
        ctok sorts first (ctok < default < legacy), the case the issue names.
        """
        cached = self._three_cnf if third == "legacy" else None
        if cached is None:
            p = self.path("three-providers-%s.cnf" % third)
            p.write_text(
                "openssl_conf = openssl_init\n"
                "[openssl_init]\n"
                "providers = provider_sect\n"
                "[provider_sect]\n"
                "default = default_sect\n"
                "ctok = ctok_sect\n"
                "%s = third_sect\n"
                "[default_sect]\n"
                "activate = 1\n"
                "[ctok_sect]\n"
                "module = %s\n"
                "activate = 1\n"
                "[third_sect]\n"
                "activate = 1\n" % (third, self.build / "ctok.so")
            )
            cached = p
            if third == "legacy":
                self._three_cnf = p
        return cached

    def provider_args(self, providers):
        b = str(self.build)
        if providers is None or providers == THREE_CNF:
            return []
        if providers == CTOK_FIRST:
            return ["-provider-path", b, "-provider", "ctok", "-provider", "default"]
        if providers == DEFAULT_FIRST:
            return ["-provider-path", b, "-provider", "default", "-provider", "ctok"]
        raise ValueError(providers)

    def ossl_argv(self, cmd, *args, providers=CTOK_FIRST):
        return [OPENSSL, cmd, *self.provider_args(providers), *[str(a) for a in args]]

    def ossl_env(self, providers=CTOK_FIRST, env=None, debug=False):
        extra = dict(env or {})
        if providers == THREE_CNF:
            extra.setdefault("OPENSSL_CONF", str(self.three_providers_cnf()))
        if debug:
            extra.setdefault("CTOK_DEBUG", "1")
        return self.env(extra)

    def ossl(self, cmd, *args, providers=CTOK_FIRST, env=None, debug=False, input=None,
             timeout=TIMEOUT, cwd=None, text=True):
        """openssl <cmd> with ctok loaded in the given order (None: plain OpenSSL)."""
        return run(
            self.ossl_argv(cmd, *args, providers=providers),
            self.ossl_env(providers, env, debug),
            input=input,
            timeout=timeout,
            cwd=cwd,
            text=text,
        )

    def ctok(self, *args, env=None, input=None, timeout=TIMEOUT, cwd=None, config=True):
        return run([self.build / "ctok", *args], self.env(env, config=config), input=input,
                   timeout=timeout, cwd=cwd)

    # ---- token building

    def create_token(self, name, pin=PIN, allow_export=False, explicit_ecc=False,
                     keystore=None) -> Token:
        pin_file = self.write("%s.pin" % name, register_secret(pin))
        keystore = Path(keystore) if keystore else self.path("%s.p12" % name)
        args = ["token", "create", "--type", "pkcs12", "--name", name, "--keystore",
                keystore, "--auth-file", pin_file]
        if allow_export:
            args.append("--allow-export")
        if explicit_ecc:
            args.append("--explicit-ecc")
        p = assert_ok(self.ctok(*args))
        m = re.search(r"Created token '([^']+)' \(pkcs12, id ([0-9a-fA-F-]{36})\)", p.stdout)
        assert m and m.group(1) == name, describe(p)
        assert keystore.exists(), "token create left no keystore at %s" % keystore
        return Token(self, name, m.group(2), keystore, pin, pin_file)

    def generate(self, tok: Token, alias, spec):
        p = assert_ok(self.ctok("key", "generate", tok.name, alias, spec))
        m = re.search(r"\(id ([0-9a-fA-F]+)\)", p.stdout)
        assert m, describe(p)
        return bytes.fromhex(m.group(1))

    def self_signed(self, tok: Token, key_alias, subject=None, out=None, extra=()):
        """A self-signed certificate made by `openssl req -x509` with the token key."""
        out = Path(out) if out else self.path("%s-%s.pem" % (tok.name, key_alias))
        assert_ok(
            self.ossl("req", "-new", "-x509", "-key", tok.key_uri(key_alias), "-subj",
                      subject or "/CN=%s" % key_alias, "-days", "30", "-out", out, *extra)
        )
        return out

    def import_cert(self, tok: Token, alias, cert_path):
        assert_ok(self.ctok("cert", "import", tok.name, alias, cert_path))
        tok.certs[alias] = Path(cert_path)

    def add_key(self, tok: Token, alias, spec, cert=True):
        """Generates a key on the token and imports a self-signed certificate for it
        under the same alias: the usual flow of a user."""
        kid = self.generate(tok, alias, spec)
        if cert:
            c = self.self_signed(tok, alias)
            self.import_cert(tok, alias, c)
        return kid

    def load_config(self):
        return json.loads(self.config.read_text())

    def save_config(self, conf):
        mode = self.config.stat().st_mode & 0o777
        self.config.write_text(json.dumps(conf, indent=2))
        os.chmod(self.config, mode)

    def set_token_fields(self, tok: Token, **fields):
        conf = self.load_config()
        for t in conf["tokens"]:
            if t["name"] == tok.name:
                t.update(fields)
                break
        else:
            raise AssertionError("token %s not in config" % tok.name)
        self.save_config(conf)


# ---------------------------------------------------------------- TLS


class TlsServer:
    """openssl s_server for one connection (-naccept 1), bounded in time, echoing lines
    reversed (-rev) so data flows both ways."""

    def __init__(self, ws: Workspace, key, cert, *args, providers=CTOK_FIRST, debug=False,
                 env=None, lifetime=60):
        self.ws = ws
        self.port = free_port()
        argv = ws.ossl_argv("s_server", "-accept", "127.0.0.1:%d" % self.port, "-naccept", "1",
                            "-rev", "-key", key, "-cert", cert, *args, providers=providers)
        self.proc = subprocess.Popen(
            checked_argv(argv),
            env=checked_env(argv, ws.ossl_env(providers, env, debug)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Bounded in time whatever happens to the test.
        self._watchdog = threading.Timer(lifetime, self.proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        self.out = bytearray()
        self.err = bytearray()
        self._accepting = threading.Event()
        self._t1 = threading.Thread(target=self._pump, args=(self.proc.stdout, self.out, True),
                                    daemon=True)
        self._t2 = threading.Thread(target=self._pump, args=(self.proc.stderr, self.err, False),
                                    daemon=True)
        self._t1.start()
        self._t2.start()

    def _pump(self, stream, buf, watch):
        for line in iter(stream.readline, b""):
            buf.extend(line)
            if watch and line.strip() == b"ACCEPT":
                self._accepting.set()
        if watch:
            self._accepting.set()

    def wait_ready(self, timeout=20):
        self._accepting.wait(timeout)
        if b"ACCEPT" not in self.out:
            self.stop()
            raise AssertionError("s_server did not start\n%s" % self.report())

    def stop(self):
        self._watchdog.cancel()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._t1.join(5)
        self._t2.join(5)

    def finish(self, timeout=20):
        """Waits for the server to end by itself after its one connection."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        self.stop()
        return self.proc.returncode

    def report(self):
        return "--- s_server exit %s stdout ---\n%s\n--- s_server stderr ---\n%s" % (
            self.proc.returncode, _text(bytes(self.out))[-3000:], _text(bytes(self.err))[-3000:])

    @property
    def stderr(self):
        return _text(bytes(self.err))

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc):
        self.stop()


def tls_client(ws: Workspace, port, cafile, *args, providers=None, debug=False, env=None,
               message="hello ctok"):
    """s_client that verifies the server against cafile, sends one line and asks the
    -rev server to close."""
    return ws.ossl(
        "s_client", "-connect", "127.0.0.1:%d" % port, "-verify_return_error", "-CAfile",
        cafile, "-ign_eof", *args, providers=providers, debug=debug, env=env,
        input="%s\nCLOSE\n" % message, timeout=30,
    )


def assert_handshake(client, server, message="hello ctok"):
    """What a user checks: the chain verified, and data went there and back."""
    server_rc = server.finish()
    detail = describe(client) + "\n" + server.report()
    assert client.returncode == 0, "s_client failed\n" + detail
    assert "Verify return code: 0 (ok)" in client.stdout, detail
    assert message[::-1] in client.stdout, "no data came back\n" + detail
    assert server_rc == 0, "s_server failed\n" + detail


def stored_auth(master_key: bytes, token_id: str, code: str, nonce=None) -> str:
    """The {"stored": ...} blob: base64(nonce || AES-256-GCM(code) || tag)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = nonce or os.urandom(12)
    ct = AESGCM(master_key).encrypt(nonce, code.encode(), b"ctok-auth-v1:" + token_id.encode())
    return base64.b64encode(nonce + ct).decode()


# ---------------------------------------------------------------- signing helpers

MESSAGE = b"ctok acceptance: sign me, verify me.\n" * 8


def digest_file(ws: Workspace, md="sha256", data=MESSAGE):
    """The message and its digest, as files in the workspace."""
    import hashlib

    msg = ws.path("message.bin")
    if not msg.exists() or msg.read_bytes() != data:
        msg.write_bytes(data)
    dg = ws.path("message.%s" % md)
    dg.write_bytes(hashlib.new(md, data).digest())
    return msg, dg


_seq = [0]


def sign_digest(ws: Workspace, uri, *opts, md="sha256", providers=CTOK_FIRST, env=None,
                debug=False, data=MESSAGE):
    """openssl pkeyutl -sign over the message digest with the key at uri.
    Returns (process, signature path, digest path)."""
    _, dg = digest_file(ws, md, data)
    _seq[0] += 1
    sig = ws.path("sig-%d.bin" % _seq[0])
    p = ws.ossl("pkeyutl", "-sign", "-inkey", uri, "-in", dg, "-out", sig, "-pkeyopt",
                "digest:%s" % md, *opts, providers=providers, env=env, debug=debug)
    return p, sig, dg


def verify_digest(ws: Workspace, cert, dg, sig, *opts, md="sha256", providers=None,
                  certin=True, debug=False):
    """openssl pkeyutl -verify with the certificate's public key, without ctok."""
    key_opts = ("-certin", "-inkey", cert) if certin else ("-pubin", "-inkey", cert)
    return ws.ossl("pkeyutl", "-verify", *key_opts, "-in", dg, "-sigfile", sig, "-pkeyopt",
                   "digest:%s" % md, *opts, providers=providers, debug=debug)


def assert_verified(p):
    assert_ok(p)
    assert "Signature Verified Successfully" in p.stdout, describe(p)


PKCS11_EC_PARAMS = {"06082a8648ce3d030107": ec.SECP256R1(), "06052b81040022": ec.SECP384R1(),
                    "06052b81040023": ec.SECP521R1()}


def pkcs11_tool_public_der(tool, key_id, out):
    """A public key's SubjectPublicKeyInfo DER as OpenSC's pkcs11-tool reads it (no ctok in the
    reading when tool names another module), written to out and returned. tool(*args) runs
    pkcs11-tool with its module, token and login options. key_id: the CKA_ID in hex.

    Debian 12's pkcs11-tool (OpenSC 0.23) --read-object of an EC public key hands OpenSSL a
    curve name it has already freed (valgrind: invalid reads inside EVP_PKEY_fromdata): P-384
    fails every time, P-256 now and then ("cannot create EVP_PKEY"). An EC key is therefore
    made from the CKA_EC_POINT and CKA_EC_PARAMS that --list-objects prints; others are read."""
    p = assert_ok(tool("--list-objects", "--type", "pubkey"))
    for block in re.split(r"\n(?=\S)", p.stdout):
        if not re.search(r"ID:\s+%s\s*$" % re.escape(key_id), block, re.M):
            continue
        m = re.search(r"EC_POINT:\s+([0-9a-f]+)\s+EC_PARAMS:\s+([0-9a-f]+)", block)
        if m is None:
            break  # not EC: pkcs11-tool reads it
        point = bytes.fromhex(m.group(1))  # DER OCTET STRING around the point
        assert point[0] == 0x04, describe(p)
        point = point[3:] if point[1] == 0x81 else point[2:]
        key = ec.EllipticCurvePublicKey.from_encoded_point(PKCS11_EC_PARAMS[m.group(2)], point)
        der = key.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        Path(out).write_bytes(der)
        return der
    else:
        raise AssertionError("no public key with id %s\n%s" % (key_id, describe(p)))
    assert_ok(tool("--read-object", "--type", "pubkey", "--id", key_id, "-o", str(out)))
    return Path(out).read_bytes()
