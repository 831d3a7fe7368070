"""A local Azure Key Vault and Azure AD authority over TLS plus a managed-identity endpoint, for
ctok's tests.

Real cryptography on keys held in memory (python3-cryptography), the REST protocol of
CLOUD-PROTOCOLS.md: the 401 Bearer challenge for a request without a token (answered before
the body is read), access tokens of the emulator's own format (HMAC-signed claims: audience,
application, tenant, expiry) checked on every call, client secrets and client assertions (PS256
or RS256 JWTs whose x5t#S256 / x5t names a registered certificate, signature checked with its
key) verified as Azure AD does, errors worded as AAD and Key Vault word them, an access policy
per application (forbidden operations answer 403), fault switches (429 with Retry-After, 5xx,
latency, connection reset) and counters (requests per operation, token requests, TLS
connections accepted). tests/test_akv_emulator.py proves its fidelity with the official SDKs.

Everything runs in daemon threads of the calling process and binds 127.0.0.1 only. Standalone:
    python3 tests/akv_emulator.py --workdir D --client-file F --key NAME:KTY[:SIZE|CRV]
        [--port-file P] [--max-seconds N]
(F: "client_id:secret" lines, keeping the secret out of argv) serves until SIGTERM or
--max-seconds (default 3600), writing {"vault_url", "authority", "mi_url", "ca_file",
"tenant_id"} to the port file (stdout without one).
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from kms_emulator import EmulatorBase, QuietHandler, announce_and_wait, take_fault

VAULT_RESOURCE = "https://vault.azure.net"
SCOPES = {VAULT_RESOURCE + "/.default": VAULT_RESOURCE,
          "https://managedhsm.azure.net/.default": "https://managedhsm.azure.net"}
API_VERSIONS = {"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW = 300
# The access-policy permission each operation needs (add_client's forbidden names these).
PERMISSION = {"get_key": "get", "list_keys": "list", "sign": "sign", "verify": "sign",
              "decrypt": "decrypt", "encrypt": "decrypt", "create_key": "create",
              "delete_key": "delete", "get_deleted_key": "get", "get_certificate": "getcert",
              "list_certificates": "getcert"}
_HASH = {"256": (hashes.SHA256, 32), "384": (hashes.SHA384, 48), "512": (hashes.SHA512, 64)}
_CURVES = {"P-256": (ec.SECP256R1, "256"), "P-384": (ec.SECP384R1, "384"),
           "P-521": (ec.SECP521R1, "512"), "P-256K": (ec.SECP256K1, "256")}
_RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
_EC_OPS = ["sign", "verify"]
_KEY_OPERATIONS = ("sign", "verify", "decrypt", "encrypt")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(s: str) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not a string")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _int_bytes(n, length=None):
    length = length or max(1, (n.bit_length() + 7) // 8)
    return n.to_bytes(length, "big")


class AzError(Exception):
    """A Key Vault error answer: {"error": {"code", "message"}} with an HTTP status."""

    def __init__(self, status, code, message, extra=()):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = list(extra)


class AadError(Exception):
    """An Azure AD error answer: {"error", "error_description", "error_codes", ...}."""

    def __init__(self, status, error, aadsts, description):
        super().__init__(description)
        self.status = status
        self.error = error
        self.code = aadsts
        self.description = "AADSTS%d: %s" % (aadsts, description)


def _bad(message):
    return AzError(400, "BadParameter", message)


# ---------------------------------------------------------------- state


class _KeyVersion:
    def __init__(self, name, kty, private, ops, enabled, managed=False):
        self.name = name
        self.version = uuid.uuid4().hex
        self.kty = kty
        self.private = private
        self.ops = list(ops)
        self.enabled = enabled
        self.managed = managed
        self.created = int(time.time())
        self.updated = self.created

    def is_rsa(self):
        return self.kty.startswith("RSA")

    def curve(self):
        return None if self.is_rsa() else _curve_name(self.private.curve)

    def kid(self, base):
        return "%s/keys/%s/%s" % (base, self.name, self.version)

    def jwk(self, base):
        k = {"kid": self.kid(base), "kty": self.kty, "key_ops": list(self.ops)}
        pub = self.private.public_key().public_numbers()
        if self.is_rsa():
            k["n"] = b64u(_int_bytes(pub.n))
            k["e"] = b64u(_int_bytes(pub.e))
        else:
            size = (self.private.curve.key_size + 7) // 8
            k["crv"] = self.curve()
            k["x"] = b64u(_int_bytes(pub.x, size))
            k["y"] = b64u(_int_bytes(pub.y, size))
        return k

    def attributes(self):
        return {"enabled": self.enabled, "created": self.created, "updated": self.updated,
                "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90,
                "exportable": False}

    def bundle(self, base):
        b = {"key": self.jwk(base), "attributes": self.attributes()}
        if self.managed:
            b["managed"] = True
        return b


class _CertVersion:
    def __init__(self, name, der, key_version):
        self.name = name
        self.version = key_version.version  # Key Vault gives a certificate and its key one version
        self.der = der
        self.key = key_version
        cert = x509.load_der_x509_certificate(der)
        utc = datetime.timezone.utc  # (cryptography 38: naive UTC datetimes)
        self.nbf = int(cert.not_valid_before.replace(tzinfo=utc).timestamp())
        self.exp = int(cert.not_valid_after.replace(tzinfo=utc).timestamp())
        self.created = int(time.time())

    def bundle(self, base):
        return {"id": "%s/certificates/%s/%s" % (base, self.name, self.version),
                "kid": self.key.kid(base),
                "sid": "%s/secrets/%s/%s" % (base, self.name, self.version),
                "x5t": b64u(hashlib.sha1(self.der).digest()),
                "cer": base64.b64encode(self.der).decode(),
                "attributes": {"enabled": True, "nbf": self.nbf, "exp": self.exp,
                               "created": self.created, "updated": self.created,
                               "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}}


class _Client:
    def __init__(self, client_id, secret, certs, forbidden):
        self.client_id = client_id
        self.secret = secret
        self.certs = certs  # [(sha256 thumbprint, sha1 thumbprint, public key)]
        self.forbidden = frozenset(forbidden)


class _State:
    """Everything the three servers share, under one lock."""

    def __init__(self, on_secret):
        self.lock = threading.Lock()
        self.keys = {}  # name -> [_KeyVersion] (last = current)
        self.deleted = {}  # name -> (deleted bundle parts)
        self.certs = {}  # name -> [_CertVersion]
        self.clients = {}  # client_id -> _Client
        self.mi_client = None
        self.token_ttl = 3600
        self.hmac_key = secrets.token_bytes(32)
        self.faults = {"throttle": 0, "fail5xx": 0, "reset": 0}
        self.retry_after = 1
        self.fail_status = 503
        self.latency_ms = 0
        self.counts = {}
        self.token_count = 0
        self.tls_connections = 0
        self.on_secret = on_secret or (lambda s: None)


def _pem_certificates(pem: bytes):
    """Every certificate in a PEM text (cryptography 38 has no load_pem_x509_certificates)."""
    end = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(part + end) for part in pem.split(end)
            if b"-----BEGIN CERTIFICATE-----" in part]


def _curve_name(curve):
    for name, (cls, _) in _CURVES.items():
        if isinstance(curve, cls):
            return name
    raise ValueError("unsupported curve")


def _generate(kty, size, crv):
    """A private key for kty RSA|RSA-HSM|EC|EC-HSM; AzError for what Key Vault refuses."""
    if kty in ("RSA", "RSA-HSM"):
        size = 2048 if size is None else size
        if size not in (2048, 3072, 4096):
            raise _bad("The specified key size %s is not supported." % size)
        return rsa.generate_private_key(65537, size)
    if kty in ("EC", "EC-HSM"):
        crv = crv or "P-256"
        if crv not in _CURVES:
            raise _bad("The specified curve '%s' is not supported." % crv)
        return ec.generate_private_key(_CURVES[crv][0]())
    raise _bad("The specified key type '%s' is not supported." % kty)


# ---------------------------------------------------------------- access tokens


def _issue_token(st, client_id, resource, tenant):
    now = int(time.time())
    claims = {"aud": resource, "appid": client_id, "tid": tenant, "iat": now,
              "exp": now + st.token_ttl, "jti": uuid.uuid4().hex}
    body = b64u(json.dumps(claims, separators=(",", ":")).encode())
    mac = hmac.new(st.hmac_key, body.encode(), hashlib.sha256).digest()
    token = "akv.%s.%s" % (body, b64u(mac))
    st.on_secret(token)
    return token, claims


def _check_token(st, header):
    """The claims of a valid bearer token in an Authorization header; AzError 401 otherwise."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AzError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.")
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != "akv":
        raise AzError(401, "Unauthorized", "[BadToken] Error validating token: 'S2S12005'.")
    mac = hmac.new(st.hmac_key, parts[1].encode(), hashlib.sha256).digest()
    try:
        ok = hmac.compare_digest(mac, b64u_decode(parts[2]))
        claims = json.loads(b64u_decode(parts[1])) if ok else None
    except ValueError:
        ok = False
    if not ok:
        raise AzError(401, "Unauthorized", "[BadSignature] Error validating token: 'S2S12002'.")
    if claims.get("aud") != VAULT_RESOURCE:
        raise AzError(401, "Unauthorized", "AKV10022: Invalid audience. Expected %s, found: %s."
                      % (VAULT_RESOURCE, claims.get("aud")))
    if claims.get("exp", 0) <= time.time():
        raise AzError(401, "Unauthorized", "[TokenExpired] Error validating token: 'S2S12086'.")
    return claims


# ---------------------------------------------------------------- common HTTP pieces


class _Handler(QuietHandler):
    server_version = "Microsoft-IIS/10.0"

    def _send(self, status, doc, extra=()):
        # One write per answer (headers and body in one segment: no Nagle/delayed-ACK stall).
        body = b"" if doc is None else json.dumps(doc).encode()
        head = ["HTTP/1.1 %d %s" % (status, self.responses.get(status, ("",))[0]),
                "Content-Type: application/json; charset=utf-8",
                "Content-Length: %d" % len(body),
                "x-ms-request-id: %s" % uuid.uuid4(),
                "Date: %s" % self.date_time_string()]
        if self.close_connection:
            head.append("Connection: close")
        head.extend(extra)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _query(self):
        u = urlsplit(self.path)
        return unquote(u.path), {k: v[-1] for k, v in parse_qs(u.query).items()}


# ---------------------------------------------------------------- Key Vault


def _route(method, path):
    """(operation, name, version) of a Key Vault request path; AzError when there is none."""
    seg = path.split("/")[1:]
    if seg and seg[-1] == "" and len(seg) > 1:
        seg = seg[:-1]
    n = len(seg)
    if seg[:1] == ["keys"]:
        if n == 1 and method == "GET":
            return "list_keys", None, None
        if n == 2 and method == "GET":
            return "get_key", seg[1], None
        if n == 2 and method == "DELETE":
            return "delete_key", seg[1], None
        if n == 3 and seg[2] == "create" and method == "POST":
            return "create_key", seg[1], None
        if n == 3 and method == "GET":
            return "get_key", seg[1], seg[2]
        if n in (3, 4) and seg[-1] in _KEY_OPERATIONS and method == "POST":
            return seg[-1], seg[1], (seg[2] if n == 4 else None)
    if seg[:1] == ["deletedkeys"] and n == 2 and method == "GET":
        return "get_deleted_key", seg[1], None
    if seg[:1] == ["certificates"] and method == "GET":
        if n == 1:
            return "list_certificates", None, None
        if n in (2, 3):
            return "get_certificate", seg[1], (seg[2] if n == 3 else None)
    raise AzError(400 if method == "POST" else 404, "BadParameter" if method == "POST" else
                  "NotFound", "The requested URI %s %s is not supported." % (method, path))


class _VaultHandler(_Handler):
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")

    def handle_expect_100(self):
        # Without a token the challenge is the answer; the body is never asked for.
        if not self.headers.get("Authorization"):
            self.close_connection = True
            self._challenge(AzError(401, "Unauthorized",
                                    "AKV10000: Request is missing a Bearer or PoP token."))
            return False
        return super().handle_expect_100()

    def _base(self):
        return "https://%s" % (self.headers.get("Host") or
                               "127.0.0.1:%d" % self.server.server_address[1])

    def _challenge(self, err):
        emu = self.server.emu
        with emu._st.lock:
            emu._st.counts["challenge"] = emu._st.counts.get("challenge", 0) + 1
        www = 'WWW-Authenticate: Bearer authorization="%s/%s", resource="%s"' % (
            emu.authority, emu.tenant_id, VAULT_RESOURCE)
        self._send(401, {"error": {"code": err.code, "message": err.message}}, [www])

    def _handle(self, method):
        emu = self.server.emu
        st = emu._st
        path, query = self._query()
        if not self.headers.get("Authorization"):
            # Answered before the body is read, as Key Vault does; then the body (if the
            # client sent one anyway) is drained so that the connection stays usable.
            self._challenge(AzError(401, "Unauthorized",
                                    "AKV10000: Request is missing a Bearer or PoP token."))
            self._body()
            return
        try:
            op, name, version = _route(method, path)
        except AzError as e:
            op, name, version = None, None, None
            route_error = e
        body = self._body()
        fault = take_fault(st, op or "unknown")
        if fault == "reset":
            return self._reset()
        try:
            if fault == "throttle":
                raise AzError(429, "Throttled", "Request was not processed because too many "
                              "requests were received. Reason: VaultRequestTypeLimitReached",
                              ["Retry-After: %d" % st.retry_after])
            if fault == "fail5xx":
                raise AzError(st.fail_status, "ServiceUnavailable" if st.fail_status == 503 else
                              "InternalServerError", "The service is unavailable (injected).")
            claims = _check_token(st, self.headers.get("Authorization"))
            ver = query.get("api-version")
            if ver is None:
                raise _bad("The 'api-version' query parameter is missing.")
            if ver not in API_VERSIONS:
                raise _bad("The specified version (%s) is not recognized. Consider using the "
                           "latest supported version (2025-07-01)." % ver)
            if op is None:
                raise route_error
            try:
                req = json.loads(body) if body else {}
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                raise _bad("The request body is not valid JSON.") from None
            emu._authorize(claims, op, name)
            out = getattr(emu, "_op_" + op)(self._base(), name, version, req, query)
            self._send(200, out)
        except AzError as e:
            if e.status == 401:
                return self._challenge(e)
            self._send(e.status, {"error": {"code": e.code, "message": e.message}}, e.extra)


# ---------------------------------------------------------------- Azure AD


class _AadHandler(_Handler):
    def do_GET(self):
        emu = self.server.emu
        path, _ = self._query()
        t = emu.tenant_id
        if path in ("/%s/v2.0/.well-known/openid-configuration" % t,
                    "/%s/.well-known/openid-configuration" % t):
            a = "%s/%s" % (emu.authority, t)
            return self._send(200, {
                "token_endpoint": a + "/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post",
                                                          "private_key_jwt",
                                                          "client_secret_basic"],
                "jwks_uri": a + "/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": "%s/%s/v2.0" % (emu.authority, t),
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": a + "/oauth2/v2.0/authorize",
                "device_authorization_endpoint": a + "/oauth2/v2.0/devicecode",
                "http_logout_supported": True, "frontchannel_logout_supported": True,
                "end_session_endpoint": a + "/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid"],
                "kerberos_endpoint": a + "/kerberos",
                "tenant_region_scope": "EU", "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com", "rbac_url": "https://pas.windows.net"})
        self._send(404, {"error": "not_found", "error_description": "Not found: %s" % path})

    def do_POST(self):
        emu = self.server.emu
        path, _ = self._query()
        body = self._body()
        with emu._st.lock:
            emu._st.token_count += 1
        try:
            if path != "/%s/oauth2/v2.0/token" % emu.tenant_id:
                tenant = path.split("/")[1] if path.count("/") > 1 else ""
                if path.endswith("/oauth2/v2.0/token"):
                    raise AadError(400, "invalid_request", 90002, "Tenant '%s' not found. "
                                   "Check to make sure you have the correct tenant ID and are "
                                   "signing into the correct cloud." % tenant)
                raise AadError(404, "invalid_request", 900561, "The endpoint only accepts "
                               "POST requests to the token endpoint.")
            form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            token, claims = emu._client_credentials(form, self._token_url())
            self._send(200, {"token_type": "Bearer", "expires_in": emu._st.token_ttl,
                             "ext_expires_in": emu._st.token_ttl, "access_token": token})
        except AadError as e:
            now = datetime.datetime.now(datetime.timezone.utc)
            self._send(e.status, {
                "error": e.error,
                "error_description": "%s Trace ID: %s Correlation ID: %s Timestamp: %s" % (
                    e.description, uuid.uuid4(), uuid.uuid4(),
                    now.strftime("%Y-%m-%d %H:%M:%SZ")),
                "error_codes": [e.code], "timestamp": now.strftime("%Y-%m-%d %H:%M:%SZ"),
                "trace_id": str(uuid.uuid4()), "correlation_id": str(uuid.uuid4()),
                "error_uri": "%s/error?code=%d" % (emu.authority, e.code)})

    def _token_url(self):
        return "%s/%s/oauth2/v2.0/token" % (self.server.emu.authority, self.server.emu.tenant_id)


class _MiHandler(_Handler):
    server_version = ""

    def do_GET(self):
        emu = self.server.emu
        st = emu._st
        path, query = self._query()
        with st.lock:
            st.token_count += 1
            mi = st.mi_client
        if path.rstrip("/") != "/metadata/identity/oauth2/token":  # (MSAL adds a '/')
            return self._send(404, {"error": "not_found", "error_description": "Not found"})
        if (self.headers.get("Metadata") or "").lower() != "true":
            return self._send(400, {"error": "invalid_request",
                                    "error_description": "Required metadata header not "
                                    "specified"})
        if "api-version" not in query:
            return self._send(400, {"error": "invalid_request",
                                    "error_description": "Required query variable 'api-version'"
                                    " is missing"})
        resource = query.get("resource", "").rstrip("/")
        if resource not in SCOPES.values():
            return self._send(400, {"error": "invalid_resource", "error_description":
                                    "AADSTS500011: The resource principal named %s was not "
                                    "found in the tenant." % resource})
        if mi is None:
            return self._send(400, {"error": "invalid_request",
                                    "error_description": "Identity not found"})
        with st.lock:
            token, claims = _issue_token(st, mi, resource, emu.tenant_id)
        # IMDS gives its numbers as strings.
        self._send(200, {"access_token": token, "client_id": mi,
                         "expires_in": str(claims["exp"] - claims["iat"]),
                         "expires_on": str(claims["exp"]),
                         "ext_expires_in": str(claims["exp"] - claims["iat"]),
                         "not_before": str(claims["iat"]), "resource": resource,
                         "token_type": "Bearer"})


# ---------------------------------------------------------------- the emulator


class AkvEmulator(EmulatorBase):
    """Key Vault (https), Azure AD (https) and managed identity (http) on 127.0.0.1."""

    def __init__(self, workdir, tenant_id="72f988bf-0000-4000-8000-000000000001",
                 on_secret=None):
        """on_secret(s), when given, is called with every secret the emulator learns or issues
        (client secrets and assertions received, access tokens issued); the tests register them
        with their secret scan."""
        self.workdir = Path(workdir)
        self.tenant_id = tenant_id
        self._st = _State(on_secret)
        self._vault, self._aad, self._mi = self._serve(
            self.workdir, [(_VaultHandler, True), (_AadHandler, True), (_MiHandler, False)],
            "akv-emulator")
        self.vault_url = "https://127.0.0.1:%d" % self._vault.server_address[1]
        self.authority = "https://127.0.0.1:%d" % self._aad.server_address[1]
        self.mi_url = "http://127.0.0.1:%d/metadata/identity/oauth2/token" % (
            self._mi.server_address[1])

    # ---- applications, keys, certificates

    def add_client(self, client_id, secret=None, cert_pem=None, forbidden=()):
        """An app registration: a client secret and/or a certificate (PEM) for client
        assertions; forbidden: operations its access policy lacks (answered 403): sign,
        decrypt, get, list, create, delete, getcert."""
        unknown = set(forbidden) - set(PERMISSION.values())
        if unknown:
            raise ValueError("unknown permissions %s" % sorted(unknown))
        certs = []
        if cert_pem is not None:
            pem = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
            for c in _pem_certificates(pem):
                der = c.public_bytes(serialization.Encoding.DER)
                certs.append((hashlib.sha256(der).digest(), hashlib.sha1(der).digest(),
                              c.public_key()))
        if secret is not None:
            self._st.on_secret(secret)
        with self._st.lock:
            self._st.clients[client_id] = _Client(client_id, secret, certs, forbidden)

    def enable_managed_identity(self, client_id="mi-client"):
        with self._st.lock:
            self._st.mi_client = client_id

    def token_ttl(self, seconds):
        with self._st.lock:
            self._st.token_ttl = int(seconds)

    def create_key(self, name, kty="RSA", size=2048, crv=None, ops=None, enabled=True) -> str:
        """A new (current) version of key name; returns its kid."""
        return self._new_key(name, kty, size, crv, ops, enabled).kid(self.vault_url)

    def create_certificate(self, name, kty="RSA", size=2048, crv=None,
                           subject="CN=name") -> str:
        """A key and a self-signed certificate of that name, as Key Vault's certificate create
        makes them; returns the certificate PEM."""
        k = self._new_key(name, kty, size, crv, None, True, managed=True)
        if subject == "CN=name":
            subject = "CN=%s" % name
        dn = x509.Name.from_rfc4514_string(subject)
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn)
                .public_key(k.private.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
                                                      x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                               critical=False)
                .sign(k.private, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        with self._st.lock:
            self._st.certs.setdefault(name, []).append(_CertVersion(name, der, k))
        return cert.public_bytes(serialization.Encoding.PEM).decode()

    def set_enabled(self, name, enabled):
        """Enables or disables the current version of key name."""
        with self._st.lock:
            k = self._st.keys[name][-1]
            k.enabled = bool(enabled)
            k.updated = int(time.time())

    def public_key_pem(self, name) -> bytes:
        with self._st.lock:
            k = self._st.keys[name][-1]
        return k.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)

    # ---- faults and counters (and EmulatorBase's: fail5xx, latency, reset_connections,
    # requests: {operation: count} of vault requests, a request without a token counted as
    # "challenge" only, one with a refused token as its operation and "challenge";
    # connections: TLS handshakes, vault and Azure AD)

    def throttle(self, n, retry_after=1):
        """The next n vault requests get 429 with Retry-After: retry_after."""
        with self._st.lock:
            self._st.faults["throttle"] = n
            self._st.retry_after = retry_after

    def token_requests(self) -> int:
        with self._st.lock:
            return self._st.token_count

    def clear_counters(self):
        with self._st.lock:
            self._st.counts.clear()
            self._st.token_count = 0
            self._st.tls_connections = 0

    # ---- internals

    def _new_key(self, name, kty, size, crv, ops, enabled, managed=False):
        private = _generate(kty, size, crv)
        ops = ops if ops is not None else (_RSA_OPS if kty.startswith("RSA") else _EC_OPS)
        k = _KeyVersion(name, kty, private, ops, enabled, managed)
        with self._st.lock:
            if name in self._st.deleted:
                raise AzError(409, "Conflict", "Key %s is currently in a deleted but "
                              "recoverable state, and its name cannot be reused; in this state, "
                              "the key can only be recovered or purged." % name)
            self._st.keys.setdefault(name, []).append(k)
        return k

    def _client_credentials(self, form, token_url):
        """An access token for a client-credentials grant; AadError as AAD answers."""
        st = self._st
        if form.get("grant_type") != "client_credentials":
            raise AadError(400, "unsupported_grant_type", 70003, "The app requested an "
                           "unsupported grant type '%s'." % form.get("grant_type"))
        cid = form.get("client_id", "")
        scope = form.get("scope", "")
        with st.lock:
            client = st.clients.get(cid)
        if client is None:
            raise AadError(400, "unauthorized_client", 700016, "Application with identifier "
                           "'%s' was not found in the directory '%s'." % (cid, self.tenant_id))
        resource = SCOPES.get(scope)
        if resource is None:
            raise AadError(400, "invalid_scope", 1002012, "The provided value for scope %s is "
                           "not valid. Client credential flows must have a scope value with "
                           "/.default suffixed to the resource identifier "
                           "(application ID URI)." % scope)
        if "client_secret" in form:
            st.on_secret(form["client_secret"])
            if client.secret is None or not hmac.compare_digest(
                    form["client_secret"].encode(), client.secret.encode()):
                raise AadError(401, "invalid_client", 7000215, "Invalid client secret provided. "
                               "Ensure the secret being sent in the request is the client "
                               "secret value, not the client secret ID, for a secret added to "
                               "app '%s'." % cid)
        elif "client_assertion" in form:
            st.on_secret(form["client_assertion"])
            if form.get("client_assertion_type") != ASSERTION_TYPE:
                raise AadError(400, "invalid_request", 90015, "Requested query string is too "
                               "long. client_assertion_type is invalid.")
            self._check_assertion(client, form["client_assertion"], token_url)
        else:
            raise AadError(401, "invalid_client", 7000218, "The request body must contain the "
                           "following parameter: 'client_assertion' or 'client_secret'.")
        with st.lock:
            return _issue_token(st, cid, resource, self.tenant_id)

    def _check_assertion(self, client, jwt, token_url):
        def invalid(code, text):
            return AadError(401, "invalid_client", code, text)

        try:
            h64, c64, s64 = jwt.split(".")
            header = json.loads(b64u_decode(h64))
            claims = json.loads(b64u_decode(c64))
            sig = b64u_decode(s64)
            if not isinstance(header, dict) or not isinstance(claims, dict):
                raise ValueError
        except ValueError:
            raise invalid(50027, "JWT token is invalid or malformed.") from None
        alg = header.get("alg")
        if alg not in ("PS256", "RS256"):
            raise invalid(5002738, "Invalid JWT token. '%s' is not a supported signature "
                          "algorithm." % alg)
        try:
            if "x5t#S256" in header:
                thumb, which = b64u_decode(header["x5t#S256"]), 0
            elif "x5t" in header:
                thumb, which = b64u_decode(header["x5t"]), 1
            else:
                raise ValueError
        except ValueError:
            raise invalid(700027, "Client assertion failed signature validation. [Reason - The "
                          "key was not found.]") from None
        key = next((c[2] for c in client.certs if hmac.compare_digest(c[which], thumb)), None)
        if key is None:
            raise invalid(700027, "Client assertion failed signature validation. [Reason - The "
                          "key was not found., Thumbprint of key used by client: '%s', Please "
                          "visit the Azure Portal, Graph Explorer or directly use MS Graph to see "
                          "configured keys for app Id '%s'.]" % (thumb.hex().upper(),
                                                                 client.client_id))
        pad = (padding.PSS(padding.MGF1(hashes.SHA256()), 32) if alg == "PS256"
               else padding.PKCS1v15())
        try:
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidSignature
            key.verify(sig, ("%s.%s" % (h64, c64)).encode(), pad, hashes.SHA256())
        except InvalidSignature:
            raise invalid(700027, "Client assertion failed signature validation. [Reason - The "
                          "provided signature value did not match the expected signature value., "
                          "Thumbprint of key used by client: '%s']" % thumb.hex().upper()) \
                from None
        if claims.get("aud") != token_url:
            raise invalid(700212, "No matching federated identity record found for presented "
                          "assertion audience '%s'." % claims.get("aud"))
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise invalid(700021, "Client assertion application identifier doesn't match "
                          "'client_id' parameter.")
        if not claims.get("jti"):
            raise invalid(50027, "JWT token is invalid or malformed: no jti claim.")
        now = time.time()
        nbf, exp = claims.get("nbf", 0), claims.get("exp")
        if not isinstance(exp, (int, float)) or not isinstance(nbf, (int, float)) or \
                now + CLOCK_SKEW < nbf or now - CLOCK_SKEW > exp:
            raise invalid(700024, "Client assertion is not within its valid time range. "
                          "Current time: %s, assertion valid from %s, expiry time of assertion "
                          "%s." % (_iso(now), _iso(nbf), _iso(exp)))

    def _authorize(self, claims, op, name):
        with self._st.lock:
            client = self._st.clients.get(claims.get("appid"))
        perm = PERMISSION[op]
        if client is not None and perm in client.forbidden:
            kind = "certificates" if perm == "getcert" else "keys"
            raise AzError(403, "Forbidden", "The user, group or application 'appid=%s;oid=%s;"
                          "iss=https://sts.windows.net/%s/' does not have %s %s permission on "
                          "key vault 'ctok-emulator;location=westeurope'. For help resolving "
                          "this issue, please see https://go.microsoft.com/fwlink/?linkid="
                          "2125287" % (claims.get("appid"), uuid.uuid5(uuid.NAMESPACE_URL,
                                                                         claims.get("appid")),
                                       self.tenant_id, kind, perm.replace("getcert", "get")),
                          [])

    def _key(self, name, version):
        with self._st.lock:
            versions = self._st.keys.get(name)
            if versions:
                if not version:
                    return versions[-1]
                for k in versions:
                    if k.version == version:
                        return k
        raise AzError(404, "KeyNotFound", "A key with (name/id) %s%s was not found in this key "
                      "vault. If you recently deleted this key you may be able to recover it "
                      "using the correct recovery command. For help resolving this issue, please "
                      "see https://go.microsoft.com/fwlink/?linkid=2125182"
                      % (name, "/" + version if version else ""))

    def _usable(self, k, op):
        if not k.enabled:
            raise AzError(403, "Forbidden", "Operation %s is not allowed on a disabled key." % op)
        if op not in k.ops:
            raise AzError(403, "Forbidden", "Operation %s is not permitted on this key." % op)

    # ---- operations: (base, name, version, request, query) -> answer

    @staticmethod
    def _page(items, base, collection, query):
        try:
            maxresults = int(query.get("maxresults", 25))
            skip = int(query.get("$skiptoken", 0))
        except ValueError:
            raise _bad("Invalid maxresults or $skiptoken.") from None
        if not 1 <= maxresults <= 25:
            raise _bad("The value of maxresults must be between 1 and 25.")
        out = {"value": items[skip:skip + maxresults], "nextLink": None}
        if skip + maxresults < len(items):
            out["nextLink"] = "%s/%s?api-version=%s&$skiptoken=%d&maxresults=%d" % (
                base, collection, query.get("api-version"), skip + maxresults, maxresults)
        return out

    def _op_list_keys(self, base, name, version, req, query):
        with self._st.lock:
            current = [v[-1] for v in self._st.keys.values()]
        items = []
        for k in current:
            item = {"kid": "%s/keys/%s" % (base, k.name), "attributes": k.attributes()}
            if k.managed:
                item["managed"] = True
            items.append(item)
        return self._page(items, base, "keys", query)

    def _op_list_certificates(self, base, name, version, req, query):
        with self._st.lock:
            current = [v[-1] for v in self._st.certs.values()]
        items = [{"id": "%s/certificates/%s" % (base, c.name),
                  "x5t": c.bundle(base)["x5t"], "attributes": c.bundle(base)["attributes"]}
                 for c in current]
        return self._page(items, base, "certificates", query)

    def _op_get_key(self, base, name, version, req, query):
        return self._key(name, version).bundle(base)

    def _op_get_certificate(self, base, name, version, req, query):
        with self._st.lock:
            versions = self._st.certs.get(name) or []
            found = [c for c in versions if not version or c.version == version]
        if not found:
            raise AzError(404, "CertificateNotFound", "A certificate with (name/id) %s%s was "
                          "not found in this key vault. If you recently deleted this "
                          "certificate you may be able to recover it using the correct recovery "
                          "command. For help resolving this issue, please see "
                          "https://go.microsoft.com/fwlink/?linkid=2125182"
                          % (name, "/" + version if version else ""))
        return found[-1].bundle(base)

    def _op_create_key(self, base, name, version, req, query):
        kty = req.get("kty")
        size = req.get("key_size")
        if size is not None and not isinstance(size, int):
            raise _bad("Invalid key_size.")
        ops = req.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or
                                not set(ops) <= set(_RSA_OPS) | {"import"}):
            raise _bad("Invalid key_ops.")
        enabled = (req.get("attributes") or {}).get("enabled", True)
        return self._new_key(name, kty or "", size, req.get("crv"), ops, enabled).bundle(base)

    def _op_delete_key(self, base, name, version, req, query):
        k = self._key(name, None)
        now = int(time.time())
        bundle = k.bundle(base)
        bundle.update({"recoveryId": "%s/deletedkeys/%s" % (base, name), "deletedDate": now,
                       "scheduledPurgeDate": now + 90 * 86400})
        with self._st.lock:
            self._st.keys.pop(name, None)
            self._st.deleted[name] = bundle
        return bundle

    def _op_get_deleted_key(self, base, name, version, req, query):
        with self._st.lock:
            b = self._st.deleted.get(name)
        if b is None:
            raise AzError(404, "KeyNotFound", "Deleted Key not found: %s" % name)
        return b

    @staticmethod
    def _alg(k, alg):
        """(hash class, digest length, kind) for alg on key k; AzError when it does not fit."""
        if not isinstance(alg, str) or len(alg) < 5 or alg[2:5] not in _HASH and \
                alg != "ES256K":
            raise _bad("Invalid algorithm: %s." % alg)
        bits = "256" if alg == "ES256K" else alg[2:5]
        kind = alg[:2]
        if kind in ("RS", "PS") and alg[5:] == "" and k.is_rsa():
            return _HASH[bits][0], _HASH[bits][1], kind
        if kind == "ES" and not k.is_rsa():
            want = "ES256K" if k.curve() == "P-256K" else "ES" + _CURVES[k.curve()][1]
            if alg == want:
                return _HASH[bits][0], _HASH[bits][1], kind
        raise _bad("Key and signing algorithm are incompatible: key type %s%s, algorithm %s."
                   % (k.kty, " " + k.curve() if k.curve() else "", alg))

    def _digest(self, req, field, length):
        try:
            d = b64u_decode(req.get(field))
        except (ValueError, TypeError):
            raise _bad("Property '%s' is not a valid base64url string." % field) from None
        if len(d) != length:
            raise _bad("Invalid length of '%s': the digest must be %d bytes, got %d."
                       % (field, length, len(d)))
        return d

    def _op_sign(self, base, name, version, req, query):
        k = self._key(name, version)
        self._usable(k, "sign")
        h, dlen, kind = self._alg(k, req.get("alg"))
        digest = self._digest(req, "value", dlen)
        pre = utils.Prehashed(h())
        if kind == "RS":
            sig = k.private.sign(digest, padding.PKCS1v15(), pre)
        elif kind == "PS":
            sig = k.private.sign(digest, padding.PSS(padding.MGF1(h()), dlen), pre)
        else:
            r, s = utils.decode_dss_signature(k.private.sign(digest, ec.ECDSA(pre)))
            size = (k.private.curve.key_size + 7) // 8
            sig = _int_bytes(r, size) + _int_bytes(s, size)
        return {"kid": k.kid(base), "value": b64u(sig)}

    def _op_verify(self, base, name, version, req, query):
        k = self._key(name, version)
        self._usable(k, "verify")
        h, dlen, kind = self._alg(k, req.get("alg"))
        digest = self._digest(req, "digest", dlen)
        try:
            sig = b64u_decode(req.get("value"))
        except (ValueError, TypeError):
            raise _bad("Property 'value' is not a valid base64url string.") from None
        pub, pre = k.private.public_key(), utils.Prehashed(h())
        try:
            if kind == "RS":
                pub.verify(sig, digest, padding.PKCS1v15(), pre)
            elif kind == "PS":
                pub.verify(sig, digest, padding.PSS(padding.MGF1(h()), dlen), pre)
            else:
                half = len(sig) // 2
                der = utils.encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                                 int.from_bytes(sig[half:], "big"))
                pub.verify(der, digest, ec.ECDSA(pre))
            ok = True
        except InvalidSignature:
            ok = False
        return {"value": ok}

    @staticmethod
    def _rsa_padding(alg):
        if alg == "RSA-OAEP":
            return padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
        if alg == "RSA-OAEP-256":
            return padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)
        if alg == "RSA1_5":
            return padding.PKCS1v15()
        raise _bad("Invalid algorithm: %s." % alg)

    def _rsa_crypt(self, base, name, version, req, op):
        k = self._key(name, version)
        self._usable(k, op)
        pad = self._rsa_padding(req.get("alg"))
        if not k.is_rsa():
            raise _bad("Key and encryption algorithm are incompatible.")
        try:
            data = b64u_decode(req.get("value"))
            out = (k.private.decrypt(data, pad) if op == "decrypt" else
                   k.private.public_key().encrypt(data, pad))
        except (ValueError, TypeError):
            raise _bad("The parameter is incorrect.") from None
        return {"kid": k.kid(base), "value": b64u(out)}

    def _op_decrypt(self, base, name, version, req, query):
        return self._rsa_crypt(base, name, version, req, "decrypt")

    def _op_encrypt(self, base, name, version, req, query):
        return self._rsa_crypt(base, name, version, req, "encrypt")


def _iso(t):
    try:
        return datetime.datetime.fromtimestamp(float(t), datetime.timezone.utc).strftime(
            "%m/%d/%Y %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tenant-id", default="72f988bf-0000-4000-8000-000000000001")
    ap.add_argument("--client-file", action="append", default=[], metavar="F",
                    help="client_id:secret lines (keeps the secret out of argv)")
    ap.add_argument("--managed-identity", metavar="CLIENT_ID",
                    help="enable the managed-identity endpoint for this client id")
    ap.add_argument("--key", action="append", default=[], metavar="NAME:KTY[:SIZE|CRV]",
                    help="create a key at start (e.g. bench:EC:P-256 or rsa:RSA:2048)")
    ap.add_argument("--certificate", action="append", default=[], metavar="NAME:KTY[:SIZE|CRV]",
                    help="create a key and its self-signed certificate at start")
    ap.add_argument("--port-file")
    ap.add_argument("--max-seconds", type=float, default=3600)
    a = ap.parse_args(argv)
    with AkvEmulator(a.workdir, a.tenant_id) as emu:
        for f in a.client_file:
            for line in Path(f).read_text().splitlines():
                cid, sep, secret = line.strip().partition(":")
                if line.strip() and not sep:
                    ap.error("--client-file lines are client_id:secret")
                if cid:
                    emu.add_client(cid, secret=secret)
        if a.managed_identity:
            emu.enable_managed_identity(a.managed_identity)
        for spec, make in [(k, emu.create_key) for k in a.key] + \
                [(c, emu.create_certificate) for c in a.certificate]:
            parts = spec.split(":")
            if len(parts) not in (2, 3):
                ap.error("--key/--certificate want NAME:KTY[:SIZE|CRV]")
            name, kty = parts[0], parts[1]
            arg = parts[2] if len(parts) == 3 else None
            if kty.startswith("RSA"):
                make(name, kty=kty, size=int(arg or 2048))
            else:
                make(name, kty=kty, crv=arg or "P-256")
        info = {"vault_url": emu.vault_url, "authority": emu.authority, "mi_url": emu.mi_url,
                "ca_file": emu.ca_file, "tenant_id": emu.tenant_id}
        announce_and_wait(info, a.port_file, a.max_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
