"""NSS uses ctok's tokens through ctok-p11.so (issue 14): the module added to a fresh NSS
database (modutil), its certificates listed (certutil -L -h all), and a signature made by NSS
with a token key (pk1sign) verified by plain openssl. The PIN comes from the token's auth file."""

import base64
import re

import pytest

from ctoktest import OPENSSL, assert_ok, describe, run
from p11modtest import MODULE, make_face, require_tools


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    require_tools("libnss3-tools", "modutil", "certutil", "pk1sign")
    return make_face(request.param, tmp_path_factory, build)


def nss_db(face, tmp_path):
    db = tmp_path / "nssdb"
    db.mkdir()
    assert_ok(run(["certutil", "-N", "-d", "sql:%s" % db, "--empty-password"], face.env()))
    assert_ok(run(["modutil", "-dbdir", "sql:%s" % db, "-add", "ctok", "-libfile", str(MODULE),
                   "-force"], face.env(), input="\n"))
    return "sql:%s" % db


def der_items(der):
    """The (tag, content) items of a DER SEQUENCE's content."""
    out, i = [], 0
    while i < len(der):
        tag, n = der[i], der[i + 1]
        i += 2
        if n & 0x80:
            k = n & 0x7F
            n = int.from_bytes(der[i:i + k], "big")
            i += k
        out.append((tag, der[i:i + n]))
        i += n
    return out


def test_certutil_lists_the_token_certificates(face, tmp_path):
    db = nss_db(face, tmp_path)
    p = assert_ok(run(["modutil", "-dbdir", db, "-list", "ctok"], face.env()))
    assert re.search(r"Token Name: %s\s*\n" % face.name, p.stdout), describe(p)
    p = assert_ok(run(["certutil", "-L", "-d", db, "-h", "all", "-f", str(face.pin_file)],
                      face.env()))
    for alias in face.key_ids:
        # token:nickname, a user certificate (its private key is there): u,u,u
        line = [l for l in p.stdout.splitlines() if l.startswith("%s:%s " % (face.name, alias))]
        assert line and line[0].split()[-1] == "u,u,u", describe(p)


def test_a_signature_made_by_nss_with_a_token_key_verifies_with_openssl(face, tmp_path):
    db = nss_db(face, tmp_path)
    msg, out = tmp_path / "msg", tmp_path / "pk1sign.out"
    msg.write_bytes(b"signed by NSS with a ctok token key\n")
    assert_ok(run(["pk1sign", "-k", "%s:rsa" % face.name, "-d", db, "-i", str(msg), "-o",
                   str(out), "-f", str(face.pin_file)], face.env(), input=""))
    # "signature:" then base64 of SEQUENCE { AlgorithmIdentifier, BIT STRING signature }
    b64 = out.read_text().split("signature:")[1].split("pubkey:")[0]
    (tag, body), = der_items(base64.b64decode("".join(b64.split())))
    alg, bits = der_items(body)
    assert alg[0] == 0x30 and bits[0] == 0x03, (alg, bits)
    sig = tmp_path / "sig"
    sig.write_bytes(bits[1][1:])  # a BIT STRING's first byte counts its unused bits
    md = {bytes.fromhex("2a864886f70d010105"): "-sha1",
          bytes.fromhex("2a864886f70d01010b"): "-sha256"}[der_items(alg[1])[0][1]]
    p = assert_ok(run([OPENSSL, "dgst", md, "-verify", str(face.pubkey("rsa")), "-signature",
                       str(sig), str(msg)], face.env()))
    assert "Verified OK" in p.stdout, describe(p)
