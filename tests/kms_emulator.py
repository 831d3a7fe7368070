"""A local AWS KMS over TLS plus an EC2 instance-metadata service (IMDSv2), for ctok's tests.

Real cryptography on keys held in memory (python3-cryptography), the JSON protocol of
CLOUD-PROTOCOLS.md, SigV4 verified the way AWS verifies it (from the headers, path, query and
body actually received, for whatever SignedHeaders lists), a policy per credential, fault
switches (throttling, 5xx, latency, connection reset) and counters (requests per action, TLS
connections accepted). tests/test_kms_emulator.py proves its fidelity with boto3.

Everything runs in daemon threads of the calling process and binds 127.0.0.1 only. Standalone:
    python3 tests/kms_emulator.py --workdir D --credential AKID:SECRET [--port-file F]
(or --credential-file F of AKID:SECRET lines, to keep the secret out of argv) serves until
SIGTERM or --max-seconds (default 3600), writing {"url", "ca_file", "imds_url", "region",
"keys"} to the port file (stdout without one). Counters count every request received, faulted
or refused; connections() counts completed TLS handshakes.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

SEED_ACTIONS = frozenset(
    {"ListAliases", "GetPublicKey", "CreateAlias", "CreateKey", "ScheduleKeyDeletion", "Sign"})
ACCOUNT = "111122223333"
INSTANCE_ID = "i-0123456789abcdef0"
MAX_SKEW = 15 * 60
JSON_TYPE = "application/x-amz-json-1.1"

_HASHES = {"SHA_1": hashes.SHA1, "SHA_256": hashes.SHA256, "SHA_384": hashes.SHA384,
           "SHA_512": hashes.SHA512}
_RSA_SIGN = ["RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512",
             "RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512"]
_RSA_ENCRYPT = ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]
# KeySpec -> (key generator, signing algorithms). An ECC key signs with its curve's hash only.
_SPECS = {
    "RSA_2048": (lambda: rsa.generate_private_key(65537, 2048), _RSA_SIGN),
    "RSA_3072": (lambda: rsa.generate_private_key(65537, 3072), _RSA_SIGN),
    "RSA_4096": (lambda: rsa.generate_private_key(65537, 4096), _RSA_SIGN),
    "ECC_NIST_P256": (lambda: ec.generate_private_key(ec.SECP256R1()), ["ECDSA_SHA_256"]),
    "ECC_NIST_P384": (lambda: ec.generate_private_key(ec.SECP384R1()), ["ECDSA_SHA_384"]),
    "ECC_NIST_P521": (lambda: ec.generate_private_key(ec.SECP521R1()), ["ECDSA_SHA_512"]),
    "ECC_SECG_P256K1": (lambda: ec.generate_private_key(ec.SECP256K1()), ["ECDSA_SHA_256"]),
}
ALL_SIGNING = sorted(set(_RSA_SIGN) | {"ECDSA_SHA_256", "ECDSA_SHA_384", "ECDSA_SHA_512"})
MAX_MESSAGE = 4096
MANAGED_ALIASES = ("alias/aws/acm", "alias/aws/ebs", "alias/aws/rds", "alias/aws/s3")


class KmsError(Exception):
    """An AWS error answer: HTTP status, __type and message."""

    def __init__(self, type_, message, status=400):
        super().__init__(message)
        self.type = type_
        self.message = message
        self.status = status


def _validation(field, value, constraint):
    return KmsError("ValidationException",
                    "1 validation error detected: Value %s at '%s' failed to satisfy constraint: "
                    "Member %s" % ("null" if value is None else "'%s'" % value, field, constraint))


def _amz_date(t):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def _parse_amz_date(s):
    try:
        return datetime.datetime.strptime(s, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def _b64(data):
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- test CA and server certificate


def _make_tls_files(workdir: Path):
    """A test CA and a server certificate for 127.0.0.1 and localhost, written in workdir."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctok KMS emulator test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    workdir.mkdir(parents=True, exist_ok=True)
    ca_file = workdir / "kms-test-ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = workdir / "kms-server.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = workdir / "kms-server.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_file, 0o600)
    return ca_file, chain, key_file


# ---------------------------------------------------------------- state


class _Key:
    def __init__(self, region, spec, usage, private, description=""):
        self.id = str(uuid.uuid4())
        self.arn = "arn:aws:kms:%s:%s:key/%s" % (region, ACCOUNT, self.id)
        self.spec = spec
        self.usage = usage
        self.private = private
        self.public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.description = description
        self.created = time.time()
        self.state = "Enabled"
        self.deletion_date = None
        self.signing = _SPECS[spec][1] if usage == "SIGN_VERIFY" else []
        self.encryption = _RSA_ENCRYPT if usage == "ENCRYPT_DECRYPT" else []

    def metadata(self):
        m = {"AWSAccountId": ACCOUNT, "KeyId": self.id, "Arn": self.arn,
             "CreationDate": self.created, "Enabled": self.state == "Enabled",
             "Description": self.description, "KeyUsage": self.usage, "KeyState": self.state,
             "Origin": "AWS_KMS", "KeyManager": "CUSTOMER", "CustomerMasterKeySpec": self.spec,
             "KeySpec": self.spec, "MultiRegion": False}
        if self.deletion_date is not None:
            m["DeletionDate"] = self.deletion_date
        if self.signing:
            m["SigningAlgorithms"] = list(self.signing)
        if self.encryption:
            m["EncryptionAlgorithms"] = list(self.encryption)
        return m


class _Credential:
    def __init__(self, akid, secret, session_token, actions, expires_at, principal):
        self.akid = akid
        self.secret = secret
        self.session_token = session_token
        self.actions = frozenset(actions)
        self.expires_at = expires_at
        self.principal = principal


class _State:
    """Everything the two servers share, under one lock."""

    def __init__(self, region, on_secret):
        self.region = region
        self.lock = threading.Lock()
        self.keys = {}  # id -> _Key
        self.aliases = {}  # name -> [key id, created, updated]  (insertion order = list order)
        self.creds = {}  # akid -> _Credential
        self.role = None  # (name, actions, ttl)
        self.imds_tokens = {}  # token -> expiry
        self.faults = {"throttle": 0, "fail5xx": 0, "reset": 0}
        self.fail_status = 503
        self.latency_ms = 0
        self.counts = {}
        self.imds_counts = {}
        self.tls_connections = 0
        self.on_secret = on_secret or (lambda s: None)


# ---------------------------------------------------------------- SigV4


def _canonical_query(raw):
    if not raw:
        return ""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join("%s=%s" % kv for kv in sorted(pairs))


def _canonical_path(raw):
    # Services other than S3 normalize the path and URI-encode it once more (botocore does too).
    parts = []
    for seg in raw.split("/"):
        if seg == "..":
            if parts:
                parts.pop()
        elif seg not in ("", "."):
            parts.append(seg)
    path = "/" + "/".join(parts)
    if raw.endswith("/") and path != "/":
        path += "/"
    return quote(path, safe="/~")


def _header_value(values):
    return ",".join(re.sub(r"\s+", " ", v.strip()) for v in values)


def signing_key(secret, date, region, service="kms"):
    k = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return k


_AUTH_RE = re.compile(r"^AWS4-HMAC-SHA256\s+(.*)$", re.S)


def _parse_authorization(value):
    m = _AUTH_RE.match(value or "")
    if not m:
        return None
    fields = {}
    for item in m.group(1).split(","):
        k, sep, v = item.strip().partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    return fields


# ---------------------------------------------------------------- the KMS request handler


def take_fault(st, operation):
    """Counts operation in st.counts, waits st.latency_ms and takes the next armed fault:
    "reset", "throttle", "fail5xx" or None (shared with tests/akv_emulator.py)."""
    with st.lock:
        st.counts[operation] = st.counts.get(operation, 0) + 1
        fault = None
        for name in ("reset", "throttle", "fail5xx"):
            if st.faults[name] > 0:
                st.faults[name] -= 1
                fault = name
                break
        delay = st.latency_ms
    if delay:
        time.sleep(delay / 1000.0)
    return fault


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, nothing of a request in a log, and a connection reset on demand
    (the base of this emulator's handlers and of tests/akv_emulator.py's)."""
    protocol_version = "HTTP/1.1"
    sys_version = ""
    timeout = 300  # an idle keep-alive connection is closed after this long

    def log_message(self, fmt, *args):  # quiet: nothing of a request reaches a log
        pass

    def _reset(self):
        """Closes the TCP connection without an answer (RST, not a TLS close_notify)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _KmsHandler(QuietHandler):
    server_version = "Server"

    def _send(self, status, body: bytes, extra=()):
        # One write per answer: headers and body in separate segments would meet Nagle and
        # delayed ACK on loopback (40 ms per request).
        head = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0]),
                "x-amzn-RequestId: %s" % uuid.uuid4(),
                "Content-Type: %s" % JSON_TYPE,
                "Content-Length: %d" % len(body),
                "Date: %s" % self.date_time_string()]
        head.extend(extra)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _error(self, err: KmsError):
        doc = {"__type": err.type}
        if err.message is not None:
            doc["message"] = err.message
        body = json.dumps(doc).encode()
        self._send(err.status, body, ["x-amzn-ErrorType: %s" % err.type])

    def do_GET(self):
        self._error(KmsError("UnknownOperationException", None))

    def do_POST(self):
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        target = self.headers.get("X-Amz-Target") or ""
        action = target[len("TrentService."):] if target.startswith("TrentService.") else target
        fault = take_fault(st, action)
        if fault == "reset":
            return self._reset()
        try:
            if fault == "throttle":
                raise KmsError("ThrottlingException", "Rate exceeded")
            if fault == "fail5xx":
                status = st.fail_status
                raise KmsError("KMSInternalException" if status == 500 else
                               "ServiceUnavailableException" if status == 503 else
                               "InternalFailure", "Service unavailable (injected fault)", status)
            cred = self.server.emu._authenticate(self, body)
            if not target.startswith("TrentService.") or action not in _OPERATIONS:
                raise KmsError("UnknownOperationException", None)
            try:
                req = json.loads(body or b"{}")
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                raise KmsError("SerializationException", "Start of structure or map found where "
                               "not expected.") from None
            out = _OPERATIONS[action](self.server.emu, cred, action, req)
            self._send(200, json.dumps(out).encode())
        except KmsError as e:
            self._error(e)


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx, state, emu):
        self.ctx = ctx
        self.state = state
        self.emu = emu
        self.live = set()
        self.live_lock = threading.Lock()
        super().__init__(addr, handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ctx is None:
            return sock, addr
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        # The handshake runs in the connection's own thread, not in the accept loop.
        with self.live_lock:
            self.live.add(request)
        try:
            if self.ctx is not None:
                request.settimeout(10)
                try:
                    request.do_handshake()
                except (OSError, ssl.SSLError):
                    return
                with self.state.lock:
                    self.state.tls_connections += 1
            super().finish_request(request, client_address)
        finally:
            with self.live_lock:
                self.live.discard(request)

    def handle_error(self, request, client_address):
        pass  # a client that went away is not the test's business

    def close_all(self):
        with self.live_lock:
            live = list(self.live)
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# ---------------------------------------------------------------- IMDSv2


class _ImdsHandler(QuietHandler):
    server_version = "EC2ws"
    timeout = 60

    def _send(self, status, text, ctype="text/plain"):
        body = text.encode()
        self.wfile.write(("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                          "Server: EC2ws\r\n\r\n" % (status, self.responses.get(
                              status, ("",))[0], ctype, len(body))).encode() + body)

    def _count(self, what):
        st = self.server.state
        with st.lock:
            st.imds_counts[what] = st.imds_counts.get(what, 0) + 1

    def do_PUT(self):
        st = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._count("PUT " + self.path)
        if self.path != "/latest/api/token":
            return self._send(404, "Not Found")
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            return self._send(400, "Bad Request")
        if not 1 <= ttl <= 21600:
            return self._send(400, "Bad Request")
        token = base64.b64encode(secrets.token_bytes(42)).decode()
        with st.lock:
            st.imds_tokens[token] = time.time() + ttl
        self._send(200, token)

    def do_GET(self):
        st = self.server.state
        self._count("GET " + self.path)
        token = self.headers.get("X-aws-ec2-metadata-token")
        with st.lock:
            ok = token is not None and st.imds_tokens.get(token, 0) > time.time()
            role = st.role
        if not ok:
            return self._send(401, "Unauthorized")
        base = "/latest/meta-data/iam/security-credentials/"
        if not self.path.startswith(base) or role is None:
            return self._send(404, "Not Found")
        name = self.path[len(base):]
        if name == "":
            return self._send(200, role[0])
        if name != role[0]:
            return self._send(404, "Not Found")
        self._send(200, json.dumps(self.server.emu._issue_role_credentials(), indent=2),
                   "text/plain")


# ---------------------------------------------------------------- the emulator


class EmulatorBase:
    """Servers in daemon threads on 127.0.0.1, a context manager, and the fault switches and
    counters over self._st (lock, faults, fail_status, latency_ms, counts, tls_connections):
    the common part of KmsEmulator and tests/akv_emulator.py's AkvEmulator."""

    def _serve(self, workdir, handlers, name):
        """One server per (handler, tls) in handlers, TLS with a fresh test CA (self.ca_file);
        returns the servers, serving."""
        ca_file, chain, key_file = _make_tls_files(Path(workdir))
        self.ca_file = str(ca_file)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(chain), str(key_file))
        self._servers = [_TlsServer(("127.0.0.1", 0), h, ctx if tls else None, self._st, self)
                         for h, tls in handlers]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                             daemon=True, name=name).start()
        self._stopped = False
        return self._servers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        if self._stopped:
            return
        self._stopped = True
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
            srv.close_all()

    def fail5xx(self, n, status=503):
        """The next n requests get status (500, 503, ...)."""
        with self._st.lock:
            self._st.faults["fail5xx"] = n
            self._st.fail_status = status

    def latency(self, ms):
        with self._st.lock:
            self._st.latency_ms = ms

    def reset_connections(self, n):
        """The next n requests get their TCP connection reset instead of an answer."""
        with self._st.lock:
            self._st.faults["reset"] = n

    def requests(self) -> dict:
        """{operation: count} of the requests received (faulted or refused included)."""
        with self._st.lock:
            return dict(self._st.counts)

    def connections(self) -> int:
        """TLS handshakes completed."""
        with self._st.lock:
            return self._st.tls_connections


class KmsEmulator(EmulatorBase):
    """AWS KMS (https://127.0.0.1:<port>) and IMDSv2 (http://127.0.0.1:<port2>) in threads."""

    def __init__(self, workdir, region="us-east-1", on_secret=None, managed_aliases=False):
        """on_secret(s), when given, is called with every secret the emulator learns or issues
        (the tests register them with their secret scan). managed_aliases: ListAliases also
        shows AWS managed aliases (alias/aws/...) without a TargetKeyId, as in a real account
        where no service has used its key yet."""
        self.workdir = Path(workdir)
        self.region = region
        self._st = _State(region, on_secret)
        if managed_aliases:
            now = time.time()
            for n in MANAGED_ALIASES:
                self._st.aliases[n] = [None, now, now]
        self._kms, self._imds = self._serve(
            self.workdir, [(_KmsHandler, True), (_ImdsHandler, False)], "kms-emulator")
        self.url = "https://127.0.0.1:%d" % self._kms.server_address[1]
        self.imds_url = "http://127.0.0.1:%d" % self._imds.server_address[1]

    # ---- credentials and keys

    def add_credential(self, access_key_id, secret, session_token=None, actions=SEED_ACTIONS,
                       expires_at=None):
        """A credential the service accepts; expires_at (epoch seconds) makes it expire."""
        self._st.on_secret(secret)
        if session_token:
            self._st.on_secret(session_token)
        principal = "arn:aws:iam::%s:user/%s" % (ACCOUNT, "ctok-test")
        with self._st.lock:
            self._st.creds[access_key_id] = _Credential(access_key_id, secret, session_token,
                                                        actions, expires_at, principal)

    def set_role(self, name, actions=SEED_ACTIONS, ttl_seconds=3600):
        """The instance's role: IMDS hands out fresh temporary credentials on each read."""
        with self._st.lock:
            self._st.role = (name, frozenset(actions), ttl_seconds)

    def _issue_role_credentials(self):
        with self._st.lock:
            name, actions, ttl = self._st.role
        now = time.time()
        akid = "ASIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                for _ in range(16))
        secret = base64.b64encode(secrets.token_bytes(30)).decode()
        token = base64.b64encode(secrets.token_bytes(96)).decode()
        self._st.on_secret(secret)
        self._st.on_secret(token)
        cred = _Credential(akid, secret, token, actions, now + ttl,
                           "arn:aws:sts::%s:assumed-role/%s/%s" % (ACCOUNT, name, INSTANCE_ID))
        with self._st.lock:
            self._st.creds[akid] = cred
        return {"Code": "Success", "LastUpdated": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime(now)),
                "Type": "AWS-HMAC", "AccessKeyId": akid, "SecretAccessKey": secret,
                "Token": token,
                "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + ttl))}

    def expire_role_credentials(self):
        """Every role credential handed out so far expires now (as if its Expiration passed)."""
        now = time.time()
        with self._st.lock:
            for c in self._st.creds.values():
                if c.principal.startswith("arn:aws:sts::"):
                    c.expires_at = min(c.expires_at, now)

    def create_key(self, spec, usage="SIGN_VERIFY", alias=None) -> str:
        key = self._new_key(spec, usage, "")
        if alias:
            self._add_alias(alias if alias.startswith("alias/") else "alias/" + alias, key.id)
        return key.id

    def set_key_state(self, key_id, state):
        if state not in ("Enabled", "Disabled", "PendingDeletion"):
            raise ValueError(state)
        with self._st.lock:
            k = self._st.keys[key_id]
            k.state = state
            k.deletion_date = (float(int(time.time()) + 30 * 86400)
                               if state == "PendingDeletion" else None)

    def public_key_der(self, key_id) -> bytes:
        with self._st.lock:
            return self._st.keys[key_id].public_der

    def aliases(self) -> dict:
        """{"alias/x": key id (None: a managed alias without a key)}, in creation order."""
        with self._st.lock:
            return {n: a[0] for n, a in self._st.aliases.items()}

    def key_metadata(self, key_id) -> dict:
        """DescribeKey's KeyMetadata of a key (KeyState, DeletionDate, KeySpec, ...)."""
        with self._st.lock:
            return self._st.keys[key_id].metadata()

    def key_arn(self, key_id) -> str:
        return "arn:aws:kms:%s:%s:key/%s" % (self.region, ACCOUNT, key_id)

    # ---- faults and counters

    def throttle(self, n):
        with self._st.lock:
            self._st.faults["throttle"] = n

    def imds_requests(self) -> dict:
        """{"PUT /latest/api/token": n, "GET <path>": n} since start or clear_counters()."""
        with self._st.lock:
            return dict(self._st.imds_counts)

    def clear_counters(self):
        with self._st.lock:
            self._st.counts.clear()
            self._st.imds_counts.clear()
            self._st.tls_connections = 0

    # ---- internals

    def _new_key(self, spec, usage, description):
        if spec not in _SPECS:
            raise _validation("keySpec", spec, "must satisfy enum value set: [%s]" %
                              ", ".join(sorted(_SPECS)))
        if usage not in ("SIGN_VERIFY", "ENCRYPT_DECRYPT"):
            raise _validation("keyUsage", usage,
                              "must satisfy enum value set: [SIGN_VERIFY, ENCRYPT_DECRYPT]")
        if usage == "ENCRYPT_DECRYPT" and not spec.startswith("RSA_"):
            raise KmsError("ValidationException",
                           "KeyUsage ENCRYPT_DECRYPT is not compatible with KeySpec %s" % spec)
        key = _Key(self.region, spec, usage, _SPECS[spec][0](), description)
        with self._st.lock:
            self._st.keys[key.id] = key
        return key

    def _add_alias(self, name, key_id):
        now = time.time()
        with self._st.lock:
            if name in self._st.aliases:
                raise KmsError("AlreadyExistsException", "An alias with the name %s already "
                               "exists" % self._alias_arn(name))
            self._st.aliases[name] = [key_id, now, now]

    def _alias_arn(self, name):
        return "arn:aws:kms:%s:%s:%s" % (self.region, ACCOUNT, name)

    def _authenticate(self, h, body):
        """The credential of a request whose SigV4 signature is right, else AWS's error."""
        st = self._st
        auth = _parse_authorization(h.headers.get("Authorization"))
        if h.headers.get("Authorization") is None:
            raise KmsError("MissingAuthenticationTokenException", "Missing Authentication Token")
        if auth is None or not {"Credential", "SignedHeaders", "Signature"} <= set(auth):
            raise KmsError("IncompleteSignatureException",
                           "Authorization header requires 'Credential', 'Signature' and "
                           "'SignedHeaders' parameters. Authorization=%s" %
                           (h.headers.get("Authorization") or "").split(" ")[0])
        scope = auth["Credential"].split("/")
        if len(scope) != 5:
            raise KmsError("IncompleteSignatureException",
                           "Credential should have 5 parts: %s" % auth["Credential"])
        akid, sdate, sregion, sservice, sterm = scope
        with st.lock:
            cred = st.creds.get(akid)
        token = h.headers.get("X-Amz-Security-Token")
        if cred is None or (cred.session_token or None) != (token or None):
            raise KmsError("UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        if cred.expires_at is not None and time.time() >= cred.expires_at:
            raise KmsError("ExpiredTokenException",
                           "The security token included in the request is expired")
        amz_date = h.headers.get("X-Amz-Date")
        when = _parse_amz_date(amz_date)
        if when is None:
            raise KmsError("IncompleteSignatureException",
                           "Authorization header requires existence of either a 'X-Amz-Date' or "
                           "a 'Date' header.")
        now = time.time()
        if when < now - MAX_SKEW:
            raise KmsError("InvalidSignatureException",
                           "Signature expired: %s is now earlier than %s (%s - 15 min.)" %
                           (amz_date, _amz_date(now - MAX_SKEW), _amz_date(now)))
        if when > now + MAX_SKEW:
            raise KmsError("InvalidSignatureException",
                           "Signature not yet current: %s is still later than %s (%s + 15 min.)"
                           % (amz_date, _amz_date(now + MAX_SKEW), _amz_date(now)))
        if sdate != amz_date[:8]:
            raise KmsError("InvalidSignatureException",
                           "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                           "version of date from HTTP: '%s' != '%s', from '%s'." %
                           (sdate, amz_date[:8], amz_date))
        if sservice != "kms":
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped to correct service: 'kms'. ")
        if sregion != self.region:
            raise KmsError("InvalidSignatureException",
                           "Credential should be scoped to a valid region. ")
        if sterm != "aws4_request":
            raise KmsError("InvalidSignatureException", "Credential should be scoped with a "
                           "valid terminator: 'aws4_request', not '%s'." % sterm)
        signed = auth["SignedHeaders"].split(";")
        if "host" not in signed:
            raise KmsError("InvalidSignatureException",
                           "'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                           "Authorization.")
        path, _, query = h.path.partition("?")
        lines = [h.command, _canonical_path(path), _canonical_query(query)]
        for name in signed:
            lines.append("%s:%s" % (name, _header_value(h.headers.get_all(name) or [])))
        canonical = "\n".join(lines) + "\n\n%s\n%s" % (auth["SignedHeaders"],
                                                       hashlib.sha256(body).hexdigest())
        to_sign = "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/%s\n%s" % (
            amz_date, sdate, sregion, sservice, sterm,
            hashlib.sha256(canonical.encode()).hexdigest())
        want = hmac.new(signing_key(cred.secret, sdate, sregion, sservice), to_sign.encode(),
                        hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, auth["Signature"]):
            raise KmsError("InvalidSignatureException",
                           "The request signature we calculated does not match the signature "
                           "you provided. Check your AWS Secret Access Key and signing method. "
                           "Consult the service documentation for details.")
        return cred

    def _authorize(self, cred, action, resource):
        if action not in cred.actions:
            raise KmsError("AccessDeniedException",
                           "User: %s is not authorized to perform: kms:%s on resource: %s "
                           "because no identity-based policy allows the kms:%s action" %
                           (cred.principal, action, resource, action))

    def _find_key(self, key_id, aliases=True):
        """The key a KeyId names (id, key ARN, and with aliases alias/x or an alias ARN), else
        NotFound (also for an AWS managed alias that has no key yet)."""
        if not isinstance(key_id, str) or not key_id:
            raise _validation("keyId", None, "must not be null")
        st = self._st
        prefix = "arn:aws:kms:%s:%s:" % (self.region, ACCOUNT)
        rest = key_id[len(prefix):] if key_id.startswith(prefix) else key_id
        with st.lock:
            if rest.startswith("alias/") and aliases:
                a = st.aliases.get(rest)
                if a is None or a[0] is None:
                    raise KmsError("NotFoundException",
                                   "Alias %s is not found." % self._alias_arn(rest))
                return st.keys[a[0]]
            if rest.startswith("key/") and key_id != rest:
                rest = rest[4:]
            elif key_id.startswith("arn:"):
                raise KmsError("NotFoundException", "Invalid arn %s" % key_id)
            try:
                uuid.UUID(rest)
            except ValueError:
                raise KmsError("NotFoundException", "Invalid keyId '%s'" % key_id) from None
            k = st.keys.get(rest)
            if k is None:
                raise KmsError("NotFoundException",
                               "Key '%s' does not exist" % self.key_arn(rest))
            return k

    def _resource(self, req, field="KeyId"):
        """The resource ARN an access decision names: the key's ARN when the key exists."""
        try:
            return self._find_key(req.get(field)).arn
        except KmsError:
            return self.key_arn(req.get(field)) if isinstance(req.get(field), str) else "*"

    @staticmethod
    def _usable(key):
        if key.state == "Disabled":
            raise KmsError("DisabledException", "%s is disabled." % key.arn)
        if key.state == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % key.arn)


# ---------------------------------------------------------------- operations


def _b64_field(req, name, max_len=None):
    v = req.get(name)
    if v is None:
        raise _validation(name[0].lower() + name[1:], None, "must not be null")
    try:
        data = base64.b64decode(v, validate=True)
    except (TypeError, ValueError):
        raise KmsError("SerializationException", "Could not decode %s as base64" % name) from None
    if max_len is not None and not 1 <= len(data) <= max_len:
        raise _validation(name[0].lower() + name[1:], "java.nio.HeapByteBuffer",
                          "must have length less than or equal to %d" % max_len)
    return data


def _page(items, req, marker_of, max_limit):
    limit = req.get("Limit", 50 if max_limit == 100 else 100)
    if not isinstance(limit, int) or not 1 <= limit <= max_limit:
        raise _validation("limit", limit, "must have value between 1 and %d" % max_limit)
    start = 0
    marker = req.get("Marker")
    if marker is not None:
        names = [marker_of(i) for i in items]
        try:
            start = names.index(base64.b64decode(marker, validate=True).decode()) + 1
        except (ValueError, TypeError, UnicodeDecodeError):
            raise KmsError("InvalidMarkerException", "Invalid marker") from None
    page = items[start:start + limit]
    truncated = start + limit < len(items)
    out = {"Truncated": truncated}
    if truncated:
        out["NextMarker"] = base64.b64encode(marker_of(page[-1]).encode()).decode()
    return page, out


def _op_list_aliases(emu, cred, action, req):
    emu._authorize(cred, action, "*")
    key = emu._find_key(req["KeyId"]) if "KeyId" in req else None
    with emu._st.lock:
        items = [(n, a[0], a[1], a[2]) for n, a in emu._st.aliases.items()
                 if key is None or a[0] == key.id]
    page, out = _page(items, req, lambda i: i[0], 100)
    out["Aliases"] = [dict({"AliasName": n, "AliasArn": emu._alias_arn(n), "CreationDate": c,
                            "LastUpdatedDate": u}, **({"TargetKeyId": kid} if kid else {}))
                      for n, kid, c, u in page]
    return out


def _op_list_keys(emu, cred, action, req):
    emu._authorize(cred, action, "*")
    with emu._st.lock:
        items = list(emu._st.keys.values())
    page, out = _page(items, req, lambda k: k.id, 1000)
    out["Keys"] = [{"KeyId": k.id, "KeyArn": k.arn} for k in page]
    return out


def _op_describe_key(emu, cred, action, req):
    emu._authorize(cred, action, emu._resource(req))
    key = emu._find_key(req.get("KeyId"))
    with emu._st.lock:
        return {"KeyMetadata": key.metadata()}


def _op_get_public_key(emu, cred, action, req):
    emu._authorize(cred, action, emu._resource(req))
    key = emu._find_key(req.get("KeyId"))
    emu._usable(key)
    out = {"KeyId": key.arn, "PublicKey": _b64(key.public_der), "CustomerMasterKeySpec": key.spec,
           "KeySpec": key.spec, "KeyUsage": key.usage}
    if key.signing:
        out["SigningAlgorithms"] = list(key.signing)
    if key.encryption:
        out["EncryptionAlgorithms"] = list(key.encryption)
    return out


def _op_sign(emu, cred, action, req):
    emu._authorize(cred, action, emu._resource(req))
    key = emu._find_key(req.get("KeyId"))
    msg = _b64_field(req, "Message", MAX_MESSAGE)
    mtype = req.get("MessageType", "RAW")
    if mtype not in ("RAW", "DIGEST"):
        raise _validation("messageType", mtype, "must satisfy enum value set: [DIGEST, RAW]")
    alg = req.get("SigningAlgorithm")
    if alg not in ALL_SIGNING and alg != "ED25519_SHA_512":
        raise _validation("signingAlgorithm", alg, "must satisfy enum value set: [%s]" %
                          ", ".join(ALL_SIGNING))
    _usable_for(emu, key, "Sign", "SIGN_VERIFY", alg)
    h = _HASHES[alg[alg.index("SHA_"):]]()
    if mtype == "DIGEST":
        if len(msg) != h.digest_size:
            raise KmsError("ValidationException",
                           "Digest is invalid length for algorithm %s." % alg)
        digest = msg
    else:
        d = hashes.Hash(h)
        d.update(msg)
        digest = d.finalize()
    pre = utils.Prehashed(h)
    if alg.startswith("ECDSA"):
        sig = key.private.sign(digest, ec.ECDSA(pre))
    elif alg.startswith("RSASSA_PSS"):
        sig = key.private.sign(digest, padding.PSS(padding.MGF1(h), h.digest_size), pre)
    else:
        sig = key.private.sign(digest, padding.PKCS1v15(), pre)
    return {"KeyId": key.arn, "Signature": _b64(sig), "SigningAlgorithm": alg}


def _usable_for(emu, key, op, usage, alg):
    """The key is enabled, made for usage, and takes alg; else AWS's error."""
    emu._usable(key)
    if key.usage != usage:
        raise KmsError("InvalidKeyUsageException", "%s key usage is %s which is not valid for "
                       "%s." % (key.arn, key.usage, op))
    if alg not in (key.signing if usage == "SIGN_VERIFY" else key.encryption):
        raise KmsError("InvalidKeyUsageException", "Algorithm %s is incompatible with key spec "
                       "%s." % (alg, key.spec))


def _op_decrypt(emu, cred, action, req):
    emu._authorize(cred, action, emu._resource(req))
    blob = _b64_field(req, "CiphertextBlob", 6144)
    if "KeyId" not in req:
        raise KmsError("ValidationException",
                       "KeyId is required when decrypting with an asymmetric KMS key.")
    key = emu._find_key(req.get("KeyId"))
    alg = req.get("EncryptionAlgorithm", "SYMMETRIC_DEFAULT")
    _usable_for(emu, key, "Decrypt", "ENCRYPT_DECRYPT", alg)
    h = _HASHES[alg[len("RSAES_OAEP_"):]]()
    try:
        plain = key.private.decrypt(blob, padding.OAEP(padding.MGF1(h), h, None))
    except ValueError:
        raise KmsError("InvalidCiphertextException", None) from None
    return {"KeyId": key.arn, "Plaintext": _b64(plain), "EncryptionAlgorithm": alg}


def _op_create_key(emu, cred, action, req):
    emu._authorize(cred, action, "*")
    spec = req.get("KeySpec", req.get("CustomerMasterKeySpec", "SYMMETRIC_DEFAULT"))
    usage = req.get("KeyUsage", "ENCRYPT_DECRYPT")
    desc = req.get("Description", "")
    key = emu._new_key(spec, usage, desc if isinstance(desc, str) else "")
    with emu._st.lock:
        return {"KeyMetadata": key.metadata()}


_ALIAS_RE = re.compile(r"^[a-zA-Z0-9/_-]+$")


def _op_create_alias(emu, cred, action, req):
    name = req.get("AliasName")
    emu._authorize(cred, action, emu._alias_arn(name) if isinstance(name, str) else "*")
    if not isinstance(name, str) or not 1 <= len(name) <= 256 or not _ALIAS_RE.match(name):
        raise _validation("aliasName", name, "must satisfy regular expression pattern: "
                          "^[a-zA-Z0-9/_-]+$")
    if not name.startswith("alias/") or name == "alias/":
        raise KmsError("InvalidAliasNameException", "Alias must start with the prefix "
                       "\"alias/\". Please see "
                       "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html")
    if name.startswith("alias/aws/"):
        raise KmsError("NotAuthorizedException", "Alias names that begin with 'alias/aws/' are "
                       "reserved for AWS managed keys.")
    target = req.get("TargetKeyId")
    if isinstance(target, str) and "alias/" in target:
        raise KmsError("ValidationException", "Aliases must refer to keys. Not aliases")
    key = emu._find_key(target)
    if key.state == "PendingDeletion":
        emu._usable(key)
    emu._add_alias(name, key.id)
    return {}


def _op_schedule_key_deletion(emu, cred, action, req):
    emu._authorize(cred, action, emu._resource(req))
    key = emu._find_key(req.get("KeyId"), aliases=False)  # AWS takes no alias here
    days = req.get("PendingWindowInDays", 30)
    if not isinstance(days, int) or not 7 <= days <= 30:
        raise _validation("pendingWindowInDays", days, "must have value between 7 and 30")
    with emu._st.lock:
        if key.state == "PendingDeletion":
            raise KmsError("KMSInvalidStateException", "%s is pending deletion." % key.arn)
        key.state = "PendingDeletion"
        key.deletion_date = float(int(time.time()) + days * 86400)
        return {"KeyId": key.arn, "DeletionDate": key.deletion_date,
                "KeyState": "PendingDeletion", "PendingWindowInDays": days}


_OPERATIONS = {
    "ListAliases": _op_list_aliases,
    "ListKeys": _op_list_keys,
    "DescribeKey": _op_describe_key,
    "GetPublicKey": _op_get_public_key,
    "Sign": _op_sign,
    "Decrypt": _op_decrypt,
    "CreateKey": _op_create_key,
    "CreateAlias": _op_create_alias,
    "ScheduleKeyDeletion": _op_schedule_key_deletion,
}


# ---------------------------------------------------------------- standalone


def announce_and_wait(info, port_file, max_seconds):
    """Standalone mode: info (JSON) to port_file (atomically) or stdout, then serve until
    SIGTERM, SIGINT or max_seconds have passed."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    if port_file:
        tmp = port_file + ".tmp"
        Path(tmp).write_text(json.dumps(info))
        os.replace(tmp, port_file)
    else:
        print(json.dumps(info), flush=True)
    done.wait(max_seconds)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--credential", action="append", default=[], metavar="AKID:SECRET")
    ap.add_argument("--credential-file", action="append", default=[], metavar="F",
                    help="AKID:SECRET lines (keeps the secret out of argv)")
    ap.add_argument("--role", help="instance role name served over IMDSv2")
    ap.add_argument("--key", action="append", default=[], metavar="SPEC[:ALIAS]",
                    help="create a key at start (e.g. ECC_NIST_P256:bench)")
    ap.add_argument("--port-file")
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args(argv)
    with KmsEmulator(a.workdir, a.region) as emu:
        for f in a.credential_file:
            a.credential.extend(line for line in Path(f).read_text().splitlines() if line)
        for c in a.credential:
            akid, sep, secret = c.partition(":")
            if not sep:
                ap.error("--credential wants AKID:SECRET")
            emu.add_credential(akid, secret)
        if a.role:
            emu.set_role(a.role)
        keys = {}
        for k in a.key:
            spec, _, alias = k.partition(":")
            keys[alias or spec] = emu.create_key(spec, alias=alias or None)
        info = {"url": emu.url, "ca_file": emu.ca_file, "imds_url": emu.imds_url,
                "region": emu.region, "keys": keys}
        announce_and_wait(info, a.port_file, a.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
