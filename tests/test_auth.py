"""Where a token's authentication code comes from: the URI (?pin-value, ?pin-source),
the token's auth config (file, environment variable, code stored encrypted under a
master key), or the application's passphrase callback (openssl -passin, or a prompt on
the terminal that names the token)."""

import os
import subprocess

import pytest

from ctoktest import (
    PIN,
    assert_fails_with,
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    run_with_tty,
    sign_digest,
    stored_auth,
    verify_digest,
)


@pytest.fixture
def soft1(make_token):
    return make_token("soft1", {"k1": "ec:P-256"})


@pytest.fixture
def prompting(ws, soft1):
    """soft1 switched to {"prompt": true}: no code in the configuration."""
    ws.set_token_fields(soft1, auth={"prompt": True})
    soft1.pin_file.unlink()
    return soft1


def signs(ws, tok, uri, *opts, env=None):
    p, sig, dg = sign_digest(ws, uri, *opts, env=env)
    assert_ok(p)
    assert_verified(verify_digest(ws, tok.cert("k1"), dg, sig))
    return p


def test_prompting_token_takes_code_from_passin_pass(ws, prompting):
    signs(ws, prompting, prompting.key_uri("k1"), "-passin", "pass:" + PIN)


def test_prompting_token_takes_code_from_passin_file(ws, prompting):
    f = ws.write("typed-elsewhere.txt", PIN + "\n")
    signs(ws, prompting, prompting.key_uri("k1"), "-passin", "file:%s" % f)


def test_prompt_on_terminal_names_the_token_and_accepts_typed_code(ws, prompting):
    """The URI names the token by id only, so the token name in the prompt comes from
    ctok, not from echoing the URI."""
    _, dg = digest_file(ws)
    sig = ws.path("tty.sig")
    argv = ws.ossl_argv("pkeyutl", "-sign", "-inkey", prompting.key_uri("k1", token_id=True),
                        "-in", dg, "-out", sig, "-pkeyopt", "digest:sha256")
    code, out, prompts = run_with_tty(argv, ws.ossl_env(), answers=[PIN])
    assert code == 0, out
    assert len(prompts) == 1, out
    assert "soft1" in prompts[0], "prompt does not name the token:\n" + out
    assert PIN not in out, "the code was echoed"
    assert_verified(verify_digest(ws, prompting.cert("k1"), dg, sig))


def test_prompting_token_without_any_code_fails_with_no_authentication_code(ws, prompting):
    """No -passin and no terminal: a clear error, not a hang."""
    _, dg = digest_file(ws)
    before = prompting.keystore_bytes()
    p = subprocess.run(
        ws.ossl_argv("pkeyutl", "-sign", "-inkey", prompting.key_uri("k1"), "-in", dg,
                     "-pkeyopt", "digest:sha256"),
        env=ws.ossl_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        errors="replace", timeout=30, start_new_session=True)
    assert_fails_with(p, "no authentication code")
    assert prompting.keystore_bytes() == before


def test_pin_value_in_uri_activates_prompting_token(ws, prompting):
    signs(ws, prompting, prompting.key_uri("k1", query="pin-value=" + PIN))


def test_pin_source_file_in_uri_activates_prompting_token(ws, prompting):
    f = ws.write("uri-pin.txt", PIN)
    signs(ws, prompting, prompting.key_uri("k1", query="pin-source=file:%s" % f))


def test_pin_value_in_uri_wins_over_token_auth_config(ws, soft1):
    soft1.pin_file.write_text("an-outdated-pin")
    signs(ws, soft1, soft1.key_uri("k1", query="pin-value=" + PIN))


def test_auth_file_with_one_trailing_newline_is_accepted(ws, soft1):
    soft1.pin_file.write_text(PIN + "\n")
    signs(ws, soft1, soft1.key_uri("k1"))


def test_auth_file_with_extra_characters_is_a_wrong_code(ws, soft1):
    """Only one trailing newline is stripped: the code is taken as written."""
    soft1.pin_file.write_text(PIN + " \n")
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "wrong authentication code")


def test_auth_code_from_environment_variable(ws, soft1):
    ws.set_token_fields(soft1, auth={"env": "SOFT1_PIN"})
    signs(ws, soft1, soft1.key_uri("k1"), env={"SOFT1_PIN": PIN})


def test_unset_environment_variable_gives_no_authentication_code(ws, soft1):
    ws.set_token_fields(soft1, auth={"env": "SOFT1_PIN"})
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"), env={"SOFT1_PIN": None})
    assert_fails_with(p, "no authentication code")


@pytest.fixture
def master_key(ws):
    key = os.urandom(32)
    path = ws.write("master.key", key, mode=0o600)
    conf = ws.load_config()
    conf["master_key"] = str(path)
    ws.save_config(conf)
    return key, path


def test_stored_auth_code_activates_token_without_any_other_code(ws, soft1, master_key):
    key, _ = master_key
    ws.set_token_fields(soft1, auth={"stored": stored_auth(key, soft1.id, PIN)})
    soft1.pin_file.unlink()
    signs(ws, soft1, soft1.key_uri("k1"))


def test_stored_auth_code_of_another_token_id_is_not_accepted(ws, soft1, master_key):
    """The token id is bound into the ciphertext: a blob copied from another token's
    entry does not decrypt."""
    key, _ = master_key
    blob = stored_auth(key, "00000000-0000-4000-8000-000000000000", PIN)
    ws.set_token_fields(soft1, auth={"stored": blob})
    before = soft1.keystore_bytes()
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "soft1")
    assert soft1.keystore_bytes() == before


def test_stored_auth_code_under_another_master_key_is_not_accepted(ws, soft1, master_key):
    ws.set_token_fields(soft1, auth={"stored": stored_auth(os.urandom(32), soft1.id, PIN)})
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "soft1")


def test_master_key_readable_by_others_is_refused(ws, soft1, master_key):
    key, path = master_key
    ws.set_token_fields(soft1, auth={"stored": stored_auth(key, soft1.id, PIN)})
    os.chmod(path, 0o644)
    p, _, _ = sign_digest(ws, soft1.key_uri("k1"))
    assert_fails_with(p, "insecure file permissions", str(path))


def test_auth_env_token_used_by_ctok_tool(ws, soft1):
    ws.set_token_fields(soft1, auth={"env": "SOFT1_PIN"})
    p = assert_ok(ws.ctok("key", "test", "soft1", "k1", env={"SOFT1_PIN": PIN}))
    assert "passed" in p.stdout, describe(p)


def test_ctok_tool_auth_file_option_overrides_token_config(ws, prompting):
    f = ws.write("tool.pin", PIN)
    p = assert_ok(ws.ctok("key", "generate", "soft1", "k2", "ec:P-256", "--auth-file", f))
    assert "k2" in p.stdout


@pytest.mark.parametrize("where", ["pin-value", "malformed-uri-with-pin-value", "auth-file"])
def test_auth_code_never_appears_in_ctok_errors_or_trace(ws, soft1, where):
    """No secret reaches an error or a log line (the openssl app itself may echo the URI
    it was given; only ctok's own lines are checked)."""
    secret = "S3cret-That-Must-Not-Show"
    if where == "pin-value":
        uri = soft1.key_uri("k1", query="pin-value=" + secret)
    elif where == "malformed-uri-with-pin-value":
        uri = "ctok:token=soft1;object=k%zz1;type=private?pin-value=" + secret
    else:
        soft1.pin_file.write_text(secret)
        uri = soft1.key_uri("k1")
    p, _, _ = sign_digest(ws, uri, debug=True)
    assert_fails_with(p)
    ours = [l for l in p.stderr.splitlines() if l.startswith("ctok[") or ":ctok:" in l]
    assert ours, describe(p)
    for line in ours:
        assert secret not in line, "auth code shown: " + line
