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


# ---- fuzz_p11mod_tmpl / fuzz_p11mod_mech: their byte formats (tests/fuzz/fuzz_p11mod.c)

# indices into fuzz_p11mod.c's tables
A = {"class": 0, "token": 1, "label": 3, "value": 4, "id": 5, "key_type": 6, "subject": 8,
     "issuer": 9, "serial": 10, "modulus": 11, "modulus_bits": 12, "public_exponent": 13,
     "private_exponent": 14, "ec_params": 15, "ec_point": 16, "sign": 19,
     "allowed_mechanisms": 24, "public_key_info": 25, "extractable": 18, "value_len": 34}
M = {"RSA_PKCS": 0, "RSA_PKCS_PSS": 1, "SHA256_RSA_PKCS": 2, "SHA256_RSA_PKCS_PSS": 3,
     "ECDSA": 6, "ECDSA_SHA256": 7, "RSA_PKCS_OAEP": 10, "ECDH1_DERIVE": 11}
SHA1, SHA256 = 0, 2  # hashes[] and mgfs[]
KDF = {"NULL": 0, "SHA1": 1, "SHA256": 2, "SHA3-256": 7, "SHA1_ASN1": 10}  # kdfs[]
# P-256's generator, uncompressed: a valid peer point for ECDH
P256_G = bytes.fromhex("046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                       "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")


def p11_attr(name, mode, rest=b""):
    """[mode] [type] [mode's bytes]: mode 0 NULL + claimed length index, 1 a buffer (length,
    then a template's bytes), 2 a CK_ULONG (template) or a huge buffer (request), 3 a bool."""
    t = bytes([A[name]]) if isinstance(name, str) else name
    return bytes([mode]) + t + rest


def p11_list(*attrs):
    return bytes([len(attrs)]) + b"".join(attrs)


def p11mod_seeds():
    tmpl = {
        "valid-private-by-class": (0, p11_list(p11_attr("class", 2, b"\x03")),
                                   p11_list(p11_attr("label", 0, b"\x00"),
                                            p11_attr("value", 1, b"\xff\x60")), b"\x08\x00"),
        "valid-by-label": (0, p11_list(p11_attr("label", 1, b"\x03key")),
                           p11_list(p11_attr("class", 1, b"\x08"), p11_attr("id", 6),
                                    p11_attr("ec_point", 1, b"\x04")), b"\x08\x01"),
        "valid-cert-fields": (0, p11_list(), p11_list(*[p11_attr(a, 1, b"\xff\x20") for a in (
            "subject", "issuer", "serial", "value", "public_key_info")]), b"\x08\x02"),
        "valid-rsa-key": (1, p11_list(p11_attr("sign", 3, b"\x01"), p11_attr("token", 3, b"\x01")),
                          p11_list(*[p11_attr(a, 1, b"\xff\x00") for a in (
                              "modulus", "public_exponent", "modulus_bits", "private_exponent",
                              "allowed_mechanisms")]), b"\x08\x00"),
        "near-null-value": (0, p11_list(p11_attr("id", 0, b"\x03")),
                            p11_list(p11_attr("key_type", 0, b"\x06")), b"\x00"),
        "near-odd-types": (1, p11_list(p11_attr(b"\xfe\x01", 1, b"\x00")),
                           p11_list(p11_attr(b"\xff\x00\x00\x01\x29", 2),
                                    p11_attr("ec_params", 1, b"\x00")), b"\x03"),
    }
    # then C_GenerateKeyPair: [mechanism: 0 EC, 1 Edwards, 2 RSA] [public] [private template]
    p256 = bytes.fromhex("06082a8648ce3d030107")
    ed = b"\x13\x0cedwards25519"
    label = p11_attr("label", 1, b"\x06fuzzk1")
    keygen = {
        "valid-keygen-ec": b"\x00" + p11_list(p11_attr("ec_params", 1, bytes([len(p256)]) + p256))
        + p11_list(label, p11_attr("sign", 3, b"\x01")),
        "valid-keygen-ed25519": b"\x01" + p11_list(p11_attr("ec_params", 1, bytes([len(ed)]) + ed))
        + p11_list(label),
        "near-keygen-rsa-small": b"\x02" + p11_list(p11_attr("modulus_bits", 2, b"\x80"))
        + p11_list(label),
    }
    for name, (slot, t, r, tail) in tmpl.items():
        emit("p11mod_tmpl", name, bytes([slot]) + t + r + tail)
    for name, gen in keygen.items():
        emit("p11mod_tmpl", name, b"\x00" + p11_list() + p11_list() + b"\x08\x00" + gen)

    def op(slot, what, key=0, decrypt=False):
        return bytes([slot | what << 1 | key << 3 | (0x20 if decrypt else 0)])

    def pss(h, sl, mode=2):
        return bytes([mode, h, h, sl])

    def null_data():
        return b"\x01\x00"

    def ecdh(kdf, shared, value_len, key_type=b"\x10"):
        vl = () if value_len is None else (p11_attr("value_len", 2, bytes([value_len])),)
        return op(0, 3) + bytes([M["ECDH1_DERIVE"], 4, KDF[kdf]]) + shared + \
            bytes([0, len(P256_G)]) + P256_G + p11_list(
                p11_attr("class", 2, b"\x04"), p11_attr("key_type", 2, key_type),
                p11_attr("extractable", 3, b"\x01"), *vl)

    mech = {
        "valid-ecdsa-sha256": op(0, 1) + bytes([M["ECDSA_SHA256"], 0, 0]),
        "valid-ecdsa-raw": op(0, 1) + bytes([M["ECDSA"], 0, 0]),
        "valid-pss-sha256": op(1, 1) + bytes([M["SHA256_RSA_PKCS_PSS"]]) + pss(SHA256, 32),
        "valid-pss-cancelled": op(1, 0) + bytes([M["RSA_PKCS_PSS"]]) + pss(SHA256, 32),
        "valid-rsa-sha256": op(1, 1) + bytes([M["SHA256_RSA_PKCS"], 0, 0]),
        "valid-rsa-decrypt": op(1, 2, decrypt=True) + bytes([M["RSA_PKCS"], 0, 0]),
        "valid-oaep-sha1": op(1, 2) + bytes([M["RSA_PKCS_OAEP"], 3, SHA1, SHA1]) + null_data(),
        "valid-ecdh": op(0, 3) + bytes([M["ECDH1_DERIVE"], 4, 0]) + null_data() +
        bytes([0, len(P256_G)]) + P256_G + p11_list(p11_attr("class", 2, b"\x04"),
                                                    p11_attr("key_type", 2, b"\x10")),
        # X9.63 KDFs: [kdf] [shared data] [public data] [template with CKA_VALUE_LEN]
        "valid-ecdh-kdf-sha256": ecdh("SHA256", b"\x00\x0cshared-info!", 48),
        "valid-ecdh-kdf-sha3-aes": ecdh("SHA3-256", null_data(), 32, key_type=b"\x1f"),
        "near-ecdh-kdf-no-len": ecdh("SHA1", null_data(), None),
        "near-ecdh-kdf-shared-no-len": ecdh("SHA256", b"\x00\x00", 32),
        "near-ecdh-kdf-shared-no-ptr": ecdh("SHA256", b"\x01\x05", 32),
        "near-ecdh-null-kdf-shared": ecdh("NULL", b"\x00\x04info", None),
        "near-ecdh-kdf-x942": ecdh("SHA1_ASN1", null_data(), 32),
        "near-pss-short": op(1, 0) + bytes([M["RSA_PKCS_PSS"]]) + pss(SHA256, 32, 2 | 16) + b"\x01",
        "near-pss-null": op(1, 0) + bytes([M["RSA_PKCS_PSS"], 0, 3]),
        "near-pss-huge-salt": op(1, 1) + bytes([M["SHA256_RSA_PKCS_PSS"], 2 | 8, SHA256, SHA256]) +
        b"\x7f\xff\xff\xff",
        "near-cert-as-key": op(0, 0, key=2) + bytes([M["ECDSA"], 0, 0]),
        "near-oaep-source": op(1, 2) + bytes([M["RSA_PKCS_OAEP"], 3 | 8, SHA256, SHA256, 1]) +
        b"\x00\x10" + b"label-0123456789",
    }
    for name, data in mech.items():
        emit("p11mod_mech", name, data)


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
        p11mod_seeds()
    for d in sorted(CORPUS.iterdir()):
        print("%-12s %3d seeds" % (d.name, len(list(d.iterdir()))))


if __name__ == "__main__":
    main()
