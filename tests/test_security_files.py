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


# ---------------------------------------------------------------- faults


@pytest.mark.parametrize("replaced", ["keystore", "config"])
def test_file_renamed_over_while_a_server_uses_its_key_keeps_it_serving(ws, soft1, replaced):
    """A TLS server has loaded its token key; then an administrator renames another keystore
    (another code) or another config over the file. The server keeps serving with the key it
    holds, and the files are what the administrator put there."""
    other = ws.create_token("other", pin="another-code")
    ws.generate(other, "o1", "ec:P-256")
    with TlsServer(ws, soft1.key_uri("k1"), soft1.certs["k1"]) as srv:
        if replaced == "keystore":
            target, new = soft1.keystore, other.keystore.read_bytes()
            os.rename(other.keystore, target)
        else:
            target = ws.config
            conf = ws.load_config()
            conf["tokens"] = [t for t in conf["tokens"] if t["name"] == "other"]
            new = json.dumps(conf).encode()
            staged = ws.write("staged.json", new, mode=0o644)
            os.rename(staged, target)
        assert_handshake(tls_client(ws, srv.port, soft1.certs["k1"]), srv)
    assert target.read_bytes() == new
    if replaced == "keystore":  # a new process sees the new file: no k1 there
        p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
        assert_fails_with(p, "soft1", "object not found")


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs for the disk-full test: %s" % p.stderr.strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_disk_full_while_writing_a_keystore_keeps_the_old_one(ws, small_disk):
    tok = ws.create_token("soft1", keystore=small_disk / "soft1.p12")
    ws.generate(tok, "k1", "ec:P-256")
    before = tok.keystore.read_bytes()
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    p = ws.ctok("key", "generate", "soft1", "k2", "rsa:2048")
    assert_fails_with(p, "soft1", "No space left on device")
    assert tok.keystore.read_bytes() == before, "the keystore changed on a full disk"
    left = sorted(x.name for x in small_disk.iterdir())
    assert left == ["filler", "soft1.p12"], left  # no temp file, and the lock file is removed
    filler.unlink()
    assert "k1" in assert_ok(ws.ctok("key", "list", "soft1")).stdout


# ---------------------------------------------------------------- confirm or fix


def test_rsa_key_larger_than_ctok_can_sign_with_is_refused(ws, soft1):
    before = soft1.keystore_bytes()
    p = ws.ctok("key", "generate", "soft1", "big", "rsa:16384", timeout=30)
    assert_fails_with(p, "rsa:16384", "8192")
    assert soft1.keystore_bytes() == before


@pytest.mark.parametrize("ids, phrase", [
    ((None, None), "has no CKA_ID"),
    (("01", "01"), "shares its CKA_ID with another key"),
], ids=["empty-id", "shared-id"])
def test_removing_an_hsm_key_whose_id_is_not_its_own_leaves_other_keys(fresh_hsm, ids, phrase):
    hw = fresh_hsm
    hw.hsm.init_token("noid", PIN)
    for label, kid in zip(("a", "b"), ids):
        assert_ok(hw.hsm.tool("--token-label", "noid", "--login", "--pin", PIN, "--keypairgen",
                              "--key-type", "EC:prime256v1", "--label", label,
                              *(("--id", kid) if kid else ())))
    objs = hw.hsm.objects("noid", "privkey", pin=PIN)
    assert sorted(o.get("label") for o in objs) == ["a", "b"], objs
    assert all(o.get("id", "") == (ids[0] or "") for o in objs), objs
    hw.create_p11_token("hsm", ref="noid")
    p = hw.ctok("key", "remove", "hsm", "a")
    assert_fails_with(p, "hsm", phrase)
    assert sorted(o.get("label") for o in hw.hsm.objects("noid", "privkey", pin=PIN)) == \
        ["a", "b"]


def test_removing_a_soft_key_without_local_key_id_leaves_the_other_keys(ws):
    """A keystore made elsewhere whose keys carry no localKeyID: removal tells them apart
    by their public keys."""
    pems = [assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt",
                              "ec_paramgen_curve:P-256", providers=None, text=False)).stdout
            for _ in range(2)]
    ks = ws.path("noid.p12")
    two_key_keystore(pems, ["first-key", "second-key"], PIN, ks)
    os.chmod(ks, 0o600)
    ws.config.write_text(json.dumps({"tokens": [entry("noid", ks, ws.write("noid.pin", PIN))]}))
    assert_ok(ws.ctok("key", "remove", "noid", "first-key"))
    listed = assert_ok(ws.ctok("key", "list", "noid")).stdout
    assert "second-key" in listed and "first-key" not in listed, listed


def two_key_keystore(pems, names, password, out):
    """A PKCS#12 file (MAC, shrouded key bags, no localKeyID) with several keys: what
    `openssl pkcs12 -export` cannot make, made with libcrypto's own PKCS12 calls."""
    c = ctypes.CDLL("libcrypto.so.3")
    vp, pvp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    sigs = {
        "BIO_new_mem_buf": (vp, [ctypes.c_char_p, ctypes.c_int]),
        "PEM_read_bio_PrivateKey": (vp, [vp, vp, vp, vp]),
        "PKCS12_add_key": (vp, [pvp, vp, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                ctypes.c_char_p]),
        "PKCS12_add_friendlyname_asc": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_int]),
        "PKCS12_add_safe": (ctypes.c_int, [pvp, vp, ctypes.c_int, ctypes.c_int,
                                           ctypes.c_char_p]),
        "PKCS12_add_safes": (vp, [vp, ctypes.c_int]),
        "PKCS12_set_mac": (ctypes.c_int, [vp, ctypes.c_char_p, ctypes.c_int, vp, ctypes.c_int,
                                          ctypes.c_int, vp]),
        "i2d_PKCS12": (ctypes.c_int, [vp, ctypes.POINTER(ctypes.c_char_p)]),
    }
    for name, (res, args) in sigs.items():
        getattr(c, name).restype, getattr(c, name).argtypes = res, args
    bags, safes, pw = vp(), vp(), password.encode()
    for pem, name in zip(pems, names):
        key = c.PEM_read_bio_PrivateKey(c.BIO_new_mem_buf(pem, len(pem)), None, None, None)
        bag = c.PKCS12_add_key(ctypes.byref(bags), key, 0, 2048, 427, pw)  # AES-256-CBC
        assert key and bag and c.PKCS12_add_friendlyname_asc(bag, name.encode(), -1) == 1
    assert c.PKCS12_add_safe(ctypes.byref(safes), bags, -1, 0, None) == 1
    p12 = c.PKCS12_add_safes(safes, 0)
    assert p12 and c.PKCS12_set_mac(p12, pw, -1, None, 0, 2048, None) == 1
    der = ctypes.c_char_p()
    n = c.i2d_PKCS12(p12, ctypes.byref(der))
    assert n > 0
    out.write_bytes(ctypes.string_at(der, n))  # a test process: leaks are not kept
