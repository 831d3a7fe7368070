"""Issue 12, system-wide setup that cannot silently fail: `ctok doctor`, the precedence of
$CTOK_CONFIG over openssl.cnf's ctok-config (and --config over both in the tool), and the
README's Debian openssl.cnf steps applied to a copy of this machine's own file."""
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ctoktest import (
    PIN,
    REPO,
    Workspace,
    assert_no_secret,
    assert_ok,
    assert_verified,
    describe,
    sign_digest,
    stored_auth,
    verify_digest,
)
from p11fixtures import SOFTHSM_LIB, P11Workspace, SoftHsm, require_pkcs11_tools

DEBIAN_CNF = Path("/etc/ssl/openssl.cnf")


def openssl_cnf(ws, name, default=True, ctok=True, param=None):
    """An OPENSSL_CONF that activates default and/or ctok (by absolute module path)."""
    lines = ["openssl_conf = init", "[init]", "providers = provs", "[provs]"]
    if default:
        lines.append("default = default_sect")
    if ctok:
        lines.append("ctok = ctok_sect")
    lines += ["[default_sect]", "activate = 1", "[ctok_sect]",
              "module = %s" % (ws.build / "ctok.so"), "activate = 1"]
    if param is not None:
        lines.append("ctok-config = %s" % param)
    return ws.write(name, "\n".join(lines) + "\n", 0o644)


def doctor(ws, cnf, *args, env=None):
    extra = {"OPENSSL_CONF": cnf}
    extra.update(env or {})
    return assert_no_secret(ws.ctok("doctor", *args, env=extra))


def doctor_json(ws, cnf, env=None, code=None):
    p = doctor(ws, cnf, "--json", env=env)
    out = json.loads(p.stdout)
    assert p.returncode == (0 if out["ok"] else 1), describe(p)
    if code is not None:
        assert p.returncode == code, describe(p)
    return out


def problems_text(ws, cnf, env=None):
    """The problem lines of a text run, which must exit 1."""
    p = doctor(ws, cnf, env=env)
    assert p.returncode == 1, describe(p)
    return [l.strip() for l in p.stdout.splitlines() if l.strip().startswith("problem:")]


@pytest.fixture
def hsm_ws(tmp_path, build):
    require_pkcs11_tools()
    hsm = SoftHsm(tmp_path / "softhsm")
    return P11Workspace(tmp_path, build, hsm)


def test_all_fine_with_a_soft_and_a_softhsm_token(hsm_ws):
    ws = hsm_ws
    ws.hsm.init_token("doc-hsm", PIN)
    soft = ws.create_token("soft")
    hsm = ws.create_p11_token("hsm", SOFTHSM_LIB, "label", "doc-hsm")
    cnf = openssl_cnf(ws, "all.cnf")
    out = doctor_json(ws, cnf, code=0)
    assert out["problems"] == []
    assert out["openssl_config"] == {"path": str(cnf), "from": "OPENSSL_CONF", "readable": True,
                                     "loads": True, "ctok": True, "default": True}
    assert out["tokens_config"] == {"path": str(ws.config), "from": "CTOK_CONFIG"}
    got = {t["name"]: t for t in out["tokens"]}
    assert got["soft"] == {"name": "soft", "type": "pkcs12", "opens": True,
                           "auth": "auth file %s" % soft.pin_file, "auth_ok": True}
    assert got["hsm"]["type"] == "pkcs11" and got["hsm"]["opens"] is True
    assert got["hsm"]["auth_ok"] is True and str(hsm.pin_file) in got["hsm"]["auth"]
    p = doctor(ws, cnf)
    assert p.returncode == 0 and "no problem found" in p.stdout, describe(p)
    assert "provider ctok: loaded" in p.stdout and "provider default: loaded" in p.stdout


def test_ctok_not_loaded_by_the_openssl_config(ws):
    ws.create_token("soft")
    out = doctor_json(ws, ws.plain_cnf, code=1)
    assert out["openssl_config"]["ctok"] is False
    assert out["openssl_config"]["default"] is True  # the implicit default of an empty config
    (line,) = problems_text(ws, ws.plain_cnf)
    assert "does not load provider ctok" in line and str(ws.plain_cnf) in line
    assert "sets no openssl_conf" in line, line


def test_why_ctok_is_not_loaded(ws):
    """The problem line says which link of openssl_conf -> providers -> ctok -> activate ->
    module is missing."""
    ws.create_token("soft")
    cnf = openssl_cnf(ws, "all.cnf")
    cases = {
        "no-providers.cnf": ("providers = provs\n", "", "its [init] has no 'providers ='"),
        "no-ctok.cnf": ("ctok = ctok_sect\n", "", "its [provs] names no ctok"),
        "inactive.cnf": ("module = %s\nactivate = 1\n" % (ws.build / "ctok.so"),
                         "module = %s\n" % (ws.build / "ctok.so"),
                         "its [ctok_sect] does not say 'activate = 1'"),
        "module.cnf": (str(ws.build / "ctok.so"), str(ws.path("nowhere/ctok.so")),
                       "module %s (from [ctok_sect]) did not load" % ws.path("nowhere/ctok.so")),
    }
    for name, (old, new, why) in cases.items():
        text = cnf.read_text()
        assert old in text, (old, text)
        broken = ws.write(name, text.replace(old, new), 0o644)
        (line,) = problems_text(ws, broken)
        assert "does not load provider ctok: " + why in line, line
    broken = ws.write("broken.cnf", cnf.read_text() + "[unclosed\n", 0o644)
    (line,) = problems_text(ws, broken)
    assert "OpenSSL config %s fails to load (" % broken in line, line
    assert "provider ctok: it does not parse (line 12)" in line, line
    # by name, from OPENSSL_MODULES (as the shipped snippets name it)
    named = ws.write("named.cnf", cnf.read_text().replace(str(ws.build / "ctok.so"), "ctok.so"),
                     0o644)
    assert doctor_json(ws, named, env={"OPENSSL_MODULES": ws.build}, code=0)
    empty = ws.path("empty-modules")
    empty.mkdir()
    (line,) = problems_text(ws, named, env={"OPENSSL_MODULES": empty})
    assert "module ctok.so (from [ctok_sect]) did not load: not in OPENSSL_MODULES %s" % empty \
        in line, line


def test_default_not_loaded_by_the_openssl_config(ws):
    ws.create_token("soft")
    cnf = openssl_cnf(ws, "ctok-only.cnf", default=False)
    out = doctor_json(ws, cnf, code=1)
    assert out["openssl_config"]["ctok"] is True and out["openssl_config"]["default"] is False
    (line,) = problems_text(ws, cnf)
    assert "does not load provider default" in line and str(cnf) in line


def test_a_missing_openssl_config_is_a_problem(ws):
    out = doctor_json(ws, ws.path("nowhere.cnf"), code=1)
    assert out["openssl_config"]["readable"] is False
    assert any("nowhere.cnf" in l and "cannot be read" in l for l in out["problems"])


def test_an_auth_file_too_open_or_missing(ws):
    cnf = openssl_cnf(ws, "all.cnf")
    tok = ws.create_token("soft")
    os.chmod(tok.pin_file, 0o644)
    (line,) = problems_text(ws, cnf)
    assert "token 'soft'" in line and str(tok.pin_file) in line, line
    assert "others" in line or "permission" in line or "readable" in line, line
    os.unlink(tok.pin_file)
    (line,) = problems_text(ws, cnf)
    assert "token 'soft'" in line and str(tok.pin_file) in line, line
    out = doctor_json(ws, cnf, code=1)
    assert out["tokens"][0]["opens"] is True and out["tokens"][0]["auth_ok"] is False


def test_a_missing_keystore(ws):
    cnf = openssl_cnf(ws, "all.cnf")
    tok = ws.create_token("soft")
    os.unlink(tok.keystore)
    (line,) = problems_text(ws, cnf)
    assert "token 'soft'" in line and "cannot be opened" in line, line
    assert str(tok.keystore) in line, line
    out = doctor_json(ws, cnf, code=1)
    assert out["tokens"][0]["opens"] is False and out["tokens"][0]["auth_ok"] is True


def test_an_auth_variable_unset_then_set(ws):
    cnf = openssl_cnf(ws, "all.cnf")
    tok = ws.create_token("soft")
    ws.set_token_fields(tok, auth={"env": "CTOK_DOCTOR_PIN"})
    (line,) = problems_text(ws, cnf)
    assert "token 'soft'" in line and "CTOK_DOCTOR_PIN" in line and "not set" in line, line
    out = doctor_json(ws, cnf, env={"CTOK_DOCTOR_PIN": tok.pin}, code=0)
    assert out["tokens"][0]["auth"] == "environment variable CTOK_DOCTOR_PIN"


def test_a_stored_code_under_the_wrong_master_key_and_a_prompt(ws):
    cnf = openssl_cnf(ws, "all.cnf")
    tok = ws.create_token("soft")
    key = ws.write("master.key", os.urandom(32))
    conf = ws.load_config()
    conf["master_key"] = str(key)
    ws.save_config(conf)
    ws.set_token_fields(tok, auth={"stored": stored_auth(os.urandom(32), tok.id, tok.pin)})
    (line,) = problems_text(ws, cnf)
    assert "token 'soft'" in line and "does not decrypt" in line, line
    ws.set_token_fields(tok, auth={"stored": stored_auth(key.read_bytes(), tok.id, tok.pin)})
    assert doctor_json(ws, cnf, code=0)["tokens"][0]["auth_ok"] is True
    ws.set_token_fields(tok, auth={"prompt": True})
    out = doctor_json(ws, cnf, code=0)
    assert out["tokens"][0]["auth"] == "prompt" and out["tokens"][0]["auth_ok"] is None


def test_as_a_server_worker_user_the_files_it_cannot_read(ws):
    """The nginx-worker case: root made the token, the doctor runs as the user the server
    runs as ('nobody' here) and names each file that user cannot read."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run as another user")
    d = Path(tempfile.mkdtemp(prefix="ctok-doctor-"))
    try:
        os.chmod(d, 0o755)
        root_ws = Workspace(d, ws.build)
        tok = root_ws.create_token("soft")
        os.chmod(root_ws.config, 0o644)
        cnf = openssl_cnf(root_ws, "all.cnf")
        env = root_ws.env({"OPENSSL_CONF": cnf, "HOME": d})
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                str(ws.build / "ctok"), "doctor", "--json"]
        p = assert_no_secret(subprocess.run(argv, env=env, capture_output=True, text=True,
                                            timeout=60, stdin=subprocess.DEVNULL))
        assert p.returncode == 1, describe(p)
        out = json.loads(p.stdout)
        assert out["openssl_config"]["ctok"] is True
        assert out["tokens"][0]["opens"] is False and out["tokens"][0]["auth_ok"] is False
        opened, auth = out["problems"]
        assert "token 'soft': cannot be opened" in opened and str(tok.keystore) in opened, opened
        assert "token 'soft': its auth source gives no code" in auth, auth
        assert str(tok.pin_file) in auth, auth
        # root, the same files: all fine
        assert doctor_json(root_ws, cnf, code=0)["problems"] == []
    finally:
        shutil.rmtree(d)


def test_a_missing_tokens_config(ws):
    cnf = openssl_cnf(ws, "all.cnf")
    (line,) = problems_text(ws, cnf)
    assert str(ws.config) in line and "CTOK_CONFIG" in line, line


# ---------------------------------------------------------------- precedence


def test_ctok_config_env_wins_over_the_provider_parameter(ws):
    toks = {}
    for name in ("a", "b"):
        cfg = ws.path("%s.json" % name)
        ws.config = cfg
        toks[name] = ws.create_token(name)
        ws.add_key(toks[name], "k", "ec:P-256")
    cnf = openssl_cnf(ws, "param.cnf", param=ws.path("a.json"))

    def signs(name, env):
        p, sig, dg = sign_digest(ws, toks[name].key_uri("k"), providers=None, env=env)
        return p, sig, dg

    # CTOK_CONFIG set: the environment wins over ctok-config
    env = {"OPENSSL_CONF": cnf, "CTOK_CONFIG": ws.path("b.json")}
    p, sig, dg = signs("b", env)
    assert_verified(verify_digest(ws, toks["b"].cert("k"), dg, sig))
    p, _, _ = signs("a", env)
    assert p.returncode != 0 and "token" in p.stderr, describe(p)
    out = doctor_json(ws, cnf, env={"CTOK_CONFIG": ws.path("b.json")})
    assert out["tokens_config"] == {"path": str(ws.path("b.json")), "from": "CTOK_CONFIG"}
    # no CTOK_CONFIG: the parameter
    env = {"OPENSSL_CONF": cnf, "CTOK_CONFIG": None}
    p, sig, dg = signs("a", env)
    assert_verified(verify_digest(ws, toks["a"].cert("k"), dg, sig))
    out = doctor_json(ws, cnf, env={"CTOK_CONFIG": None})
    assert out["tokens_config"] == {"path": str(ws.path("a.json")),
                                    "from": "ctok-config parameter"}
    # neither: the default
    out = doctor_json(ws, openssl_cnf(ws, "noparam.cnf"), env={"CTOK_CONFIG": None})
    assert out["tokens_config"] == {"path": "/etc/ctok/tokens.json", "from": "default"}
    # the tool: --config wins over CTOK_CONFIG
    p = assert_ok(ws.ctok("--config", ws.path("a.json"), "token", "list", "--json",
                          env={"CTOK_CONFIG": ws.path("b.json")}))
    assert [t["name"] for t in json.loads(p.stdout)] == ["a"], describe(p)
    p = doctor(ws, cnf, "--config", ws.path("a.json"), "--json",
               env={"CTOK_CONFIG": ws.path("b.json")})
    assert json.loads(p.stdout)["tokens_config"] == {"path": str(ws.path("a.json")),
                                                     "from": "--config"}


def test_shipped_ctok_cnf_hard_codes_no_tokens_config():
    for name in ("ctok.cnf", "ctok-debian.cnf"):
        text = (REPO / "openssl.cnf.d" / name).read_text()
        assert not re.search(r"^\s*ctok-config\s*=", text, re.M), name


# ---------------------------------------------------------------- Debian's openssl.cnf


def readme_debian_steps():
    text = (REPO / "README.md").read_text()
    m = re.search(r"^#### System-wide setup on Debian\n.*?^```sh\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no sh block under '#### System-wide setup on Debian'"
    return m.group(1)


def test_readme_debian_steps_on_a_copy_of_this_machines_openssl_cnf(ws):
    if not DEBIAN_CNF.exists():
        pytest.skip("no %s on this machine" % DEBIAN_CNF)
    copy = ws.write("openssl.cnf", DEBIAN_CNF.read_bytes(), 0o644)
    snippet = ws.path("ctok-debian.cnf")
    steps = readme_debian_steps()
    # the README's own lines, with the two paths pointing at the copies
    steps, n = re.subn(r"^CNF=.*$", "CNF=%s" % copy, steps, flags=re.M)
    steps, m = re.subn(r"^SNIPPET=.*$", "SNIPPET=%s" % snippet, steps, flags=re.M)
    assert n == 1 and m == 1, steps
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", steps], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, describe(p)
    edited = copy.read_bytes()
    # again: nothing changes, the original stays kept
    p = subprocess.run(["bash", "-euo", "pipefail", "-c", steps], cwd=REPO, capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, describe(p)
    assert copy.read_bytes() == edited
    assert ws.path("openssl.cnf.before-ctok").read_bytes() == DEBIAN_CNF.read_bytes()
    env = {"OPENSSL_CONF": copy, "OPENSSL_MODULES": ws.build}
    p = assert_ok(ws.ossl("list", "-providers", providers=None, env=env))
    assert re.search(r"^  ctok$", p.stdout, re.M) and re.search(r"^  default$", p.stdout, re.M), \
        describe(p)
    # a ctok key signs, with nothing on the command line naming ctok
    tok = ws.create_token("soft")
    ws.add_key(tok, "k", "ec:P-256")
    p, sig, dg = sign_digest(ws, tok.key_uri("k"), providers=None, env=env)
    assert_verified(verify_digest(ws, tok.cert("k"), dg, sig))
    # an ordinary file key still works, through default
    key = ws.path("plain.key")
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-out", key, providers=None, env=env))
    pub = ws.path("plain.pub")
    assert_ok(ws.ossl("pkey", "-in", key, "-pubout", "-out", pub, providers=None, env=env))
    p, sig, dg = sign_digest(ws, key, providers=None, env=env)
    assert_ok(p)
    assert_verified(verify_digest(ws, pub, dg, sig, certin=False))
    # and the doctor agrees
    out = doctor_json(ws, copy, env={"OPENSSL_MODULES": ws.build}, code=0)
    assert out["openssl_config"]["ctok"] and out["openssl_config"]["default"]
    # the unedited file loads no ctok: what the steps are for
    out = doctor_json(ws, ws.path("openssl.cnf.before-ctok"), env={"OPENSSL_MODULES": ws.build},
                      code=1)
    assert out["openssl_config"]["ctok"] is False
