"""The PKCS#11 fault catalogue (issue 8): every PKCS#11 function ctok calls on the way to a
signature fails once, in turn, with CKR_GENERAL_ERROR (the test shim's CTOK_SHIM_FAIL_ONCE).
Whatever fails, ctok reports it in one line that names the function and the code, nothing
crashes, and the same process goes on signing: of three key loads and signatures in a row,
the ones after the fault succeed.

The functions are not listed by hand: a clean run with the shim logging every call says which
ones ctok uses, so a call ctok starts making joins the catalogue by itself."""

from ctoktest import describe
from p11fixtures import (  # noqa: F401  (fixtures)
    ShimLog,
    main_hsm,
    sign_loop,
    sign_loop_bin,
)

ROUNDS = 3


def run(main_hsm, sign_loop_bin, log, **shim):
    ws, tok = main_hsm.shim_ws, main_hsm.shim_tok
    return sign_loop(ws, sign_loop_bin, "reload", tok.key_uri("p256"), "1", str(ROUNDS),
                     env=log.env(log_all=1, **shim))


def test_each_pkcs11_call_failing_once_is_reported_and_the_process_signs_on(
        main_hsm, sign_loop_bin, tmp_path):
    clean = ShimLog(tmp_path / "clean.log")
    p, kv = run(main_hsm, sign_loop_bin, clean)
    assert p.returncode == 0 and kv.get("ok") == str(ROUNDS), describe(p)
    called = sorted({e["fn"] for e in clean.entries()} - {"C_GetFunctionList"})
    # the way to a signature, at the least
    assert {"C_Initialize", "C_OpenSession", "C_Login", "C_FindObjectsInit", "C_SignInit",
            "C_Sign"} <= set(called), called

    problems = []
    for fn in called:
        log = ShimLog(tmp_path / ("%s.log" % fn))
        p, kv = run(main_hsm, sign_loop_bin, log, fail_once="%s:1:CKR_GENERAL_ERROR" % fn)
        failed_calls = log.calls(fn, "CKR_GENERAL_ERROR")
        ok, bad = int(kv.get("ok", -1)), int(kv.get("failed", -1))
        why = None
        if p.returncode < 0:
            why = "killed by signal %d" % -p.returncode
        elif len(failed_calls) != 1:
            why = "the shim did not fail %s exactly once: %d" % (fn, len(failed_calls))
        elif ok + bad != ROUNDS or ok < ROUNDS - 1:
            why = "the process did not sign on after the fault: ok=%d failed=%d" % (ok, bad)
        elif bad and not (fn in p.stderr and "CKR_GENERAL_ERROR" in p.stderr):
            why = "the failure does not name %s and CKR_GENERAL_ERROR" % fn
        if why:
            problems.append("%s: %s\n%s" % (fn, why, describe(p)))
    assert not problems, "\n\n".join(problems)
