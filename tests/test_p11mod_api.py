"""ctok-p11.so by the letter of PKCS#11 2.40 (issue 14), through a small ctypes application
(tests/p11mod_client.py): initialization, login, what is found when, the attribute rules,
the signature size query, and a forked child."""

import json
import re
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ctoktest import OPENSSL, PIN, assert_ok, describe, run
from p11modtest import CLIENT, MODULE, make_face, threads_binary


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    return make_face(request.param, tmp_path_factory, build)


def test_initialize_follows_the_spec(face):
    r = face.client("init")
    assert r == {"before": "CRYPTOKI_NOT_INITIALIZED", "first": "OK",
                 "second": "CRYPTOKI_ALREADY_INITIALIZED", "finalize": "OK",
                 "finalize_again": "CRYPTOKI_NOT_INITIALIZED", "os_locking": "OK",
                 "reserved": "ARGUMENTS_BAD", "one_callback": "ARGUMENTS_BAD"}


def typed(face, tmp_path, **fields):
    """The environment of a copy of the config where the token's code is typed (a prompt)."""
    return {"CTOK_CONFIG": face.config_with(tmp_path / "typed.json", auth={"prompt": True},
                                            **fields)}


def test_private_keys_of_a_token_whose_code_is_typed_show_only_while_logged_in(face, tmp_path):
    r = face.client("objects", "ec", pin=PIN, env=typed(face, tmp_path))
    assert r["before"] == {"private": 0, "certs": 3, "label": 2}, r  # certificate, public key
    assert r["login"] == "OK" and r["private_after_login"] == 3, r
    assert r["login_again"] == "USER_ALREADY_LOGGED_IN", r
    assert r["after"] == {"private": 3, "label_private": 1}, r
    # CKA_ID finds the certificate, the public and the private key of one key
    assert r["by_id"] == 3 and r["by_id_private"] is True, r
    assert r["logout"] == "OK" and r["logout_again"] == "USER_NOT_LOGGED_IN", r
    assert r["after_logout"] == {"private": 0}, r


def test_a_token_whose_code_its_config_names_needs_no_login(face):
    # the module activates it with that code on first need (as the provider does): private
    # keys show without C_Login; a C_Login with a NULL PIN (protected path) is still taken
    r = face.client("objects", "ec", pin="")
    assert r["before"] == {"private": 3, "certs": 3, "label": 3}, r
    assert r["login"] == "OK" and r["login_again"] == "USER_ALREADY_LOGGED_IN", r
    assert r["after"] == {"private": 3, "label_private": 1}, r
    assert r["by_id"] == 3 and r["by_id_private"] is True, r
    assert r["logout"] == "OK" and r["after_logout"] == {"private": 3}, r


def test_a_wrong_code_in_the_config_leaves_private_keys_hidden_and_c_login_says_why(face,
                                                                                   tmp_path):
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("not-the-pin-0000")
    wrong.chmod(0o600)
    env = {"CTOK_CONFIG": face.config_with(tmp_path / "wrong.json", auth={"file": str(wrong)})}
    r = face.client("objects", "ec", pin="", env=env)
    assert r["before"] == {"private": 0, "certs": 3, "label": 2}, r
    assert r["login"] == "PIN_INCORRECT" and r["after"]["private"] == 0, r


def test_a_wrong_pin_is_incorrect_and_does_not_log_in(face, tmp_path):
    r = face.client("objects", "ec", pin="not-the-pin-0000", env=typed(face, tmp_path))
    assert r["login"] == "PIN_INCORRECT" and r["private_after_login"] == 0, r
    # a typed token's code comes only from the application
    assert r["login_again"] == "ARGUMENTS_BAD" and r["after"]["private"] == 0, r
    # with the code in the config a PIN given to C_Login is still checked against it
    r = face.client("objects", "ec", pin="not-the-pin-0000")
    assert r["login"] == "PIN_INCORRECT" and r["login_again"] == "OK", r


def test_after_logout_a_new_login_needs_the_right_pin(face, tmp_path):
    r = face.client("relogin", "ec", pin=PIN + "\nnot-the-pin-0000", env=typed(face, tmp_path))
    assert r == {"login": "OK", "logout": "OK", "relogin": "PIN_INCORRECT", "private": 0}, r


def test_a_token_its_rules_keep_active_still_checks_the_pin_of_a_new_login(face, tmp_path):
    # no "deactivate": C_Logout cannot deactivate the token in the token layer
    env = typed(face, tmp_path, permissions=["view", "use", "activate", "keytest"])
    r = face.client("relogin", "ec", pin=PIN + "\nnot-the-pin-0000", env=env)
    assert r == {"login": "OK", "logout": "OK", "relogin": "PIN_INCORRECT", "private": 0}, r
    r = face.client("relogin", "ec", pin=PIN + "\n" + PIN, env=env)
    assert r == {"login": "OK", "logout": "OK", "relogin": "OK", "private": 1}, r


def test_attribute_rules(face):
    r = face.client("attributes", "rsa")
    unavailable = [{"len": "unavailable", "value": None}]
    assert r["sensitive"] == ["ATTRIBUTE_SENSITIVE", unavailable]
    assert r["private_exponent"] == ["ATTRIBUTE_SENSITIVE", unavailable]
    assert r["invalid"] == ["ATTRIBUTE_TYPE_INVALID", unavailable]
    assert r["label_query"] == ["OK", [{"len": 3, "value": None}]]
    assert r["label_small"] == ["BUFFER_TOO_SMALL", unavailable]
    # each attribute on its own: the label and key type are filled beside the sensitive value
    code, attrs = r["mixed"]
    assert code == "ATTRIBUTE_SENSITIVE", r
    assert attrs[0] == {"len": 3, "value": b"rsa".hex()} and attrs[1] == unavailable[0], r
    assert attrs[2]["len"] == 8 and int.from_bytes(bytes.fromhex(attrs[2]["value"]),
                                                   "little") == 0  # CKK_RSA
    assert r["start_date"] == ["OK", [{"len": 0, "value": ""}]]  # the spec's empty date
    # CKA_PUBLIC_KEY_INFO of the key, its public key object and its certificate: the
    # certificate's SubjectPublicKeyInfo as openssl writes it
    p = assert_ok(run([OPENSSL, "pkey", "-pubin", "-in", face.pubkey("rsa"), "-outform", "DER"],
                      face.env(), text=False))
    for name in ("private", "public", "cert"):
        assert r["spki_" + name] == ["OK", [{"len": len(p.stdout), "value": p.stdout.hex()}]], name


@pytest.mark.parametrize("alias,mech,md", [("rsa", "SHA256_RSA_PKCS", None),
                                           ("ec", "ECDSA_SHA256", None)])
def test_sign_size_query_and_small_buffer_keep_the_operation(face, tmp_path, alias, mech, md):
    sig = tmp_path / "sig"
    r = face.client("sign", alias, mech, sig)
    size = 256 if alias == "rsa" else 64
    assert r == {"small": ["BUFFER_TOO_SMALL", size], "query_after_small": "OK", "sign": "OK",
                 "siglen": size, "ended": "OPERATION_NOT_INITIALIZED"}, r
    raw = sig.read_bytes()
    if alias == "ec":
        # PKCS#11's r || s, as DER for openssl
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        sig.write_bytes(der)
    msg = tmp_path / "msg"
    msg.write_bytes(b"ctok-p11 signs this")
    p = assert_ok(run([OPENSSL, "dgst", "-sha256", "-verify", face.pubkey(alias), "-signature",
                       sig, msg], face.env()))
    assert "Verified OK" in p.stdout, describe(p)


def test_rsa_decryption_size_query_and_small_buffer_keep_the_operation(face):
    r = face.client("decrypt", "rsa", face.pubkey("rsa"))
    assert r == {"init": "OK", "query": ["OK", 256], "small": ["BUFFER_TOO_SMALL", 24],
                 "decrypt": "OK", "same": True, "ended": "OPERATION_NOT_INITIALIZED"}, r


def test_children_forked_while_threads_sign_initialize_the_module_again(face, tmp_path):
    # a fork() while a thread holds the module's lock, or is inside SoftHSM: the child must
    # inherit neither held (fork() waits for the calls into SoftHSM in flight; one child in 50
    # failed under ASan before it did)
    p = run([threads_binary(tmp_path), str(MODULE), "ec", "4", "1500", "50"], face.env(),
            input="\n", timeout=300)
    assert p.returncode == 0 and "forks_ok=50" in p.stdout, describe(p)


def test_a_forked_child_initializes_again_and_signs(face):
    r = face.client("fork", "ec", "ECDSA_SHA256")
    assert r == {"parent_before": "OK",
                 "child": {"slots": "CRYPTOKI_NOT_INITIALIZED", "login": "OK", "sign": "OK"},
                 "parent_after": "OK"}, r



def test_threads_open_sessions_find_and_sign_side_by_side(face, tmp_path):
    # tests/p11mod_threads.c: 8 threads, each 100 rounds of open session, find, sign, close
    p = run([threads_binary(tmp_path), str(MODULE), "ec", "8", "100"], face.env(), input="\n",
            timeout=120)
    assert p.returncode == 0 and "ok=800 failed=0" in p.stdout, describe(p)


def test_the_module_exports_only_its_entry_points_and_includes_only_the_token_layer():
    # nothing of the token layer, the backends or OpenSSL's glue shows to the application
    p = assert_ok(run(["nm", "-D", "--defined-only", str(MODULE)], {"PATH": "/usr/bin:/bin"}))
    assert sorted(l.split()[-1] for l in p.stdout.splitlines()) == [
        "C_GetFunctionList", "C_GetInterface", "C_GetInterfaceList"], p.stdout
    # like the provider, the module reaches backends only through store/token.h
    src = Path(__file__).resolve().parent.parent / "p11mod"
    for f in sorted(src.glob("*.[ch]")):
        local = re.findall(r'#include "([^"]+)"', f.read_text())
        assert set(local) <= {"p11mod.h", "pkcs11v3.h", "../store/token.h"}, (f.name, local)


def test_role_certificates_share_the_id_of_their_one_key(ws, build):
    # seed 004: several certificates of one key (role certificates), found by the key's id
    tok = ws.create_token("roles")
    kid = ws.add_key(tok, "signer", "ec:P-256")
    ws.import_cert(tok, "signer-role-b", ws.self_signed(tok, "signer", subject="/CN=role-b",
                                                         out=ws.path("role-b.pem")))
    p = run([sys.executable, str(CLIENT), str(MODULE), "by_id", kid.hex()], ws.env(),
            input="\n")
    r = json.loads(assert_ok(p).stdout)
    # the code is in the config: the private key shows before C_Login too
    assert r == {"before": {"certs": ["signer", "signer-role-b"], "public": ["signer"],
                            "private": ["signer"]},
                 "after": {"certs": ["signer", "signer-role-b"], "public": ["signer"],
                           "private": ["signer"]}}, r
