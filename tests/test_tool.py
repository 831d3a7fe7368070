"""A user manages soft tokens with the `ctok` tool: create and list tokens, generate,
list, test and remove keys, import certificates; scripts read --json; errors are one
line; a crash in the middle of a keystore write loses nothing."""

import json
import os
import re
import signal
import subprocess
import time
import uuid

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from ctoktest import (
    PIN,
    assert_fails_with,
    assert_ok,
    assert_tool_error,
    assert_verified,
    describe,
    key_id_of_cert,
    run_with_tty,
    sign_digest,
    verify_digest,
    wait_stopped,
)


def key_list(ws, token):
    return json.loads(assert_ok(ws.ctok("key", "list", token, "--json")).stdout)


def aliases(ws, token):
    return sorted(k["alias"] for k in key_list(ws, token))


# ------------------------------------------------------------------ tokens


def test_token_create_writes_config_entry_with_new_unique_id(ws):
    a = ws.create_token("alpha")
    b = ws.create_token("beta", allow_export=True)
    assert a.id != b.id
    for t in (a, b):
        assert uuid.UUID(t.id)
    listed = json.loads(assert_ok(ws.ctok("token", "list", "--json")).stdout)
    by_name = {t["name"]: t for t in listed}
    assert set(by_name) == {"alpha", "beta"}
    assert by_name["alpha"]["id"] == a.id and by_name["beta"]["id"] == b.id
    assert by_name["alpha"]["type"] == "pkcs12"
    assert by_name["alpha"]["keystore"] == str(a.keystore)
    assert by_name["alpha"]["allow_export"] is False
    assert by_name["beta"]["allow_export"] is True
    assert by_name["alpha"]["explicit_ecc"] is False


def test_token_create_makes_config_file_that_ctok_itself_accepts(ws):
    ws.create_token("alpha")
    mode = ws.config.stat().st_mode & 0o777
    assert mode & 0o022 == 0, "config created writable by group/others: %o" % mode
    conf = ws.load_config()
    entry = conf["tokens"][0]
    assert entry["auth"] == {"file": str(ws.path("alpha.pin"))}
    assert entry["keystore"] == str(ws.path("alpha.p12"))


def test_token_create_records_absolute_paths_for_relative_arguments(ws):
    (ws.root / "alpha.pin").write_text(PIN)
    os.chmod(ws.root / "alpha.pin", 0o600)
    p = assert_ok(ws.ctok("token", "create", "--type", "pkcs12", "--name", "alpha", "--keystore",
                          "alpha.p12", "--auth-file", "alpha.pin", cwd=ws.root))
    assert "Created token 'alpha' (pkcs12, id " in p.stdout
    entry = ws.load_config()["tokens"][0]
    assert entry["keystore"] == str(ws.root / "alpha.p12")
    assert entry["auth"] == {"file": str(ws.root / "alpha.pin")}


def test_token_create_with_auth_env_records_variable_name(ws):
    p = assert_ok(ws.ctok("token", "create", "--type", "pkcs12", "--name", "envtok",
                          "--keystore", ws.path("envtok.p12"), "--auth-env", "MY_TOKEN_PIN",
                          env={"MY_TOKEN_PIN": PIN}))
    assert "Created token 'envtok'" in p.stdout
    assert ws.load_config()["tokens"][0]["auth"] == {"env": "MY_TOKEN_PIN"}
    gen = ws.ctok("key", "generate", "envtok", "k1", "ec:P-256", env={"MY_TOKEN_PIN": PIN})
    assert_ok(gen)


def test_token_create_with_explicit_ecc_flag_is_listed(ws):
    ws.create_token("ecc", explicit_ecc=True)
    listed = json.loads(assert_ok(ws.ctok("token", "list", "--json")).stdout)
    assert listed[0]["explicit_ecc"] is True


def test_token_create_with_duplicate_name_fails(ws):
    ws.create_token("alpha")
    before = ws.config.read_bytes()
    p = ws.ctok("token", "create", "--type", "pkcs12", "--name", "alpha", "--keystore",
                ws.path("other.p12"), "--auth-file", ws.path("alpha.pin"))
    assert_tool_error(p, "alpha")
    assert ws.config.read_bytes() == before


def test_token_create_on_existing_keystore_checks_the_code(ws, make_token):
    tok = make_token("alpha", {"k1": "ec:P-256"})
    wrong = ws.write("wrong.pin", "not-the-pin")
    before = tok.keystore_bytes()
    p = ws.ctok("token", "create", "--type", "pkcs12", "--name", "again", "--keystore",
                tok.keystore, "--auth-file", wrong)
    assert_tool_error(p, "wrong authentication code")
    assert tok.keystore_bytes() == before
    assert [t["name"] for t in ws.load_config()["tokens"]] == ["alpha"]
    # with the right code the second entry opens the same keys
    assert_ok(ws.ctok("token", "create", "--type", "pkcs12", "--name", "again", "--keystore",
                      tok.keystore, "--auth-file", tok.pin_file))
    assert aliases(ws, "again") == ["k1"]


def test_token_create_without_auth_option_prompts_twice_and_records_prompt(ws):
    code, out, prompts = run_with_tty(
        [ws.build / "ctok", "token", "create", "--type", "pkcs12", "--name", "typed",
         "--keystore", ws.path("typed.p12")], ws.env(), answers=[PIN, PIN])
    assert code == 0, out
    assert len(prompts) == 2, out
    assert "Created token 'typed'" in out
    assert PIN not in out, "the code was echoed"
    assert ws.load_config()["tokens"][0]["auth"] == {"prompt": True}
    # the keystore is protected by the typed code
    conf = ws.load_config()
    conf["tokens"][0]["auth"] = {"file": str(ws.write("typed.pin", PIN))}
    ws.save_config(conf)
    assert_ok(ws.ctok("key", "generate", "typed", "k1", "ec:P-256"))


def test_token_list_human_output_names_tokens(ws):
    a = ws.create_token("alpha")
    p = assert_ok(ws.ctok("token", "list"))
    assert "alpha" in p.stdout and a.id in p.stdout


def test_config_option_overrides_ctok_config_variable(ws):
    ws.create_token("alpha")
    p = assert_ok(ws.ctok("token", "list", "--json", "--config", ws.config,
                          env={"CTOK_CONFIG": ws.path("nothing-here.json")}))
    assert [t["name"] for t in json.loads(p.stdout)] == ["alpha"]


# ------------------------------------------------------------------ keys


def test_key_generate_reports_alias_type_and_id(ws):
    ws.create_token("soft1")
    p = assert_ok(ws.ctok("key", "generate", "soft1", "k1", "rsa:2048"))
    m = re.search(r"Generated RSA-2048 key 'k1' on token 'soft1' \(id ([0-9a-f]+)\)", p.stdout)
    assert m, describe(p)
    assert key_list(ws, "soft1")[0]["id"].lower() == m.group(1).lower()


EXPECTED = {
    "rsa2048": ("RSA", 2048, None),
    "rsa3072": ("RSA", 3072, None),
    "rsa4096": ("RSA", 4096, None),
    "p256": ("EC", 256, "P-256"),
    "p384": ("EC", 384, "P-384"),
    "p521": ("EC", 521, "P-521"),
    "ed25519": ("ED25519", None, None),  # 253 or 256: either is what OpenSSL may say
}


def test_key_list_reports_type_bits_curve_and_certificates_of_every_key(shared_ws, signer):
    listed = {k["alias"]: k for k in key_list(shared_ws, "signer")}
    assert set(listed) == set(EXPECTED)
    for alias, (kt, bits, curve) in EXPECTED.items():
        k = listed[alias]
        assert k["key_type"] == kt, k
        if bits is None:
            assert k["bits"] in (253, 256), k
        else:
            assert k["bits"] == bits, k
        assert k["curve"] == curve, k
        assert k["certificates"] == [alias], k


def test_key_id_is_sha1_of_subject_public_key(shared_ws, signer):
    """RFC 5280 method 1 ids: the same value a certificate's subjectKeyIdentifier has."""
    for k in key_list(shared_ws, "signer"):
        assert bytes.fromhex(k["id"]) == key_id_of_cert(signer.cert(k["alias"])), k


def test_key_generate_with_duplicate_alias_fails(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    before = tok.keystore_bytes()
    p = ws.ctok("key", "generate", "soft1", "k1", "ec:P-384")
    assert_tool_error(p, "duplicate alias", "k1")
    assert tok.keystore_bytes() == before
    assert [k["curve"] for k in key_list(ws, "soft1")] == ["P-256"]


def test_key_generate_with_unknown_spec_fails_without_touching_keystore(ws):
    tok = ws.create_token("soft1")
    before = tok.keystore_bytes()
    p = ws.ctok("key", "generate", "soft1", "k1", "rsa:1000")
    assert_fails_with(p)
    assert p.returncode in (1, 2), describe(p)
    assert p.stderr.startswith("ctok: "), describe(p)
    assert tok.keystore_bytes() == before


@pytest.mark.parametrize("alias", ["rsa2048", "p384", "ed25519"])
def test_key_test_signs_and_verifies(shared_ws, signer, alias):
    p = assert_ok(shared_ws.ctok("key", "test", "signer", alias))
    assert "passed" in p.stdout, describe(p)


def test_key_test_of_missing_key_fails(ws, make_token):
    make_token("soft1", {"k1": "ec:P-256"})
    assert_tool_error(ws.ctok("key", "test", "soft1", "nosuch"), "object not found")


def test_key_remove_deletes_key_and_its_certificates(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256", "k2": "ec:P-256"})
    role = ws.self_signed(tok, "k1", subject="/CN=k1 role", out=ws.path("role.pem"))
    ws.import_cert(tok, "k1-role", role)
    assert_ok(ws.ctok("key", "remove", "soft1", "k1"))
    assert aliases(ws, "soft1") == ["k2"]
    p = assert_ok(ws.ossl("storeutl", "-noout", "-certs", tok.uri()))
    assert p.stdout.count(": Certificate") == 1, describe(p)
    gone = ws.ossl("storeutl", "-noout", tok.uri(object="k1-role"))
    assert ": Certificate" not in gone.stdout, describe(gone)
    # the remaining key still signs
    s, sig, dg = sign_digest(ws, tok.key_uri("k2"))
    assert_ok(s)
    assert_verified(verify_digest(ws, tok.cert("k2"), dg, sig))


def test_key_remove_of_missing_key_fails(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    before = tok.keystore_bytes()
    assert_tool_error(ws.ctok("key", "remove", "soft1", "nosuch"), "object not found")
    assert tok.keystore_bytes() == before


# ------------------------------------------------------------------ certificates


def test_cert_import_links_certificate_to_key_with_same_public_key(ws, make_token):
    tok = make_token("soft1", {"k1": "rsa:2048"}, certs=False)
    cert = ws.self_signed(tok, "k1", subject="/CN=Carol")
    ws.import_cert(tok, "carol", cert)
    [k] = key_list(ws, "soft1")
    assert k["certificates"] == ["carol"]


def test_role_certificates_are_both_listed_for_their_key(ws, make_token):
    tok = make_token("soft1", {"shared": "ec:P-256"}, certs=False)
    for role in ("role-a", "role-b"):
        ws.import_cert(tok, role, ws.self_signed(tok, "shared", subject="/CN=" + role,
                                                 out=ws.path(role + ".pem")))
    [k] = key_list(ws, "soft1")
    assert sorted(k["certificates"]) == ["role-a", "role-b"]


def test_cert_import_of_certificate_without_key_uses_public_key_hash_as_id(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    key, cert = ws.path("foreign.key"), ws.path("foreign.pem")
    assert_ok(ws.ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj",
                      "/CN=Foreign CA", "-days", "2", "-out", cert, providers=None))
    ws.import_cert(tok, "foreign-ca", cert)
    p = assert_ok(ws.ossl("storeutl", "-noout", tok.uri(id=key_id_of_cert(cert))))
    assert p.stdout.count(": Certificate") == 1, describe(p)
    assert ": Pkey" not in p.stdout
    assert [k["alias"] for k in key_list(ws, "soft1")] == ["k1"]


def test_cert_import_of_garbage_fails_without_touching_keystore(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    junk = ws.write("junk.pem", "this is not a certificate\n", mode=0o644)
    before = tok.keystore_bytes()
    p = ws.ctok("cert", "import", "soft1", "junk", junk)
    assert_fails_with(p)
    assert p.returncode == 1 and p.stderr.startswith("ctok: "), describe(p)
    assert tok.keystore_bytes() == before


# ------------------------------------------------------------------ the keystore file


def test_keystore_is_standard_pkcs12_with_alias_and_id(ws, make_token):
    """Anyone with the code can open the keystore with other PKCS#12 tools: alias is the
    friendlyName, id the localKeyID."""
    tok = make_token("soft1", {"k1": "ec:P-256"})
    kid = bytes.fromhex(key_list(ws, "soft1")[0]["id"])
    ks = pkcs12.load_pkcs12(tok.keystore_bytes(), PIN.encode())
    assert ks.key is not None
    assert ks.cert is not None and ks.cert.friendly_name == b"k1"
    p = assert_ok(ws.ossl("pkcs12", "-in", tok.keystore, "-passin", "file:%s" % tok.pin_file,
                          "-nokeys", providers=None))
    assert "friendlyName: k1" in p.stdout, describe(p)
    assert "localKeyID: %s" % " ".join("%02X" % b for b in kid) in p.stdout, describe(p)


def test_tools_writing_one_keystore_at_once_lose_nothing(ws, make_token):
    """Several `ctok key generate` and `ctok cert import` runs on one keystore at the same
    time: every key and certificate is there afterwards, and the keystore is a valid
    PKCS#12 file (MAC checked by openssl) with one private key per generated key."""
    tok = make_token("soft1", {"c0": "ec:P-256", "c1": "ec:P-256"}, certs=False)
    certs = {"c%d-cert" % i: ws.self_signed(tok, "c%d" % i, out=ws.path("c%d.pem" % i))
             for i in range(2)}
    tool, env = str(ws.build / "ctok"), ws.env()
    generated = []
    for rnd in range(3):
        argvs = []
        for i in range(5):
            generated.append("g%d-%d" % (rnd, i))
            argvs.append(["key", "generate", "soft1", generated[-1], "ec:P-256"])
        if rnd == 0:
            argvs += [["cert", "import", "soft1", label, str(path)]
                      for label, path in certs.items()]
        procs = [subprocess.Popen([tool, *a], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
                 for a in argvs]
        for a, p in zip(argvs, procs):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, "%s: %s%s" % (" ".join(a), out, err)
    keys = key_list(ws, "soft1")
    assert sorted(k["alias"] for k in keys) == sorted(["c0", "c1", *generated])
    assert {k["alias"]: k["certificates"] for k in keys if k["alias"] in ("c0", "c1")} == {
        "c0": ["c0-cert"], "c1": ["c1-cert"]}
    p = assert_ok(ws.ossl("pkcs12", "-in", tok.keystore, "-passin", "file:%s" % tok.pin_file,
                          "-nodes", providers=None))
    assert p.stdout.count("-----BEGIN PRIVATE KEY-----") == 2 + len(generated), describe(p)
    assert p.stdout.count("-----BEGIN CERTIFICATE-----") == 2, describe(p)


# ------------------------------------------------------------------ command line


def test_options_may_appear_anywhere_after_the_command_words(ws, make_token):
    make_token("soft1", {"k1": "ec:P-256"})
    a = assert_ok(ws.ctok("key", "list", "soft1", "--json"))
    b = assert_ok(ws.ctok("key", "list", "--json", "soft1"))
    assert json.loads(a.stdout) == json.loads(b.stdout)


@pytest.mark.parametrize("argv", [
    ["key", "generate", "soft1"],
    ["frobnicate"],
    ["key", "list", "soft1", "--no-such-option"],
    [],
], ids=["missing-arguments", "unknown-command", "unknown-option", "nothing"])
def test_usage_errors_exit_2(ws, argv):
    ws.create_token("soft1")
    p = ws.ctok(*argv)
    assert p.returncode == 2, describe(p)
    assert p.stderr.strip(), "no usage message"


def test_unknown_token_is_a_one_line_error(ws):
    ws.create_token("soft1")
    line = assert_tool_error(ws.ctok("key", "list", "nosuch"), "unknown token", "nosuch")
    assert line.startswith("ctok: unknown token")


def test_missing_config_is_a_one_line_error(ws):
    # (token list on a fresh machine lists no tokens: tests/test_cli_conventions.py)
    assert_tool_error(ws.ctok("key", "list", "tok", env={"CTOK_CONFIG": ws.path("none.json")}),
                      "configuration error")


# ------------------------------------------------------------------ crash safety


def kill_at_keystore_write(ws, *argv):
    """Runs ctok with the crash hook, waits until it stops itself inside the keystore
    write, and SIGKILLs it there."""
    proc = subprocess.Popen([str(ws.build / "ctok"), *[str(a) for a in argv]],
                            env=ws.env({"CTOK_TEST_STOP_AT": "keystore-write"}),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        stopped = wait_stopped(proc.pid)
        if stopped is None:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise AssertionError("ctok never stopped at keystore-write (exit %s)\n%s\n%s"
                                 % (proc.returncode, out.decode(), err.decode()))
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def assert_keystore_intact(ws, tok, before, want_aliases):
    assert tok.keystore_bytes() == before, "keystore changed by the killed write"
    assert aliases(ws, tok.name) == want_aliases
    ks = pkcs12.load_pkcs12(tok.keystore_bytes(), PIN.encode())
    assert ks.key is not None
    s, sig, dg = sign_digest(ws, tok.key_uri("k1"))
    assert_ok(s)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig))


def test_kill_during_key_generate_leaves_keystore_with_earlier_keys(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256", "k2": "rsa:2048"})
    before = tok.keystore_bytes()
    kill_at_keystore_write(ws, "key", "generate", "soft1", "k3", "ec:P-384")
    assert_keystore_intact(ws, tok, before, ["k1", "k2"])
    # nothing left behind blocks the next write
    assert_ok(ws.ctok("key", "generate", "soft1", "k3", "ec:P-384"))
    assert aliases(ws, "soft1") == ["k1", "k2", "k3"]


def test_kill_during_cert_import_leaves_keystore_as_before(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256"})
    ws.generate(tok, "k2", "ec:P-256")
    cert = ws.self_signed(tok, "k2")
    before = tok.keystore_bytes()
    kill_at_keystore_write(ws, "cert", "import", "soft1", "k2", cert)
    assert_keystore_intact(ws, tok, before, ["k1", "k2"])
    assert {k["alias"]: k["certificates"] for k in key_list(ws, "soft1")}["k2"] == []
    assert_ok(ws.ctok("cert", "import", "soft1", "k2", cert))


def test_kill_during_key_remove_leaves_key_in_place(ws, make_token):
    tok = make_token("soft1", {"k1": "ec:P-256", "k2": "ec:P-256"})
    before = tok.keystore_bytes()
    kill_at_keystore_write(ws, "key", "remove", "soft1", "k2")
    assert_keystore_intact(ws, tok, before, ["k1", "k2"])
    assert_ok(ws.ctok("key", "remove", "soft1", "k2"))
    assert aliases(ws, "soft1") == ["k1"]
