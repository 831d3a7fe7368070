"""Stories of decryption and key derivation through ctok-p11.so (tests/test_p11mod_crypto.py),
on tests/p11mod_client.py's ctypes application: argv[1] the module, argv[2] the story, its
arguments after; the PIN on stdin ("" for the code from the config); JSON out."""

import ctypes as C
import json
import os
import sys

import p11mod_client as P
from p11mod_client import App, Attr, Mech, rv, ulong_bytes

P.NAME.update({0x71: "MECHANISM_PARAM_INVALID", 0x40: "ENCRYPTED_DATA_INVALID",
               0x41: "ENCRYPTED_DATA_LEN_RANGE", 0x82: "OBJECT_HANDLE_INVALID",
               0x13: "ATTRIBUTE_VALUE_INVALID", 0xD1: "TEMPLATE_INCONSISTENT",
               0x63: "KEY_TYPE_INCONSISTENT", 0x10: "ATTRIBUTE_READ_ONLY",
               0x68: "KEY_FUNCTION_NOT_PERMITTED", 0x6: "FUNCTION_FAILED",
               0x200: "FUNCTION_REJECTED", 0xD0: "TEMPLATE_INCOMPLETE"})

# The rest of the 2.40 function list, after SignFinal, in order.
FUNCS = P.FUNCS + ("SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal "
                   "VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate "
                   "SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair WrapKey "
                   "UnwrapKey DeriveKey").split()
P.SIGS.update({"DeriveKey": "upupup", "CloseSession": "u", "CloseAllSessions": "u",
               "OpenSession": "uuppp", "Logout": "u", "DestroyObject": "uu"})

CKM_RSA_PKCS_OAEP, CKM_ECDH1_DERIVE, CKM_RSA_PKCS = 0x9, 0x1050, 0x1
CKD_NULL, CKD_SHA1_KDF, CKZ_DATA_SPECIFIED = 1, 2, 1
CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, CKA_EXTRACTABLE = 0x1, 0x2, 0x103, 0x162
CKA_VALUE_LEN, CKA_DERIVE, CKA_KEY_TYPE, CKA_VALUE = 0x161, 0x10C, 0x100, 0x11
CKO_SECRET_KEY, CKK_GENERIC_SECRET, CKK_AES = 4, 0x10, 0x1F
# CK_ECDH1_DERIVE_PARAMS.kdf: the X9.63 KDFs by their digests (PKCS#11 3.0)
KDF = {"SHA1": 2, "SHA224": 5, "SHA256": 6, "SHA384": 7, "SHA512": 8, "SHA3-224": 0xA,
       "SHA3-256": 0xB, "SHA3-384": 0xC, "SHA3-512": 0xD}
HASH = {"SHA1": (0x220, 1), "SHA224": (0x255, 5), "SHA256": (0x250, 2), "SHA384": (0x260, 3),
        "SHA512": (0x270, 4)}


class FullList(C.Structure):
    _fields_ = [("major", C.c_ubyte), ("minor", C.c_ubyte)] + [(f, C.c_void_p) for f in FUNCS]


class Module(P.Module):
    def __init__(self, path):
        lib = C.CDLL(path)
        fl = C.POINTER(FullList)()
        assert lib.C_GetFunctionList(C.byref(fl)) == 0
        self.fl = fl.contents


class OaepParams(C.Structure):
    _fields_ = [("hashAlg", C.c_ulong), ("mgf", C.c_ulong), ("source", C.c_ulong),
                ("pSourceData", C.c_void_p), ("ulSourceDataLen", C.c_ulong)]


class EcdhParams(C.Structure):
    _fields_ = [("kdf", C.c_ulong), ("ulSharedDataLen", C.c_ulong), ("pSharedData", C.c_void_p),
                ("ulPublicDataLen", C.c_ulong), ("pPublicData", C.c_void_p)]


def login(m):
    app = App(m)
    assert app.login(sys.stdin.readline().rstrip("\n") or None) == "OK"
    return app


def key_of(app, label):
    return app.find(cls=P.CKO_PRIVATE_KEY, label=label)[0]


def decrypt(app, key, mech, ct):
    """DecryptInit with mech, a size query, the decryption: (init, query, rv, plaintext)."""
    r = app.m.DecryptInit(app.h, mech, key)
    if r != 0:
        return rv(r), None, None, None
    c = C.create_string_buffer(ct, len(ct))
    n = C.c_ulong(0)
    q = [rv(app.m.Decrypt(app.h, c, len(ct), None, C.byref(n))), n.value]
    out = C.create_string_buffer(max(n.value, 1))
    r = app.m.Decrypt(app.h, c, len(ct), out, C.byref(n))
    return "OK", q, rv(r), out.raw[:n.value] if r == 0 else None


def story_oaep(m, args):
    """OAEP decryption of what python3-cryptography encrypts: args key label, public key PEM,
    hash, MGF hash, label (hex, "" none). Then the same with a byte of the ciphertext changed."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    label, pem, h, mgf, olabel = args[0], args[1], args[2], args[3], bytes.fromhex(args[4])
    with open(pem, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    md = {"SHA1": hashes.SHA1, "SHA224": hashes.SHA224, "SHA256": hashes.SHA256,
          "SHA384": hashes.SHA384, "SHA512": hashes.SHA512}
    secret = os.urandom(20)
    ct = pub.encrypt(secret, padding.OAEP(mgf=padding.MGF1(md[mgf]()), algorithm=md[h](),
                                          label=olabel or None))
    app = login(m)
    key = key_of(app, label)
    lb = C.create_string_buffer(olabel, max(len(olabel), 1))
    prm = OaepParams(HASH[h][0], HASH[mgf][1], CKZ_DATA_SPECIFIED,
                     C.cast(lb, C.c_void_p) if olabel else None, len(olabel))
    mech = Mech(CKM_RSA_PKCS_OAEP, C.cast(C.pointer(prm), C.c_void_p), C.sizeof(prm))
    res = {}
    res["init"], res["query"], res["decrypt"], pt = decrypt(app, key, mech, ct)
    res["same"] = pt == secret
    bad = bytearray(ct)
    bad[len(bad) // 2] ^= 0x40
    res["bad_init"], _, res["bad"], pt = decrypt(app, key, mech, bytes(bad))
    res["bad_plain"] = pt is not None
    return res


def story_oaep_params(m, args):
    """C_DecryptInit with OAEP parameters the spec refuses; args: key label."""
    app = login(m)
    key = key_of(app, args[0])
    out = {}

    def init(name, prm, size=None):
        p = C.cast(C.pointer(prm), C.c_void_p) if prm is not None else None
        r = m.DecryptInit(app.h, Mech(CKM_RSA_PKCS_OAEP, p, size if size is not None
                                      else C.sizeof(prm) if prm is not None else 0), key)
        out[name] = rv(r)
        if r == 0:  # end it: a decryption of nothing sized wrong
            n = C.c_ulong(1)
            m.Decrypt(app.h, C.create_string_buffer(1), 1, C.create_string_buffer(1), C.byref(n))

    init("none", None)
    init("short", OaepParams(0x220, 1, 1, None, 0), C.sizeof(OaepParams) - 1)
    init("md5", OaepParams(0x210, 1, 1, None, 0))
    init("mgf", OaepParams(0x220, 9, 1, None, 0))
    init("source", OaepParams(0x220, 1, 2, None, 0))
    lb = C.create_string_buffer(b"abc", 3)
    init("source_none_label", OaepParams(0x220, 1, 0, C.cast(lb, C.c_void_p), 3))
    init("label_null", OaepParams(0x220, 1, 1, None, 4))
    init("sha1", OaepParams(0x220, 1, 1, None, 0))
    return out


def template(value_len, sensitive, extractable, token=False, cls=CKO_SECRET_KEY, extra=()):
    """A derive template; extra: more (type, value bytes or None for a NULL pointer, length)."""
    keep = []

    def a(t, b, n=None):
        if b is None:
            return Attr(t, None, n)
        buf = C.create_string_buffer(b, len(b))
        keep.append(buf)
        return Attr(t, C.cast(buf, C.c_void_p), len(b) if n is None else n)

    t = [a(P.CKA_CLASS, ulong_bytes(cls)), a(CKA_KEY_TYPE, ulong_bytes(CKK_GENERIC_SECRET)),
         a(CKA_TOKEN, bytes([token])), a(CKA_SENSITIVE, bytes([sensitive])),
         a(CKA_EXTRACTABLE, bytes([extractable]))]
    if value_len:
        t.append(a(CKA_VALUE_LEN, ulong_bytes(value_len)))
    t += [a(*e) for e in extra]
    return (Attr * len(t))(*t), keep


def derive(app, key, point, value_len=0, sensitive=0, extractable=1, kdf=CKD_NULL, shared=None,
           shared_len=None, **kw):
    """C_DeriveKey with CKM_ECDH1_DERIVE; shared: the shared data (None: a NULL pointer),
    shared_len: its claimed length (default its own)."""
    pb = C.create_string_buffer(point, len(point))
    sb = None if shared is None else C.create_string_buffer(shared, len(shared))
    prm = EcdhParams(kdf, len(shared or b"") if shared_len is None else shared_len,
                     None if sb is None else C.cast(sb, C.c_void_p), len(point),
                     C.cast(pb, C.c_void_p))
    t, keep = template(value_len, sensitive, extractable, **kw)
    h = C.c_ulong(0)
    r = app.m.DeriveKey(app.h, Mech(CKM_ECDH1_DERIVE, C.cast(C.pointer(prm), C.c_void_p),
                                    C.sizeof(prm)), key, t, len(t), C.byref(h))
    return rv(r), h.value


def find_raw(app, tmpl):
    """The handles C_FindObjects gives for tmpl, a list of (type, value bytes)."""
    bufs = [C.create_string_buffer(v, len(v)) for _, v in tmpl]
    arr = (Attr * max(len(tmpl), 1))(*[Attr(t, C.cast(b, C.c_void_p), len(v))
                                       for (t, v), b in zip(tmpl, bufs)])
    assert app.m.FindObjectsInit(app.h, arr, len(tmpl)) == 0
    out, n = (C.c_ulong * 64)(), C.c_ulong()
    assert app.m.FindObjects(app.h, out, 64, C.byref(n)) == 0
    assert app.m.FindObjectsFinal(app.h) == 0
    return list(out[:n.value])


def secrets(app):
    """The session objects: what is not on the token (CKA_TOKEN false)."""
    return find_raw(app, [(CKA_TOKEN, b"\0")])


def story_derive_ends(m, args):
    """Derived secrets go with C_CloseAllSessions and with C_Finalize; args key label, peer
    point (hex)."""
    app = login(m)
    key, point = key_of(app, args[0]), bytes.fromhex(args[1])
    res = {"derive": derive(app, key, point)[0], "class": len(app.find(cls=CKO_SECRET_KEY))}
    res["close_all"] = rv(m.CloseAllSessions(0))
    assert m.OpenSession(0, P.CKF_SERIAL_SESSION, None, None, C.byref(app.h)) == 0
    res["after_close_all"] = len(secrets(app))
    app.login(None)
    res["derive_again"] = derive(app, key_of(app, args[0]), point)[0]
    res["finalize"] = rv(m.Finalize(None))
    app = login(m)
    res["after_finalize"] = len(secrets(app))
    return res


def story_derive(m, args):
    """ECDH: args key label, peer point (hex), CKA_VALUE_LEN (0: none), sensitive, extractable.
    The new object's attributes, who sees it, and that it goes with its session."""
    app = login(m)
    key = key_of(app, args[0])
    res = {"derive_attr": app.attrs(key, (CKA_DERIVE, 1))[1][0]["value"]}
    res["derive"], h = derive(app, key, bytes.fromhex(args[1]), int(args[2]), int(args[3]),
                              int(args[4]))
    res["attrs"] = app.attrs(h, (P.CKA_CLASS, 8), (CKA_VALUE_LEN, 8), (CKA_TOKEN, 1),
                             (CKA_SENSITIVE, 1))
    res["value"] = app.attrs(h, (CKA_VALUE, 256))
    res["found"] = h in secrets(app)
    # another session of the application sees it; closing the one that made it ends it
    other = C.c_ulong()
    assert m.OpenSession(0, P.CKF_SERIAL_SESSION, None, None, C.byref(other)) == 0
    first, app.h = app.h, other
    res["other_sees"] = h in secrets(app)
    res["close"] = rv(m.CloseSession(first))
    res["after_close"] = {"found": h in secrets(app), "attrs": app.attrs(h, (P.CKA_CLASS, 8))[0]}
    return res


def story_derive_kdf(m, args):
    """ECDH with the X9.63 KDFs; args key label, peer point (hex), then cases
    "KDF:CKA_VALUE_LEN:CKA_KEY_TYPE:shared data (hex, empty: none)": each the derivation's code
    and the derived CKA_VALUE (hex)."""
    app = login(m)
    key, point = key_of(app, args[0]), bytes.fromhex(args[1])
    out = {}
    for case in args[2:]:
        name, n, kt, shared = case.split(":")
        r, h = derive(app, key, point, int(n), kdf=KDF[name], shared=bytes.fromhex(shared) or None,
                      extra=[(CKA_KEY_TYPE, ulong_bytes(int(kt)), C.sizeof(C.c_ulong))])
        out[case] = [r, app.attrs(h, (CKA_VALUE, 256))[1][0]["value"] if r == "OK" else None]
    return out


def story_derive_logout(m, args):
    """A private derived secret is gone at C_Logout; args key label, peer point (hex)."""
    app = login(m)
    key = key_of(app, args[0])
    r, h = derive(app, key, bytes.fromhex(args[1]))
    res = {"derive": r, "before": h in secrets(app), "logout": rv(m.Logout(app.h))}
    res["after"] = app.attrs(h, (P.CKA_CLASS, 8))[0]
    return res


def story_derive_destroy(m, args):
    """C_DestroyObject takes a derived secret, in a read-only session; args key label, peer
    point (hex)."""
    app = login(m)
    r, h = derive(app, key_of(app, args[0]), bytes.fromhex(args[1]))
    res = {"derive": r, "destroy": rv(m.DestroyObject(app.h, h))}
    res["after"] = {"found": h in secrets(app), "attrs": app.attrs(h, (P.CKA_CLASS, 8))[0]}
    res["again"] = rv(m.DestroyObject(app.h, h))
    return res


def story_derive_refused(m, args):
    """What C_DeriveKey refuses; args: EC key label, RSA key label, peer point (hex)."""
    app = login(m)
    ec, rsa, point = key_of(app, args[0]), key_of(app, args[1]), bytes.fromhex(args[2])
    bad_point = bytearray(point)
    bad_point[-1] ^= 1
    h = C.c_ulong()
    t, keep = template(0, 0, 1)
    aes = [(CKA_KEY_TYPE, ulong_bytes(CKK_AES), C.sizeof(C.c_ulong))]
    return {"kdf_unknown": derive(app, ec, point, 32, kdf=3)[0],  # CKD_SHA1_KDF_ASN1: X9.42's
            "kdf_no_len": derive(app, ec, point, kdf=CKD_SHA1_KDF)[0],
            "kdf_aes_no_len": derive(app, ec, point, kdf=KDF["SHA256"], extra=aes)[0],
            "kdf_aes_odd": derive(app, ec, point, 20, kdf=KDF["SHA256"], extra=aes)[0],
            "kdf_too_long": derive(app, ec, point, 133, kdf=KDF["SHA256"])[0],
            "null_kdf_shared": derive(app, ec, point, shared=b"info")[0],
            "shared_no_len": derive(app, ec, point, 32, kdf=KDF["SHA256"], shared=b"i",
                                    shared_len=0)[0],
            "shared_no_ptr": derive(app, ec, point, 32, kdf=KDF["SHA256"], shared_len=4)[0],
            "off_curve": derive(app, ec, bytes(bad_point))[0],
            "garbage": derive(app, ec, b"\x04\x01\x02")[0],
            "infinity": derive(app, ec, b"\x00")[0],
            "too_long": derive(app, ec, point, value_len=4096)[0],
            "token": derive(app, ec, point, token=True)[0],
            "class": derive(app, ec, point, cls=P.CKO_PRIVATE_KEY)[0],
            "rsa_key": derive(app, rsa, point)[0],
            # hostile or impossible templates
            "bool_size": derive(app, ec, point, extra=[(CKA_DERIVE, b"\1\0\0\0", 4)])[0],
            "null_label": derive(app, ec, point, extra=[(P.CKA_LABEL, None, 5)])[0],
            "long_id": derive(app, ec, point, extra=[(P.CKA_ID, b"i" * 65, 65)])[0],
            "local": derive(app, ec, point, extra=[(0x163, b"\0", 1)])[0],
            "modulus": derive(app, ec, point, extra=[(P.CKA_MODULUS, b"\1", 1)])[0],
            "value": derive(app, ec, point, extra=[(CKA_VALUE, b"\1" * 32, 32)])[0],
            "aes_odd": derive(app, ec, point, value_len=20,
                              extra=[(CKA_KEY_TYPE, ulong_bytes(0x1F), C.sizeof(C.c_ulong))])[0],
            "no_mech": rv(m.DeriveKey(app.h, None, ec, t, len(t), C.byref(h))),
            "no_out": rv(m.DeriveKey(app.h, Mech(CKM_ECDH1_DERIVE, None, 0), ec, t, len(t), None)),
            "no_params": rv(m.DeriveKey(app.h, Mech(CKM_ECDH1_DERIVE, None, 0), ec, t, len(t),
                                        C.byref(h))),
            "left": len(secrets(app))}


def story_threads(m, args):
    """Threads side by side, each with its own sessions: OAEP decryptions, ECDH derivations,
    finds and reads of the secrets, sessions closed with their objects. args: RSA key label,
    its public key PEM, EC key label, peer point (hex), threads, rounds, OAEP hash. Counts per
    answer."""
    import threading
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    with open(args[1], "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    point, threads, rounds, h = bytes.fromhex(args[3]), int(args[4]), int(args[5]), args[6]
    md = {"SHA1": hashes.SHA1, "SHA256": hashes.SHA256}[h]
    main = login(m)
    rsa, ec = key_of(main, args[0]), key_of(main, args[2])
    secret = os.urandom(16)
    ct = pub.encrypt(secret, padding.OAEP(mgf=padding.MGF1(md()), algorithm=md(), label=None))
    counts, lock = {}, threading.Lock()

    def count(what):
        with lock:
            counts[what] = counts.get(what, 0) + 1

    def work():
        for _ in range(rounds):
            app = App.__new__(App)
            app.m, app.h = m, C.c_ulong()
            if m.OpenSession(0, P.CKF_SERIAL_SESSION, None, None, C.byref(app.h)) != 0:
                count("open failed")
                continue
            prm = OaepParams(HASH[h][0], HASH[h][1], CKZ_DATA_SPECIFIED, None, 0)
            mech = Mech(CKM_RSA_PKCS_OAEP, C.cast(C.pointer(prm), C.c_void_p), C.sizeof(prm))
            r = decrypt(app, rsa, mech, ct)
            count("decrypt " + (r[2] if r[0] == "OK" and r[3] == secret else str(r[:3])))
            r, obj = derive(app, ec, point)
            count("derive " + r)
            count("read " + app.attrs(obj, (CKA_VALUE, 64))[0])
            count("close " + rv(m.CloseSession(app.h)))

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    counts["left"] = len(secrets(main))
    return counts


STORIES = {"threads": story_threads, "derive_ends": story_derive_ends, "oaep": story_oaep,
           "oaep_params": story_oaep_params, "derive": story_derive,
           "derive_logout": story_derive_logout, "derive_destroy": story_derive_destroy, "derive_refused": story_derive_refused,
           "derive_kdf": story_derive_kdf}

if __name__ == "__main__":
    mod = Module(sys.argv[1])
    print(json.dumps(STORIES[sys.argv[2]](mod, sys.argv[3:])))
