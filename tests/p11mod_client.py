"""A small PKCS#11 application over ctypes, for the tests of ctok-p11.so (tests/test_p11mod_*.py):
it loads the module named by argv[1], runs one story (argv[2], its arguments after it) and
prints what the module answered as JSON. It runs as its own process, with the workspace's
environment (CTOK_CONFIG); a PIN comes on stdin, never in argv."""

import ctypes as C
import json
import os
import sys

CKR = {"OK": 0, "ARGUMENTS_BAD": 0x7, "ATTRIBUTE_SENSITIVE": 0x11, "ATTRIBUTE_TYPE_INVALID": 0x12,
       "BUFFER_TOO_SMALL": 0x150, "CRYPTOKI_NOT_INITIALIZED": 0x190,
       "CRYPTOKI_ALREADY_INITIALIZED": 0x191, "PIN_INCORRECT": 0xA0,
       "USER_ALREADY_LOGGED_IN": 0x100, "USER_NOT_LOGGED_IN": 0x101,
       "OPERATION_NOT_INITIALIZED": 0x91, "KEY_HANDLE_INVALID": 0x60,
       "FUNCTION_NOT_SUPPORTED": 0x54, "MECHANISM_INVALID": 0x70,
       "KEY_FUNCTION_NOT_PERMITTED": 0x68, "KEY_TYPE_INCONSISTENT": 0x63}
NAME = {v: k for k, v in CKR.items()}
UNAVAILABLE = (1 << (8 * C.sizeof(C.c_ulong))) - 1

CKA_CLASS, CKA_LABEL, CKA_VALUE, CKA_ID = 0x0, 0x3, 0x11, 0x102
CKA_PRIVATE_EXPONENT, CKA_MODULUS, CKA_KEY_TYPE = 0x123, 0x120, 0x100
CKA_PUBLIC_KEY_INFO, CKA_START_DATE = 0x129, 0x110
CKO_CERTIFICATE, CKO_PUBLIC_KEY, CKO_PRIVATE_KEY = 1, 2, 3
CKU_USER, CKF_SERIAL_SESSION, CKF_OS_LOCKING_OK = 1, 4, 2
CKM = {"RSA_PKCS": 0x1, "RSA_PKCS_PSS": 0xD, "SHA256_RSA_PKCS": 0x40, "SHA384_RSA_PKCS": 0x41,
       "SHA512_RSA_PKCS": 0x42, "SHA256_RSA_PKCS_PSS": 0x43, "SHA384_RSA_PKCS_PSS": 0x44,
       "SHA512_RSA_PKCS_PSS": 0x45, "ECDSA": 0x1041, "ECDSA_SHA256": 0x1044,
       "ECDSA_SHA384": 0x1045, "ECDSA_SHA512": 0x1046, "EDDSA": 0x1057}
CKM.update({"RSA_PKCS_OAEP": 0x9, "ECDH1_DERIVE": 0x1050})

# The 2.40 function list, in order.
FUNCS = ("Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo GetTokenInfo "
         "GetMechanismList GetMechanismInfo InitToken InitPIN SetPIN OpenSession CloseSession "
         "CloseAllSessions GetSessionInfo GetOperationState SetOperationState Login Logout "
         "CreateObject CopyObject DestroyObject GetObjectSize GetAttributeValue SetAttributeValue "
         "FindObjectsInit FindObjects FindObjectsFinal EncryptInit Encrypt EncryptUpdate "
         "EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal DigestInit Digest "
         "DigestUpdate DigestKey DigestFinal SignInit Sign SignUpdate SignFinal").split()


# What the stories call, and how: 'u' an unsigned long (handles, counts, flags), 'p' a pointer.
SIGS = {"GetMechanismList": "upp", "Initialize": "p", "Finalize": "p", "GetSlotList": "upp", "OpenSession": "uuppp",
        "Login": "uupu", "Logout": "u", "FindObjectsInit": "upu", "FindObjects": "upup",
        "FindObjectsFinal": "u", "GetAttributeValue": "uupu", "SignInit": "upu",
        "Sign": "upupp", "DecryptInit": "upu", "Decrypt": "upupp"}


class Attr(C.Structure):
    _fields_ = [("type", C.c_ulong), ("pValue", C.c_void_p), ("ulValueLen", C.c_ulong)]


class Mech(C.Structure):
    _fields_ = [("mechanism", C.c_ulong), ("pParameter", C.c_void_p),
                ("ulParameterLen", C.c_ulong)]


class InitArgs(C.Structure):
    _fields_ = [("CreateMutex", C.c_void_p), ("DestroyMutex", C.c_void_p),
                ("LockMutex", C.c_void_p), ("UnlockMutex", C.c_void_p), ("flags", C.c_ulong),
                ("pReserved", C.c_void_p)]


class FunctionList(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)] + [(f, C.c_void_p) for f in FUNCS]


class Module:
    def __init__(self, path):
        lib = C.CDLL(path)
        fl = C.POINTER(FunctionList)()
        assert lib.C_GetFunctionList(C.byref(fl)) == 0
        self.fl = fl.contents

    def __getattr__(self, name):
        """The function, typed by SIGS: 'u' an unsigned long, 'p' a pointer."""
        types = [C.c_ulong if c == "u" else C.c_void_p for c in SIGS[name]]
        f = C.CFUNCTYPE(C.c_ulong, *types)(getattr(self.fl, name))

        def call(*args):
            return f(*[C.byref(a) if isinstance(a, C.Structure) else a for a in args])
        return call


def rv(x):
    return NAME.get(x, hex(x))


def ulong_bytes(x):
    return bytes(C.c_ulong(x))


class App:
    """One initialized module with a session on slot 0."""

    def __init__(self, m, slot=0):
        self.m = m
        self.h = C.c_ulong()
        assert m.Initialize(None) == 0
        assert m.OpenSession(slot, CKF_SERIAL_SESSION, None, None, C.byref(self.h)) == 0

    def login(self, pin):
        if pin is None:
            return rv(self.m.Login(self.h, CKU_USER, None, 0))
        b = C.create_string_buffer(pin.encode(), len(pin))
        return rv(self.m.Login(self.h, CKU_USER, b, len(pin)))

    def find(self, **kw):
        tmpl = []
        keep = []
        for t, v in kw.items():
            t = {"cls": CKA_CLASS, "label": CKA_LABEL, "id": CKA_ID}[t]
            b = ulong_bytes(v) if isinstance(v, int) else v.encode() if isinstance(v, str) else v
            buf = C.create_string_buffer(b, len(b))
            keep.append(buf)
            tmpl.append(Attr(t, C.cast(buf, C.c_void_p), len(b)))
        arr = (Attr * max(len(tmpl), 1))(*tmpl)
        assert self.m.FindObjectsInit(self.h, arr, len(tmpl)) == 0
        out = (C.c_ulong * 64)()
        n = C.c_ulong()
        assert self.m.FindObjects(self.h, out, 64, C.byref(n)) == 0
        assert self.m.FindObjectsFinal(self.h) == 0
        return list(out[:n.value])

    def attrs(self, obj, *specs):
        """specs: (type, buffer size or None for a size query); returns the call's rv and,
        per attribute, its length and value."""
        bufs = [C.create_string_buffer(n) if n else None for _, n in specs]
        arr = (Attr * len(specs))(*[Attr(t, C.cast(b, C.c_void_p) if b else None, n or 0)
                                    for (t, n), b in zip(specs, bufs)])
        r = self.m.GetAttributeValue(self.h, obj, arr, len(specs))
        out = []
        for a, b in zip(arr, bufs):
            ln = a.ulValueLen
            out.append({"len": "unavailable" if ln == UNAVAILABLE else ln,
                        "value": b.raw[:ln].hex() if b is not None and ln != UNAVAILABLE
                        else None})
        return rv(r), out

    def sign(self, key, mech, data, size=None):
        """Signs data; size: the buffer offered (None: asks for the size first)."""
        r = self.m.SignInit(self.h, Mech(CKM[mech], None, 0), key)
        if r != 0:
            return rv(r), None
        n = C.c_ulong(0)
        d = C.create_string_buffer(data, len(data))
        if size is None:
            r = self.m.Sign(self.h, d, len(data), None, C.byref(n))
            if r != 0:
                return rv(r), None
        else:
            n.value = size
        out = C.create_string_buffer(max(n.value, 1))
        r = self.m.Sign(self.h, d, len(data), out, C.byref(n))
        return rv(r), out.raw[:n.value].hex() if r == 0 else n.value


def story_init(m, args):
    """Initialization by the spec: twice, bad arguments, finalize."""
    res = {"before": rv(m.GetSlotList(0, None, C.byref(C.c_ulong())))}
    res["first"] = rv(m.Initialize(None))
    res["second"] = rv(m.Initialize(None))
    res["finalize"] = rv(m.Finalize(None))
    res["finalize_again"] = rv(m.Finalize(None))
    a = InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
    res["os_locking"] = rv(m.Initialize(a))
    m.Finalize(None)
    a = InitArgs(None, None, None, None, 0, 1)
    res["reserved"] = rv(m.Initialize(a))
    a = InitArgs(1, None, None, None, CKF_OS_LOCKING_OK, None)
    res["one_callback"] = rv(m.Initialize(a))
    return res


def story_objects(m, args):
    """What an application finds before login, after login and after logout; args: label."""
    app, label = App(m), args[0]
    res = {"before": {"private": len(app.find(cls=CKO_PRIVATE_KEY)),
                      "certs": len(app.find(cls=CKO_CERTIFICATE)),
                      "label": len(app.find(label=label))}}
    res["login"] = app.login(sys.stdin.readline().rstrip("\n") or None)
    res["private_after_login"] = len(app.find(cls=CKO_PRIVATE_KEY))
    res["login_again"] = app.login(None)
    keys = app.find(cls=CKO_PRIVATE_KEY, label=label)
    res["after"] = {"private": len(app.find(cls=CKO_PRIVATE_KEY)), "label_private": len(keys)}
    if keys:
        idv = app.attrs(keys[0], (CKA_ID, 64))[1][0]["value"]
        res["by_id"] = len(app.find(id=bytes.fromhex(idv)))
        res["by_id_private"] = app.find(id=bytes.fromhex(idv), cls=CKO_PRIVATE_KEY) == keys[:1]
    res["logout"] = rv(m.Logout(app.h))
    res["logout_again"] = rv(m.Logout(app.h))
    res["after_logout"] = {"private": len(app.find(cls=CKO_PRIVATE_KEY))}
    return res


def story_attributes(m, args):
    """C_GetAttributeValue's rules on the private key labelled args[0]."""
    app, label = App(m), args[0]
    app.login(sys.stdin.readline().rstrip("\n") or None)
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
    res = {}
    res["sensitive"] = app.attrs(key, (CKA_VALUE, 4096))
    res["private_exponent"] = app.attrs(key, (CKA_PRIVATE_EXPONENT, 4096))
    res["invalid"] = app.attrs(key, (0x80001234, 16))
    res["label_query"] = app.attrs(key, (CKA_LABEL, None))
    res["label_small"] = app.attrs(key, (CKA_LABEL, 1))
    res["mixed"] = app.attrs(key, (CKA_LABEL, 64), (CKA_VALUE, 64), (CKA_KEY_TYPE, 8))
    res["start_date"] = app.attrs(key, (CKA_START_DATE, 8))
    for cls, name in ((CKO_PRIVATE_KEY, "private"), (CKO_PUBLIC_KEY, "public"),
                      (CKO_CERTIFICATE, "cert")):
        obj = app.find(cls=cls, label=label)[0]
        res["spki_" + name] = app.attrs(obj, (CKA_PUBLIC_KEY_INFO, 4096))
    return res


def story_sign(m, args):
    """Size query, a buffer too small (the operation stays), the signature, the end of the
    operation; args: key label, mechanism, file to write the signature to."""
    app, label, mech, out = App(m), args[0], args[1], args[2]
    app.login(sys.stdin.readline().rstrip("\n") or None)
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
    data = b"ctok-p11 signs this"
    res = {"small": app.sign(key, mech, data, size=8)}
    n = C.c_ulong(0)
    d = C.create_string_buffer(data, len(data))
    buf = C.create_string_buffer(1024)
    # the operation is still active after CKR_BUFFER_TOO_SMALL
    res["query_after_small"] = rv(m.Sign(app.h, d, len(data), None, C.byref(n)))
    n.value = 1024
    r = m.Sign(app.h, d, len(data), buf, C.byref(n))
    res["sign"] = rv(r)
    res["siglen"] = n.value
    res["ended"] = rv(m.Sign(app.h, d, len(data), buf, C.byref(n)))
    if r == 0:
        with open(out, "wb") as f:
            f.write(buf.raw[:n.value])
    return res


def story_fork(m, args):
    """A forked child finds the module uninitialized, initializes it and signs; the parent
    goes on signing. args: key label, mechanism."""
    pin = sys.stdin.readline().rstrip("\n") or None
    app, label, mech = App(m), args[0], args[1]
    app.login(pin)
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
    res = {"parent_before": app.sign(key, mech, b"before fork")[0]}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child = {"slots": rv(m.GetSlotList(0, None, C.byref(C.c_ulong())))}
        try:
            capp = App(m)
            child["login"] = capp.login(pin)
            k = capp.find(cls=CKO_PRIVATE_KEY, label=label)
            child["sign"] = capp.sign(k[0], mech, b"in the child")[0] if k else "no key"
        except AssertionError as e:
            child["error"] = repr(e)
        os.write(w, json.dumps(child).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    res["child"] = json.loads(data or b"{}")
    res["parent_after"] = app.sign(key, mech, b"after fork")[0]
    return res


def story_relogin(m, args):
    """Log in, log out, log in again: the two PINs on two lines of stdin; args: key label."""
    app, label = App(m), args[0]
    first, second = sys.stdin.readline().rstrip("\n"), sys.stdin.readline().rstrip("\n")
    res = {"login": app.login(first or None), "logout": rv(m.Logout(app.h))}
    res["relogin"] = app.login(second or None)
    res["private"] = len(app.find(cls=CKO_PRIVATE_KEY, label=label))
    return res


def mechanisms(m):
    n = C.c_ulong(0)
    assert m.GetMechanismList(0, None, C.byref(n)) == 0
    arr = (C.c_ulong * max(n.value, 1))()
    assert m.GetMechanismList(0, arr, C.byref(n)) == 0
    names = {v: k for k, v in CKM.items()}
    return sorted(names.get(x, hex(x)) for x in arr[:n.value])


def story_mechanisms(m, args):
    """The slot's mechanisms before and after login."""
    app = App(m)
    res = {"before": mechanisms(m)}
    res["login"] = app.login(sys.stdin.readline().rstrip("\n") or None)
    res["after"] = mechanisms(m)
    return res


def story_by_id(m, args):
    """The labels of the objects with CKA_ID args[0] (hex), by class, before and after login."""
    app, kid = App(m), bytes.fromhex(args[0])

    def seen():
        out = {}
        for cls, name in ((CKO_CERTIFICATE, "certs"), (CKO_PUBLIC_KEY, "public"),
                          (CKO_PRIVATE_KEY, "private")):
            objs = app.find(id=kid, cls=cls)
            out[name] = sorted(bytes.fromhex(app.attrs(o, (CKA_LABEL, 256))[1][0]["value"])
                               .decode() for o in objs)
        return out

    res = {"before": seen()}
    assert app.login(sys.stdin.readline().rstrip("\n") or None) == "OK"
    res["after"] = seen()
    return res


def story_decrypt(m, args):
    """RSA PKCS#1 v1.5 decryption: size query, a buffer too small (the operation stays), the
    plaintext, the end. args: key label, public key PEM (the client encrypts with it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    app, label = App(m), args[0]
    with open(args[1], "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    secret = os.urandom(24)
    ct = pub.encrypt(secret, padding.PKCS1v15())
    app.login(sys.stdin.readline().rstrip("\n") or None)
    key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
    res = {"init": rv(m.DecryptInit(app.h, Mech(CKM["RSA_PKCS"], None, 0), key))}
    c = C.create_string_buffer(ct, len(ct))
    n = C.c_ulong(0)
    res["query"] = [rv(m.Decrypt(app.h, c, len(ct), None, C.byref(n))), n.value]
    out = C.create_string_buffer(512)
    n.value = 4
    res["small"] = [rv(m.Decrypt(app.h, c, len(ct), out, C.byref(n))), n.value]
    n.value = 512
    r = m.Decrypt(app.h, c, len(ct), out, C.byref(n))
    res["decrypt"] = rv(r)
    res["same"] = r == 0 and out.raw[:n.value] == secret
    res["ended"] = rv(m.Decrypt(app.h, c, len(ct), out, C.byref(n)))
    return res


STORIES = {"decrypt": story_decrypt, "by_id": story_by_id, "mechanisms": story_mechanisms, "relogin": story_relogin, "init": story_init, "objects": story_objects, "attributes": story_attributes,
           "sign": story_sign, "fork": story_fork}

CKA_SIGN, CKA_DECRYPT, CKA_ALLOWED_MECHANISMS = 0x108, 0x105, 0x40000600
SIGS.update({"GetMechanismInfo": "uup", "CloseSession": "u"})


def mech_info(m, name):
    """C_GetMechanismInfo of slot 0: [rv, min key size, max key size, flags as sign/decrypt]."""
    info = (C.c_ulong * 3)()
    r = m.GetMechanismInfo(0, CKM[name], info)
    ops = [op for op, bit in (("sign", 0x800), ("decrypt", 0x200)) if info[2] & bit]
    return [rv(r), info[0], info[1], ops] if r == 0 else [rv(r)]


def init_rv(m, fn, mech, key):
    """fn (SignInit, DecryptInit) with mech on key, in a session of its own (closed after)."""
    h = C.c_ulong()
    assert m.OpenSession(0, CKF_SERIAL_SESSION, None, None, C.byref(h)) == 0
    r = getattr(m, fn)(h, Mech(CKM[mech], None, 0), key)
    m.CloseSession(h)
    return rv(r)


def story_usage(m, args):
    """What the token lets each key do: the slot's mechanisms (and RSA_PKCS's and ECDSA's info)
    before and after login; per private key labelled in args, CKA_SIGN, CKA_DECRYPT,
    CKA_ALLOWED_MECHANISMS and the answers of C_SignInit (its mechanism: label=MECH) and of
    C_DecryptInit with RSA_PKCS."""
    app = App(m)
    names = {v: k for k, v in CKM.items()}

    def slot():
        return {"mechs": mechanisms(m), "RSA_PKCS": mech_info(m, "RSA_PKCS"),
                "ECDSA": mech_info(m, "ECDSA")}

    res = {"before": slot(), "login": app.login(sys.stdin.readline().rstrip("\n") or None)}
    res["after"] = slot()
    for arg in args:
        label, mech = arg.split("=")
        key = app.find(cls=CKO_PRIVATE_KEY, label=label)[0]
        r, (sign, dec, allowed) = app.attrs(key, (CKA_SIGN, 1), (CKA_DECRYPT, 1),
                                            (CKA_ALLOWED_MECHANISMS, 512))
        raw = bytes.fromhex(allowed["value"] or "")
        n = C.sizeof(C.c_ulong)
        res[label] = {"rv": r, "sign": sign["value"] == "01", "decrypt": dec["value"] == "01",
                      "allowed": sorted(names.get(int.from_bytes(raw[i:i + n], sys.byteorder),
                                                  "?") for i in range(0, len(raw), n)),
                      "sign_init": init_rv(m, "SignInit", mech, key),
                      "decrypt_init": init_rv(m, "DecryptInit", "RSA_PKCS", key)}
    return res


STORIES["usage"] = story_usage

if __name__ == "__main__":
    mod = Module(sys.argv[1])
    print(json.dumps(STORIES[sys.argv[2]](mod, sys.argv[3:])))
