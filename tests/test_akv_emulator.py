"""The Key Vault + Azure AD emulator (tests/akv_emulator.py) is faithful: the official Azure SDKs
from npm (@azure/identity, @azure/keyvault-keys, @azure/keyvault-certificates; versions pinned in
tests/azure-sdk/package-lock.json, installed by `make test-deps`, which `make test` runs) drive
every operation through it and every signature verifies with python3-cryptography against the
JWK the SDK got; then the protocol details the SDKs do not reach (the challenge before the body,
token and assertion checks, faults, counters, standalone mode) from Python."""

import base64
import datetime
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from akv_emulator import ASSERTION_TYPE, b64u
from akvfixtures import akv_client, akv_emu, azurekv_token  # noqa: F401  (the fixture)
from ctoktest import BUILD, Workspace, checked_env, register_secret, secrets_in

SDK_DIR = Path(__file__).resolve().parent / "azure-sdk"
HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
SDK_TIMEOUT = 120
# @azure/identity 4.13 wraps MSAL's ServerError (any AAD error answer) in AuthenticationRequired-
# Error; AuthenticationError is what older versions threw. Either carries AAD's description.
SDK_AUTH_ERRORS = ("AuthenticationRequiredError", "AuthenticationError")


def _sdk_ready():
    """Fails (never skips) when the SDKs `make test-deps` installs are missing."""
    if shutil.which("node") is None:
        pytest.fail("node (Node.js >= 20) is not on PATH: install it, then run `make test-deps`")
    if not (SDK_DIR / "node_modules" / "@azure" / "keyvault-keys").is_dir():
        pytest.fail("%s/node_modules is missing: run `make test-deps` (make test runs it; it "
                    "installs the pinned Azure SDKs with npm ci)" % SDK_DIR)


def run_sdk(emu, tmp_path, credential, steps, env=None):
    """Runs tests/azure-sdk/drive.mjs with credential and steps; returns one result per step."""
    _sdk_ready()
    conf = tmp_path / ("sdk-%s.json" % uuid.uuid4().hex[:8])
    conf.write_text(json.dumps({"vault_url": emu.vault_url, "authority": emu.authority,
                                "tenant_id": emu.tenant_id, "credential": credential,
                                "steps": steps}))
    os.chmod(conf, 0o600)
    e = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_",
                                                                   "MSI_", "IMDS_"))}
    e.update({"NODE_EXTRA_CA_CERTS": emu.ca_file, "NO_PROXY": "127.0.0.1,localhost"})
    e.update(env or {})
    argv = ["node", str(SDK_DIR / "drive.mjs"), str(conf)]
    p = subprocess.run(argv, env=checked_env(argv, e), capture_output=True, text=True,
                       timeout=SDK_TIMEOUT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout)
    assert len(out) == len(steps)
    return out


def _ok(r):
    assert r["ok"], r
    return r


def _secret_cred(emu, forbidden=()):
    cid, code = akv_client(emu, forbidden)
    return {"type": "secret", "client_id": cid, "secret": code}


def _pub_from_jwk(jwk):
    def num(f):
        return int.from_bytes(base64.b64decode(jwk[f]), "big")
    if jwk["kty"].startswith("RSA"):
        return rsa.RSAPublicNumbers(num("e"), num("n")).public_key()
    curve = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}[jwk["crv"]]
    return ec.EllipticCurvePublicNumbers(num("x"), num("y"), curve()).public_key()


def _verify(pub, alg, digest, sig):
    """Raises InvalidSignature unless sig is alg's signature of digest by pub."""
    h = HASHES[alg[2:5]]()
    pre = utils.Prehashed(h)
    if alg.startswith("RS"):
        pub.verify(sig, digest, padding.PKCS1v15(), pre)
    elif alg.startswith("PS"):
        pub.verify(sig, digest, padding.PSS(padding.MGF1(h), h.digest_size), pre)
    else:
        half = len(sig) // 2
        assert half == (pub.curve.key_size + 7) // 8, "ES* is raw r||s of the curve's size"
        pub.verify(utils.encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                              int.from_bytes(sig[half:], "big")),
                   digest, ec.ECDSA(pre))


def _self_signed(name="ctok-app"):
    key = rsa.generate_private_key(65537, 2048)
    dn = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, cert


def _pem(key, cert):
    return (cert.public_bytes(serialization.Encoding.PEM) +
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


# ---------------------------------------------------------------- the SDKs


def test_sdk_with_a_client_secret_creates_lists_signs_decrypts_gets_certificates_and_deletes(
        akv_emu, tmp_path):
    emu = akv_emu
    emu.clear_counters()
    cert_pem = emu.create_certificate("sdk-web", kty="EC", crv="P-256")
    specs = [("sdk-rsa", "RSA", 2048, None, ["RS256", "RS384", "RS512", "PS256", "PS384",
                                              "PS512"]),
             ("sdk-rsa-hsm", "RSA-HSM", 3072, None, ["RS256", "PS384"]),
             ("sdk-p256", "EC", None, "P-256", ["ES256"]),
             ("sdk-p384", "EC-HSM", None, "P-384", ["ES384"]),
             ("sdk-p521", "EC", None, "P-521", ["ES512"])]
    steps = [{"op": "createKey", "name": n, "kty": kty, "size": size, "crv": crv}
             for n, kty, size, crv, _ in specs]
    signs = []
    for n, _, _, _, algs in specs:
        for alg in algs:
            digest = hashlib.new("sha" + alg[2:5], os.urandom(40)).digest()
            signs.append((n, alg, digest))
            steps.append({"op": "sign", "kid": emu.vault_url + "/keys/" + n, "alg": alg,
                          "digest": base64.b64encode(digest).decode()})
    # decrypt: ciphertexts made here against the emulator's public key
    plain = os.urandom(32)
    pads = {"RSA-OAEP": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
            "RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
            "RSA1_5": padding.PKCS1v15()}
    dec_at = len(steps)
    steps += [{"op": "decrypt", "kid": emu.vault_url + "/keys/sdk-rsa", "alg": alg,
               "ciphertext": "__CT__" + alg} for alg in pads]
    steps += [{"op": "getKey", "name": "sdk-rsa"},
              {"op": "listKeys", "page_size": 2},
              {"op": "getCertificate", "name": "sdk-web"},
              {"op": "listCertificates"},
              {"op": "deleteKey", "name": "sdk-p521"},
              {"op": "getKey", "name": "sdk-p521"}]

    # the keys must exist before their ciphertexts can be made: a first run creates them
    first = run_sdk(emu, tmp_path, _secret_cred(emu), steps[:len(specs)])
    jwks = {n: _ok(r)["jwk"] for (n, *_), r in zip(specs, first)}
    for (n, kty, size, crv, _), r in zip(specs, first):
        assert r["jwk"]["kty"] == kty and r["kid"].startswith(emu.vault_url + "/keys/%s/" % n)
        assert _pub_from_jwk(r["jwk"]).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo) == \
            emu.public_key_pem(n)
        if size:
            assert _pub_from_jwk(r["jwk"]).key_size == size
    rsa_pub = serialization.load_pem_public_key(emu.public_key_pem("sdk-rsa"))
    for s in steps[dec_at:dec_at + 3]:
        s["ciphertext"] = base64.b64encode(rsa_pub.encrypt(plain, pads[s["alg"]])).decode()

    out = run_sdk(emu, tmp_path, _secret_cred(emu), steps[len(specs):])
    for (n, alg, digest), r in zip(signs, out):
        _ok(r)
        assert r["verified"] is True, (n, alg)
        _verify(_pub_from_jwk(jwks[n]), alg, digest, base64.b64decode(r["signature"]))
    rest = out[len(signs):]
    for r in rest[:3]:
        assert base64.b64decode(_ok(r)["plaintext"]) == plain
    got, listed, cert, certs, deleted, gone = rest[3:]
    assert _ok(got)["jwk"]["kid"] == jwks["sdk-rsa"]["kid"]
    assert set(_ok(listed)["names"]) >= {n for n, *_ in specs} | {"sdk-web"}
    assert listed["pages"] >= 3, "maxresults 2 pages through nextLink"
    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(
        serialization.Encoding.DER)
    assert base64.b64decode(_ok(cert)["cer"]) == der
    assert base64.b64decode(cert["x5t"]) == hashlib.sha1(der).digest()
    assert cert["kid"].startswith(emu.vault_url + "/keys/sdk-web/")
    assert "sdk-web" in _ok(certs)["names"]
    _ok(deleted)
    assert deleted["recoveryId"] == emu.vault_url + "/deletedkeys/sdk-p521"
    purge = datetime.datetime.fromisoformat(deleted["scheduledPurgeDate"].replace("Z", "+00:00"))
    assert 89 <= (purge - datetime.datetime.now(datetime.timezone.utc)).days <= 90
    assert not gone["ok"] and gone["statusCode"] == 404 and gone["code"] == "KeyNotFound"
    n = emu.requests()
    assert n["challenge"] >= 2 and n["sign"] == len(signs) and n["decrypt"] == 3
    assert n["delete_key"] == 1 and n["get_deleted_key"] >= 1
    assert emu.token_requests() == 2, "one token per SDK run (cached for the run)"


def test_sdk_client_certificate_credential_signs_and_a_wrong_key_is_refused(akv_emu, tmp_path):
    emu = akv_emu
    emu.create_key("sdk-cc", "EC", crv="P-256")
    key, cert = _self_signed()
    cid, _ = akv_client(emu, cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                        secret=False)
    good = tmp_path / "app.pem"
    good.write_bytes(_pem(key, cert))
    digest = hashlib.sha256(b"assert").digest()
    steps = [{"op": "getKey", "name": "sdk-cc"},
             {"op": "sign", "kid": emu.vault_url + "/keys/sdk-cc", "alg": "ES256",
              "digest": base64.b64encode(digest).decode()}]
    got, signed = run_sdk(emu, tmp_path, {"type": "certificate", "client_id": cid,
                                           "pem_file": str(good)}, steps)
    _verify(_pub_from_jwk(_ok(got)["jwk"]), "ES256", digest,
            base64.b64decode(_ok(signed)["signature"]))
    # the registered certificate, another key: AAD finds the certificate by its thumbprint,
    # then the signature fails
    bad = tmp_path / "wrong.pem"
    bad.write_bytes(_pem(rsa.generate_private_key(65537, 2048), cert))
    (r,) = run_sdk(emu, tmp_path, {"type": "certificate", "client_id": cid,
                                   "pem_file": str(bad)}, steps[:1])
    assert not r["ok"] and r["name"] in SDK_AUTH_ERRORS, r
    assert "AADSTS700027" in r["message"] and "did not match" in r["message"]
    # an unregistered certificate: the key is not found
    other = tmp_path / "other.pem"
    other.write_bytes(_pem(*_self_signed("other")))
    (r,) = run_sdk(emu, tmp_path, {"type": "certificate", "client_id": cid,
                                   "pem_file": str(other)}, steps[:1])
    assert not r["ok"] and "AADSTS700027" in r["message"] and "key was not found" in r["message"]


def test_sdk_managed_identity_credential_through_the_pod_identity_endpoint(akv_emu, tmp_path):
    """@azure/identity 4.x (MSAL's IMDS source) honours AZURE_POD_IDENTITY_AUTHORITY_HOST."""
    emu = akv_emu
    emu.create_key("sdk-mi", "RSA")
    emu.enable_managed_identity("sdk-mi-client")
    before = emu.token_requests()
    host = emu.mi_url.split("/metadata/")[0]
    (r,) = run_sdk(emu, tmp_path, {"type": "managed_identity", "client_id": "sdk-mi-client"},
                   [{"op": "getKey", "name": "sdk-mi"}],
                   env={"AZURE_POD_IDENTITY_AUTHORITY_HOST": host})
    assert _ok(r)["jwk"]["kty"] == "RSA"
    assert emu.token_requests() > before


def test_sdk_sees_wrong_secret_forbidden_unknown_and_disabled_as_azure_answers(akv_emu,
                                                                               tmp_path):
    emu = akv_emu
    emu.create_key("sdk-neg", "EC", crv="P-256")
    emu.create_key("sdk-off", "EC", crv="P-256", enabled=False)
    digest = base64.b64encode(hashlib.sha256(b"n").digest()).decode()
    cred = _secret_cred(emu)
    wrong = dict(cred, secret=register_secret(cred["secret"] + "x"))
    (r,) = run_sdk(emu, tmp_path, wrong, [{"op": "getKey", "name": "sdk-neg"}])
    assert not r["ok"] and r["name"] in SDK_AUTH_ERRORS, r
    assert "AADSTS7000215" in r["message"] and "invalid_client" in r["message"]
    out = run_sdk(emu, tmp_path, _secret_cred(emu, forbidden=("sign",)), [
        {"op": "getKey", "name": "sdk-neg"},
        {"op": "sign", "kid": emu.vault_url + "/keys/sdk-neg", "alg": "ES256", "digest": digest},
        {"op": "getKey", "name": "sdk-nothere"}])
    _ok(out[0])
    assert not out[1]["ok"] and out[1]["statusCode"] == 403 and out[1]["code"] == "Forbidden"
    assert "does not have keys sign permission" in out[1]["message"]
    assert out[2]["statusCode"] == 404 and out[2]["code"] == "KeyNotFound"
    (r,) = run_sdk(emu, tmp_path, cred, [
        {"op": "sign", "kid": emu.vault_url + "/keys/sdk-off", "alg": "ES256", "digest": digest}])
    assert r["statusCode"] == 403 and r["code"] == "Forbidden"
    assert "Operation sign is not allowed on a disabled key." in r["message"]


# ---------------------------------------------------------------- the protocol from Python


class Http:
    """One keep-alive HTTPS (or HTTP) connection to url's host."""

    def __init__(self, url, ca_file):
        hostport = url.split("://", 1)[1].split("/", 1)[0]
        if url.startswith("https"):
            self.c = http.client.HTTPSConnection(
                hostport, context=ssl.create_default_context(cafile=ca_file), timeout=20)
        else:
            self.c = http.client.HTTPConnection(hostport, timeout=20)

    def __call__(self, method, path, body=None, headers=None):
        if isinstance(body, dict):
            body = json.dumps(body)
        self.c.request(method, path, body, headers or {})
        r = self.c.getresponse()
        data = r.read()
        return r.status, dict(r.getheaders()), json.loads(data) if data else None


def _token(emu, cid, secret, scope="https://vault.azure.net/.default"):
    st, _, doc = Http(emu.authority, emu.ca_file)(
        "POST", "/%s/oauth2/v2.0/token" % emu.tenant_id,
        urlencode({"client_id": cid, "client_secret": secret, "scope": scope,
                   "grant_type": "client_credentials"}),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert st == 200, doc
    return register_secret(doc["access_token"])


def test_the_challenge_comes_before_the_body_is_sent(akv_emu):
    emu = akv_emu
    emu.create_key("py-ch", "EC", crv="P-256")
    ctx = ssl.create_default_context(cafile=emu.ca_file)
    with socket.create_connection(("127.0.0.1", int(emu.vault_url.rsplit(":", 1)[1])), 10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"POST /keys/py-ch//sign?api-version=7.4 HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 40\r\n"
                      b"Expect: 100-continue\r\n\r\n")  # and no body
            t.settimeout(10)
            head = t.recv(4096).decode()
    assert head.startswith("HTTP/1.1 401 "), head
    assert ('WWW-Authenticate: Bearer authorization="%s/%s", resource="https://vault.azure.net"'
            % (emu.authority, emu.tenant_id)) in head
    # without Expect, the body sent anyway is drained: the connection stays usable
    h = Http(emu.vault_url, emu.ca_file)
    st, hd, doc = h("POST", "/keys/py-ch//sign?api-version=7.4", {"alg": "ES256", "value": "x"})
    assert st == 401 and "Bearer authorization=" in hd["WWW-Authenticate"]
    assert doc["error"]["code"] == "Unauthorized"
    st, _, _ = h("GET", "/keys/py-ch?api-version=7.4")
    assert st == 401


def test_tokens_are_checked_on_every_call(akv_emu):
    emu = akv_emu
    emu.create_key("py-tok", "EC", crv="P-256")
    cid, code = akv_client(emu)
    h = Http(emu.vault_url, emu.ca_file)
    tok = _token(emu, cid, code)
    st, _, doc = h("GET", "/keys/py-tok?api-version=7.4",
                   headers={"Authorization": "Bearer " + tok})
    assert st == 200 and doc["key"]["kid"].startswith(emu.vault_url + "/keys/py-tok/")
    # kid echoes the host the client used
    st, _, doc = h("GET", "/keys/py-tok?api-version=7.4",
                   headers={"Authorization": "Bearer " + tok, "Host": "localhost:1234"})
    assert doc["key"]["kid"].startswith("https://localhost:1234/keys/py-tok/")
    a, b, c = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(b + "=" * (-len(b) % 4)))
    claims["exp"] += 86400  # a longer life, the old MAC
    forged = "%s.%s.%s" % (a, b64u(json.dumps(claims).encode()), c)
    for bad, word in [(forged, "BadSignature"), (tok[:-2] + "AA", "BadSignature"),
                      ("nonsense", "BadToken")]:
        st, hd, doc = h("GET", "/keys/py-tok?api-version=7.4",
                        headers={"Authorization": "Bearer " + bad})
        assert st == 401 and word in doc["error"]["message"] and "WWW-Authenticate" in hd
    hsm = _token(emu, cid, code, scope="https://managedhsm.azure.net/.default")
    st, _, doc = h("GET", "/keys/py-tok?api-version=7.4",
                   headers={"Authorization": "Bearer " + hsm})
    assert st == 401 and "Invalid audience" in doc["error"]["message"]
    emu.token_ttl(1)
    try:
        short = _token(emu, cid, code)
    finally:
        emu.token_ttl(3600)
    time.sleep(1.2)
    st, _, doc = h("GET", "/keys/py-tok?api-version=7.4",
                   headers={"Authorization": "Bearer " + short})
    assert st == 401 and "TokenExpired" in doc["error"]["message"]
    st, _, doc = h("GET", "/keys/py-tok", headers={"Authorization": "Bearer " + tok})
    assert st == 400 and "api-version" in doc["error"]["message"]
    st, _, doc = h("GET", "/keys/py-tok?api-version=1.0",
                   headers={"Authorization": "Bearer " + tok})
    assert st == 400 and doc["error"]["code"] == "BadParameter"


def _assertion(emu, cid, key, cert, alg="PS256", x5t="x5t#S256", **claims):
    der = cert.public_bytes(serialization.Encoding.DER)
    now = int(time.time())
    c = {"aud": "%s/%s/oauth2/v2.0/token" % (emu.authority, emu.tenant_id), "iss": cid,
         "sub": cid, "jti": str(uuid.uuid4()), "nbf": now, "iat": now, "exp": now + 600}
    c.update(claims)
    thumb = hashlib.sha256(der).digest() if x5t == "x5t#S256" else hashlib.sha1(der).digest()
    head = {"alg": alg, "typ": "JWT", x5t: b64u(thumb)}
    signing = "%s.%s" % (b64u(json.dumps(head).encode()), b64u(json.dumps(c).encode()))
    pad = padding.PSS(padding.MGF1(hashes.SHA256()), 32) if alg == "PS256" else \
        padding.PKCS1v15()
    return signing + "." + b64u(key.sign(signing.encode(), pad, hashes.SHA256()))


def _assert_login(emu, cid, jwt):
    return Http(emu.authority, emu.ca_file)(
        "POST", "/%s/oauth2/v2.0/token" % emu.tenant_id,
        urlencode({"client_id": cid, "client_assertion_type": ASSERTION_TYPE,
                   "client_assertion": jwt, "scope": "https://vault.azure.net/.default",
                   "grant_type": "client_credentials"}),
        {"Content-Type": "application/x-www-form-urlencoded"})


def test_client_assertions_are_checked_as_azure_ad_checks_them(akv_emu):
    emu = akv_emu
    key, cert = _self_signed()
    cid, _ = akv_client(emu, cert_pem=cert.public_bytes(serialization.Encoding.PEM),
                        secret=False)
    for alg, x5t in [("PS256", "x5t#S256"), ("RS256", "x5t")]:
        st, _, doc = _assert_login(emu, cid, _assertion(emu, cid, key, cert, alg, x5t))
        assert st == 200 and doc["token_type"] == "Bearer", doc
        register_secret(doc["access_token"])
    now = int(time.time())
    other = rsa.generate_private_key(65537, 2048)
    cases = [(_assertion(emu, cid, other, cert), 700027, "did not match"),
             (_assertion(emu, cid, key, _self_signed()[1]), 700027, "key was not found"),
             (_assertion(emu, cid, key, cert, aud="https://elsewhere/token"), 700212, "audience"),
             (_assertion(emu, cid, key, cert, iss="someone"), 700021, "client_id"),
             (_assertion(emu, cid, key, cert, nbf=now - 4000, exp=now - 3400), 700024,
              "valid time range"),
             (_assertion(emu, cid, key, cert, jti=""), 50027, "jti"),
             ("a.b", 50027, "malformed")]
    for jwt, code, words in cases:
        st, _, doc = _assert_login(emu, cid, jwt)
        assert st == 401 and doc["error"] == "invalid_client", doc
        assert doc["error_codes"] == [code] and ("AADSTS%d" % code) in doc["error_description"]
        assert words in doc["error_description"], doc


def test_azure_ad_errors_and_discovery(akv_emu):
    emu = akv_emu
    cid, code = akv_client(emu)
    aad = Http(emu.authority, emu.ca_file)
    form = {"client_id": cid, "client_secret": code + "x", "grant_type": "client_credentials",
            "scope": "https://vault.azure.net/.default"}
    register_secret(code + "x")
    hdr = {"Content-Type": "application/x-www-form-urlencoded"}
    path = "/%s/oauth2/v2.0/token" % emu.tenant_id
    st, _, doc = aad("POST", path, urlencode(form), hdr)
    assert st == 401 and doc["error"] == "invalid_client" and doc["error_codes"] == [7000215]
    assert doc["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    st, _, doc = aad("POST", path, urlencode(dict(form, client_id="nobody")), hdr)
    assert st == 400 and doc["error"] == "unauthorized_client" and "AADSTS700016" in \
        doc["error_description"]
    st, _, doc = aad("POST", path, urlencode(dict(form, client_secret=code, scope="x")), hdr)
    assert st == 400 and doc["error"] == "invalid_scope"
    st, _, doc = aad("POST", "/other-tenant/oauth2/v2.0/token", urlencode(form), hdr)
    assert st == 400 and "AADSTS90002" in doc["error_description"]
    st, _, doc = aad("GET", "/%s/v2.0/.well-known/openid-configuration" % emu.tenant_id)
    assert st == 200 and doc["token_endpoint"] == emu.authority + path
    assert doc["issuer"] == "%s/%s/v2.0" % (emu.authority, emu.tenant_id)


def test_managed_identity_endpoint(akv_emu):
    emu = akv_emu
    emu.create_key("py-mi", "EC", crv="P-256")
    emu.enable_managed_identity("py-mi-client")
    mi = Http(emu.mi_url, None)
    path = emu.mi_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    q = "/%s?api-version=2018-02-01&resource=https://vault.azure.net" % path
    st, _, doc = mi("GET", q)
    assert st == 400 and "metadata header" in doc["error_description"].lower()
    st, _, doc = mi("GET", q, headers={"Metadata": "true"})
    assert st == 200 and doc["token_type"] == "Bearer"
    assert doc["resource"] == "https://vault.azure.net" and doc["client_id"] == "py-mi-client"
    assert int(doc["expires_on"]) - time.time() > 3000 and int(doc["expires_in"]) > 3000
    tok = register_secret(doc["access_token"])
    st, _, doc = Http(emu.vault_url, emu.ca_file)(
        "GET", "/keys/py-mi?api-version=7.4", headers={"Authorization": "Bearer " + tok})
    assert st == 200


def test_key_vault_semantics_sign_checks_create_and_pages(akv_emu):
    emu = akv_emu
    cid, code = akv_client(emu, forbidden=("create",))
    auth = {"Authorization": "Bearer " + _token(emu, cid, code)}
    h = Http(emu.vault_url, emu.ca_file)
    emu.create_key("py-p384", "EC", crv="P-384")
    emu.create_key("py-rsa", "RSA")
    d32 = b64u(os.urandom(32))

    def sign(name, alg, value):
        return h("POST", "/keys/%s//sign?api-version=7.4" % name, {"alg": alg, "value": value},
                 auth)
    assert sign("py-p384", "ES384", b64u(os.urandom(48)))[0] == 200
    st, _, doc = sign("py-p384", "ES256", d32)
    assert st == 400 and doc["error"]["code"] == "BadParameter"
    st, _, doc = sign("py-rsa", "RS256", b64u(os.urandom(48)))
    assert st == 400 and "digest must be 32 bytes" in doc["error"]["message"]
    st, _, doc = sign("py-rsa", "ES256", d32)
    assert st == 400
    # a pinned version signs with that version after a new one became current
    old = emu.create_key("py-ver", "EC", crv="P-256").rsplit("/", 1)[1]
    emu.create_key("py-ver", "EC", crv="P-256")
    st, _, doc = h("POST", "/keys/py-ver/%s/sign?api-version=7.4" % old,
                   {"alg": "ES256", "value": d32}, auth)
    assert st == 200 and doc["kid"].endswith("/keys/py-ver/" + old)
    st, _, doc = h("POST", "/keys/py-new/create?api-version=7.4", {"kty": "EC", "crv": "P-256"},
                   auth)
    assert st == 403 and "does not have keys create permission" in doc["error"]["message"]
    names = set()
    path = "/keys?api-version=7.4&maxresults=1"
    pages = 0
    while path:
        st, _, doc = h("GET", path, headers=auth)
        assert st == 200 and len(doc["value"]) <= 1
        names |= {v["kid"].rsplit("/", 1)[1] for v in doc["value"]}
        pages += 1
        nl = doc.get("nextLink")
        assert nl is None or nl.startswith(emu.vault_url + "/keys?")
        path = nl[len(emu.vault_url):] if nl else None
    assert {"py-p384", "py-rsa", "py-ver"} <= names and pages == len(names)


def test_faults_and_counters(akv_emu):
    emu = akv_emu
    emu.create_key("py-f", "EC", crv="P-256")
    cid, code = akv_client(emu)
    auth = {"Authorization": "Bearer " + _token(emu, cid, code)}
    emu.clear_counters()
    h = Http(emu.vault_url, emu.ca_file)
    emu.throttle(2, retry_after=3)
    for _ in range(2):
        st, hd, doc = h("GET", "/keys/py-f?api-version=7.4", headers=auth)
        assert st == 429 and hd["Retry-After"] == "3" and doc["error"]["code"] == "Throttled"
    emu.fail5xx(1, 500)
    assert h("GET", "/keys/py-f?api-version=7.4", headers=auth)[0] == 500
    emu.latency(300)
    t0 = time.monotonic()
    assert h("GET", "/keys/py-f?api-version=7.4", headers=auth)[0] == 200
    assert time.monotonic() - t0 >= 0.3
    emu.latency(0)
    emu.reset_connections(1)
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
        h("GET", "/keys/py-f?api-version=7.4", headers=auth)
    h2 = Http(emu.vault_url, emu.ca_file)
    for _ in range(5):
        assert h2("GET", "/keys/py-f?api-version=7.4", headers=auth)[0] == 200
    assert emu.requests() == {"get_key": 10}
    assert emu.connections() == 2, "keep-alive: one TLS connection per client connection"
    assert emu.token_requests() == 0


def test_azurekv_token_fixture_writes_entries_whose_credentials_work(akv_emu, tmp_path):
    emu = akv_emu
    ws = Workspace(tmp_path, BUILD)
    name = azurekv_token(ws, emu, name="akv1", timeout_ms=2000, vault_type="premium")
    (entry,) = ws.load_config()["tokens"]
    assert entry["type"] == "azurekv" and entry["name"] == name == "akv1"
    assert entry["vault_url"] == emu.vault_url and entry["login_url"] == emu.authority
    assert entry["tenant_id"] == emu.tenant_id and entry["ca_file"] == emu.ca_file
    assert entry["auth_method"] == "secret" and entry["timeout_ms"] == 2000
    assert entry["vault_type"] == "premium" and ws.config.stat().st_mode & 0o022 == 0
    secret_file = Path(entry["auth"]["file"])
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text()
    assert secrets_in("the secret is " + secret) == [secret]  # registered with the scan
    tok = _token(emu, entry["client_id"], secret)
    assert secrets_in("a token " + tok) == [tok]
    key, cert = _self_signed("bound")
    azurekv_token(ws, emu, name="akv2", auth_method="certificate",
                  binding="ctok:token=hsm;object=app",
                  cert_pem=cert.public_bytes(serialization.Encoding.PEM), ca_file=None)
    e2 = ws.load_config()["tokens"][1]
    assert e2["binding"] == "ctok:token=hsm;object=app" and "auth" not in e2
    assert "ca_file" not in e2
    st, _, doc = _assert_login(emu, e2["client_id"], _assertion(emu, e2["client_id"], key, cert))
    assert st == 200, doc
    register_secret(doc["access_token"])
    azurekv_token(ws, emu, name="akv3", auth_method="managed_identity", forbidden=("sign",))
    e3 = ws.load_config()["tokens"][2]
    assert e3["mi_endpoint"] == emu.mi_url and "auth" not in e3 and e3["client_id"]


def test_standalone_mode_serves_and_stops_by_itself(tmp_path):
    cf = tmp_path / "clients"
    cf.write_text("bench-client:%s\n" % register_secret("bench-" + secrets.token_hex(16)))
    port_file = tmp_path / "ports.json"
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parent / "akv_emulator.py"),
                          "--workdir", str(tmp_path / "w"), "--client-file", str(cf),
                          "--key", "bench:EC:P-256", "--key", "rsa:RSA:2048",
                          "--port-file", str(port_file), "--max-seconds", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(300):
            if port_file.exists() or p.poll() is not None:
                break
            time.sleep(0.1)
        info = json.loads(port_file.read_text())
        assert set(info) == {"vault_url", "authority", "mi_url", "ca_file", "tenant_id"}

        class E:
            pass
        emu = E()
        emu.__dict__.update(info)
        tok = _token(emu, "bench-client", cf.read_text().strip().split(":", 1)[1])
        st, _, doc = Http(info["vault_url"], info["ca_file"])(
            "GET", "/keys/bench/?api-version=7.4", headers={"Authorization": "Bearer " + tok})
        assert st == 200 and doc["key"]["crv"] == "P-256"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=15) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
