"""ctok-p11.so's Cryptoki 3.0 interfaces (issue 14): C_GetInterfaceList and C_GetInterface
offer "PKCS 11" 3.0 (the default) and 2.40, by the spec's matching rules; an application
works through either list (tests/p11mod_iface_client.py): C_GetInfo says the interface's
version, C_LoginUser without a user name logs in, C_SessionCancel ends what its flags name,
the message-based functions are honestly not supported."""

import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ctoktest import OPENSSL, PIN, assert_ok, describe, run
from p11modtest import MODULE, make_face

IFACE_CLIENT = Path(__file__).resolve().parent / "p11mod_iface_client.py"


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    return make_face(request.param, tmp_path_factory, build)


def iface_client(face, pin):
    p = assert_ok(run([sys.executable, str(IFACE_CLIENT), str(MODULE), "ec"], face.env(),
                      input=pin + "\n"))
    return json.loads(p.stdout.strip().splitlines()[-1])


def verifies(face, tmp_path, sig_hex, data):
    raw = bytes.fromhex(sig_hex)
    sig, msg = tmp_path / "sig", tmp_path / "msg"
    sig.write_bytes(encode_dss_signature(int.from_bytes(raw[:32], "big"),
                                         int.from_bytes(raw[32:], "big")))
    msg.write_bytes(data)
    p = run([OPENSSL, "dgst", "-sha256", "-verify", face.pubkey("ec"), "-signature", sig, msg],
            face.env())
    return p.returncode == 0 and "Verified OK" in p.stdout


@pytest.mark.parametrize("pin", [PIN, ""], ids=["pin", "code-from-config"])
def test_interfaces_by_the_spec_and_both_lists_work(face, tmp_path, pin):
    r = iface_client(face, pin)
    v3, v2 = "PKCS 11 3.0 flags=0", "PKCS 11 2.40 flags=0"
    assert r["count"] == ["OK", 2], r
    assert r["small"] == ["BUFFER_TOO_SMALL", 2], r
    assert r["list"] == ["OK", 2, [v3, v2]], r
    assert r["list_no_count"] == "ARGUMENTS_BAD", r
    # no name, no version: the default, 3.0
    assert r["default"] == ["OK", v3] and r["by_name"] == ["OK", v3], r
    assert r["v3_0"] == ["OK", v3] and r["v2_40"] == ["OK", v2], r
    assert r["v2_40_is_get_function_list"] is True, r
    # nothing matches: another version, another name, fork-safe (a child starts afresh)
    assert r["v3_1"] == r["v2_0"] == r["vendor"] == r["fork_safe"] == r["no_out"] == "ARGUMENTS_BAD", r

    t3 = r["through_3_0"]
    assert t3["info"] == ["OK", "3.0"], t3
    # a user name names no user of a ctok token; without one C_LoginUser is C_Login
    assert t3["login_named"] == "PIN_INCORRECT", t3
    assert t3["login_named_null"] == "ARGUMENTS_BAD", t3
    assert t3["login_so_named"] == "USER_TYPE_INVALID", t3
    assert t3["login"] == "OK" and t3["login_again"] == "USER_ALREADY_LOGGED_IN", t3
    # cancelling a search leaves the signature; cancelling the signature ends it
    assert t3["cancel_other"] == "OK" and t3["still_active"] == "0x90", t3  # OPERATION_ACTIVE
    assert t3["cancel_sign"] == "OK", t3
    assert t3["sign_after_cancel"] == "OPERATION_NOT_INITIALIZED", t3
    assert t3["cancel_none"] == "OK", t3
    assert t3["cancel_bad_session"] == "SESSION_HANDLE_INVALID", t3
    # a template value NULL with a length is refused (fuzz_p11mod_tmpl found it compared)
    assert t3["find_null_value"] == "ATTRIBUTE_VALUE_INVALID", t3
    assert t3["cancel_find"] == "OK", t3
    assert t3["find_after_cancel"] == "OPERATION_NOT_INITIALIZED", t3
    assert t3["find_again"] == "OK", t3
    assert t3["message_sign"] == t3["message_final"] == "FUNCTION_NOT_SUPPORTED", t3
    assert t3["sign"] == "OK" and t3["finalize"] == "OK", t3
    assert verifies(face, tmp_path, t3["sig"], b"ctok-p11 3.0 signs this")

    t2 = r["through_2_40"]
    assert t2["info"] == ["OK", "2.40"], t2
    assert t2["login"] == "OK" and t2["sign"] == "OK" and t2["finalize"] == "OK", t2
    assert verifies(face, tmp_path, t2["sig"], b"ctok-p11 3.0 signs this")
