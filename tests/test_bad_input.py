"""Bad input, each on its own: the user gets a clear error that names the cause, a
non-zero exit, no crash, and the keystore file is left exactly as it was."""

import os
import re
import shutil
import subprocess
import tempfile

import pytest

from ctoktest import (
    assert_fails_with,
    describe,
    digest_file,
    sign_digest,
)


@pytest.fixture
def soft1(ws, make_token):
    return make_token("soft1", {"k1": "ec:P-256"})


def error_line(p, phrase):
    """The one stderr line that carries the reason."""
    for line in p.stderr.splitlines():
        if phrase.lower() in line.lower():
            return line
    raise AssertionError("no error line says %r\n%s" % (phrase, describe(p)))


def sign_fails(ws, tok, uri, phrase, *details, env=None):
    """Signing with uri fails with phrase (and details on the same line); keystore
    untouched."""
    before = tok.keystore_bytes()
    p, sig, _ = sign_digest(ws, uri, env=env)
    assert_fails_with(p, phrase)
    line = error_line(p, phrase)
    for d in details:
        assert d in line, "error line does not name %r: %s" % (d, line)
    assert not sig.exists() or sig.stat().st_size == 0, "a signature was written"
    assert tok.keystore_bytes() == before, "the keystore changed"
    return p


@pytest.mark.parametrize("uri", [
    "ctok:token=soft1;object=k%zz1;type=private",
    "ctok:token=soft1;object=k1;type=banana",
    "ctok:token=soft1;id=%0;type=private",
    "ctok:token=soft1;object=k1;object=k2;type=private",
], ids=["bad-percent-escape", "unknown-type", "truncated-escape", "repeated-attribute"])
def test_malformed_uri_is_rejected_as_invalid_ctok_uri(ws, soft1, uri):
    sign_fails(ws, soft1, uri, "invalid ctok URI")


def test_unknown_token_is_named_in_the_error(ws, soft1):
    sign_fails(ws, soft1, "ctok:token=nosuch;object=k1;type=private", "unknown token", "nosuch")


def test_unknown_object_reports_object_not_found(ws, soft1):
    sign_fails(ws, soft1, soft1.key_uri("nosuch"), "object not found")


def test_unknown_token_id_reports_unknown_token(ws, soft1):
    sign_fails(ws, soft1,
               "ctok:token-id=00000000-0000-4000-8000-000000000000;object=k1;type=private",
               "unknown token")


def test_wrong_auth_code_in_auth_file_is_rejected(ws, soft1):
    soft1.pin_file.write_text("not-the-pin")
    sign_fails(ws, soft1, soft1.key_uri("k1"), "wrong authentication code", "soft1")


def test_wrong_pin_value_in_uri_is_rejected(ws, soft1):
    sign_fails(ws, soft1, soft1.key_uri("k1", query="pin-value=not-the-pin"),
               "wrong authentication code", "soft1")


def test_wrong_passin_for_prompting_token_is_rejected(ws, soft1):
    ws.set_token_fields(soft1, auth={"prompt": True})
    before = soft1.keystore_bytes()
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"), "-passin", "pass:not-the-pin")
    assert_fails_with(p, "wrong authentication code")
    assert soft1.keystore_bytes() == before


def test_corrupt_keystore_reports_keystore_error(ws, soft1):
    data = bytearray(soft1.keystore_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 64):
        data[i] ^= 0x5A
    soft1.keystore.write_bytes(bytes(data))
    sign_fails(ws, soft1, soft1.key_uri("k1"), "keystore error")


def test_truncated_keystore_reports_keystore_error(ws, soft1):
    data = soft1.keystore_bytes()
    soft1.keystore.write_bytes(data[: len(data) // 2])
    sign_fails(ws, soft1, soft1.key_uri("k1"), "keystore error")


def test_file_that_is_not_pkcs12_reports_keystore_error(ws, soft1):
    soft1.keystore.write_text("-----BEGIN NOTHING-----\nhello\n-----END NOTHING-----\n")
    p = sign_fails(ws, soft1, soft1.key_uri("k1"), "keystore error")
    assert "not a valid PKCS#12 keystore" in p.stderr, describe(p)


def test_missing_keystore_reports_keystore_error(ws, soft1):
    soft1.keystore.unlink()
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "keystore error")
    assert str(soft1.keystore) in error_line(p, "keystore error")
    assert not soft1.keystore.exists(), "a keystore appeared from nowhere"


def test_missing_config_reports_configuration_error_naming_the_file(ws, soft1):
    missing = ws.path("nowhere/tokens.json")
    sign_fails(ws, soft1, soft1.key_uri("k1"), "configuration error", str(missing),
               env={"CTOK_CONFIG": missing})


def test_unreadable_config_reports_configuration_error(ws, soft1):
    """Run as an unprivileged user, for whom the config file is unreadable."""
    if os.geteuid() != 0:
        os.chmod(ws.config, 0)
        sign_fails(ws, soft1, soft1.key_uri("k1"), "configuration error", str(ws.config))
        return
    # root reads everything: drop to 'nobody' in a folder nobody may enter but not read in
    d = tempfile.mkdtemp(prefix="ctok-unreadable-")
    try:
        os.chmod(d, 0o755)
        conf = os.path.join(d, "tokens.json")
        shutil.copy(ws.config, conf)
        os.chmod(conf, 0o600)
        _, dg = digest_file(ws)
        dg_copy = os.path.join(d, "digest.bin")
        shutil.copy(dg, dg_copy)
        os.chmod(dg_copy, 0o644)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                *ws.ossl_argv("pkeyutl", "-sign", "-inkey", soft1.key_uri("k1"), "-in", dg_copy,
                              "-pkeyopt", "digest:sha256")]
        cnf = os.path.join(d, "openssl.cnf")
        with open(cnf, "w") as f:
            f.write("# empty\n")
        os.chmod(cnf, 0o644)
        env = ws.env({"CTOK_CONFIG": conf, "OPENSSL_CONF": cnf, "HOME": d})
        before = soft1.keystore_bytes()
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL, errors="replace")
        assert_fails_with(p, "configuration error")
        assert conf in error_line(p, "configuration error")
        assert soft1.keystore_bytes() == before
    finally:
        shutil.rmtree(d)


def test_malformed_config_names_file_line_and_column(ws, soft1):
    ws.config.write_text('{\n  "tokens": [\n    {"name": "soft1" "type": "pkcs12"}\n  ]\n}\n')
    p = sign_fails(ws, soft1, soft1.key_uri("k1"), "configuration error")
    line = error_line(p, "configuration error")
    assert re.search(re.escape(str(ws.config)) + r":3:\d+", line), line


def test_config_without_tokens_list_reports_configuration_error(ws, soft1):
    ws.config.write_text('{"tokens": {"name": "soft1"}}\n')
    sign_fails(ws, soft1, soft1.key_uri("k1"), "configuration error", str(ws.config))


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664], ids=["all", "others", "group"])
def test_config_writable_by_others_is_refused(ws, soft1, mode):
    os.chmod(ws.config, mode)
    sign_fails(ws, soft1, soft1.key_uri("k1"), "insecure file permissions", str(ws.config))


def test_auth_file_readable_by_others_is_refused(ws, soft1):
    os.chmod(soft1.pin_file, 0o644)
    sign_fails(ws, soft1, soft1.key_uri("k1"), "insecure file permissions",
               str(soft1.pin_file))


def test_export_of_non_exportable_key_is_refused(ws, soft1):
    before = soft1.keystore_bytes()
    out = ws.path("exported.pem")
    p = ws.ossl("pkey", "-in", soft1.key_uri("k1"), "-out", out)
    assert_fails_with(p, "private key export not allowed")
    assert not out.exists() or b"PRIVATE KEY" not in out.read_bytes()
    assert "PRIVATE KEY" not in p.stdout
    assert soft1.keystore_bytes() == before


def test_wrong_auth_code_in_ctok_tool_is_a_one_line_error(ws, soft1):
    soft1.pin_file.write_text("not-the-pin")
    before = soft1.keystore_bytes()
    p = ws.ctok("key", "test", "soft1", "k1")
    assert_fails_with(p, "wrong authentication code")
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctok: "), describe(p)
    assert soft1.keystore_bytes() == before
