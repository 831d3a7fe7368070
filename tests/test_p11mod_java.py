"""Java uses ctok's tokens through ctok-p11.so (issue 14): SunPKCS11 with a config naming the
module lists the token's entries (keytool) and signs a jar with a token key (jarsigner), which
jarsigner -verify accepts. The PIN comes from the token's auth file (-storepass:file)."""

import zipfile

import pytest

from ctoktest import assert_ok, describe, run
from p11modtest import MODULE, make_face, require_tools

TIMEOUT = 120


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    require_tools("openjdk-17-jdk-headless", "keytool", "jarsigner")
    return make_face(request.param, tmp_path_factory, build)


def sunpkcs11(face, tmp_path):
    cfg = tmp_path / "ctok-p11.cfg"
    cfg.write_text("name = ctok\nlibrary = %s\nslot = 0\n" % MODULE)
    return ["-storetype", "PKCS11", "-providerClass", "sun.security.pkcs11.SunPKCS11",
            "-providerArg", str(cfg), "-storepass:file", str(face.pin_file)]


def test_keytool_lists_the_keys_that_have_certificates(face, tmp_path):
    p = assert_ok(run(["keytool", "-list", *sunpkcs11(face, tmp_path)], face.env(),
                      timeout=TIMEOUT))
    for alias in face.key_ids:
        assert "%s, PrivateKeyEntry" % alias in p.stdout, describe(p)


@pytest.mark.parametrize("alias", ["rsa", "ec"])
def test_jarsigner_signs_with_a_token_key_and_the_jar_verifies(face, tmp_path, alias):
    jar = tmp_path / "signed.jar"
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr("hello.txt", "signed with a ctok token key through PKCS#11\n")
    assert_ok(run(["jarsigner", "-keystore", "NONE", *sunpkcs11(face, tmp_path), str(jar),
                   alias], face.env(), timeout=TIMEOUT))
    p = assert_ok(run(["jarsigner", "-verify", "-verbose", "-certs", str(jar)], face.env(),
                      timeout=TIMEOUT))
    assert "jar verified." in p.stdout and "CN=%s" % alias in p.stdout, describe(p)
    assert "META-INF/%s.%s" % (alias.upper(), "RSA" if alias == "rsa" else "EC") in \
        zipfile.ZipFile(jar).namelist()
