"""Two slots side by side through ctok-p11.so (tests/test_p11mod_slots.py): slot 0's slow work
(a C_Login, or the activation a find makes) is held at the token layer's "token-login" point
(CTOK_TEST_WAIT_AT=token-login:<dir>) until the test creates <dir>/go; meanwhile another
thread works on slot 1 and on the module's tables. No timing: the order of events decides.

    p11mod_slots_client.py MODULE login|find|finalize|fork DIR LABEL   (slot 0's PIN on stdin)
"""

import ctypes as C
import json
import os
import sys
import threading

from p11mod_client import (CKF_SERIAL_SESSION, CKO_PRIVATE_KEY, CKU_USER, SIGS, App, Module,
                           rv)

SIGS.update({"CloseSession": "u", "GetSessionInfo": "up", "GetTokenInfo": "up"})
BOUND = 30  # seconds: what a call held up by slot 0 would wait before the test gives up


class SessionInfo(C.Structure):
    _fields_ = [("slotID", C.c_ulong), ("state", C.c_ulong), ("flags", C.c_ulong),
                ("ulDeviceError", C.c_ulong)]


def session(m, slot):
    """An App on an already initialized module: a session of its own on slot."""
    app = App.__new__(App)
    app.m, app.h = m, C.c_ulong()
    assert m.OpenSession(slot, CKF_SERIAL_SESSION, None, None, C.byref(app.h)) == 0
    return app


def slow_work(m, how, pin, out):
    """slot 0's work, held at the token's login: a C_Login with the PIN, or a find of private
    keys, which activates a token whose code its config names."""
    app = session(m, 0)
    if how in ("login", "finalize", "fork"):
        b = C.create_string_buffer(pin.encode(), len(pin))
        out["a"] = rv(m.Login(app.h, CKU_USER, b, len(pin)))
    else:
        out["a"] = len(app.find(cls=CKO_PRIVATE_KEY))


def other_slot(m, label, out):
    """What must not wait for slot 0: the tables, slot 0's token info, slot 1's keys."""
    n = C.c_ulong()
    out["slot_list"] = rv(m.GetSlotList(0, None, C.byref(n)))
    out["slots"] = n.value
    app = session(m, 1)
    info = SessionInfo()
    out["session_info"] = rv(m.GetSessionInfo(app.h, C.byref(info)))
    out["token_info_0"] = rv(m.GetTokenInfo(0, C.create_string_buffer(512)))
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)
    out["b_keys"] = len(key)
    out["b_sign"] = app.sign(key[0], "ECDSA_SHA256", b"slot 1 signs")[0] if key else "no key"
    out["b_close"] = rv(m.CloseSession(app.h))
    a0 = session(m, 0)  # a new session of slot 0: the module's tables only
    out["open_on_0"] = "OK"
    out["session_info_0"] = rv(m.GetSessionInfo(a0.h, C.byref(info)))


def finalize_waits(m, out):
    """C_Finalize while slot 0's login is held: the module refuses new calls at once, and
    C_Finalize itself returns only once the held login is out of its slot."""
    t = threading.Thread(target=lambda: out.update(finalize=rv(m.Finalize(None))), daemon=True)
    t.start()
    n = C.c_ulong()
    for _ in range(BOUND * 100):  # until C_Finalize has begun (bounded)
        if rv(m.GetSlotList(0, None, C.byref(n))) == "CRYPTOKI_NOT_INITIALIZED":
            out["refused_meanwhile"] = True
            break
        threading.Event().wait(0.01)
    out["finalize_waited"] = t.is_alive()
    out["thread"] = t


def fork_child_runs(m, label, out):
    """fork() while slot 0's login is held in another thread (its slot lock taken, a user
    counted): the child, whose copy of that thread never goes on, initializes the module again,
    finds and signs on both slots and finalizes, none of it waiting for the parent's thread."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child = {"init": rv(m.Initialize(None))}
        try:
            for slot in (0, 1):
                app = session(m, slot)
                child["find_%d" % slot] = len(app.find(cls=CKO_PRIVATE_KEY))
            key = app.find(cls=CKO_PRIVATE_KEY, label=label)
            child["sign_1"] = app.sign(key[0], "ECDSA_SHA256", b"child")[0] if key else "no key"
            child["finalize"] = rv(m.Finalize(None))
        except AssertionError as e:
            child["error"] = repr(e)
        os.write(w, json.dumps(child).encode())
        os._exit(0)
    os.close(w)
    for _ in range(BOUND * 100):  # the child's end (bounded; a hung child is killed)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            break
        threading.Event().wait(0.01)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        out["child"] = "hung"
    data = os.read(r, 65536)
    out.setdefault("child", json.loads(data or b"{}"))


def main():
    m, how, wait_dir, label = Module(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    pin = sys.stdin.readline().rstrip("\n")
    assert m.Initialize(None) == 0
    a, b = {}, {}
    ta = threading.Thread(target=slow_work, args=(m, how, pin, a), daemon=True)
    ta.start()
    reached, go = os.path.join(wait_dir, "reached"), os.path.join(wait_dir, "go")
    res = {"reached": threading.Event().wait(0) or False}
    for _ in range(BOUND * 100):  # slot 0's thread at the point (bounded)
        if os.path.exists(reached):
            res["reached"] = True
            break
        threading.Event().wait(0.01)
    if how == "fork":
        fork_child_runs(m, label, b)
        res["b"] = b
        res["b_done_while_a_held"] = ta.is_alive()
        open(go, "w").close()
        ta.join(BOUND)
        res["a"] = a.get("a", "still held")
        print(json.dumps(res))
        sys.stdout.flush()
        os._exit(0)
    if how == "finalize":
        finalize_waits(m, b)
        t = b.pop("thread")
        res["b"] = dict(b)  # before the held login goes on
        open(go, "w").close()
        ta.join(BOUND)
        t.join(BOUND)
        res["a"], res["finalize"] = a.get("a", "still held"), b.get("finalize", "still waiting")
        res["initialize_again"] = rv(m.Initialize(None))
        print(json.dumps(res))
        sys.stdout.flush()
        os._exit(0)
    tb = threading.Thread(target=other_slot, args=(m, label, b), daemon=True)
    tb.start()
    tb.join(BOUND)
    res["b_done_while_a_held"] = not tb.is_alive() and ta.is_alive()
    res["b"] = b
    open(go, "w").close()  # slot 0 goes on
    ta.join(BOUND)
    tb.join(BOUND)
    res["a"] = a.get("a", "still held")
    print(json.dumps(res))
    sys.stdout.flush()
    os._exit(0)  # a thread still held must not keep the process


if __name__ == "__main__":
    main()
