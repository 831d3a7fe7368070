"""Shared helpers of the PKCS#11 conformance tests (issue 11): tokens whose keys and
certificates are made by OpenSC's pkcs11-tool (never ctok's own tool), and the openssl CLI
with the two provider configurations a peer provider's users run: default + ctok, and
default + ctok + base (OpenSSL then orders the three by name: base first)."""

from pathlib import Path

from ctoktest import CTOK_FIRST, OPENSSL, PIN, TIMEOUT, assert_ok, run
from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

# The two provider configurations every conformance test runs with.
PROVIDER_SETS = ("ctok", "ctok+base")


def ossl(ws: P11Workspace, pset, cmd, *args, env=None, input=None, timeout=TIMEOUT, text=True):
    """openssl <cmd> with default + ctok ("ctok") or default + ctok + base ("ctok+base",
    through an openssl.cnf that activates all three)."""
    if pset == "ctok":
        return ws.ossl(cmd, *args, providers=CTOK_FIRST, env=env, input=input, timeout=timeout,
                       text=text)
    if pset == "ctok+base":
        extra = dict(env or {})
        extra["OPENSSL_CONF"] = str(ws.three_providers_cnf("base"))
        return run([OPENSSL, cmd, *[str(a) for a in args]], ws.env(extra), input=input,
                   timeout=timeout, text=text)
    raise ValueError(pset)


class ToolToken:
    """A SoftHSM token filled by pkcs11-tool, and a ctok pkcs11 token over it (by label)."""

    def __init__(self, root: Path, build, label="conform", name="hsm", pin=PIN):
        require_pkcs11_tools()
        self.hsm = SoftHsm(Path(root) / "softhsm")
        self.label = label
        self.pin = pin
        self.slot_id = self.hsm.init_token(label, pin)
        self.ws = P11Workspace(Path(root), build, self.hsm)
        self.tok = self.ws.create_p11_token(name, SOFTHSM_LIB, "label", label, pin=pin)

    def tool(self, *args, module=SOFTHSM_LIB, env=None, login=True):
        """pkcs11-tool on this token (logged in with the user PIN unless login=False)."""
        a = ["--token-label", self.label]
        if login:
            a += ["--login", "--pin", self.pin]
        return self.hsm.tool(*a, *args, module=module, env=env)

    def keypair(self, key_type, id_hex, label, allowed=None, always_auth=False, extra=()):
        """pkcs11-tool --keypairgen: key_type as pkcs11-tool spells it ("rsa:2048",
        "EC:prime256v1", "EC:edwards25519"); allowed: pkcs11-tool mechanism names
        ("SHA256-RSA-PKCS-PSS", "ECDSA") for CKA_ALLOWED_MECHANISMS."""
        a = ["--keypairgen", "--key-type", key_type, "--id", id_hex, "--label", label]
        if allowed:
            a += ["--allowed-mechanisms", ",".join(allowed)]
        if always_auth:
            a += ["--always-auth"]
        assert_ok(self.tool(*a, *extra))

    def write_cert(self, cert_pem: Path, id_hex, label):
        """Writes a PEM certificate as a token certificate object (pkcs11-tool wants DER)."""
        der = Path(str(cert_pem) + ".der")
        assert_ok(run([OPENSSL, "x509", "-in", str(cert_pem), "-outform", "DER", "-out",
                       str(der)], self.ws.env(config=False)))
        assert_ok(self.tool("--write-object", str(der), "--type", "cert", "--id", id_hex,
                            "--label", label))

    def uri(self, id_hex=None, label=None, type="private"):
        """A pkcs11: URI of an object on this token (as a peer provider's users write it)."""
        parts = ["token=%s" % self.label.replace(" ", "%20")]
        if label is not None:
            parts.append("object=%s" % label)
        if id_hex is not None:
            parts.append("id=%s" % "".join("%%%s" % id_hex[i:i + 2]
                                            for i in range(0, len(id_hex), 2)))
        if type is not None:
            parts.append("type=%s" % type)
        return "pkcs11:" + ";".join(parts)
