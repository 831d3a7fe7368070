"""A lock per slot in ctok-p11.so: a slow login or activation on one slot holds up neither
another slot nor the module's tables (C_GetSlotList, C_OpenSession, C_GetSessionInfo,
C_GetTokenInfo). The slow work is held at the token layer's login (CTOK_TEST_WAIT_AT) until
the other slot's work is done: an order of events, no timing."""

import json
import sys
from pathlib import Path

import pytest

from ctoktest import PIN, Workspace, assert_ok, run
from p11modtest import MODULE, require_module

CLIENT = Path(__file__).resolve().parent / "p11mod_slots_client.py"


@pytest.fixture
def two_slots(tmp_path, build):
    """Two keystore tokens with an EC key each: slot 0 'slow0', slot 1 'fast1'."""
    require_module()
    ws = Workspace(tmp_path, build)
    slow, fast = ws.create_token("slow0"), ws.create_token("fast1")
    ws.add_key(slow, "a", "ec:P-256", cert=False)
    ws.add_key(fast, "b", "ec:P-256", cert=False)
    return ws, slow


def held(ws, how, tmp_path, env=None):
    wait_dir = tmp_path / "wait"
    wait_dir.mkdir()
    p = run([sys.executable, str(CLIENT), str(MODULE), how, str(wait_dir), "b"],
            ws.env(dict(env or {}, CTOK_TEST_WAIT_AT="token-login:%s" % wait_dir)),
            input=PIN + "\n")
    assert_ok(p)
    return json.loads(p.stdout.strip().splitlines()[-1])


OTHER = {"slot_list": "OK", "slots": 2, "session_info": "OK", "token_info_0": "OK",
         "b_keys": 1, "b_sign": "OK", "b_close": "OK", "open_on_0": "OK",
         "session_info_0": "OK"}


def test_a_login_held_on_one_slot_lets_a_thread_on_another_slot_find_and_sign(two_slots, tmp_path):
    ws, slow = two_slots
    ws.set_token_fields(slow, auth={"prompt": True})  # slot 0's code is typed: C_Login
    r = held(ws, "login", tmp_path)
    assert r["reached"], r
    assert r["b_done_while_a_held"] and r["b"] == OTHER, r
    assert r["a"] == "OK", r  # the held login ends well once let go


def test_an_activation_held_on_one_slot_lets_a_thread_on_another_slot_find_and_sign(two_slots, tmp_path):
    # slot 0's code is its config's: its first find activates it, held at the login
    ws, _ = two_slots
    r = held(ws, "find", tmp_path)
    assert r["reached"], r
    assert r["b_done_while_a_held"] and r["b"] == OTHER, r
    assert r["a"] == 1, r


def test_finalize_in_a_thread_waits_for_a_login_held_on_a_slot(two_slots, tmp_path):
    # the rule: C_Finalize refuses new calls at once, frees nothing while a thread is in a
    # slot, and returns once that thread is out; the held login ends well
    ws, slow = two_slots
    ws.set_token_fields(slow, auth={"prompt": True})
    r = held(ws, "finalize", tmp_path)
    assert r["reached"], r
    assert r["b"] == {"refused_meanwhile": True, "finalize_waited": True}, r
    assert r["a"] == "OK" and r["finalize"] == "OK", r
    assert r["initialize_again"] == "OK", r


def test_a_child_forked_while_a_thread_holds_a_slot_initializes_and_signs(two_slots, tmp_path):
    # no fork handler takes a slot's lock; the child drops the parent's slots (one of them
    # locked by a thread the child does not have) and counts no thread in a slot
    ws, slow = two_slots
    ws.set_token_fields(slow, auth={"prompt": True})
    r = held(ws, "fork", tmp_path)
    assert r["reached"] and r["b_done_while_a_held"], r
    assert r["b"]["child"] == {"init": "OK", "find_0": 0, "find_1": 1, "sign_1": "OK",
                               "finalize": "OK"}, r
    assert r["a"] == "OK", r
