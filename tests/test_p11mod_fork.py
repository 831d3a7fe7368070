"""fork() waits until no thread is inside a call into a token's PKCS#11 module (issue 14): a
child must not inherit the module mid-call, its own mutexes held by a thread the child does
not have (one child in 50 failed so in an ASan run). The test shim over SoftHSM logs every
fork() made while calls into it were in flight (tests/p11shim/README.md, "fork")."""

from ctoktest import PIN, describe, run
from p11fixtures import P11Workspace, ShimLog, SoftHsm, require_pkcs11_tools, require_shim
from p11modtest import KEYS, MODULE, require_module, threads_binary


def test_fork_waits_for_the_calls_into_the_module_in_flight(tmp_path, build):
    require_module()
    require_pkcs11_tools()
    shim = require_shim()
    hsm = SoftHsm(tmp_path / "softhsm")
    hsm.init_token("forks", PIN)
    log = ShimLog(tmp_path / "shim.log")
    ws = P11Workspace(tmp_path, build, hsm, fixed_env={"CTOK_SHIM_LOG": str(log.path)})
    tok = ws.create_p11_token("forks", str(shim), "label", "forks")
    ws.add_key(tok, "ec", KEYS["ec"])
    # 4 threads sign through ctok-p11.so and the shim while the main thread forks 50 children
    p = run([threads_binary(tmp_path), str(MODULE), "ec", "4", "1500", "50"], ws.env(),
            input="\n", timeout=300)
    assert p.returncode == 0 and "forks_ok=50" in p.stdout, describe(p)
    signed = len(log.calls("C_Sign", "CKR_OK"))
    assert signed >= 4 * 1500, log.summary()  # the threads did sign through the shim
    assert log.calls("fork") == [], log.summary()
