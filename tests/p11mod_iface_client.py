"""Cryptoki 3.0 interfaces of ctok-p11.so over ctypes (tests/test_p11mod_iface.py), beside
tests/p11mod_client.py: argv[1] the module, argv[2] the label of an EC key; the PIN on stdin.
Prints what the module answered as JSON."""

import ctypes as C
import json
import sys

from p11mod_client import (CKF_SERIAL_SESSION, CKM, CKO_PRIVATE_KEY, CKR, CKU_USER, FUNCS, SIGS,
                           App, Mech, Module, rv)

# The 2.40 list after what p11mod_client.FUNCS names, then what 3.0 adds (in the spec's order).
FUNCS_240 = FUNCS + ("SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal "
                     "VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate "
                     "SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair WrapKey "
                     "UnwrapKey DeriveKey SeedRandom GenerateRandom GetFunctionStatus "
                     "CancelFunction WaitForSlotEvent").split()
FUNCS_30 = ("GetInterfaceList GetInterface LoginUser SessionCancel MessageEncryptInit "
            "EncryptMessage EncryptMessageBegin EncryptMessageNext MessageEncryptFinal "
            "MessageDecryptInit DecryptMessage DecryptMessageBegin DecryptMessageNext "
            "MessageDecryptFinal MessageSignInit SignMessage SignMessageBegin SignMessageNext "
            "MessageSignFinal MessageVerifyInit VerifyMessage VerifyMessageBegin "
            "VerifyMessageNext MessageVerifyFinal").split()
SIGS.update({"GetInfo": "p", "LoginUser": "uupupu", "SessionCancel": "uu",
             "MessageSignInit": "upu", "SignMessageBegin": "upu", "MessageSignFinal": "u"})
CKR.update({"SESSION_HANDLE_INVALID": 0xB3, "USER_TYPE_INVALID": 0x103,
            "ATTRIBUTE_VALUE_INVALID": 0x13})
CKF_SIGN, CKF_FIND_OBJECTS, CKF_INTERFACE_FORK_SAFE = 0x800, 0x40, 1
for k, v in CKR.items():
    sys.modules["p11mod_client"].NAME[v] = k


class Version(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)]


class Interface(C.Structure):
    _fields_ = [("pInterfaceName", C.c_char_p), ("pFunctionList", C.c_void_p),
                ("flags", C.c_ulong)]


class FunctionList30(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)] + \
        [(f, C.c_void_p) for f in FUNCS_240 + FUNCS_30]


class Info(C.Structure):
    _fields_ = [("cryptokiVersion", Version), ("manufacturerID", C.c_char * 32),
                ("flags", C.c_ulong), ("libraryDescription", C.c_char * 32),
                ("libraryVersion", Version)]


def iface_str(i):
    v = C.cast(i.pFunctionList, C.POINTER(Version)).contents
    return "%s %d.%d flags=%d" % (i.pInterfaceName.decode(), v.major, v.minor, i.flags)


def get_interface(lib, name, version, flags=0):
    p = C.POINTER(Interface)()
    ver = Version(*version) if version else None
    r = lib.C_GetInterface(name, C.byref(ver) if ver else None, C.byref(p), C.c_ulong(flags))
    return rv(r), (p.contents if r == 0 else None)


def module_of(m, iface):
    """A Module calling through the interface's function list."""
    m2 = object.__new__(Module)
    m2.fl = C.cast(iface.pFunctionList, C.POINTER(FunctionList30)).contents
    return m2


def version_of(m):
    info = Info()
    r = m.GetInfo(C.byref(info))
    return rv(r), "%d.%d" % (info.cryptokiVersion.major, info.cryptokiVersion.minor)


def through(m, label, pin, v3):
    """Initialize, C_GetInfo, login (C_LoginUser on 3.0), an ECDSA signature; on 3.0 also
    C_SessionCancel of a signature and of a search, and a message-based function."""
    res = {}
    app = App(m)
    res["info"] = version_of(m)
    if v3:
        name = C.create_string_buffer(b"alice", 5)
        p = C.create_string_buffer(pin.encode(), max(len(pin), 1))
        res["login_named"] = rv(m.LoginUser(app.h, CKU_USER, p, len(pin), name, 5))
        res["login_named_null"] = rv(m.LoginUser(app.h, CKU_USER, p, len(pin), None, 5))
        res["login_so_named"] = rv(m.LoginUser(app.h, 0, p, len(pin), name, 5))
        res["login"] = rv(m.LoginUser(app.h, CKU_USER, p if pin else None, len(pin), None, 0))
        res["login_again"] = rv(m.LoginUser(app.h, CKU_USER, None, 0, name, 0))
    else:
        res["login"] = app.login(pin or None)
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
    data = b"ctok-p11 3.0 signs this"
    if v3:
        assert m.SignInit(app.h, Mech(CKM["ECDSA_SHA256"], None, 0), key) == 0
        res["cancel_other"] = rv(m.SessionCancel(app.h, CKF_FIND_OBJECTS))
        res["still_active"] = rv(m.SignInit(app.h, Mech(CKM["ECDSA_SHA256"], None, 0), key))
        res["cancel_sign"] = rv(m.SessionCancel(app.h, CKF_SIGN))
        n = C.c_ulong(0)
        d = C.create_string_buffer(data, len(data))
        res["sign_after_cancel"] = rv(m.Sign(app.h, d, len(data), None, C.byref(n)))
        res["cancel_none"] = rv(m.SessionCancel(app.h, 0))
        res["cancel_bad_session"] = rv(m.SessionCancel(app.h.value + 1000, CKF_SIGN))
        from p11mod_client import Attr
        arr = (Attr * 1)(Attr(0x102, None, 4))  # CKA_ID: NULL, 4 bytes
        res["find_null_value"] = rv(m.FindObjectsInit(app.h, arr, 1))
        assert m.FindObjectsInit(app.h, arr, 0) == 0
        res["cancel_find"] = rv(m.SessionCancel(app.h, CKF_FIND_OBJECTS | CKF_SIGN))
        out = (C.c_ulong * 4)()
        res["find_after_cancel"] = rv(m.FindObjects(app.h, out, 4, C.byref(n)))
        res["find_again"] = rv(m.FindObjectsInit(app.h, arr, 0))
        m.FindObjectsFinal(app.h)
        res["message_sign"] = rv(m.MessageSignInit(app.h, Mech(CKM["ECDSA"], None, 0), key))
        res["message_final"] = rv(m.MessageSignFinal(app.h))
    r, sig = app.sign(key, "ECDSA_SHA256", data)
    res["sign"] = r
    res["sig"] = sig
    res["finalize"] = rv(m.Finalize(None))
    return res


def main():
    path, label = sys.argv[1], sys.argv[2]
    pin = sys.stdin.readline().rstrip("\n")
    m = Module(path)
    lib = C.CDLL(path)
    res = {}
    n = C.c_ulong(99)
    res["count"] = [rv(lib.C_GetInterfaceList(None, C.byref(n))), n.value]
    arr = (Interface * 4)()
    n.value = 1
    res["small"] = [rv(lib.C_GetInterfaceList(arr, C.byref(n))), n.value]
    n.value = 4
    res["list"] = [rv(lib.C_GetInterfaceList(arr, C.byref(n))), n.value,
                   [iface_str(arr[i]) for i in range(min(n.value, 4))]]
    res["list_no_count"] = rv(lib.C_GetInterfaceList(arr, None))
    r, i = get_interface(lib, None, None)
    res["default"] = [r, iface_str(i) if i else None]
    r, i = get_interface(lib, b"PKCS 11", None)
    res["by_name"] = [r, iface_str(i) if i else None]
    r, i30 = get_interface(lib, b"PKCS 11", (3, 0))
    res["v3_0"] = [r, iface_str(i30) if i30 else None]
    r, i240 = get_interface(lib, b"PKCS 11", (2, 40))
    res["v2_40"] = [r, iface_str(i240) if i240 else None]
    fl = C.c_void_p()
    lib.C_GetFunctionList(C.byref(fl))
    res["v2_40_is_get_function_list"] = i240 is not None and i240.pFunctionList == fl.value
    res["v3_1"] = get_interface(lib, b"PKCS 11", (3, 1))[0]
    res["v2_0"] = get_interface(lib, b"PKCS 11", (2, 0))[0]
    res["vendor"] = get_interface(lib, b"Vendor ctok", None)[0]
    res["fork_safe"] = get_interface(lib, None, None, CKF_INTERFACE_FORK_SAFE)[0]
    res["no_out"] = rv(lib.C_GetInterface(None, None, None, C.c_ulong(0)))
    if i30 is not None:
        res["through_3_0"] = through(module_of(m, i30), label, pin, True)
    if i240 is not None:
        res["through_2_40"] = through(module_of(m, i240), label, pin, False)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
