"""Issue 9: one behaviour table over every token type. The `token_kind` fixture gives a test
one configured token of a kind — soft (a PKCS#12 keystore), softhsm (a SoftHSM2 slot through
SoftHSM's own module), awskms (the KMS emulator of tests/kms_emulator.py) or azurekv (issue
10: the Key Vault + Azure AD emulator of tests/akv_emulator.py) — and the same
handful of operations on each, so that tests/test_behaviour.py is written once:

  kind.key_uri(alias)    the `ctok:` URI of the key `alias` (made on first use, through
                         `ctok key generate`, so that every kind makes its keys alike)
  kind.pubkey_pem(alias) its public key as PEM, read WITHOUT ctok from where the kind keeps
                         it (the PKCS#12 file, SoftHSM through OpenSC's pkcs11-tool, the
                         emulator's own key), so a ctok that exported a wrong public key
                         cannot verify its own mistakes
  kind.cert(alias)       a self-signed certificate made with the key (openssl req -x509)
  kind.cannot(feature)   None, or why the kind cannot do that (the table then asserts that
                         trying gives a clear error naming token and key)

Keys are made once per module (the fixture is module-scoped); tests must not change them."""

import re
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from ctoktest import (PIN, Token, Workspace, assert_ok, describe, pkcs11_tool_public_der,
                      register_secret)

KINDS = ("soft", "softhsm", "awskms", "azurekv")

# The table's keys: alias -> `ctok key generate` spec.
SPECS = {"rsa2048": "rsa:2048", "rsa3072": "rsa:3072", "p256": "ec:P-256", "p384": "ec:P-384",
         "p521": "ec:P-521"}
CURVE_HASH = {"p256": "sha256", "p384": "sha384", "p521": "sha512"}


def md_of(alias):
    """The digest every kind can sign with for the key: the curve's for EC, SHA-256 for RSA."""
    return CURVE_HASH.get(alias, "sha256")


# Features only some kinds have (issue 9: AWS KMS signs with PKCS#1 v1.5 and PSS whose salt is
# the digest length, SHA-256/384/512 only, ECDSA with the curve's own hash; it does no raw RSA
# and no key agreement).
RAW_RSA = "raw RSA (no padding)"
PSS_SALT = "RSA-PSS with a salt length other than the digest length"
SHA1 = "SHA-1 signatures"
ECDSA_HASH = "ECDSA with a hash other than the curve's"
ECDH = "ECDH key agreement"

KMS_CANNOT = {
    RAW_RSA: "KMS signs only with PKCS#1 v1.5 or PSS padding",
    PSS_SALT: "KMS makes PSS signatures with salt length = digest length only",
    SHA1: "KMS signs SHA-256/384/512 digests only",
    ECDSA_HASH: "KMS signs ECDSA only with the curve's hash (P-256/SHA-256, P-384/SHA-384)",
    ECDH: "KMS SIGN_VERIFY keys do no key agreement",
}

# Issue 10: Key Vault signs RS256/384/512 (PKCS#1 v1.5), PS256/384/512 (PSS, salt = digest
# length, MGF1 with the digest) and ES256/384/512 (P-256/SHA-256, P-384/SHA-384,
# P-521/SHA-512) only; no raw RSA, no SHA-1, no key agreement.
AKV_CANNOT = {
    RAW_RSA: "Key Vault signs RSA only with RS256/384/512 or PS256/384/512",
    PSS_SALT: "Key Vault's PS256/384/512 use salt length = digest length only",
    SHA1: "Key Vault signs SHA-256/384/512 digests only",
    ECDSA_HASH: "Key Vault signs ECDSA only with the curve's hash (ES256, ES384, ES512)",
    ECDH: "Key Vault keys do no key agreement",
}


class TokenKind:
    """One token of one kind in a workspace of its own."""

    cannot_do = {}

    def __init__(self, name, ws: Workspace, tok: Token):
        self.name = name
        self.ws = ws
        self.tok = tok
        self.ids = {}  # alias -> key id bytes, as `ctok key generate` printed it
        self._certs = {}
        self._pubs = {}

    def __repr__(self):
        return "<%s token %r>" % (self.name, self.tok.name)

    def cannot(self, feature):
        return self.cannot_do.get(feature)

    def key(self, alias):
        """Makes the key on first use; returns its id."""
        if alias not in self.ids:
            self.ids[alias] = self.ws.generate(self.tok, alias, SPECS[alias])
        return self.ids[alias]

    def key_uri(self, alias, **kw):
        self.key(alias)
        return self.tok.key_uri(alias, **kw)

    def cert(self, alias):
        if alias not in self._certs:
            self.key(alias)
            self._certs[alias] = self.ws.self_signed(self.tok, alias, extra=("-" + md_of(alias),))
        return self._certs[alias]

    def pubkey_pem(self, alias):
        if alias not in self._pubs:
            self.key(alias)
            der = self.public_der(alias)
            pub = serialization.load_der_public_key(der)
            self._pubs[alias] = self.ws.write(
                "%s-%s.pub.pem" % (self.tok.name, alias),
                pub.public_bytes(serialization.Encoding.PEM,
                                 serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
        return self._pubs[alias]

    def public_key(self, alias):
        return serialization.load_pem_public_key(self.pubkey_pem(alias).read_bytes())

    def public_der(self, alias) -> bytes:
        raise NotImplementedError


class SoftKind(TokenKind):
    """A PKCS#12 keystore; public keys read from it with plain `openssl pkcs12`."""

    def public_der(self, alias):
        p = assert_ok(self.ws.ossl("pkcs12", "-in", self.tok.keystore, "-nocerts", "-nodes",
                                   "-passin", "file:%s" % self.tok.pin_file, providers=None))
        # Bag Attributes / friendlyName: <alias> / ... / -----BEGIN PRIVATE KEY----- ...
        for m in re.finditer(r"friendlyName: (\S+).*?(-----BEGIN PRIVATE KEY-----.*?"
                             r"-----END PRIVATE KEY-----)", p.stdout, re.S):
            if m.group(1) == alias:
                key = serialization.load_pem_private_key(m.group(2).encode(), None)
                return key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        raise AssertionError("no key %r in the keystore\n%s" % (alias, describe(p)))


class SoftHsmKind(TokenKind):
    """A SoftHSM2 slot; public keys read with OpenSC's pkcs11-tool (without ctok)."""

    def public_der(self, alias):
        out = self.ws.path("%s-%s.pub.der" % (self.tok.name, alias))
        return pkcs11_tool_public_der(lambda *a: self.ws.hsm.tool("--token-label", self.label, *a),
                                      self.ids[alias].hex(), out)


class AwsKmsKind(TokenKind):
    """A token on the KMS emulator; public keys from the emulator's own key objects. The
    key id ctok prints is the bytes of the KMS key id (a UUID string)."""

    cannot_do = KMS_CANNOT

    def key(self, alias):
        if alias not in self.ids:
            printed = self.ws.generate(self.tok, alias, SPECS[alias])
            with self.emu._st.lock:  # the emulator's own alias table, not ctok's view of it
                key_id = self.emu._st.aliases["alias/" + alias][0]
            uuid.UUID(key_id)
            # (`ctok key generate` prints at most 20 bytes of an id: the UUID's first 20)
            assert key_id.encode().startswith(printed), (printed, key_id)
            self.ids[alias] = key_id.encode()
        return self.ids[alias]

    def public_der(self, alias):
        return self.emu.public_key_der(self.ids[alias].decode())


class AzureKvKind(TokenKind):
    """A token on the Key Vault emulator; public keys from the emulator's own key objects. A
    vault key's id is the bytes of its name (the current version; see README "Azure Key
    Vault tokens")."""

    cannot_do = AKV_CANNOT

    def key(self, alias):
        if alias not in self.ids:
            printed = self.ws.generate(self.tok, alias, SPECS[alias])
            assert printed == alias.encode(), (printed, alias)
            self.ids[alias] = printed
        return self.ids[alias]

    def public_der(self, alias):
        pub = serialization.load_pem_public_key(self.emu.public_key_pem(alias))
        return pub.public_bytes(serialization.Encoding.DER,
                                serialization.PublicFormat.SubjectPublicKeyInfo)


def _soft(root, build, request):
    ws = Workspace(root, build)
    return SoftKind("soft", ws, ws.create_token("soft"))


def _softhsm(root, build, request):
    from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

    require_pkcs11_tools()
    hsm = SoftHsm(root / "softhsm")
    label = "ctok-table"
    hsm.init_token(label, PIN)
    ws = P11Workspace(root, build, hsm)
    kind = SoftHsmKind("softhsm", ws, ws.create_p11_token("hsm", SOFTHSM_LIB, "label", label))
    kind.label = label
    return kind


def _awskms(root, build, request):
    here = Path(__file__).resolve().parent
    if not (here / "kms_emulator.py").exists():
        pytest.skip("the KMS emulator (tests/kms_emulator.py, fix/kmsemu) is not in this tree")
    from kms_emulator import KmsEmulator
    from kmsfixtures import awskms_token

    emu = KmsEmulator(root / "kms", on_secret=register_secret)
    emu.__enter__()
    request.addfinalizer(emu.stop)
    ws = Workspace(root, build)
    name = awskms_token(ws, emu, name="kms")  # registers the secret with the scan
    entry = next(t for t in ws.load_config()["tokens"] if t["name"] == name)
    kind = AwsKmsKind("awskms", ws, Token(ws, name, entry.get("id", ""), None, None,
                                          Path(entry["auth"]["file"])))
    kind.emu = emu
    return kind


def _azurekv(root, build, request):
    here = Path(__file__).resolve().parent
    if not (here / "akv_emulator.py").exists():
        pytest.skip("the Key Vault emulator (tests/akv_emulator.py, fix/azemu) is not in this "
                    "tree")
    from akv_emulator import AkvEmulator
    from akvfixtures import azurekv_token

    emu = AkvEmulator(root / "akv", on_secret=register_secret)  # its access tokens too
    emu.__enter__()
    request.addfinalizer(emu.stop)
    ws = Workspace(root, build)
    name = azurekv_token(ws, emu, name="akv")  # a client secret, registered with the scan
    entry = next(t for t in ws.load_config()["tokens"] if t["name"] == name)
    kind = AzureKvKind("azurekv", ws, Token(ws, name, entry.get("id", ""), None, None,
                                            Path(entry["auth"]["file"])))
    kind.emu = emu
    return kind


MAKERS = {"soft": _soft, "softhsm": _softhsm, "awskms": _awskms, "azurekv": _azurekv}


@pytest.fixture(scope="module", params=KINDS)
def token_kind(request, tmp_path_factory, build):
    """One token of each kind in turn (see the module's doc)."""
    return MAKERS[request.param](tmp_path_factory.mktemp("kind-" + request.param), build,
                                 request)

