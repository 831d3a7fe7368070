#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/): small valid
inputs made by the real tools (`ctok token create`, `ctok key generate`, `ctok ref`,
`openssl pkcs12 -export`) and near-valid variants of each, one mutation away from a
branch worth reaching.

    CTOK_BUILD_DIR=build /usr/bin/python3 tests/fuzz/make_corpus.py

The decoder targets resolve references on their own token "fuzz" holding the key "key"
(fuzz_common.c); the references here name the same, so valid seeds load a real key.
Stored auth codes are encrypted under the fuzzer's fixed master key (bytes 00..1f) for
the token id "fuzz-token" (fuzz_auth_stored.c).
"""

import base64
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ctoktest import Workspace, BUILD, assert_ok, stored_auth  # noqa: E402

CORPUS = HERE / "corpus"
MASTER_KEY = bytes(range(32))


def emit(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def emit_numbered(target, valid, near):
    for prefix, inputs in (("valid", valid), ("near", near)):
        for i, data in enumerate(inputs):
            emit(target, "%s-%02d" % (prefix, i), data)


def uris():
    ok = [
        "ctok:",
        "ctok:token=fuzz",
        "ctok:token=fuzz;object=key;type=private",
        "ctok:token=fuzz;object=key;type=cert",
        "ctok:token-id=0b6e3d7c-2f1a-4c55-9d1e-6a3f0c2b9e11;type=public",
        "ctok:token=fuzz;id=%01%a2%ff;type=private",
        "ctok:token=my%20token;object=caf%C3%A9",
        "ctok:token=fuzz;object=key?pin-source=file:/dev/null",
        "ctok:token=fuzz;object=key?pin-value=1234",
    ]
    bad = [
        "ctok:token=fuzz;token=other",
        "ctok:object=%zz",
        "ctok:object=%4",
        "ctok:object=a%00b",
        "ctok:id=" + "%41" * 65,
        "ctok:type=secret",
        "ctok:token",
        "ctok:unknown=1",
        "ctok:token=a?pin-value=1&pin-source=file:/x",
        "ctok:token=a?pin-value",
        "ctok:;;;?&&",
        "pkcs11:token=fuzz",
    ]
    emit_numbered("ctok_uri", ok, bad)
    p11 = [
        "pkcs11:",
        "pkcs11:token=fuzz;object=key;type=private",
        "pkcs11:token=fuzz;id=%01%02%03;type=cert",
        "pkcs11:manufacturer=SoftHSM%20project;model=SoftHSM%20v2;serial=1234;token=t",
        "pkcs11:library-description=x;library-manufacturer=y;library-version=2.40;slot-id=3",
        "pkcs11:token=t;object=k?pin-value=1234",
        "pkcs11:token=t;object=k?pin-source=file:/etc/pin&module-name=softhsm2",
        "pkcs11:token=t;pin-value=1234",
        "pkcs11:type=public;object=a%2Fb",
        "pkcs11:type=data",
        "pkcs11:type=secret-key",
    ]
    p11bad = [
        "pkcs11:token=%",
        "pkcs11:id=%zz",
        "pkcs11:type=nonsense",
        "pkcs11:library-version=x.y",
        "pkcs11:slot-id=-1",
        "pkcs11:id=" + "%41" * 65,
        "pkcs11:object=a%00b",
        "pkcs11:;;?&",
    ]
    emit_numbered("pkcs11_uri", p11, p11bad)


def configs(ws):
    real = ws.config.read_text()
    emit("config", "valid-created-by-tool.json", real)
    conf = json.loads(real)
    entry = conf["tokens"][0]
    variants = {
        "valid-pkcs11.json": {"tokens": [{"name": "hsm", "type": "pkcs11",
                                          "library": "/usr/lib/softhsm/libsofthsm2.so",
                                          "ref_type": "label", "ref": "ctok",
                                          "attributes": "/etc/ctok/attrs.cfg",
                                          "auth": {"env": "HSM_PIN"}}]},
        "valid-pkcs11-index.json": {"tokens": [{"name": "h", "type": "pkcs11", "library": "/l",
                                                "ref_type": "index", "ref": 0,
                                                "auth": {"prompt": True}}]},
        "valid-stored-perms.json": {"master_key": "/etc/ctok/master.key",
                                    "tokens": [dict(entry, auth={"stored": "AAAA"},
                                                    permissions=["view", "use"],
                                                    allow_export=True, explicit_ecc=True,
                                                    audit_file="/var/log/ctok.log",
                                                    audit_use=True)]},
        "near-unknown-perm.json": {"tokens": [dict(entry, permissions=["view", "fly"])]},
        "near-perm-not-list.json": {"tokens": [dict(entry, permissions="view")]},
        "near-auth-two.json": {"tokens": [dict(entry, auth={"file": "/a", "env": "B"})]},
        "near-auth-empty.json": {"tokens": [dict(entry, auth={"file": ""})]},
        "near-auth-unknown.json": {"tokens": [dict(entry, auth={"card": "x"})]},
        "near-duplicate.json": {"tokens": [entry, dict(entry)]},
        "near-unknown-type.json": {"tokens": [dict(entry, type="awskms")]},
        "near-no-name.json": {"tokens": [{"type": "pkcs12"}]},
        "near-tokens-object.json": {"tokens": {}},
        "near-ref-type.json": {"tokens": [{"name": "h", "type": "pkcs11", "library": "/l",
                                           "ref_type": "id", "ref": "12x"}]},
        "near-no-keystore.json": {"tokens": [{"name": "s", "type": "pkcs12"}]},
    }
    for name, v in variants.items():
        emit("config", name, json.dumps(v, indent=1))
    emit("config", "near-top-level-list.json", "[]")
    emit("config", "near-duplicate-key.json", '{"tokens": [], "tokens": []}')
    emit("config", "near-truncated.json", real[: len(real) // 2])


def keyrefs(ws):
    pems = {
        "valid-ec.pem": assert_ok(ws.ctok("ref", "fuzz", "key")).stdout,
        "near-other-object.pem": assert_ok(ws.ctok("ref", "fuzz", "rsa")).stdout,
    }
    ec = pems["valid-ec.pem"]
    body = "".join(ec.strip().splitlines()[1:-1])
    der = base64.b64decode(body)
    cert = ws.path("fuzz-key.pem").read_text()
    pems.update({
        "valid-leading-text.pem": "a key reference for nginx\n" + ec,
        "valid-crlf.pem": ec.replace("\n", "\r\n"),
        "valid-one-char-lines.pem": "-----BEGIN CTOK URI-----\n" + "\n".join(body) +
                                    "\n-----END CTOK URI-----\n",
        "other-certificate.pem": cert,
        "near-no-end.pem": "\n".join(ec.splitlines()[:-1]) + "\n",
        "near-bad-base64.pem": ec.replace(body[:8], "!!!!****"),
        "near-other-label.pem": ec.replace("CTOK URI", "CTOK URL"),
        "near-unknown-token.pem": pem_of(keyref_der("ctok:token=nope;object=key;type=private")),
        "near-bad-uri.pem": pem_of(keyref_der("ctok:object=%zz")),
        "near-pkcs11-uri.pem": pem_of(keyref_der("pkcs11:token=fuzz;object=key")),
    })
    for name, text in pems.items():
        emit("keyref_pem", name, text)
    ders = {
        "valid-ec.der": der,
        "near-other-object.der": base64.b64decode("".join(pems["near-other-object.pem"].strip().splitlines()[1:-1])),
        "near-version-1.der": keyref_der("ctok:token=fuzz;object=key", version=1),
        "near-empty-uri.der": keyref_der(""),
        "near-nul-in-uri.der": keyref_der("ctok:token=fuzz\0;object=key"),
        "near-trailing-byte.der": der + b"\0",
        "near-truncated.der": der[:-3],
        "near-pkcs11-uri.der": keyref_der("pkcs11:token=fuzz;object=key;type=private"),
        "near-query.der": keyref_der("ctok:token=fuzz;object=key?pin-source=file:/dev/null"),
    }
    for name, data in ders.items():
        emit("keyref_der", name, data)


def p11prov_pems():
    """pkcs11-provider's key references (SEQUENCE { desc VisibleString, uri UTF8String }
    under -----BEGIN PKCS#11 PROVIDER URI-----), valid and near-valid."""
    def tlv(tag, body):
        return bytes([tag]) + der_len(len(body)) + body

    def p11der(uri, desc=b"PKCS#11 Provider URI v1.0"):
        return tlv(0x30, tlv(0x1A, desc) + tlv(0x0C, uri.encode()))

    def pem(der):
        return ("-----BEGIN PKCS#11 PROVIDER URI-----\n%s-----END PKCS#11 PROVIDER URI-----\n"
                % base64.encodebytes(der).decode())

    der = p11der("pkcs11:token=fuzz;object=key;type=private")
    seeds = {
        "valid-private.pem": pem(der),
        "valid-leading-text.pem": "made by pkcs11-provider\n" + pem(der),
        "valid-model-serial.pem": pem(p11der("pkcs11:model=SoftHSM%20v2;serial=1234;object=key")),
        "near-module-path.pem": pem(p11der("pkcs11:token=fuzz;object=key?module-path=/x.so")),
        "near-pin-value.pem": pem(p11der("pkcs11:token=fuzz;object=key?pin-value=1234")),
        "near-ctok-uri.pem": pem(p11der("ctok:token=fuzz;object=key")),
        "near-truncated-der.pem": pem(der[:-4]),
        "near-trailing-byte.pem": pem(der + b"\0"),
        "near-nul-in-uri.pem": pem(p11der("pkcs11:token=fuzz\0;object=key")),
        "near-integer-first.pem": pem(tlv(0x30, b"\x02\x01\x00" + tlv(0x0C, b"pkcs11:token=x"))),
        "near-end-label-mismatch.pem": pem(der).replace("END PKCS#11 PROVIDER URI", "END CTOK URI"),
    }
    for name, data in seeds.items():
        emit("p11prov_pem", name, data)


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def keyref_der(uri, version=0):
    u = uri.encode()
    inner = b"\x02\x01" + bytes([version]) + b"\x0c" + der_len(len(u)) + u
    return b"\x30" + der_len(len(inner)) + inner


def pem_of(der):
    b = base64.b64encode(der).decode()
    lines = [b[i:i + 64] for i in range(0, len(b), 64)]
    return "-----BEGIN CTOK URI-----\n" + "\n".join(lines) + "\n-----END CTOK URI-----\n"


def stored():
    for i, code in enumerate(["1234", "ctok-test-pin-4711", "", "x" * 255, "\u00e9t\u00e9"]):
        emit("auth_stored", "valid-%02d" % i, stored_auth(MASTER_KEY, "fuzz-token", code))
    good = stored_auth(MASTER_KEY, "fuzz-token", "1234", nonce=b"\0" * 12)
    emit("auth_stored", "near-other-token", stored_auth(MASTER_KEY, "other", "1234"))
    emit("auth_stored", "near-flipped-tag", good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB"))
    emit("auth_stored", "near-short", base64.b64encode(b"\0" * 27).decode())
    emit("auth_stored", "near-not-base64", "*" * 40)
    emit("auth_stored", "near-padding", good.rstrip("=") + "====")
    emit("auth_stored", "near-too-long", stored_auth(MASTER_KEY, "fuzz-token", "y" * 300))


def keystores(ws, tok):
    emit("pkcs12", "valid-created-by-tool.p12", tok.keystore_bytes())
    key = ws.path("plain-key.pem")
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None))
    cert = ws.path("plain-cert.pem")
    assert_ok(ws.ossl("req", "-new", "-x509", "-key", key, "-subj", "/CN=seed", "-days", "2",
                      "-out", cert, providers=None))
    exports = {
        "valid-export.p12": [],
        "valid-export-nomac.p12": ["-nomac"],
        "valid-export-plain-bags.p12": ["-keypbe", "NONE", "-certpbe", "NONE"],
        "valid-export-plain-certs.p12": ["-certpbe", "NONE"],
        "valid-export-nokeys.p12": ["-nokeys"],
        "valid-export-sha1-mac.p12": ["-macalg", "sha1", "-iter", "1"],
    }
    for name, opts in exports.items():
        out = ws.path(name)
        args = ["-export", "-in", cert, "-name", "seed", "-passout", "pass:fuzz", "-out", out]
        if "-nokeys" not in opts:
            args[3:3] = ["-inkey", key]
        assert_ok(ws.ossl("pkcs12", *args, *opts, providers=None))
        emit("pkcs12", name, out.read_bytes())
    data = ws.path("valid-export.p12").read_bytes()
    emit("pkcs12", "near-truncated.p12", data[: len(data) // 2])
    emit("pkcs12", "near-wrong-version.p12", data[:4] + b"\x02\x01\x04" + data[7:])


def attribute_files():
    files = {
        "valid-per-type": """# SunPKCS11 / EJBCA syntax
attributes(generate, CKO_PRIVATE_KEY, CKK_RSA) = {
  CKA_SENSITIVE = false
  CKA_EXTRACTABLE = true
}
attributes(generate, CKO_PRIVATE_KEY, CKK_EC) = {
  CKA_PRIVATE = false
}
""",
        "valid-wildcards": "attributes(*, CKO_PRIVATE_KEY, *) = {\n  CKA_SENSITIVE = true\n"
                           "  CKA_EXTRACTABLE = false\n  CKA_DERIVE = false\n}\n",
        "valid-sunpkcs11": "name = HSM\nlibrary = /usr/lib/softhsm/libsofthsm2.so\nslot = 1\n"
                           "attributes(generate, *, *) = {\n  CKA_TOKEN = true\n}\n"
                           "attributes(generate, CKO_PUBLIC_KEY, CKK_EC_EDWARDS) = {\n"
                           "  CKA_VERIFY = true\n  CKA_ENCRYPT = false\n}\n",
        "near-maybe": "attributes(generate, CKO_PRIVATE_KEY, *) = {\n  CKA_SENSITIVE = maybe\n}\n",
        "near-unclosed": "attributes(generate, CKO_PRIVATE_KEY, *) = {\n  CKA_SIGN = true\n",
        "near-no-brace": "attributes(generate, CKO_PRIVATE_KEY, *) =\n",
        "near-unknown-attr": "attributes(*, *, *) = {\n  CKA_LABEL = true\n}\n",
        "near-bad-header": "attributes(generate) = {\n}\n",
        "near-stray-line": "CKA_TOKEN = true\n",
        "near-all-bools": "attributes(*, *, *) = {\n" + "".join(
            "  %s = true\n" % a for a in [
                "CKA_TOKEN", "CKA_PRIVATE", "CKA_SENSITIVE", "CKA_EXTRACTABLE", "CKA_MODIFIABLE",
                "CKA_SIGN", "CKA_VERIFY", "CKA_DECRYPT", "CKA_ENCRYPT", "CKA_DERIVE", "CKA_WRAP",
                "CKA_UNWRAP", "CKA_SIGN_RECOVER", "CKA_VERIFY_RECOVER",
                "CKA_ALWAYS_AUTHENTICATE", "CKA_WRAP_WITH_TRUSTED", "CKA_TRUSTED"]) + "}\n",
        "near-long-line": "attributes(*, *, *) = {\n  CKA_SIGN = " + "t" * 600 + "\n}\n",
    }
    for name, text in files.items():
        emit("p11_attrs", name, text)


def main():
    if not (BUILD / "ctok").exists():
        sys.exit("no ctok tool in %s: build first, or set CTOK_BUILD_DIR" % BUILD)
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    with tempfile.TemporaryDirectory(prefix="ctok-corpus-") as tmp:
        ws = Workspace(Path(tmp), BUILD)
        tok = ws.create_token("fuzz")
        ws.add_key(tok, "key", "ec:P-256")
        ws.add_key(tok, "rsa", "rsa:2048")
        uris()
        configs(ws)
        keyrefs(ws)
        p11prov_pems()
        stored()
        keystores(ws, tok)
        attribute_files()
    for d in sorted(CORPUS.iterdir()):
        print("%-12s %3d seeds" % (d.name, len(list(d.iterdir()))))


if __name__ == "__main__":
    main()
