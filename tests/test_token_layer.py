"""Issue 9, "a token layer ready for a backend that is far away", through the token API
(tests/token_layer.c, linked against libctok_store.a):
- a token whose backend needs no code (an instance role) logs in without reading its auth
  source or prompting, and never keeps a code;
- a login that is slow (a keystore's PBKDF2, a network credential fetch) blocks no other
  thread's lookups and signatures on the token;
- one key handle per (token, key) in a process, shared by threads, dropped when keys are
  generated or the token is deactivated, and never inherited by a forked child."""

import os
import subprocess

import pytest

from ctoktest import PIN, compile_store_driver, describe
from test_cli_support import Kind

SRC = os.path.join(os.path.dirname(__file__), "token_layer.c")


@pytest.fixture(scope="module")
def driver(tmp_path_factory, build):
    return compile_store_driver(build, SRC, tmp_path_factory.mktemp("token-layer") / "token_layer")


def run(k, driver, *args, env=None, token="tok"):
    argv = [str(driver), str(k.ws.config), token, *[str(a) for a in args]]
    p = subprocess.run(argv, env=k.ws.env(env), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "FAIL" not in p.stdout, describe(p)
    values = {}
    for line in p.stdout.split():
        if "=" in line:
            name, value = line.split("=", 1)
            values[name] = float(value)
    return values, p


def test_a_token_that_needs_no_code_logs_in_without_reading_or_prompting(driver, tmp_path, build):
    k = Kind("pkcs12", tmp_path, build)
    k.create("tok")
    # its auth source names a file that is not there: reading it would fail the login
    k.set_fields("tok", auth={"file": str(tmp_path / "absent.pin")})
    v, p = run(k, driver, "nocode")
    assert v["login"] == 1 and v["logins"] >= 1 and v["prompts"] == 0, describe(p)
    assert v["with_code"] == 0 and v["kept_code"] == 0, describe(p)
    assert v["sign"] == 1, describe(p)
    assert v["activate_nocode"] == 1 and v["active"] == 1, describe(p)
    assert v["activate_code"] == 1, describe(p)
    assert "absent.pin" not in p.stderr, describe(p)


@pytest.mark.parametrize("kind", ["pkcs12", "pkcs11"])
def test_a_slow_login_does_not_block_a_signing_thread(driver, tmp_path, build, kind):
    k = Kind(kind, tmp_path, build)
    k.with_key("tok", "k1", "rsa:2048", cert=False)
    v, p = run(k, driver, "slowlogin", "k1", env={"CTOK_TEST_DELAY_AT": "token-login:1500"})
    assert v["login"] == 1 and v["login_ms"] >= 1400, describe(p)
    assert v["signs_before"] >= 10 and v["signs"] > v["signs_before"], describe(p)
    # the signer kept going through the whole login, each round in well under the delay
    assert v["rounds_during_login"] >= 100, describe(p)
    assert v["max_ms_during_login"] < 300, describe(p)
    if kind == "pkcs12":  # a keystore's key handle keeps signing; a PKCS#11 token refuses
        assert v["signs_during_login"] == v["rounds_during_login"], describe(p)


@pytest.mark.parametrize("kind", ["pkcs12", "pkcs11"])
def test_one_key_handle_per_key_shared_and_dropped(driver, tmp_path, build, kind):
    k = Kind(kind, tmp_path, build)
    k.with_key("tok", "k1", "ec:P-256", cert=False)
    v, p = run(k, driver, "cache", "k1")
    assert v["second_load_same"] == 1 and v["threads_same"] == 1, describe(p)
    assert v["child_same"] == 0 and v["child_sign"] == 1, describe(p)
    assert v["parent_after_fork_same"] == 1, describe(p)
    assert v["after_generate_same"] == 0 and v["old_handle_signs"] == 1, describe(p)
    assert v["after_deactivate_same"] == 0, describe(p)


@pytest.mark.parametrize("kind", ["pkcs12", "pkcs11"])
def test_deactivation_ends_the_login_so_a_wrong_code_is_rejected_after(driver, tmp_path, build,
                                                                       kind):
    """A PKCS#11 token still logged in would answer any PIN with CKR_USER_ALREADY_LOGGED_IN."""
    k = Kind(kind, tmp_path, build)
    k.with_key("tok", "k1", "ec:P-256", cert=False)
    v, p = run(k, driver, "relogin", "wrong-code-4711", PIN)
    assert v["wrong_after_deactivate"] == 0 and v["active_after_wrong"] == 0, describe(p)
    assert v["right_after_deactivate"] == 1, describe(p)


def test_a_pkcs11_reconnect_drops_the_cached_key_handles(driver, tmp_path, build):
    from p11fixtures import require_shim

    k = Kind("pkcs11", tmp_path, build)
    k.with_key("tok", "k1", "ec:P-256", cert=False)
    k.set_fields("tok", library=str(require_shim()))
    v, p = run(k, driver, "reconnect", "k1", env={"CTOK_SHIM_DISCONNECT_EVERY": "4",
                                                   "CTOK_DEBUG": "1"})
    assert "re-initializing" in p.stderr, describe(p)  # the module did disconnect
    assert v["signs"] == 10 and v["new_handle_signs"] == 1, describe(p)
    assert v["after_reconnect_same"] == 0, describe(p)


def test_certificate_import_writes_into_the_folder_of_a_token_that_keeps_none(driver, tmp_path,
                                                                               build):
    """A backend without certificate storage (cloud keys): cert import writes
    <first certificate folder>/<alias>.pem, after checking it carries the key's public key;
    the token then reports it with the key."""
    k = Kind("pkcs12", tmp_path, build)
    k.create("tok")
    certs = tmp_path / "certs"
    certs.mkdir(mode=0o755)
    k.set_fields("tok", certificates=[str(certs)])
    v, p = run(k, driver, "putcert")
    assert v["refused_other"] == 1 and v["refused_path"] == 1, describe(p)
    assert "carries another public key" in p.stderr, describe(p)
    assert v["put"] == 1 and v["certs_before"] == 0 and v["certs_after"] == 1, describe(p)
    written = certs / "role-key.pem"
    assert written.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert written.stat().st_mode & 0o022 == 0
    assert sorted(x.name for x in certs.iterdir()) == ["role-key.pem"]
