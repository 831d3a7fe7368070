"""Fixtures and helpers of the application tests (issue 4): real servers and clients from
Debian 12 using ctok keys through openssl.cnf and key-reference PEM files.

One AppWorld per session, in a folder of its own under /tmp that the servers' worker user
(www-data) may traverse: a CA whose key is a plain file, a soft (PKCS#12) token 'soft' and a
SoftHSM token 'hsm' (label HSM_LABEL), each with an RSA-2048 key 'rsa' and an EC P-256 key
'ec' whose certificates the CA signed for the token key's CSR, a key-reference PEM for each
(`ctok ref`), a server key and certificate as plain files, and openssl.cnf files made from the
repository's openssl.cnf.d/ctok.cnf (module and ctok-config pointing into the build and the
world).

What the worker user can read is what an administrator sets up (see WORKER_ACCESS): the
SoftHSM configuration file and token directory are readable by the group www-data; the ctok
config, the soft keystore and every auth-code file stay root's alone (mode 0600/0644), because
the master process loads the keys before it forks.

Servers: nginx and Apache httpd run in the foreground with their own prefix, config, pid and
log files, on 127.0.0.1 and a free port, with a watchdog, and are stopped (their whole
process group: master and workers) when the test ends. Nothing is set in the environment of
this Python process: every variable goes to the subprocesses only."""

import concurrent.futures
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctoktest import OPENSSL, REPO, assert_ok, describe, free_port, run
from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

NGINX = shutil.which("nginx", path="/usr/sbin:/usr/bin:/sbin:/bin")
APACHE = shutil.which("apache2", path="/usr/sbin:/usr/bin:/sbin:/bin")
APACHE_MODULES = Path("/usr/lib/apache2/modules")
CURL = shutil.which("curl", path="/usr/bin:/bin")
GNUTLS_CLI = shutil.which("gnutls-cli", path="/usr/bin:/bin")
PYTHON = "/usr/bin/python3"  # Debian's python3 and its ssl module

WORKER_USER = "www-data"  # as Debian packages nginx and apache2
HSM_LABEL = "ctok-apps"
TOKENS = ("soft", "hsm")
KEYS = {"rsa": "rsa:2048", "ec": "ec:P-256"}
CLIENT_TIMEOUT = 30

# What the administrator sets so that workers running as WORKER_USER can use the tokens
# (the world below is made this way; the README states the same).
WORKER_ACCESS = """\
SoftHSM configuration file (SOFTHSM2_CONF) and token directory: readable (directories also
searchable) by the worker user, e.g. chgrp -R www-data <tokendir>; chmod -R g+rX <tokendir>.
nginx: env SOFTHSM2_CONF; (nginx clears the environment of its workers). The ctok config,
soft keystores and auth-code files need to be readable by the master (root) only."""


def require(binary, package):
    if not binary:
        pytest.fail("%s is not installed (apt-get install %s)" % (package, package))
    return binary


def worker_ids():
    pw = pwd.getpwnam(WORKER_USER)
    return pw.pw_uid, pw.pw_gid


# ---------------------------------------------------------------- key-reference DER


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def keyref_pem(uri: str, version=0) -> str:
    """A key-reference PEM built here (not by the tool): SEQUENCE { INTEGER version,
    UTF8String uri }, as the README describes it."""
    import base64

    u = uri.encode()
    body = b"\x02\x01" + bytes([version]) + b"\x0c" + _der_len(len(u)) + u
    der = b"\x30" + _der_len(len(body)) + body
    b64 = base64.b64encode(der).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN CTOK URI-----\n%s\n-----END CTOK URI-----\n" % "\n".join(lines)


# ---------------------------------------------------------------- the world


@dataclass
class ServerKey:
    token: str
    alias: str
    uri: str  # ctok:token=...;object=...;type=private
    cert: Path  # leaf certificate signed by the world's CA
    ref: Path  # key-reference PEM written by `ctok ref`
    subject: str  # the leaf's CN

    @property
    def id(self):
        return "%s-%s" % (self.token, self.alias)


class AppWorld:
    def __init__(self, root: Path, build: Path):
        require_pkcs11_tools()
        self.root = Path(root)
        os.chmod(self.root, 0o755)
        self.build = Path(build)
        self.hsm = SoftHsm(self.root / "softhsm")
        self.hsm.init_token(HSM_LABEL)
        self.ws = P11Workspace(self.root, self.build, self.hsm)
        self._n = 0
        self._make_ca()
        soft = self.ws.create_token("soft")
        hsm = self.ws.create_p11_token("hsm", SOFTHSM_LIB, "label", HSM_LABEL)
        self.tokens = {"soft": soft, "hsm": hsm}
        self.keys = {}
        for tname, tok in self.tokens.items():
            for alias, spec in KEYS.items():
                self.keys[(tname, alias)] = self._make_key(tok, alias, spec)
        self.file_key, self.file_cert = self._make_file_key()
        self.cnf = self._write_cnf("ctok.cnf", debug=False)
        self.cnf_debug = self._write_cnf("ctok-debug.cnf", debug=True)
        self.grant_worker_access(self.hsm)
        # the ctok config stays root's: the workers get their keys from the master
        os.chmod(self.ws.config, 0o600)

    # ---- building

    def path(self, name):
        return self.root / name

    def new_dir(self, prefix):
        self._n += 1
        d = self.root / ("%s-%d" % (prefix, self._n))
        d.mkdir()
        os.chmod(d, 0o755)
        return d

    def plain(self, cmd, *args, **kw):
        """openssl without ctok (the built-in default provider only)."""
        return self.ws.ossl(cmd, *args, providers=None, **kw)

    def _make_ca(self):
        self.ca_key = self.path("ca.key")
        self.ca = self.path("ca.pem")
        assert_ok(self.plain(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", self.ca_key, "-subj",
            "/CN=ctok apps test CA", "-days", "3", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", self.ca))
        os.chmod(self.ca, 0o644)
        for kind, usage in (("rsa", "digitalSignature,keyEncipherment"),
                            ("ec", "digitalSignature,keyAgreement")):
            self.path("leaf-%s.ext" % kind).write_text(
                "basicConstraints = critical, CA:FALSE\n"
                "keyUsage = critical, %s\n"
                "extendedKeyUsage = serverAuth, clientAuth\n"
                "subjectAltName = DNS:localhost, IP:127.0.0.1\n" % usage)

    def _sign_csr(self, csr, out, kind):
        self._n += 1
        assert_ok(self.plain("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                             "-set_serial", str(1000 + self._n), "-days", "3", "-extfile",
                             self.path("leaf-%s.ext" % kind), "-out", out))
        os.chmod(out, 0o644)
        return out

    def _make_key(self, tok, alias, spec):
        ws = self.ws
        ws.generate(tok, alias, spec)
        uri = tok.key_uri(alias)
        subject = "ctok %s %s" % (tok.name, alias)
        csr = self.path("%s-%s.csr" % (tok.name, alias))
        assert_ok(ws.ossl("req", "-new", "-key", uri, "-subj", "/CN=%s" % subject, "-out", csr))
        cert = self._sign_csr(csr, self.path("%s-%s.pem" % (tok.name, alias)),
                              "rsa" if spec.startswith("rsa") else "ec")
        ws.import_cert(tok, alias, cert)
        p = assert_ok(ws.ctok("ref", tok.name, alias))
        assert "-----BEGIN CTOK URI-----" in p.stdout, describe(p)
        ref = ws.write("%s-%s.ref.pem" % (tok.name, alias), p.stdout)
        return ServerKey(tok.name, alias, uri, cert, ref, subject)

    def _make_file_key(self):
        key, csr = self.path("file.key"), self.path("file.csr")
        assert_ok(self.plain("req", "-new", "-newkey", "ec", "-pkeyopt",
                             "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj",
                             "/CN=plain file key", "-out", csr))
        os.chmod(key, 0o600)
        return key, self._sign_csr(csr, self.path("file.pem"), "ec")

    def _write_cnf(self, name, debug):
        """The repository's openssl.cnf.d/ctok.cnf with this build's module and this world's
        config (and ctok-debug uncommented when debug)."""
        text = (REPO / "openssl.cnf.d" / "ctok.cnf").read_text()
        text, n1 = re.subn(r"(?m)^module\s*=.*$", "module = %s" % (self.build / "ctok.so"), text)
        # the shipped file sets no ctok-config (its commented line is the place for one)
        text, n2 = re.subn(r"(?m)^#?\s*ctok-config\s*=.*$", "ctok-config = %s" % self.ws.config,
                           text)
        assert n1 == 1 and n2 == 1, "openssl.cnf.d/ctok.cnf has no 'module =' and " \
                                    "'ctok-config =' lines to point at the build:\n" + text
        if debug:
            text, n3 = re.subn(r"(?m)^#\s*ctok-debug\s*=\s*1\s*$", "ctok-debug = 1", text)
            assert n3 == 1, "openssl.cnf.d/ctok.cnf has no '# ctok-debug = 1' line:\n" + text
        p = self.path(name)
        p.write_text(text)
        os.chmod(p, 0o644)
        return p

    @staticmethod
    def grant_worker_access(hsm: SoftHsm):
        """What an administrator does for the worker user: the SoftHSM config file and the
        token directory (SoftHSM makes it 0700/0600) readable by the group www-data."""
        _, gid = worker_ids()
        os.chmod(hsm.root, 0o755)
        os.chmod(hsm.conf, 0o644)
        for dirpath, dirnames, filenames in os.walk(hsm.root / "tokens"):
            os.chown(dirpath, 0, gid)
            os.chmod(dirpath, 0o750)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), 0, gid)
                os.chmod(os.path.join(dirpath, f), 0o640)

    def private_softhsm_copy(self, name):
        """A copy of the SoftHSM token directory and a config for it, readable by root only
        (as softhsm2-util leaves it): the administrator forgot the worker user."""
        copy = SoftHsm(self.new_dir(name))
        shutil.rmtree(copy.root / "tokens")
        shutil.copytree(self.hsm.root / "tokens", copy.root / "tokens")
        for dirpath, dirnames, filenames in os.walk(copy.root / "tokens"):
            os.chown(dirpath, 0, 0)
            os.chmod(dirpath, 0o700)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), 0, 0)
                os.chmod(os.path.join(dirpath, f), 0o600)
        os.chmod(copy.conf, 0o644)
        return copy

    # ---- lookups

    def key(self, token, alias) -> ServerKey:
        return self.keys[(token, alias)]

    # ---- environments

    @staticmethod
    def _base_env():
        return {k: v for k, v in os.environ.items()
                if not k.startswith(("OPENSSL_", "CTOK_")) and k != "SOFTHSM2_CONF"}

    def app_env(self, extra=None, debug=False, softhsm=None):
        """An application's environment with ctok active through OPENSSL_CONF (the
        snippet's ctok-config names the world's config; CTOK_CONFIG is not set)."""
        env = self._base_env()
        env["OPENSSL_CONF"] = str(self.cnf_debug if debug else self.cnf)
        env["SOFTHSM2_CONF"] = str((softhsm or self.hsm).conf)
        for k, v in (extra or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = str(v)
        return env

    def plain_env(self):
        """A client's environment without ctok."""
        env = self._base_env()
        env["OPENSSL_CONF"] = str(self.ws.plain_cnf)
        return env


_once = {}


@pytest.fixture(scope="session")
def world(build):
    if "world" not in _once:
        root = Path(tempfile.mkdtemp(prefix="ctok-apps-", dir="/tmp"))
        try:
            _once["world"] = AppWorld(root, build)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
    yield _once["world"]
    w = _once.pop("world", None)
    if w is not None:
        shutil.rmtree(w.root, ignore_errors=True)


# ---------------------------------------------------------------- background servers


class Background:
    """A server process in a session (process group) of its own, output to a file, killed
    by a watchdog after `lifetime` seconds whatever happens to the test."""

    def __init__(self, argv, env, log: Path, lifetime=120, cwd=None):
        self.argv = [str(a) for a in argv]
        self.log = Path(log)
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._fh, stderr=subprocess.STDOUT, cwd=cwd,
                                     start_new_session=True)
        self._watchdog = threading.Timer(lifetime, self.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, sig=signal.SIGTERM, timeout=10):
        self._watchdog.cancel()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # whatever is left of its group (workers)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._fh.close()
        return self.proc.returncode

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def children(self):
        try:
            text = Path("/proc/%d/task/%d/children" % (self.pid, self.pid)).read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]


def wait_port(port, proc: Background, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def proc_uid(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def maps_of(pid):
    try:
        return Path("/proc/%d/maps" % pid).read_text()
    except OSError:
        return ""


def start_listening(srv, argv, out, attempts=3):
    """Starts srv (Nginx or Httpd) and waits until its port accepts connections; when
    another process took the free port in the meantime, tries again on a new one."""
    for attempt in range(attempts):
        if srv.error_log_path.exists():
            srv.error_log_path.unlink()
        srv.server = Background(argv(), srv.env, out, lifetime=srv.lifetime)
        deadline = time.monotonic() + 20
        while srv.server.alive() and time.monotonic() < deadline and \
                srv.READY not in srv.error_log():
            time.sleep(0.05)
        if srv.READY in srv.error_log() and wait_port(srv.port, srv.server):
            return srv.server
        rc = srv.server.stop()
        if "Address already in use" in srv.error_log() and attempt + 1 < attempts:
            srv.port = free_port()
            srv._write_conf()
            continue
        raise AssertionError("%s did not start (exit %s)\n%s" % (
            Path(srv.argv()[0]).name, rc, srv.report()))


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes {workers};
{user_line}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
env OPENSSL_CONF;
env SOFTHSM2_CONF;
env CTOK_CONFIG;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl reuseport;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        location / {{ return 200 "nginx worker $pid\\n"; }}
    }}
}}
"""


class Nginx:
    """Debian's nginx in the foreground (daemon off) with a prefix of its own; the master
    runs as root and forks `workers` workers that run as `user`."""

    READY = "start worker processes"  # logged once the master has bound its sockets

    def __init__(self, world: AppWorld, cert, key, workers=1, user=WORKER_USER, env=None,
                 lifetime=150):
        require(NGINX, "nginx")
        self.world = world
        self.prefix = world.new_dir("nginx")
        self.port = free_port()
        self.workers = workers
        self.env = env if env is not None else world.app_env()
        self.lifetime = lifetime
        self.conf = self.prefix / "nginx.conf"
        self._fields = dict(workers=workers, prefix=self.prefix, cert=cert, key=key,
                            user_line="user %s %s;" % (user, user) if user else "")
        self._write_conf()
        self.error_log_path = self.prefix / "error.log"
        self.server = None

    def _write_conf(self):
        self.conf.write_text(NGINX_CONF.format(port=self.port, **self._fields))

    def argv(self, *extra):
        return [NGINX, "-p", self.prefix, "-c", self.conf, "-e", self.error_log_path, *extra]

    def test_config(self):
        """nginx -t: loads the certificate and key as the master would."""
        return run(self.argv("-t"), self.env, timeout=60)

    def start(self):
        self.server = start_listening(self, self.argv, self.prefix / "stdout.log")
        deadline = time.monotonic() + 10
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def worker_pids(self):
        return self.server.children() if self.server else []

    @property
    def master_pid(self):
        return self.server.pid

    def error_log(self):
        text = self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() \
            else ""
        return text + (self.server.output() if self.server else "")

    def report(self):
        return "--- nginx.conf ---\n%s\n--- nginx error log and output ---\n%s" % (
            self.conf.read_text(), self.error_log()[-6000:])

    def stop(self):
        if self.server:
            self.server.stop(signal.SIGTERM)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


APACHE_CONF = """\
ServerRoot "{root}"
ServerName localhost
Listen 127.0.0.1:{port} https
PidFile "{root}/httpd.pid"
DefaultRuntimeDir "{root}"
Mutex file:{root} default
ErrorLog "{root}/error.log"
LogLevel info
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule ssl_module {mods}/mod_ssl.so
User {user}
Group {user}
StartServers 1
ServerLimit 1
ThreadLimit 8
ThreadsPerChild 8
MinSpareThreads 1
MaxSpareThreads 8
MaxRequestWorkers 8
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    Require all granted
</Directory>
SSLEngine on
SSLProtocol -all +TLSv1.2 +TLSv1.3
SSLSessionCache none
SSLCertificateFile "{cert}"
SSLCertificateKeyFile "{key}"
"""


class Httpd:
    """Debian's Apache httpd (mpm_event, mod_ssl) in the foreground (-DFOREGROUND) with its
    own ServerRoot; the parent runs as root, its child as `user`."""

    READY = "resuming normal operations"  # AH00489, logged after the sockets are bound

    def __init__(self, world: AppWorld, cert, key, env=None, user=WORKER_USER, lifetime=120):
        require(APACHE, "apache2-bin")
        self.world = world
        self.root = world.new_dir("httpd")
        (self.root / "htdocs").mkdir()
        os.chmod(self.root / "htdocs", 0o755)
        page = self.root / "htdocs" / "index.html"
        page.write_text("hello from httpd\n")
        os.chmod(page, 0o644)
        self.port = free_port()
        self.env = env if env is not None else world.app_env()
        self.lifetime = lifetime
        self.conf = self.root / "httpd.conf"
        self._fields = dict(root=self.root, mods=APACHE_MODULES, user=user, cert=cert, key=key)
        self._write_conf()
        self.error_log_path = self.root / "error.log"
        self.server = None

    def _write_conf(self):
        self.conf.write_text(APACHE_CONF.format(port=self.port, **self._fields))

    def argv(self, *extra):
        return [APACHE, "-f", self.conf, *extra]

    def test_config(self):
        return run(self.argv("-t"), self.env, timeout=60)

    def start(self):
        self.server = start_listening(self, lambda: self.argv("-DFOREGROUND"),
                                      self.root / "stdout.log")
        deadline = time.monotonic() + 10
        while not self.server.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def error_log(self):
        text = self.error_log_path.read_text(errors="replace") if self.error_log_path.exists() \
            else ""
        return text + (self.server.output() if self.server else "")

    def report(self):
        return "--- httpd.conf ---\n%s\n--- httpd error log and output ---\n%s" % (
            self.conf.read_text(), self.error_log()[-6000:])

    def stop(self):
        if self.server:
            self.server.stop(signal.SIGTERM)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SServer:
    """openssl s_server (plain OpenSSL, file key) serving one HTTPS page (-www), for one
    connection, asking for a client certificate that world's CA issued."""

    def __init__(self, world: AppWorld, *args, lifetime=60):
        self.port = free_port()
        d = world.new_dir("s_server")
        self.server = Background(
            [OPENSSL, "s_server", "-accept", "127.0.0.1:%d" % self.port, "-naccept", "1",
             "-www", "-cert", world.file_cert, "-key", world.file_key, *args],
            world.plain_env(), d / "out.log", lifetime=lifetime)

    def __enter__(self):
        deadline = time.monotonic() + 15
        while "ACCEPT" not in self.server.output() and time.monotonic() < deadline:
            if not self.server.alive():
                break
            time.sleep(0.05)
        if "ACCEPT" not in self.server.output():
            self.server.stop()
            raise AssertionError("s_server did not start\n" + self.server.output())
        return self

    def finish(self, timeout=15):
        try:
            self.server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.server.stop()

    def output(self):
        return self.server.output()

    def __exit__(self, *exc):
        self.server.stop()


# ---------------------------------------------------------------- clients

HTTP_GET = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def curl(world: AppWorld, port, *args, env=None, path="/"):
    """curl over HTTPS to localhost:port (resolved to 127.0.0.1), verifying the chain
    against the world's CA; -v so the TLS details are on stderr."""
    require(CURL, "curl")
    return run([CURL, "-sS", "-v", "--fail", "--max-time", "20", "--cacert", world.ca,
                "--resolve", "localhost:%d:127.0.0.1" % port, *args,
                "https://localhost:%d%s" % (port, path)],
               env if env is not None else world.plain_env(), timeout=CLIENT_TIMEOUT)


def s_client(world: AppWorld, port, *args, request=HTTP_GET):
    """openssl s_client (no ctok) that fails unless the chain verifies."""
    return run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port, "-servername",
                "localhost", "-verify_hostname", "localhost", "-verify_return_error",
                "-CAfile", world.ca, "-ign_eof", *args],
               world.plain_env(), input=request, timeout=CLIENT_TIMEOUT)


def gnutls_cli(world: AppWorld, port, priority, request=HTTP_GET):
    require(GNUTLS_CLI, "gnutls-bin")
    return run([GNUTLS_CLI, "--x509cafile", world.ca, "--port", str(port), "--priority",
                priority, "localhost"], world.plain_env(), input=request,
               timeout=CLIENT_TIMEOUT)


def assert_curl_ok(p, proto, body):
    """curl fetched the page over `proto` (TLSv1.3 / TLSv1.2) and verified the chain."""
    assert p.returncode == 0, "curl failed\n" + describe(p)
    assert "SSL connection using %s" % proto in p.stderr, describe(p)
    assert "SSL certificate verify ok" in p.stderr, describe(p)
    assert body in p.stdout, describe(p)


def peer_signature_type(out):
    m = re.search(r"^Peer signature type: (\S+)", out, re.M)
    return m.group(1) if m else None


def assert_s_client_ok(p, proto, sigtype, body):
    assert p.returncode == 0, "s_client failed\n" + describe(p)
    assert "Verify return code: 0 (ok)" in p.stdout, describe(p)
    assert re.search(r"Protocol\s*: %s" % re.escape(proto), p.stdout), describe(p)
    assert (peer_signature_type(p.stdout) or "").lower() == sigtype.lower(), describe(p)
    assert "HTTP/1.1 200 OK" in p.stdout and body in p.stdout, describe(p)


def https_get(port, cafile, deadline=None, timeout=15):
    """One new TLS connection (no session reuse) from this process: GET /, return
    ("ok", worker pid, TLS version) or ("error", description)."""
    if deadline is not None and time.monotonic() > deadline:
        return ("skipped", "deadline passed")
    ctx = _client_ctx(str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                reused = t.session_reused
                version = t.version()
                t.sendall(HTTP_GET.encode())
                data = b""
                while True:
                    chunk = t.recv(4096)
                    if not chunk:
                        break
                    data += chunk
    except (OSError, ssl.SSLError) as e:
        return ("error", repr(e))
    if reused:
        return ("error", "session was reused")
    m = re.search(rb"worker (\d+)", data)
    if not data.startswith(b"HTTP/1.1 200") or not m:
        return ("error", "bad response %r" % data[:200])
    return ("ok", int(m.group(1)), version)


_ctx_cache = {}
_ctx_lock = threading.Lock()


def _client_ctx(cafile):
    with _ctx_lock:
        ctx = _ctx_cache.get(cafile)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=cafile)
            _ctx_cache[cafile] = ctx
        return ctx


def handshake_storm(port, cafile, n, concurrency=8, time_limit=90):
    """n new TLS handshakes (each a fresh connection and a GET) from a thread pool, bounded
    in time: after time_limit seconds the rest are not attempted (reported as skipped).
    Returns (results, elapsed seconds)."""
    start = time.monotonic()
    deadline = start + time_limit
    with concurrent.futures.ThreadPoolExecutor(concurrency) as ex:
        results = list(ex.map(lambda _: https_get(port, cafile, deadline), range(n)))
    return results, time.monotonic() - start


def summarize(results):
    ok = [r for r in results if r[0] == "ok"]
    bad = [r for r in results if r[0] != "ok"]
    by_worker = {}
    for r in ok:
        by_worker[r[1]] = by_worker.get(r[1], 0) + 1
    kinds = {}
    for r in bad:
        kinds[(r[0], r[1][:160])] = kinds.get((r[0], r[1][:160]), 0) + 1
    text = "%d ok, %d failed; by worker %s; failures: %s" % (
        len(ok), len(bad), by_worker,
        "; ".join("%dx %s %s" % (c, k[0], k[1]) for k, c in sorted(kinds.items())[:8]))
    return ok, bad, by_worker, text


# ---------------------------------------------------------------- Python's ssl module

PY_SERVER = r'''
import socket, ssl, sys
cert, key = sys.argv[1], sys.argv[2]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
try:
    ctx.load_cert_chain(cert, key)
except Exception as e:
    print("LOAD-FAILED %r" % (e,), flush=True)
    sys.exit(3)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
s.settimeout(30)
print("PORT %d" % s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(30)
t = ctx.wrap_socket(c, server_side=True)
print("HANDSHAKE %s %s" % (t.version(), t.cipher()[0]), flush=True)
line = t.recv(1024)
t.sendall(b"python says: " + line[::-1])
t.close()
print("DONE", flush=True)
'''


def python_server(world: AppWorld, key: ServerKey, env=None):
    script = world.path("py_tls_server.py")
    if not script.exists():
        script.write_text(PY_SERVER)
    d = world.new_dir("python")
    return Background([PYTHON, script, key.cert, key.ref], env or world.app_env(),
                      d / "out.log", lifetime=60)


def wait_output(bg: Background, pattern, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, bg.output())
        if m:
            return m
        if not bg.alive():
            return re.search(pattern, bg.output())
        time.sleep(0.05)
    return None


# ---------------------------------------------------------------- trace checks

# ctok debug lines that mean a token was touched or a PKCS#11 module loaded (anything but
# the provider's own load line and pass-through key management of ordinary keys).
TOKEN_TRACE = re.compile(r"ctok\[\d+\]: *(pkcs11:|store:|lookup:|decoder:|signature:|"
                         r"asym-cipher:|keyexch: init \(token|audit:|error:)")


def token_traces(text):
    return [l for l in text.splitlines() if TOKEN_TRACE.search(l) or
            ("ctok[" in l and "token '" in l)]
