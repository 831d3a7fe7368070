"""Files ctok trusts (config, auth codes, master key, keystores, attribute files) are what
their owner made them: read once, from the descriptor that was checked, never through a
symbolic link or from a folder others can write; keystores carry a MAC and encrypted keys;
rewrites keep mode and owner; a full disk loses nothing."""

import ctypes
import grp
import json
import os
import pwd
import shutil
import subprocess

import pytest

from ctoktest import (
    PIN,
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_ok,
    assert_verified,
    sign_digest,
    tls_client,
    verify_digest,
)
from p11fixtures import fresh_hsm  # noqa: F401  (fixture)

OTHER_USER = "nobody"
OTHER_GROUP = "www-data"


@pytest.fixture
def soft1(ws, make_token):
    return make_token("soft1", {"k1": "ec:P-256"})


def signs(ws, tok, alias="k1"):
    """Signs through the provider (openssl) and verifies against the key's certificate."""
    p, sig, dg = sign_digest(ws, tok.key_uri(alias))
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.certs[alias], dg, sig))


def entry(name, keystore, pin_file):
    return {"name": name, "id": "11111111-2222-4333-8444-%012d" % len(name), "type": "pkcs12",
            "keystore": str(keystore), "auth": {"file": str(pin_file)}}


# ---------------------------------------------------------------- 7: one auth-file reader


def test_code_with_a_blank_line_after_it_is_read_alike_by_tool_and_provider(ws):
    """A code file ending in a blank line: token create and every later process must send
    the same code (the tool used to strip every line ending, the provider one)."""
    tok = ws.create_token("soft1", pin=PIN + "\n\n")
    ws.add_key(tok, "k1", "ec:P-256")
    signs(ws, tok)


@pytest.mark.parametrize("command", ["create", "activate"])
def test_auth_file_readable_by_others_is_refused_by_the_tool(ws, command):
    loose = ws.write("loose.pin", PIN, mode=0o644)
    if command == "create":
        p = ws.ctok("token", "create", "--type", "pkcs12", "--name", "soft1", "--keystore",
                    ws.path("soft1.p12"), "--auth-file", loose)
        assert not ws.path("soft1.p12").exists(), "a keystore was made with the loose code"
    else:
        ws.create_token("soft1")
        p = ws.ctok("token", "activate", "soft1", "--auth-file", loose)
    assert_fails_with(p, "readable by others", str(loose))


# ---------------------------------------------------------------- 8: open, then check


def test_config_through_a_symbolic_link_is_refused(ws, soft1):
    real = ws.path("real-tokens.json")
    os.rename(ws.config, real)
    os.symlink(real, ws.config)
    p = ws.ctok("token", "list")
    assert_fails_with(p, "symbolic link", str(ws.config))


def test_auth_file_through_a_symbolic_link_is_refused(ws, soft1):
    link = ws.path("link.pin")
    os.symlink(soft1.pin_file, link)
    ws.set_token_fields(soft1, auth={"file": str(link)})
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "symbolic link", str(link))


def test_fifo_in_place_of_the_auth_file_is_refused_without_hanging(ws, soft1):
    fifo = ws.path("fifo.pin")
    os.mkfifo(fifo, 0o600)
    ws.set_token_fields(soft1, auth={"file": str(fifo)})
    p = ws.ctok("key", "test", "soft1", "k1", timeout=20)
    assert_fails_with(p, "not a regular file", str(fifo))


def move_into(ws, tok, folder):
    """Moves the workspace's config, the token's keystore and code file into folder."""
    folder.mkdir(exist_ok=True)
    conf = ws.load_config()
    for name in (tok.keystore.name, tok.pin_file.name):
        shutil.move(ws.path(name), folder / name)
    for t in conf["tokens"]:
        if t["name"] == tok.name:
            t["keystore"] = str(folder / tok.keystore.name)
            t["auth"] = {"file": str(folder / tok.pin_file.name)}
    new_config = folder / "tokens.json"
    new_config.write_text(json.dumps(conf))
    os.chmod(new_config, 0o644)
    return {"CTOK_CONFIG": new_config}


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_files_in_a_folder_others_can_write_are_refused(ws, soft1, mode):
    folder = ws.path("shared")
    env = move_into(ws, soft1, folder)
    os.chmod(folder, mode)
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"), env=env)
    assert_fails_with(p, "writable by others", str(folder))


def test_files_in_a_folder_of_another_user_are_refused(ws, soft1):
    folder = ws.path("theirs")
    env = move_into(ws, soft1, folder)
    os.chmod(folder, 0o755)
    os.chown(folder, pwd.getpwnam(OTHER_USER).pw_uid, -1)
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"), env=env)
    assert_fails_with(p, "owned by another user", str(folder))


def test_files_in_a_root_owned_sticky_folder_are_accepted(ws, soft1):
    """Like /tmp (1777 root): others cannot rename or delete what is ours there."""
    folder = ws.path("sticky")
    env = move_into(ws, soft1, folder)
    os.chown(folder, 0, 0)
    os.chmod(folder, 0o1777)
    p, sig, dg = sign_digest(ws, soft1.key_uri("k1"), env=env)
    assert_ok(p)
    assert_verified(verify_digest(ws, soft1.certs["k1"], dg, sig))


def test_attribute_file_writable_by_others_is_refused(fresh_hsm):
    hw = fresh_hsm
    hw.hsm.init_token("attr-token", PIN)
    attrs = hw.write("attrs.cfg", "attributes(*,CKO_PRIVATE_KEY,*) = {\n"
                                  "  CKA_EXTRACTABLE = false\n}\n", mode=0o666)
    hw.create_p11_token("hsm", ref="attr-token", attributes=attrs)
    p = hw.ctok("key", "generate", "hsm", "k1", "ec:P-256")
    assert_fails_with(p, "writable by others", str(attrs))


# ---------------------------------------------------------------- 9: keystore integrity


@pytest.mark.parametrize("change", ["readable", "writable", "other-owner"])
def test_keystore_others_can_read_or_write_is_refused(ws, soft1, change):
    if change == "other-owner":
        os.chown(soft1.keystore, pwd.getpwnam(OTHER_USER).pw_uid, -1)
        phrase = "owned by another user"
    else:
        os.chmod(soft1.keystore, 0o640 if change == "readable" else 0o620)
        phrase = "readable by others" if change == "readable" else "writable by others"
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, phrase, str(soft1.keystore), "soft1")


def test_keystore_through_a_symbolic_link_is_refused(ws, soft1):
    link = ws.path("link.p12")
    os.symlink(soft1.keystore, link)
    ws.set_token_fields(soft1, keystore=str(link))
    p = ws.ctok("key", "list", "soft1")
    assert_fails_with(p, "symbolic link", str(link))


@pytest.fixture
def exported(ws):
    """exported(*openssl_pkcs12_options) -> a token 'imp' over a keystore made by
    `openssl pkcs12 -export` of a fresh EC key and its certificate, and the certificate."""

    def make(*options):
        key, cert = ws.path("imp.key"), ws.path("imp.pem")
        assert_ok(ws.ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-keyout", key, "-subj", "/CN=imp", "-days", "3", "-out",
                          cert, providers=None))
        ks = ws.path("imp.p12")
        assert_ok(ws.ossl("pkcs12", "-export", "-inkey", key, "-in", cert, "-name", "k1",
                          "-passout", "pass:" + PIN, "-out", ks, *options, providers=None))
        os.chmod(ks, 0o600)
        pin = ws.write("imp.pin", PIN)
        ws.config.write_text(json.dumps({"tokens": [entry("imp", ks, pin)]}))
        return ws.config, cert

    return make


def test_keystore_exported_by_openssl_with_a_mac_is_used(ws, exported):
    _, cert = exported()
    p, sig, dg = sign_digest(ws, "ctok:token=imp;object=k1;type=private")
    assert_ok(p)
    assert_verified(verify_digest(ws, cert, dg, sig))


@pytest.mark.parametrize("options, phrase", [
    (("-nomac",), "has no MAC"),
    (("-nomac", "-keypbe", "NONE", "-certpbe", "NONE"), "has no MAC"),
    (("-keypbe", "NONE"), "stored unencrypted"),
], ids=["nomac", "nomac-nothing-encrypted", "plain-key-bag"])
def test_keystore_without_mac_or_with_a_plain_key_bag_is_refused(ws, exported, options, phrase):
    exported(*options)
    uri = "ctok:token=imp;object=k1;type=private"
    for code in (PIN, "any-other-code"):
        ws.write("imp.pin", code)
        p, sig, _ = sign_digest(ws, uri)
        assert_fails_with(p, phrase, "imp", str(ws.path("imp.p12")))
    assert_fails_with(ws.ctok("key", "list", "imp"), phrase, "imp")


# ---------------------------------------------------------------- 12: rewrites keep metadata


def test_config_rewrite_keeps_its_mode_and_owner(ws, soft1):
    gid = grp.getgrnam(OTHER_GROUP).gr_gid
    os.chown(ws.config, 0, gid)
    os.chmod(ws.config, 0o640)
    ws.create_token("soft2")
    st = ws.config.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 0, gid)
    assert [t["name"] for t in ws.load_config()["tokens"]] == ["soft1", "soft2"]


def test_keystore_rewrite_keeps_its_mode_and_owner(ws, soft1):
    gid = grp.getgrnam(OTHER_GROUP).gr_gid
    os.chown(soft1.keystore, 0, gid)
    os.chmod(soft1.keystore, 0o400)
    ws.generate(soft1, "k2", "ec:P-256")
    st = soft1.keystore.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o400, 0, gid)
    signs(ws, soft1)


def test_symlinked_config_is_not_replaced_by_a_plain_file(ws, soft1):
    real = ws.path("real-tokens.json")
    os.rename(ws.config, real)
    os.symlink(real, ws.config)
    before = real.read_bytes()
    p = ws.ctok("token", "create", "--type", "pkcs12", "--name", "soft2", "--keystore",
                ws.path("soft2.p12"), "--auth-file", soft1.pin_file)
    assert_fails_with(p, "symbolic link", str(ws.config))
    assert ws.config.is_symlink() and real.read_bytes() == before


# ---------------------------------------------------------------- confirm or fix


def test_rsa_key_larger_than_ctok_can_sign_with_is_refused(ws, soft1):
    before = soft1.keystore_bytes()
    p = ws.ctok("key", "generate", "soft1", "big", "rsa:16384", timeout=30)
    assert_fails_with(p, "rsa:16384", "8192")
    assert soft1.keystore_bytes() == before
