"""Issue 5: a user activates a token (the code is checked against the keystore MAC or by a
PKCS#11 login), lets it auto-activate with --remember (the code stored encrypted under a
master key file created 0600), deactivates it again, changes and unlocks its code, and
encrypts a code with `ctok secret encrypt`. An application (`openssl pkeyutl`) signs without
any prompt while a code is stored, and asks for it (-passin) after `deactivate`."""

import base64
import json
import os
import subprocess

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ctoktest import (
    CTOK_FIRST,
    PIN,
    TIMEOUT,
    assert_fails_with,
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    run_with_tty,
    verify_digest,
)
from test_cli_support import NEW_PIN, WRONG_PIN, Kind, error_line, kind  # noqa: F401


def stored_code(kind, name="tok"):
    """The code of a token's {"stored": ...} auth, decrypted independently with the master
    key file (AES-256-GCM, nonce || ciphertext || tag, AAD ctok-auth-v1:<id>)."""
    conf = kind.ws.load_config()
    entry = kind.entry(name)
    blob = base64.b64decode(entry["auth"]["stored"])
    key = open(conf.get("master_key", kind.ws.path("master.key")), "rb").read()
    assert len(key) == 32
    return AESGCM(key).decrypt(blob[:12], blob[12:], b"ctok-auth-v1:" + entry["id"].encode()
                               ).decode()


def sign_detached(kind, tok, alias="k1", *opts):
    """openssl pkeyutl -sign with the token key, stdin /dev/null and no controlling
    terminal: it cannot prompt anybody."""
    ws = kind.ws
    _, dg = digest_file(ws)
    sig = ws.path("sig-%d.bin" % len(kind.outputs))
    argv = ws.ossl_argv("pkeyutl", "-sign", "-inkey", tok.key_uri(alias), "-in", dg, "-out", sig,
                        "-pkeyopt", "digest:sha256", *opts, providers=CTOK_FIRST)
    p = subprocess.run([str(a) for a in argv], env=ws.ossl_env(CTOK_FIRST), text=True,
                       capture_output=True, stdin=subprocess.DEVNULL, start_new_session=True,
                       timeout=TIMEOUT)
    kind.outputs += [p.stdout, p.stderr]
    return p, sig, dg


def remembered(kind, name="tok", alias="k1", configured_prompt=False):
    """A token with a key and certificate whose code is stored (activate --remember); the
    code file is gone afterwards, so only the stored copy can activate it. configured_prompt:
    its configured source (what deactivate restores) is the prompt, not the code file."""
    tok = kind.with_key(name, alias, "ec:P-256")
    if configured_prompt:
        assert_ok(kind.ctok("token", "modify", name, "--auth-prompt"))
    p = assert_ok(kind.ctok("token", "activate", name, "--auth-file", tok.pin_file,
                            "--remember"))
    assert "stored encrypted" in p.stdout and "auto-activation" in p.stdout, describe(p)
    tok.pin_file.unlink()
    return tok


# ------------------------------------------------------------------ activate


def test_activate_with_the_right_code_from_a_file_or_variable(kind):
    tok = kind.create("tok")
    before = kind.ws.config.read_bytes()
    p = assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", tok.pin_file))
    assert p.stdout.strip() == "Token 'tok': authentication code accepted"
    p = assert_ok(kind.ctok("token", "activate", "tok", "--auth-env", "CODE",
                            env={"CODE": PIN}))
    assert "accepted" in p.stdout
    assert kind.ws.config.read_bytes() == before, "activate without --remember changed the config"
    kind.assert_no_secret()


def test_activate_prompts_on_the_terminal_naming_the_token(kind):
    kind.create("tok")
    code, out, prompts = kind.tty(["token", "activate", "tok"], [PIN])
    assert code == 0, out
    assert len(prompts) == 1 and "tok" in prompts[0], prompts
    assert "accepted" in out and PIN not in out


def test_activate_with_a_wrong_code_fails_and_stores_nothing(kind):
    kind.create("tok")
    wrong = kind.ws.write("wrong.pin", WRONG_PIN)
    before = kind.ws.config.read_bytes()
    line = error_line(kind.ctok("token", "activate", "tok", "--auth-file", wrong, "--remember"),
                      "wrong authentication code", "tok")
    if kind.kind == "pkcs11":
        assert "CKR_PIN_INCORRECT" in line
    assert kind.ws.config.read_bytes() == before
    assert not kind.ws.path("master.key").exists()
    code, out, _ = kind.tty(["token", "activate", "tok"], [WRONG_PIN])
    assert code == 1 and "wrong authentication code" in out, out
    kind.assert_no_secret()


def test_activate_with_an_unset_variable_fails(kind):
    kind.create("tok")
    error_line(kind.ctok("token", "activate", "tok", "--auth-env", "NO_SUCH_VAR_4711",
                         env={"NO_SUCH_VAR_4711": None}), "NO_SUCH_VAR_4711")


def test_activate_remember_stores_the_code_encrypted_under_a_new_0600_master_key(kind):
    tok = kind.create("tok")
    configured = kind.entry("tok")["auth"]
    assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", tok.pin_file, "--remember"))
    conf = kind.ws.load_config()
    mk = kind.ws.path("master.key")
    assert conf.get("master_key", str(mk)) == str(mk)
    assert mk.stat().st_mode & 0o777 == 0o600
    assert mk.stat().st_size == 32
    # the configured source is kept beside the stored code, for deactivate
    assert set(kind.entry("tok")["auth"]) == {"stored", "fallback"}
    assert kind.entry("tok")["auth"]["fallback"] == configured
    assert PIN not in kind.ws.config.read_text()
    assert stored_code(kind) == PIN
    # token show says a code is stored, never the stored blob
    shown = assert_ok(kind.ctok("token", "show", "tok", "--json"))
    assert json.loads(shown.stdout)["auth"] == {"stored": True, "fallback": configured}
    assert kind.entry("tok")["auth"]["stored"] not in shown.stdout
    human = assert_ok(kind.ctok("token", "show", "tok"))
    assert kind.entry("tok")["auth"]["stored"] not in human.stdout


def test_activate_remember_uses_the_configured_master_key(kind):
    tok = kind.create("tok")
    (kind.ws.root / "keys").mkdir()
    mk = kind.ws.write("keys/my-master.key", os.urandom(32))
    conf = kind.ws.load_config()
    conf["master_key"] = str(mk)
    kind.ws.save_config(conf)
    assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", tok.pin_file, "--remember"))
    assert not kind.ws.path("master.key").exists()
    assert kind.ws.load_config()["master_key"] == str(mk)
    assert stored_code(kind) == PIN


# ------------------------------------------------------------------ auto-activation


def test_stored_code_lets_openssl_sign_without_any_prompt(kind):
    tok = remembered(kind)
    p, sig, dg = sign_detached(kind, tok)
    assert_ok(p)
    assert "pass phrase" not in p.stderr.lower(), describe(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))
    # and the tool too
    assert "passed" in assert_ok(kind.ctok("key", "test", "tok", "k1")).stdout


def test_after_deactivate_openssl_needs_the_code_and_takes_it_from_passin(kind):
    tok = remembered(kind, configured_prompt=True)
    p = assert_ok(kind.ctok("token", "deactivate", "tok"))
    assert "Token 'tok' deactivated" in p.stdout
    assert kind.entry("tok")["auth"] == {"prompt": True}
    p, _, _ = sign_detached(kind, tok)
    assert_fails_with(p, "no authentication code")
    p, sig, dg = sign_detached(kind, tok, "k1", "-passin", "pass:%s" % PIN)
    assert_ok(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))
    code_file = kind.ws.write("typed.code", PIN)
    p, sig, dg = sign_detached(kind, tok, "k1", "-passin", "file:%s" % code_file)
    assert_ok(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))
    p, _, _ = sign_detached(kind, tok, "k1", "-passin", "pass:%s" % WRONG_PIN)
    assert_fails_with(p, "wrong authentication code")


def test_after_deactivate_openssl_asks_on_the_terminal_naming_the_token(kind):
    tok = remembered(kind, configured_prompt=True)
    assert_ok(kind.ctok("token", "deactivate", "tok"))
    _, dg = digest_file(kind.ws)
    sig = kind.ws.path("tty.sig")
    argv = kind.ws.ossl_argv("pkeyutl", "-sign", "-inkey", tok.key_uri("k1"), "-in", dg, "-out",
                             sig, "-pkeyopt", "digest:sha256", providers=CTOK_FIRST)
    code, out, prompts = run_with_tty(argv, kind.ws.ossl_env(CTOK_FIRST), [PIN])
    assert code == 0, out
    assert len(prompts) == 1 and "tok" in prompts[0], prompts
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))


def test_reactivate_with_remember_restores_auto_activation(kind):
    tok = remembered(kind)
    assert_ok(kind.ctok("token", "deactivate", "tok"))
    code_file = kind.ws.write("again.code", PIN)
    assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", code_file, "--remember"))
    code_file.unlink()
    p, sig, dg = sign_detached(kind, tok)
    assert_ok(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))


def test_deactivate_of_a_token_without_a_stored_code_leaves_its_auth_as_it_was(kind):
    kind.create("tok")
    before = kind.entry("tok")["auth"]
    assert_ok(kind.ctok("token", "deactivate", "tok"))
    assert kind.entry("tok")["auth"] == before


# ------------------------------------------------------------------ secret encrypt


def test_secret_encrypt_output_pasted_into_the_config_auto_activates(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256")
    p = assert_ok(kind.ctok("secret", "encrypt", "--token", "tok", "--auth-file", tok.pin_file))
    blob = json.loads(p.stdout)
    assert set(blob) == {"stored"}
    assert PIN not in p.stdout
    assert kind.ws.path("master.key").stat().st_mode & 0o777 == 0o600
    kind.set_fields("tok", auth=blob)  # what a user does with the output, nothing more
    assert stored_code(kind) == PIN
    tok.pin_file.unlink()
    p, sig, dg = sign_detached(kind, tok)
    assert_ok(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))


def test_secret_encrypt_asks_twice_and_refuses_a_mismatch(kind):
    kind.create("tok")
    code, out, prompts = kind.tty(["secret", "encrypt", "--token", "tok"], [PIN, PIN])
    assert code == 0, out
    assert len(prompts) == 2 and "Repeat Authentication Code" in prompts[1], prompts
    assert '{"stored": "' in out and PIN not in out
    code, out, prompts = kind.tty(["secret", "encrypt", "--token", "tok"], [PIN, NEW_PIN])
    assert code == 1, out
    assert "does not match" in out and "stored" not in out.split("does not match")[1]


# ------------------------------------------------------------------ pin change / unlock


def test_pin_change_with_files_changes_the_code_on_the_token(kind):
    tok = kind.with_key("tok", "k1", "ec:P-256", cert=False)
    new = kind.ws.write("new.pin", NEW_PIN)
    p = assert_ok(kind.ctok("pin", "change", "tok", "--auth-file", tok.pin_file,
                            "--new-auth-file", new))
    assert "The authentication code of token 'tok' is changed" in p.stdout
    assert "update the token's auth file" in p.stdout
    assert kind.can_login("tok", NEW_PIN) and not kind.can_login("tok", PIN)
    error_line(kind.ctok("token", "activate", "tok", "--auth-file", tok.pin_file),
               "wrong authentication code")
    assert_ok(kind.ctok("token", "activate", "tok", "--auth-file", new))
    assert "passed" in assert_ok(kind.ctok("key", "test", "tok", "k1", "--auth-file", new)).stdout
    kind.assert_no_secret()


def test_pin_change_from_variables(kind):
    kind.create("tok")
    assert_ok(kind.ctok("pin", "change", "tok", "--auth-env", "OLD_CODE", "--new-auth-env",
                        "NEW_CODE", env={"OLD_CODE": PIN, "NEW_CODE": NEW_PIN}))
    assert kind.can_login("tok", NEW_PIN)


def test_pin_change_with_a_wrong_current_code_fails_and_keeps_the_code(kind):
    kind.create("tok")
    wrong = kind.ws.write("wrong.pin", WRONG_PIN)
    new = kind.ws.write("new.pin", NEW_PIN)
    before = kind.storage_digest()
    line = error_line(kind.ctok("pin", "change", "tok", "--auth-file", wrong, "--new-auth-file",
                                new), "wrong authentication code")
    if kind.kind == "pkcs11":
        assert "CKR_PIN_INCORRECT" in line
    assert kind.can_login("tok", PIN) and not kind.can_login("tok", NEW_PIN)
    assert kind.storage_digest() == before
    kind.assert_no_secret()


def test_pin_change_on_the_terminal_asks_current_new_and_repeat(kind):
    kind.create("tok")
    code, out, prompts = kind.tty(["pin", "change", "tok"], [PIN, NEW_PIN, NEW_PIN])
    assert code == 0, out
    assert len(prompts) == 3, prompts
    assert "Current" in prompts[0] and "Repeat Authentication Code" in prompts[2], prompts
    assert PIN not in out and NEW_PIN not in out
    assert kind.can_login("tok", NEW_PIN)


def test_pin_change_with_a_mismatched_repeated_code_keeps_the_old_code(kind):
    kind.create("tok")
    before = kind.storage_digest()
    code, out, prompts = kind.tty(["pin", "change", "tok"], [PIN, NEW_PIN, WRONG_PIN])
    assert code == 1, out
    assert "does not match" in out
    assert kind.can_login("tok", PIN) and not kind.can_login("tok", NEW_PIN)
    assert kind.storage_digest() == before


def test_pin_change_of_an_auto_activated_token_updates_the_stored_copy(kind):
    tok = remembered(kind)
    old = kind.ws.write("old.pin", PIN)
    new = kind.ws.write("new.pin", NEW_PIN)
    p = assert_ok(kind.ctok("pin", "change", "tok", "--auth-file", old, "--new-auth-file", new))
    assert "the stored copy too" in p.stdout
    assert stored_code(kind) == NEW_PIN
    assert kind.can_login("tok", NEW_PIN)
    p, sig, dg = sign_detached(kind, tok)
    assert_ok(p)
    assert_verified(verify_digest(kind.ws, tok.cert("k1"), dg, sig))


def test_pin_unlock_sets_a_new_pin_with_the_puk(build, tmp_path):
    from p11fixtures import SO_PIN

    k = Kind("pkcs11", tmp_path, build)
    k.with_key("tok", "k1", "ec:P-256", cert=False)
    puk = k.ws.write("puk", SO_PIN)
    new = k.ws.write("new.pin", NEW_PIN)
    p = assert_ok(k.ctok("pin", "unlock", "tok", "--puk-file", puk, "--auth-file", new))
    assert "The PIN of token 'tok' is set and unlocked" in p.stdout
    assert k.can_login("tok", NEW_PIN) and not k.can_login("tok", PIN)
    assert "passed" in assert_ok(k.ctok("key", "test", "tok", "k1", "--auth-file", new)).stdout
    k.assert_no_secret(PIN, NEW_PIN, SO_PIN)


def test_pin_unlock_of_a_pkcs12_token_says_the_type_has_no_pin_to_unlock(build, tmp_path):
    k = Kind("pkcs12", tmp_path, build)
    tok = k.create("tok")
    puk = k.ws.write("puk", "whatever-puk")
    before = k.storage_digest()
    error_line(k.ctok("pin", "unlock", "tok", "--puk-file", puk, "--auth-file", tok.pin_file),
               "pkcs12")
    assert k.storage_digest() == before


# ------------------------------------------------------------------ concurrency


def test_several_tokens_remembered_at_once_all_auto_activate(build, tmp_path):
    k = Kind("pkcs12", tmp_path, build)
    toks = [k.with_key("t%d" % i, "k1", "ec:P-256", cert=False) for i in range(6)]
    procs = [subprocess.Popen([str(k.ws.build / "ctok"), "token", "activate", t.name,
                               "--auth-file", str(t.pin_file), "--remember"], env=k.ws.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL) for t in toks]
    for p in procs:
        _, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
    for t in toks:
        t.pin_file.unlink()
    for t in toks:
        assert stored_code(k, t.name) == PIN
        assert "passed" in assert_ok(k.ctok("key", "test", t.name, "k1")).stdout


def test_codes_encrypted_at_once_before_any_master_key_exists_all_stay_usable(build, tmp_path):
    """Provisioning scripts run `ctok secret encrypt` in parallel on a fresh machine: every
    blob printed must decrypt under the one master key that is left."""
    k = Kind("pkcs12", tmp_path, build)
    tok = k.create("tok")
    assert not k.ws.path("master.key").exists()
    procs = [subprocess.Popen([str(k.ws.build / "ctok"), "secret", "encrypt", "--token", "tok",
                               "--auth-file", str(tok.pin_file)], env=k.ws.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for _ in range(8)]
    blobs = []
    for p in procs:
        out, err = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, err
        blobs.append(json.loads(out))
    lost = 0
    for b in blobs:
        k.set_fields("tok", auth=b)
        try:
            assert stored_code(k) == PIN
        except Exception:
            lost += 1
    assert lost == 0, ("%d of %d printed codes are encrypted under a master key that another "
                       "ctok process replaced" % (lost, len(blobs)))
