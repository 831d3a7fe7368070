"""The PKCS#11 test shim (tests/p11shim): each CTOK_SHIM_* behaviour, seen the way a PKCS#11
application sees it, through OpenSC's pkcs11-tool and the shim's own driver
(ctok-p11shim-driver), over SoftHSM2 tokens made in a temp dir with softhsm2-util.

    /usr/bin/python3 -m pytest tests/p11shim

The shim comes from CTOK_BUILD_DIR (default <repo>/build)/tests/p11shim; when it is missing
or older than its sources it is built here with gcc."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD = Path(os.environ.get("CTOK_BUILD_DIR", REPO / "build"))
SOURCES = ["shim.c", "shim.h", "config.c", "ckr.c", "ckr.h", "frame.c", "card.c",
           "shim_driver.c"]
LOG_LINE = re.compile(r"^(\d+) (C_\w+) (CKR_\w+|0x[0-9A-F]+)$")
SO_PIN = "5678"


# ---- the shim and the tokens ----


def _run(argv, env=None, check=True, **kw):
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, **kw)
    if check and p.returncode != 0:
        pytest.fail("%s exited %d\n%s\n%s" % (" ".join(map(str, argv)), p.returncode, p.stdout,
                                              p.stderr))
    return p


def _gcc_build(out):
    cflags = subprocess.run(["pkg-config", "--cflags", "p11-kit-1"], capture_output=True,
                            text=True).stdout.split() or ["-I/usr/include/p11-kit-1"]
    common = ["gcc", "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", *cflags]
    _run([*common, "-shared", "-fPIC", "-fvisibility=hidden", "-Wl,--no-undefined", "-o",
          out / "ctok-p11shim.so", HERE / "shim.c", HERE / "config.c", HERE / "ckr.c", HERE / "frame.c",
          HERE / "card.c", "-ldl", "-lpthread"])
    _run([*common, "-o", out / "ctok-p11shim-driver", HERE / "shim_driver.c", HERE / "ckr.c",
          "-ldl", "-lpthread"])
    return out / "ctok-p11shim.so", out / "ctok-p11shim-driver"


@pytest.fixture(scope="session")
def shim(tmp_path_factory):
    """(module, driver): the CMake build's when it is up to date, else built here."""
    built = BUILD / "tests" / "p11shim"
    so, driver = built / "ctok-p11shim.so", built / "ctok-p11shim-driver"
    newest = max((HERE / s).stat().st_mtime for s in SOURCES)
    if all(p.exists() and p.stat().st_mtime >= newest for p in (so, driver)):
        # A sanitizer build (CTOK_SANITIZE) cannot be loaded by pkcs11-tool: build a plain one.
        if not any(san in so.read_bytes() for san in (b"libasan.so", b"libtsan.so")):
            return so, driver
    return _gcc_build(tmp_path_factory.mktemp("p11shim"))


class Hsm:
    """A SoftHSM2 token directory of its own, and the tools pointed at the shim."""

    def __init__(self, tmp, shim):
        self.tmp = tmp
        self.module, self.driver_bin = shim
        (tmp / "tokens").mkdir()
        conf = tmp / "softhsm2.conf"
        conf.write_text("directories.tokendir = %s\nobjectstore.backend = file\n"
                        "log.level = ERROR\n" % (tmp / "tokens"))
        # Nothing of the caller's CTOK_SHIM_* leaks in; each call adds its own.
        self.base_env = {k: v for k, v in os.environ.items() if not k.startswith("CTOK_SHIM_")}
        self.base_env["SOFTHSM2_CONF"] = str(conf)
        self.log = tmp / "shim.log"

    def env(self, **shim_env):
        env = dict(self.base_env)
        env.update({"CTOK_SHIM_" + k.upper(): str(v) for k, v in shim_env.items()})
        return env

    def init_token(self, label, pin):
        _run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin,
              "--so-pin", SO_PIN], env=self.base_env)

    def tool(self, *args, check=True, **shim_env):
        return _run(["pkcs11-tool", "--module", str(self.module), *args], env=self.env(**shim_env),
                    check=check)

    def driver(self, *args, check=True, **shim_env):
        return _run([str(self.driver_bin), args[0], str(self.module), *args[1:]],
                    env=self.env(**shim_env), check=check)

    def keygen(self, token, pin, **shim_env):
        self.tool("--token-label", token, "--login", "--pin", pin, "--keypairgen", "--key-type",
                  "EC:prime256v1", "--id", "01", "--label", "k", **shim_env)

    def log_lines(self):
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        for line in lines:
            assert LOG_LINE.match(line), "malformed log line %r" % line
        return [line.split() for line in lines]

    def calls(self, function):
        """The results of every logged call of function, in order."""
        return [rv for _, fn, rv in self.log_lines() if fn == function]


@pytest.fixture
def hsm(tmp_path, shim):
    return Hsm(tmp_path, shim)


def kv(output):
    """The driver's key=value lines."""
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def slots(listing):
    """pkcs11-tool -L output: one dict per slot with id, description, label, serial."""
    out = []
    for line in listing.splitlines():
        m = re.match(r"^Slot \d+ \((0x[0-9a-f]+)\): (.*)$", line)
        if m:
            out.append({"id": int(m.group(1), 16), "description": m.group(2).strip()})
            continue
        m = re.match(r"^\s+(token label|serial num)\s+: (.*)$", line)
        if m and out:
            out[-1]["label" if m.group(1) == "token label" else "serial"] = m.group(2).strip()
    return out


# ---- forwarding and the call log ----


def test_keys_made_and_used_through_the_shim_are_softhsm_keys(hsm, tmp_path):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111", log=hsm.log)
    data = tmp_path / "data"
    data.write_bytes(b"signed through the shim\n")
    digest = tmp_path / "digest"
    _run(["openssl", "dgst", "-sha256", "-binary", "-out", digest, data])
    sig = tmp_path / "sig"
    hsm.tool("--token-label", "plain", "--login", "--pin", "1111", "--sign", "-m", "ECDSA",
             "--id", "01", "--signature-format", "openssl", "-i", digest, "-o", sig, log=hsm.log)
    # The public key straight from SoftHSM, without the shim, verifies the signature.
    pub = tmp_path / "pub.der"
    _run(["pkcs11-tool", "--module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "plain",
          "--read-object", "--type", "pubkey", "--id", "01", "-o", pub], env=hsm.base_env)
    pem = tmp_path / "pub.pem"
    _run(["openssl", "pkey", "-pubin", "-inform", "DER", "-in", pub, "-out", pem])
    _run(["openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, data])

    lines = hsm.log_lines()
    pids = [pid for pid, _, _ in lines]
    assert len(set(pids)) == 2, "one pid per pkcs11-tool run"
    sign_run = [(fn, rv) for pid, fn, rv in lines if pid == pids[-1]]
    assert sign_run[0] == ("C_Initialize", "CKR_OK")
    assert sign_run[-1] == ("C_Finalize", "CKR_OK")
    for call in [("C_OpenSession", "CKR_OK"), ("C_Login", "CKR_OK"),
                 ("C_FindObjectsInit", "CKR_OK"), ("C_SignInit", "CKR_OK"),
                 ("C_Sign", "CKR_OK")]:
        assert call in sign_run
    assert ("C_GenerateKeyPair", "CKR_OK") in [(fn, rv) for _, fn, rv in lines]


def test_a_wrong_pin_is_one_failed_login_in_the_log(hsm):
    hsm.init_token("plain", "1111")
    p = hsm.tool("--token-label", "plain", "--login", "--pin", "9999", "-O", check=False,
                 log=hsm.log)
    assert p.returncode != 0 and "CKR_PIN_INCORRECT" in p.stderr + p.stdout
    assert hsm.calls("C_Login") == ["CKR_PIN_INCORRECT"]


def test_log_all_and_detail_name_the_slot_token_and_user(hsm):
    hsm.init_token("plain", "1111")
    hsm.tool("--token-label", "plain", "--login", "--pin", "1111", "-O", log=hsm.log,
             log_all=1, log_detail=1)
    lines = hsm.log.read_text().splitlines()
    login = [line for line in lines if " C_Login " in line]
    assert len(login) == 1
    assert re.match(r'^\d+ C_Login CKR_OK slot=\d+ token="plain" user=CKU_USER$', login[0])
    # CTOK_SHIM_LOG_ALL: the chatter too (never logged by default).
    assert any(" C_GetSlotList CKR_OK" in line for line in lines)
    assert any(" C_FindObjects CKR_OK" in line for line in lines)


def test_detail_names_the_mechanism_of_each_sign_init(hsm, tmp_path):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    digest = tmp_path / "digest"
    digest.write_bytes(bytes(range(32)))
    for mech in ("ECDSA", "ECDSA-SHA256"):
        hsm.tool("--token-label", "plain", "--login", "--pin", "1111", "--sign", "-m", mech,
                 "--id", "01", "-i", digest, "-o", tmp_path / "sig", check=False, log=hsm.log,
                 log_detail=1)
    inits = [line for line in hsm.log.read_text().splitlines() if " C_SignInit " in line]
    assert len(inits) == 2, inits
    assert re.match(r'^\d+ C_SignInit CKR_OK slot=\d+ token="plain" mech=CKM_ECDSA$', inits[0])
    # Debian's SoftHSM has no CKM_ECDSA_SHA256: the log still names what was asked for
    assert re.match(r'^\d+ C_SignInit CKR_\w+ slot=\d+ token="plain" mech=CKM_ECDSA_SHA256$',
                    inits[1])


# ---- the behaviours ----


def test_multipin_card_shows_two_tokens_in_readers_with_one_description(hsm):
    hsm.init_token("idtok", "1111")
    hsm.init_token("sigtok", "2222")
    hsm.init_token("other", "3333")
    card = dict(multipin="idtok,sigtok", log=hsm.log, log_detail=1)
    listed = [s for s in slots(hsm.tool("-L", **card).stdout) if "label" in s]
    by_label = {s["label"]: s for s in listed}
    ident, sign = by_label["eID Card (identification)"], by_label["eID Card (signature)"]
    assert ident["description"] == sign["description"] == "Card Reader"
    assert ident["id"] != sign["id"]
    assert ident["serial"] != sign["serial"]
    # Other tokens are left as SoftHSM shows them.
    assert by_label["other"]["description"].startswith("SoftHSM slot ID")
    assert len(listed) == 3

    # Each half has its own PIN.
    hsm.tool("--token-label", "eID Card (signature)", "--login", "--pin", "2222", "-O", **card)
    p = hsm.tool("--token-label", "eID Card (signature)", "--login", "--pin", "1111", "-O",
                 check=False, **card)
    assert p.returncode != 0
    logins = [line.split(" ", 3)[2:] for line in hsm.log.read_text().splitlines()
              if " C_Login " in line]
    assert logins == [
        ["CKR_OK", 'slot=%d token="eID Card (signature)" user=CKU_USER' % sign["id"]],
        ["CKR_PIN_INCORRECT", 'slot=%d token="eID Card (signature)" user=CKU_USER' % sign["id"]],
    ]
    hsm.tool("--token-label", "eID Card (identification)", "--login", "--pin", "1111", "-O",
             **card)

    # Without the variable the tokens are plain SoftHSM tokens again.
    plain = {s.get("label") for s in slots(hsm.tool("-L").stdout)}
    assert {"idtok", "sigtok", "other"} <= plain


def test_version_211_in_get_info_and_the_function_list(hsm):
    hsm.init_token("plain", "1111")
    assert "Cryptoki version 2.11" in hsm.tool("-I", version="2.11").stdout
    assert kv(hsm.driver("info", version="2.11").stdout) == {"list_version": "2.11",
                                                             "cryptoki_version": "2.11"}
    assert kv(hsm.driver("info").stdout) == {"list_version": "2.40", "cryptoki_version": "2.40"}


def test_private_certs_are_found_only_after_login(hsm, tmp_path):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    cert = tmp_path / "cert.der"
    _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
          "-nodes", "-keyout", tmp_path / "k.pem", "-subj", "/CN=shim", "-days", "2",
          "-outform", "DER", "-out", cert])
    hsm.tool("--token-label", "plain", "--login", "--pin", "1111", "-w", cert, "-y", "cert",
             "--id", "01", "--label", "c")

    def objects(*login, **shim_env):
        out = hsm.tool("--token-label", "plain", *login, "-O", **shim_env).stdout
        return sorted(line.split(";")[0] for line in out.splitlines() if "Object;" in line)

    login = ("--login", "--pin", "1111")
    assert objects() == ["Certificate Object", "Public Key Object"]
    assert objects(private_certs=1) == ["Public Key Object"]
    assert objects(*login, private_certs=1) == ["Certificate Object", "Private Key Object",
                                                "Public Key Object"]
    assert "login required" in hsm.tool("-L", private_certs=1).stdout


@pytest.mark.parametrize("setting", ["fail", "fail_once"])
def test_fail_makes_the_nth_call_and_every_later_one_fail(hsm, setting):
    """CTOK_SHIM_FAIL_ONCE fails the Nth call only; that later calls are let through is
    seen in ctok's tests/test_p11_faults.py (this driver re-initializes after a connection
    error, which starts the count again for both)."""
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    out = kv(hsm.driver("sign", "plain", "1111", "1", "5", "0", check=False, log=hsm.log,
                        **{setting: "C_Sign:3:CKR_DEVICE_ERROR"}).stdout)
    assert (out["signed"], out["last_error"]) == ("2", "CKR_DEVICE_ERROR")
    assert hsm.calls("C_Sign") == ["CKR_OK", "CKR_OK", "CKR_DEVICE_ERROR"]
    if setting == "fail_once":
        return
    # Counted from the last C_Initialize: after re-initializing, two more succeed each time.
    out = kv(hsm.driver("sign", "plain", "1111", "1", "6", "1",
                        fail="C_Sign:3:CKR_DEVICE_ERROR").stdout)
    assert (out["signed"], out["failed"], out["reinit"]) == ("6", "0", "2")


def test_fail_through_pkcs11_tool(hsm):
    hsm.init_token("plain", "1111")
    p = hsm.tool("--token-label", "plain", "--login", "--pin", "1111", "-O", check=False,
                 fail="C_Login:1:CKR_PIN_LOCKED", log=hsm.log)
    assert p.returncode != 0 and "CKR_PIN_LOCKED" in p.stderr + p.stdout
    assert hsm.calls("C_Login") == ["CKR_PIN_LOCKED"]
    p = hsm.tool("-L", check=False, fail="C_GetSlotList:1:0x30")
    assert p.returncode != 0 and "CKR_DEVICE_ERROR" in p.stderr + p.stdout


@pytest.mark.parametrize("setting", ["fail", "fail_once"])
def test_a_bad_setting_fails_c_initialize_and_says_why(hsm, setting):
    p = hsm.tool("-L", check=False, **{setting: "C_Sing:1:CKR_DEVICE_ERROR"})
    assert p.returncode != 0
    assert "CTOK_SHIM_%s=C_Sing:1:CKR_DEVICE_ERROR" % setting.upper() in p.stderr


def test_disconnect_every_500_of_10000_signatures_in_4_threads(hsm):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    out = kv(hsm.driver("sign", "plain", "1111", "4", "10000", "3", log=hsm.log,
                        disconnect_every=500).stdout)
    assert (out["signed"], out["failed"]) == ("10000", "0")
    # One reconnection per disconnection; the last one is still down at the end.
    assert out["reinit"] == "19"
    assert out["stale_session"] == "CKR_SESSION_HANDLE_INVALID"
    assert out["probe_slotlist"] == "CKR_DEVICE_REMOVED"
    assert out["probe_info"] == "CKR_OK"
    calls = hsm.log_lines()  # one intact line per call although 4 threads wrote them
    assert sum(1 for _, fn, rv in calls if (fn, rv) == ("C_Sign", "CKR_OK")) == 10000
    assert sum(1 for _, fn, rv in calls if (fn, rv) == ("C_Initialize", "CKR_OK")) == 20
    assert sum(1 for _, fn, rv in calls if (fn, rv) == ("C_Finalize", "CKR_OK")) == 20


def test_disconnected_module_refuses_all_but_get_info_until_reinitialized(hsm):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    out = kv(hsm.driver("sign", "plain", "1111", "1", "25", "0", check=False,
                        disconnect_every="10:CKR_DEVICE_ERROR").stdout)
    assert (out["signed"], out["failed"], out["reinit"]) == ("10", "1", "0")
    assert out["last_error"] == "CKR_DEVICE_ERROR"
    assert out["probe_slotlist"] == "CKR_DEVICE_ERROR"
    assert out["probe_info"] == "CKR_OK"


def test_unlock_pin_with_the_puk(hsm):
    hsm.init_token("card", "1111")
    p = hsm.driver("unlock", "card", "0000", "4444", check=False, log=hsm.log)
    assert kv(p.stdout) == {"C_UnlockPIN": "CKR_PIN_INCORRECT"}
    p = hsm.driver("unlock", "card", SO_PIN, "4444", log=hsm.log)
    assert kv(p.stdout) == {"C_UnlockPIN": "CKR_OK", "login_new_pin": "CKR_OK"}
    assert hsm.calls("C_UnlockPIN") == ["CKR_PIN_INCORRECT", "CKR_OK"]
    hsm.tool("--token-label", "card", "--login", "--pin", "4444", "-O")
    assert hsm.tool("--token-label", "card", "--login", "--pin", "1111", "-O",
                    check=False).returncode != 0


def test_pin_tries_count_wrong_pins_across_processes_and_lock_like_a_card(hsm, tmp_path):
    hsm.init_token("card", "1111")
    tries = "3:%s" % (tmp_path / "tries")

    def flags():
        out = hsm.tool("-L", pin_tries=tries).stdout
        return re.search(r"token flags\s*: (.*)", out).group(1)

    assert "user PIN count low" not in flags()
    for want in ("user PIN count low", "final user PIN try", "user PIN locked"):
        p = hsm.tool("--token-label", "card", "--login", "--pin", "0000", "-O", check=False,
                     pin_tries=tries, log=hsm.log)
        assert p.returncode != 0
        assert want in flags()
    # locked: the right PIN does not reach SoftHSM any more; the PUK sets a new one
    p = hsm.tool("--token-label", "card", "--login", "--pin", "1111", "-O", check=False,
                 pin_tries=tries, log=hsm.log)
    assert p.returncode != 0
    assert hsm.calls("C_Login") == ["CKR_PIN_INCORRECT"] * 3 + ["CKR_PIN_LOCKED"]
    hsm.driver("unlock", "card", SO_PIN, "4444", pin_tries=tries)
    assert "final user PIN try" not in flags() and "user PIN locked" not in flags()
    assert (tmp_path / "tries").read_text() == ""


def test_no_unlock_answers_function_not_supported(hsm):
    hsm.init_token("card", "1111")
    p = hsm.driver("unlock", "card", SO_PIN, "4444", check=False, no_unlock=1, log=hsm.log)
    assert kv(p.stdout) == {"C_UnlockPIN": "CKR_FUNCTION_NOT_SUPPORTED"}
    assert hsm.calls("C_UnlockPIN") == ["CKR_FUNCTION_NOT_SUPPORTED"]
    hsm.tool("--token-label", "card", "--login", "--pin", "1111", "-O")
    # SoftHSM itself has no C_UnlockPIN: the case ctok's SO-login fallback is for.
    p = _run([str(hsm.driver_bin), "unlock", "/usr/lib/softhsm/libsofthsm2.so", "card", SO_PIN,
              "4444"], env=hsm.base_env, check=False)
    assert kv(p.stdout) == {"C_UnlockPIN": "absent"}


def test_a_forked_child_must_initialize_before_using_the_module(hsm):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    out = kv(hsm.driver("fork", "plain", "1111", log=hsm.log).stdout)
    assert out == {
        "parent_sign": "CKR_OK",
        "child0_inherited": "CKR_CRYPTOKI_NOT_INITIALIZED",
        "child0_init": "CKR_OK",
        "child0_sign": "CKR_OK",
        "child1_inherited": "CKR_CRYPTOKI_NOT_INITIALIZED",
        "child1_finalize": "CKR_OK",
        "child1_init": "CKR_OK",
        "child1_sign": "CKR_OK",
        "parent_after": "CKR_OK",
    }
    assert len({pid for pid, _, _ in hsm.log_lines()}) == 3


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="no valgrind")
def test_no_leaks_or_memory_errors_while_reconnecting(hsm):
    hsm.init_token("plain", "1111")
    hsm.keygen("plain", "1111")
    p = _run(["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
              "--errors-for-leak-kinds=definite,indirect", str(hsm.driver_bin), "sign",
              str(hsm.module), "plain", "1111", "2", "100", "3"],
             env=hsm.env(disconnect_every=20, log=hsm.log, log_detail=1, private_certs=1),
             check=False)
    assert p.returncode == 0, p.stderr
    assert kv(p.stdout)["signed"] == "100"
