"""An admin used to git, p11tool and pkcs11-tool finds the same conventions in ctok: --version,
a group's help, options each command declares (getopt_long: '--opt=value', '--' ends options,
an option a command does not take is an error naming both), --json on every command that
prints, an empty token list on a fresh machine, every object's URIs in listings, a token's
mechanisms as pkcs11-tool -M lists them, key specs that say what is accepted, and key
references that never lose the end of a long alias."""

import json
import re
import subprocess

import pytest

from ctoktest import PIN, assert_ok, assert_tool_error, describe, pem_blocks
from p11fixtures import SOFTHSM_LIB, fresh_hsm  # noqa: F401  (fixture fresh_hsm)

LABEL = "conv-token"


def project_version(root):
    text = (root / "CMakeLists.txt").read_text()
    return re.search(r"project\(ctok VERSION ([0-9.]+)", text).group(1)


def test_version_is_the_cmake_project_version(ws):
    from pathlib import Path

    want = project_version(Path(__file__).resolve().parent.parent)
    p = assert_ok(ws.ctok("--version"))
    assert p.stdout.startswith("ctok %s " % want), describe(p)
    p = assert_ok(ws.ctok("--help"))
    assert p.stdout.startswith("ctok %s:" % want) and "ctok --version" in p.stdout, describe(p)


def test_a_group_alone_is_a_usage_error_with_its_help_and_help_asked_for_is_not(ws):
    p = ws.ctok("token")
    assert p.returncode == 2 and p.stdout == "", describe(p)
    for verb in ("create", "list", "show", "modify", "delete", "activate", "deactivate"):
        assert "ctok token %s" % verb in p.stderr, describe(p)
    assert "ctok key generate" not in p.stderr
    p = assert_ok(ws.ctok("token", "--help"))
    assert "ctok token list" in p.stdout and p.stderr == "", describe(p)
    p = assert_ok(ws.ctok("key", "--help"))
    assert "ctok key generate" in p.stdout and "ctok token list" not in p.stdout


def test_an_option_the_command_does_not_take_is_an_error_naming_option_and_command(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256", cert=False)
    for argv, cmd, opt in ((["key", "list", "tok", "--keystore", "x.p12"], "key list",
                            "--keystore"),
                           (["token", "list", "--remember"], "token list", "--remember"),
                           (["cert", "list", "tok", "--out=x.pem"], "cert list", "--out"),
                           (["ref", "tok", "k", "--auth-file", str(tok.pin_file)], "ref",
                            "--auth-file")):
        p = ws.ctok(*argv)
        assert p.returncode == 2 and p.stdout == "", describe(p)
        assert "'%s' takes no option %s" % (cmd, opt) in p.stderr, describe(p)
    # a flag given a value is refused too
    p = ws.ctok("token", "list", "--json=yes")
    assert p.returncode == 2 and "option --json takes no value" in p.stderr, describe(p)


def test_equals_form_and_double_dash(ws):
    tok = ws.create_token("tok")
    # --opt=value works like --opt value
    p = assert_ok(ws.ctok("key", "generate", "tok", "k", "ec:P-256",
                          "--auth-file=%s" % tok.pin_file, "--json"))
    assert json.loads(p.stdout)["alias"] == "k"
    # '--' ends options: an alias that starts with '-' is an argument
    p = assert_ok(ws.ctok("key", "generate", "--auth-file", str(tok.pin_file), "--", "tok",
                          "-dash", "ec:P-256"))
    assert "'-dash'" in p.stdout, describe(p)
    assert "-dash" in [k["alias"] for k in tok.keys()]
    # options stand anywhere, as without POSIXLY_CORRECT
    p = assert_ok(ws.ctok("key", "list", "tok", "--json", env={"POSIXLY_CORRECT": "1"}))
    assert "-dash" in [k["alias"] for k in json.loads(p.stdout)]
    # without '--' it is an option key generate does not take
    p = ws.ctok("key", "generate", "tok", "-dash2", "ec:P-256")
    assert p.returncode == 2, describe(p)


def test_every_printing_command_speaks_json(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256")
    cert = tok.cert("k")
    pin = str(tok.pin_file)
    cases = [
        ["token", "list"], ["token", "show", "tok"], ["key", "list", "tok"],
        ["cert", "list", "tok"], ["cert", "export", "tok", "k"], ["ref", "tok", "k"],
        ["key", "test", "tok", "k", "--auth-file", pin],
        ["token", "activate", "tok", "--auth-file", pin],
        ["token", "modify", "tok", "--audit-use"],
        ["pin", "change", "tok", "--auth-file", pin, "--new-auth-file", pin],
        ["cert", "import", "tok", "k2", str(cert), "--auth-file", pin],
        ["cert", "rename", "tok", "k2", "k4", "--auth-file", pin],
        ["cert", "import", "tok", "k4", str(cert), "--replace", "--auth-file", pin],
        ["cert", "remove", "tok", "k4", "--auth-file", pin],
        ["key", "generate", "tok", "k3", "ec:P-256", "--auth-file", pin],
        ["key", "rename", "tok", "k3", "k3b", "--auth-file", pin],
        ["key", "remove", "tok", "k3b", "--auth-file", pin],
        ["token", "deactivate", "tok"],
    ]
    for argv in cases:
        p = assert_ok(ws.ctok(*argv, "--json"))
        try:
            json.loads(p.stdout)
        except ValueError:
            raise AssertionError("not JSON: %s" % describe(p))
    assert json.loads(assert_ok(ws.ctok("ref", "tok", "k", "--json")).stdout)["uri"] == \
        "ctok:token-id=%s;object=k;type=private" % tok.id
    p = assert_ok(ws.ctok("token", "delete", "tok", "--json"))
    assert json.loads(p.stdout)["deleted"] is True


def test_token_list_on_a_fresh_machine_is_empty_and_succeeds(ws, tmp_path):
    home = tmp_path / "fresh-home"
    home.mkdir()
    env = {"HOME": home, "CTOK_CONFIG": home / "ctok" / "tokens.json"}
    p = assert_ok(ws.ctok("token", "list", "--json", env=env, config=False))
    assert json.loads(p.stdout) == [], describe(p)
    p = assert_ok(ws.ctok("token", "list", env=env, config=False))
    assert "No tokens" in p.stdout and p.stderr == "", describe(p)
    assert not (home / "ctok").exists()


def test_key_spec_errors_and_help_list_exactly_what_the_parser_accepts(ws):
    tok = ws.create_token("tok")
    help_text = assert_ok(ws.ctok("key", "generate", "--help")).stdout
    accepted = help_text.strip().splitlines()[-1].strip()
    assert "rsa:BITS (2048 to 8192" in accepted and "ed25519" in accepted
    curves = re.findall(r"ec:([A-Za-z0-9-]+)", accepted)
    assert set(curves) >= {"P-256", "P-384", "P-521"}
    for bad, why in (("dsa:2048", "unknown key type"), ("ec:P-999", "unknown curve"),
                     ("rsa:1024", "RSA size must be 2048 to 8192")):
        p = ws.ctok("key", "generate", "tok", "x", bad)
        assert p.returncode == 2, describe(p)
        assert "key spec '%s'" % bad in p.stderr and why in p.stderr, describe(p)
        assert "accepted: " + accepted in p.stderr, describe(p)
    # a curve is taken by the parser exactly when the help names it (candidates: OpenSSL's
    # curves and the NIST names)
    listed = subprocess.run(["openssl", "ecparam", "-list_curves"], capture_output=True,
                            text=True, timeout=30).stdout
    candidates = {l.split(":")[0].strip() for l in listed.splitlines() if ":" in l}
    candidates |= {"P-192", "P-224", "P-256", "P-384", "P-521"}
    for i, curve in enumerate(sorted(candidates)):
        p = ws.ctok("key", "generate", "tok", "c%d" % i, "ec:" + curve, "--auth-file",
                    str(tok.pin_file))
        assert (p.returncode == 0) == (curve in curves), (curve, describe(p))


def test_ref_with_a_long_alias_writes_the_whole_uri(ws):
    tok = ws.create_token("tok")
    alias = "web-" + "é/;x" * 120  # escapes to well over 600 characters
    ws.generate(tok, alias, "ec:P-256")
    p = assert_ok(ws.ctok("ref", "tok", alias, "--json"))
    uri = json.loads(p.stdout)["uri"]
    assert len(uri) > 1000 and uri.endswith(";type=private"), uri
    from urllib.parse import unquote

    assert unquote(uri.split("object=")[1].split(";type=")[0]) == alias
    pem = assert_ok(ws.ctok("ref", "tok", alias)).stdout
    assert len(pem_blocks(pem, "CTOK URI")) == 1
    # the key file names the key: openssl loads it
    ref = ws.write("long.ref", pem)
    p = ws.ossl("pkey", "-in", str(ref), "-pubout")
    assert_ok(p)


def test_key_and_cert_list_print_each_objects_ctok_uri(ws):
    tok = ws.create_token("tok")
    ws.add_key(tok, "web site", "ec:P-256")
    keys = tok.keys()
    assert keys[0]["uri"] == "ctok:token=tok;object=web%20site;type=private"
    assert "pkcs11_uri" not in keys[0]
    certs = json.loads(assert_ok(ws.ctok("cert", "list", "tok", "--json")).stdout)
    assert certs[0]["uri"] == "ctok:token=tok;object=web%20site;type=cert"
    text = assert_ok(ws.ctok("key", "list", "tok")).stdout
    assert "    ctok:token=tok;object=web%20site;type=private" in text.splitlines(), text
    text = assert_ok(ws.ctok("cert", "list", "tok")).stdout
    assert "    ctok:token=tok;object=web%20site;type=cert" in text.splitlines(), text
    # the listed URI names the key: openssl uses it
    assert_ok(ws.ossl("pkey", "-in", keys[0]["uri"], "-pubout"))


# ---------------------------------------------------------------- PKCS#11 tokens


@pytest.fixture
def hw(fresh_hsm):
    fresh_hsm.hsm.init_token(LABEL, PIN)
    return fresh_hsm


def pkcs11_tool(hw, *args):
    p = subprocess.run(["pkcs11-tool", "--module", str(SOFTHSM_LIB), *args],
                       env=hw.hsm.env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_slots_print_each_tokens_pkcs11_uri(hw):
    slots = json.loads(assert_ok(hw.ctok("slots", "--library", str(SOFTHSM_LIB),
                                         "--json")).stdout)
    mine = [s for s in slots if s["token_label"] == LABEL]
    assert len(mine) == 1, slots
    s = mine[0]
    uri = s["uri"]
    assert uri.startswith("pkcs11:") and "token=conv-token" in uri, uri
    for attr, field in (("model", "model"), ("manufacturer", "manufacturer"),
                        ("serial", "serial")):
        from urllib.parse import quote

        assert "%s=%s" % (attr, quote(s[field], safe="")) in uri or \
            "%s=%s" % (attr, s[field].replace(" ", "%20")) in uri, (attr, uri)
    text = assert_ok(hw.ctok("slots", "--library", str(SOFTHSM_LIB))).stdout
    assert uri in text, text


def test_pkcs11_listings_print_pkcs11_uris_that_name_the_object(hw):
    tok = hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    hw.add_key(tok, "k1", "ec:P-256")
    key = tok.keys()[0]
    assert key["uri"] == "ctok:token=hsm;object=k1;type=private"
    p11 = key["pkcs11_uri"]
    assert p11.startswith("pkcs11:") and "token=conv-token" in p11
    assert ";object=k1;type=private" in p11
    ident = "".join("%%%s" % key["id"][i:i + 2] for i in range(0, len(key["id"]), 2))
    assert "id=" + ident in p11, p11
    certs = json.loads(assert_ok(hw.ctok("cert", "list", "hsm", "--json")).stdout)
    assert certs[0]["pkcs11_uri"].endswith(";object=k1;type=cert")
    text = assert_ok(hw.ctok("key", "list", "hsm")).stdout
    assert "    " + p11 in text.splitlines(), text
    # the listed pkcs11: URI names the key: openssl uses it through ctok
    assert_ok(hw.ossl("pkey", "-in", p11, "-pubout"))


def parse_pkcs11_tool_mechanisms(out):
    mechs = {}
    for line in out.splitlines():
        if not line.startswith("  "):
            continue
        parts = [x.strip() for x in line.strip().split(", ")]
        name, rest = parts[0], parts[1:]
        size = None
        if rest and rest[0].startswith("keySize={"):
            size = tuple(int(x) for x in rest[0][len("keySize={"):-1].split(","))
            rest = rest[1:]
        mechs[name] = (size, rest)
    return mechs


def test_mechanisms_lists_what_pkcs11_tool_lists(hw):
    hw.create_p11_token("hsm", SOFTHSM_LIB, "label", LABEL)
    want = parse_pkcs11_tool_mechanisms(pkcs11_tool(hw, "--token-label", LABEL, "-M"))
    assert len(want) > 20
    p = assert_ok(hw.ctok("mechanisms", "hsm", "--json"))
    got = {m["name"]: m for m in json.loads(p.stdout)}
    assert len(got) == len(want), (sorted(got), sorted(want))
    for name, (size, flags) in want.items():
        if name.startswith("mechtype-"):  # a type pkcs11-tool has no name for
            m = [g for g in got.values() if g["type"] == int(name[len("mechtype-"):], 16)]
            assert len(m) == 1, name
            m = m[0]
        else:
            assert name in got, (name, sorted(got))
            m = got[name]
        if size is not None:
            assert (m["min_key_size"], m["max_key_size"]) == size, (name, m)
        assert m["flags"] == flags, (name, m["type"], m["flags"], flags)
    text = assert_ok(hw.ctok("mechanisms", "hsm")).stdout
    assert "  ECDSA, keySize=" in text and "sign, verify" in text, text


def test_mechanisms_of_a_token_without_a_list_is_a_clear_error(ws):
    ws.create_token("soft")
    p = ws.ctok("mechanisms", "soft")
    assert_tool_error(p, "token 'soft' (pkcs12) has no mechanism list")


def test_a_long_option_is_spelled_whole(ws):
    """getopt_long would take a unique prefix for the option: '--pin X' for --pin-cache-fork
    and a positional X. ctok takes only whole option names."""
    ws.create_token("tok")
    p = ws.ctok("token", "list", "--js")
    assert p.returncode == 2 and "'token list' takes no option --js" in p.stderr, describe(p)
    p = ws.ctok("token", "modify", "tok", "--pin-cache")
    assert p.returncode == 2 and "never taken from the command line" in p.stderr, describe(p)
    assert "pin_cache_fork" not in ws.config.read_text()
