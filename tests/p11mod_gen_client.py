"""A PKCS#11 application over ctypes for tests/test_p11mod_gen.py: key generation, object
destruction and certificate creation through ctok-p11.so, the way an application calls them,
including the calls it must get refused. argv: module, story, story arguments; a PIN on stdin
(an empty line: a NULL PIN, the code from the config); prints the answers as JSON."""

import ctypes as C
import json
import sys

from p11mod_client import CKO_CERTIFICATE, CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, FUNCS, Attr, Mech

CKR = {0x0: "OK", 0x7: "ARGUMENTS_BAD", 0x12: "ATTRIBUTE_TYPE_INVALID",
       0x13: "ATTRIBUTE_VALUE_INVALID", 0x1B: "ACTION_PROHIBITED", 0x54: "FUNCTION_NOT_SUPPORTED",
       0x70: "MECHANISM_INVALID", 0x71: "MECHANISM_PARAM_INVALID", 0x82: "OBJECT_HANDLE_INVALID",
       0x62: "KEY_SIZE_RANGE", 0xB5: "SESSION_READ_ONLY", 0xB0: "SESSION_CLOSED",
       0xD0: "TEMPLATE_INCOMPLETE", 0xD1: "TEMPLATE_INCONSISTENT", 0x101: "USER_NOT_LOGGED_IN",
       0x140: "CURVE_NOT_SUPPORTED", 0x200: "FUNCTION_REJECTED", 0x6: "FUNCTION_FAILED"}

CKA_CLASS, CKA_TOKEN, CKA_LABEL, CKA_VALUE, CKA_ID = 0x0, 0x1, 0x3, 0x11, 0x102
CKA_CERTIFICATE_TYPE, CKA_MODULUS_BITS, CKA_PUBLIC_EXPONENT = 0x80, 0x121, 0x122
CKA_EC_PARAMS, CKA_SENSITIVE, CKA_SIGN = 0x180, 0x103, 0x108
CKM_RSA_GEN, CKM_EC_GEN, CKM_DSA_GEN, CKM_ECDSA = 0x0, 0x1040, 0x10, 0x1041
CKF_SERIAL, CKF_RW = 4, 2
P256 = bytes.fromhex("06082a8648ce3d030107")
SECP256K1 = bytes.fromhex("06052b8104000a")

# the 2.40 list up to C_GenerateKeyPair
MORE = ("SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal "
        "VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate "
        "SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair").split()


class FunctionList(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)] + \
        [(f, C.c_void_p) for f in FUNCS + MORE]


SIGS = {"Initialize": "p", "OpenSession": "uuppp", "Login": "uupu", "FindObjectsInit": "upu",
        "FindObjects": "upup", "FindObjectsFinal": "u", "GetAttributeValue": "uupu",
        "GenerateKeyPair": "uppupupp", "DestroyObject": "uu", "CreateObject": "upup",
        "GetMechanismList": "upp"}


def rv(x):
    return CKR.get(x, hex(x))


def ulong(x):
    return bytes(C.c_ulong(x))


class App:
    def __init__(self, path):
        lib = C.CDLL(path)
        fl = C.POINTER(FunctionList)()
        assert lib.C_GetFunctionList(C.byref(fl)) == 0
        self.fl = fl.contents
        assert self.call("Initialize", None) == 0
        self.keep = []

    def call(self, name, *args):
        types = [C.c_ulong if c == "u" else C.c_void_p for c in SIGS[name]]
        return C.CFUNCTYPE(C.c_ulong, *types)(getattr(self.fl, name))(*args)

    def session(self, rw=True):
        h = C.c_ulong()
        assert self.call("OpenSession", 0, CKF_SERIAL | (CKF_RW if rw else 0), None, None,
                         C.byref(h)) == 0
        return h.value

    def login(self, h, pin):
        if not pin:
            return rv(self.call("Login", h, 1, None, 0))
        b = C.create_string_buffer(pin.encode(), len(pin))
        return rv(self.call("Login", h, 1, b, len(pin)))

    def tmpl(self, attrs):
        """attrs: [(type, value)], value bytes / int (CK_ULONG) / bool (CK_BBOOL) / None (a NULL
        pointer with a length)."""
        out = []
        for t, v in attrs:
            if v is None:
                out.append(Attr(t, None, 4))
                continue
            b = bytes([1 if v else 0]) if isinstance(v, bool) else \
                ulong(v) if isinstance(v, int) else v
            buf = C.create_string_buffer(b, len(b))
            self.keep.append(buf)
            out.append(Attr(t, C.cast(buf, C.c_void_p), len(b)))
        return (Attr * max(len(out), 1))(*out), len(out)

    def generate(self, h, mech, pub, priv=(), handles=True):
        pt, pn = self.tmpl(pub)
        kt, kn = self.tmpl(priv)
        hp, hk = C.c_ulong(), C.c_ulong()
        r = self.call("GenerateKeyPair", h, C.byref(Mech(mech, None, 0)), pt, pn, kt, kn,
                      C.byref(hp) if handles else None, C.byref(hk) if handles else None)
        return rv(r), hp.value, hk.value

    def mechanisms(self):
        n = C.c_ulong(0)
        assert self.call("GetMechanismList", 0, None, C.byref(n)) == 0
        arr = (C.c_ulong * max(n.value, 1))()
        assert self.call("GetMechanismList", 0, arr, C.byref(n)) == 0
        return list(arr[:n.value])

    def find(self, h, attrs):
        t, n = self.tmpl(attrs)
        assert self.call("FindObjectsInit", h, t, n) == 0
        out = (C.c_ulong * 64)()
        got = C.c_ulong()
        assert self.call("FindObjects", h, out, 64, C.byref(got)) == 0
        assert self.call("FindObjectsFinal", h) == 0
        return list(out[:got.value])

    def label(self, h, obj):
        buf = C.create_string_buffer(256)
        a = (Attr * 1)(Attr(CKA_LABEL, C.cast(buf, C.c_void_p), 256))
        r = self.call("GetAttributeValue", h, obj, a, 1)
        return buf.raw[:a[0].ulValueLen].decode() if r == 0 else rv(r)

    def create(self, h, attrs):
        t, n = self.tmpl(attrs)
        o = C.c_ulong()
        return rv(self.call("CreateObject", h, t, n, C.byref(o))), o.value


def ec(label):
    return [(CKA_TOKEN, True), (CKA_EC_PARAMS, P256), (CKA_LABEL, label.encode())]


def story_refusals(app, args):
    """Every refusal an application can meet making, destroying or creating objects; args: the
    label of an existing key, a certificate file (DER) of it."""
    key_label, cert = args[0].encode(), open(args[1], "rb").read()
    ro, rw = app.session(rw=False), app.session()
    res = {"ro_logged_out": app.generate(ro, CKM_EC_GEN, ec("n1"))[0],
           "rw_logged_out": app.generate(rw, CKM_EC_GEN, ec("n1"))[0],
           "create_logged_out": app.create(rw, [(CKA_CLASS, CKO_CERTIFICATE),
                                                (CKA_CERTIFICATE_TYPE, 0),
                                                (CKA_VALUE, cert)])[0]}
    res["login"] = app.login(rw, sys.stdin.readline().rstrip("\n"))
    key = app.find(rw, [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_LABEL, key_label)])[0]
    pub = app.find(rw, [(CKA_CLASS, CKO_PUBLIC_KEY), (CKA_LABEL, key_label)])[0]
    res["ro_logged_in"] = app.generate(ro, CKM_EC_GEN, ec("n1"))[0]
    res["destroy_ro"] = rv(app.call("DestroyObject", ro, key))
    g = {"no_label": [(CKA_EC_PARAMS, P256)],
         "session_key": ec("n1")[1:] + [(CKA_TOKEN, False)],
         "own_id": ec("n1") + [(CKA_ID, b"\x01")],
         "unknown_attribute": ec("n1") + [(0x80001234, b"x")],
         "other_curve": [(CKA_EC_PARAMS, SECP256K1), (CKA_LABEL, b"n1")],
         "garbage_params": [(CKA_EC_PARAMS, b"\x30\x03\x02\x01"), (CKA_LABEL, b"n1")],
         "null_value": ec("n1") + [(CKA_LABEL, None)],
         "taken_label": ec(args[0])}
    res["gen"] = {k: app.generate(rw, CKM_EC_GEN, t)[0] for k, t in g.items()}
    res["gen"]["labels_disagree"] = app.generate(rw, CKM_EC_GEN, ec("n1"),
                                                 [(CKA_LABEL, b"n2")])[0]
    res["gen"]["not_sensitive"] = app.generate(rw, CKM_EC_GEN, ec("n1"),
                                               [(CKA_SENSITIVE, False)])[0]
    rsa = [(CKA_LABEL, b"n1"), (CKA_MODULUS_BITS, 2048)]
    res["gen"]["exponent_3"] = app.generate(rw, CKM_RSA_GEN, rsa + [(CKA_PUBLIC_EXPONENT,
                                                                    b"\x03")])[0]
    res["gen"]["rsa_1024"] = app.generate(rw, CKM_RSA_GEN, [(CKA_LABEL, b"n1"),
                                                            (CKA_MODULUS_BITS, 1024)])[0]
    res["gen"]["rsa_no_bits"] = app.generate(rw, CKM_RSA_GEN, [(CKA_LABEL, b"n1")])[0]
    res["gen"]["dsa"] = app.generate(rw, CKM_DSA_GEN, [(CKA_LABEL, b"n1")])[0]
    res["gen"]["null_handles"] = app.generate(rw, CKM_EC_GEN, ec("n1"), handles=False)[0]
    res["destroy_public"] = rv(app.call("DestroyObject", rw, pub))
    res["destroy_unknown"] = rv(app.call("DestroyObject", rw, 0x7FFFFF))
    # a label no object has: each refusal below is for what the case names
    c = [(CKA_CLASS, CKO_CERTIFICATE), (CKA_CERTIFICATE_TYPE, 0), (CKA_LABEL, b"n1")]
    res["create"] = {
        "private_key": app.create(rw, [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_VALUE, b"x")])[0],
        "no_class": app.create(rw, [(CKA_VALUE, cert)])[0],
        "no_value": app.create(rw, c)[0],
        "garbage": app.create(rw, c + [(CKA_VALUE, b"\x30\x03\x02\x01\x01")])[0],
        "other_id": app.create(rw, c + [(CKA_VALUE, cert), (CKA_ID, b"\x01")])[0],
        "wrong_subject": app.create(rw, c + [(CKA_VALUE, cert), (0x101, b"\x30\x00")])[0],
    }
    res["nothing_made"] = app.find(rw, [(CKA_LABEL, b"n1")]) == []
    return res


def story_lifecycle(app, args):
    """Generate an EC key labelled args[0], find it by its handles, destroy it; whether the
    slot offers ECDSA before and after."""
    h = app.session()
    res = {"login": app.login(h, sys.stdin.readline().rstrip("\n"))}
    res["ecdsa_before"] = CKM_ECDSA in app.mechanisms()
    res["generate"], hp, hk = app.generate(h, CKM_EC_GEN, ec(args[0]), [(CKA_SIGN, True)])
    res["ecdsa_after"] = CKM_ECDSA in app.mechanisms()
    res["labels"] = [app.label(h, hp), app.label(h, hk)]
    found = app.find(h, [(CKA_LABEL, args[0].encode())])
    res["found"] = sorted(found) == sorted([hp, hk])
    res["destroy"] = rv(app.call("DestroyObject", h, hk))
    res["after"] = app.find(h, [(CKA_LABEL, args[0].encode())])
    res["public_gone"] = rv(app.call("DestroyObject", h, hp))
    return res


def story_generate(app, args):
    """Generate an EC key labelled args[0]; destroy it again when args[1] is "remove"."""
    h = app.session()
    res = {"login": app.login(h, sys.stdin.readline().rstrip("\n"))}
    res["generate"], _, hk = app.generate(h, CKM_EC_GEN, ec(args[0]))
    if len(args) > 1 and args[1] == "remove":
        key = app.find(h, [(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_LABEL, args[0].encode())])
        res["destroy"] = rv(app.call("DestroyObject", h, key[0])) if key else "no key"
    return res


def story_watch(app, args):
    """Finds args[0], then waits for a line on stdin (another process changes the token
    meanwhile) and finds it again; the same handle for an object seen both times."""
    h = app.session()
    res = {"login": app.login(h, sys.stdin.readline().rstrip("\n"))}
    others = app.find(h, [(CKA_CLASS, CKO_PRIVATE_KEY)])
    res["before"] = len(app.find(h, [(CKA_LABEL, args[0].encode())]))
    print("ready", flush=True)
    sys.stdin.readline()
    res["after"] = len(app.find(h, [(CKA_LABEL, args[0].encode())]))
    res["kept_handles"] = all(o in app.find(h, [(CKA_CLASS, CKO_PRIVATE_KEY)]) for o in others)
    return res


STORIES = {"refusals": story_refusals, "lifecycle": story_lifecycle,
           "generate": story_generate, "watch": story_watch}

if __name__ == "__main__":
    print(json.dumps(STORIES[sys.argv[2]](App(sys.argv[1]), sys.argv[3:])))
