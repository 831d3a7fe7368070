"""Issue 5: a user creates, lists, shows, modifies and deletes crypto tokens of every type with
`ctok token ...`, reads --help for every command, and gets exit code 2 and a one-line usage
error for a malformed command line; a secret never comes from argv."""

import json
import re
import uuid

import pytest

from ctoktest import PIN, assert_ok, describe
from test_cli_support import (  # noqa: F401  (fixture kind)
    NEW_PIN,
    WRONG_PIN,
    Kind,
    error_line,
    kind,
)

# every command with its words, as `ctok <words> --help` takes them
COMMANDS = [
    ("token", "create"), ("token", "list"), ("token", "show"), ("token", "modify"),
    ("token", "delete"), ("token", "activate"), ("token", "deactivate"),
    ("key", "generate"), ("key", "list"), ("key", "test"), ("key", "remove"),
    ("cert", "import"), ("cert", "list"), ("cert", "export"),
    ("ref",), ("slots",), ("pin", "unlock"), ("pin", "change"), ("secret", "encrypt"),
]


# ------------------------------------------------------------------ --help and usage


@pytest.mark.parametrize("words", COMMANDS, ids=["-".join(w) for w in COMMANDS])
def test_help_of_every_command_exits_0_and_names_that_command(ws, words):
    p = assert_ok(ws.ctok(*words, "--help"))
    first = p.stdout.splitlines()[0]
    assert "usage:" in first, describe(p)
    assert " ".join(words) in p.stdout, "the help does not name '%s'\n%s" % (
        " ".join(words), describe(p))
    # the help of one command, not the whole manual
    assert "Keys and certificates:" not in p.stdout, describe(p)


def test_help_without_a_command_lists_every_command_and_the_exit_codes(ws):
    p = assert_ok(ws.ctok("--help"))
    for words in COMMANDS:
        assert words[-1] in p.stdout, words
    assert "Exit codes: 0" in p.stdout and "2 usage" in p.stdout


@pytest.mark.parametrize("argv", [
    ["token", "show"],
    ["token", "show", "tok", "extra"],
    ["key", "generate", "tok", "k1"],
    ["cert", "import", "tok", "c1"],
    ["token", "frobnicate", "tok"],
    ["frobnicate"],
    [],
    ["token", "list", "--no-such-option"],
    ["token", "activate", "tok", "--auth-file"],
    ["token", "create", "--type", "aws", "--name", "cloud"],
    ["secret", "encrypt"],
], ids=["show-no-token", "show-extra-arg", "generate-no-spec", "import-no-file",
        "unknown-verb", "unknown-command", "nothing", "unknown-option", "option-without-value",
        "unsupported-type", "encrypt-without-token"])
def test_malformed_command_line_exits_2_with_one_usage_line(ws, argv):
    ws.create_token("tok")
    before = ws.config.read_bytes()
    p = ws.ctok(*argv)
    assert p.returncode == 2, describe(p)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("ctok: "), describe(p)
    assert p.stdout == "", describe(p)
    assert ws.config.read_bytes() == before


@pytest.mark.parametrize("opt", ["--pin", "--password", "--auth-code", "--pin-value"])
def test_secret_given_in_argv_is_a_usage_error(ws, opt):
    ws.create_token("tok")
    for argv in (["token", "activate", "tok", opt, WRONG_PIN],
                 ["token", "create", "--type", "pkcs12", "--name", "t2", "--keystore",
                  ws.path("t2.p12"), opt, WRONG_PIN]):
        p = ws.ctok(*argv)
        assert p.returncode == 2, describe(p)
        assert "never" in p.stderr and "--auth-file" in p.stderr, describe(p)
        assert WRONG_PIN not in p.stdout + p.stderr, describe(p)
    assert not ws.path("t2.p12").exists()


def test_secret_in_argv_with_equals_sign_is_refused_without_repeating_it(ws):
    """ctok --pin=CODE: the usage error must not copy the code into logs of stderr."""
    ws.create_token("tok")
    p = ws.ctok("token", "activate", "tok", "--pin=%s" % WRONG_PIN)
    assert p.returncode == 2, describe(p)
    assert WRONG_PIN not in p.stderr, "the usage error repeats the secret\n" + describe(p)


# ------------------------------------------------------------------ create / list / show


def test_token_create_reports_type_and_a_new_unique_id(kind):
    a = kind.create("alpha")
    b = kind.create("beta")
    assert uuid.UUID(a.id) and uuid.UUID(b.id) and a.id != b.id
    assert kind.entry("alpha")["id"] == a.id and kind.entry("alpha")["type"] == kind.kind


def test_token_list_human_output_has_a_header_and_one_row_per_token(kind):
    a = kind.create("alpha")
    b = kind.create("beta")
    p = assert_ok(kind.ctok("token", "list"))
    lines = p.stdout.splitlines()
    assert re.match(r"^NAME\s+TYPE\s+ID", lines[0]), describe(p)
    rows = {l.split()[0]: l.split() for l in lines[1:] if l.strip()}
    assert set(rows) == {"alpha", "beta"}, describe(p)
    assert rows["alpha"][1] == kind.kind and rows["alpha"][2] == a.id
    assert rows["beta"][2] == b.id
    if kind.kind == "pkcs12":
        assert str(a.keystore) in p.stdout


def test_token_list_json_gives_every_token_with_its_fields(kind):
    a = kind.create("alpha")
    kind.create("beta", extra=["--allow-export", "--explicit-ecc"])
    listed = json.loads(assert_ok(kind.ctok("token", "list", "--json")).stdout)
    by_name = {t["name"]: t for t in listed}
    assert set(by_name) == {"alpha", "beta"}
    assert by_name["alpha"]["id"] == a.id
    assert by_name["alpha"]["type"] == kind.kind
    assert by_name["alpha"]["allow_export"] is False and by_name["alpha"]["explicit_ecc"] is False
    assert by_name["beta"]["allow_export"] is True and by_name["beta"]["explicit_ecc"] is True


def test_token_list_of_an_empty_config_says_so(ws):
    ws.config.write_text('{"tokens": []}')
    assert "No tokens" in assert_ok(ws.ctok("token", "list")).stdout
    assert json.loads(assert_ok(ws.ctok("token", "list", "--json")).stdout) == []


def test_token_show_human_output_lists_every_field_and_all_permissions(kind):
    tok = kind.create("alpha")
    p = assert_ok(kind.ctok("token", "show", "alpha"))
    fields = {}
    for line in p.stdout.splitlines():
        k, _, v = line.partition(" ")
        fields[k] = v.strip()
    assert fields["name"] == "alpha" and fields["id"] == tok.id and fields["type"] == kind.kind
    assert fields["permissions"] == "all", describe(p)
    assert str(tok.pin_file) in fields["auth"]
    if kind.kind == "pkcs12":
        assert fields["keystore"] == str(tok.keystore)
    else:
        assert fields["ref"] == kind.labels["alpha"] and fields["ref_type"] == "label"
        assert fields["library"].endswith("libsofthsm2.so")


def test_token_show_json_is_the_config_entry(kind):
    kind.create("alpha", extra=["--allow-export"])
    shown = json.loads(assert_ok(kind.ctok("token", "show", "alpha", "--json")).stdout)
    assert shown == kind.entry("alpha")
    assert shown["allow_export"] is True


def test_token_create_with_a_name_in_use_fails_and_keeps_the_config(kind):
    kind.create("alpha")
    before = kind.ws.config.read_bytes()
    kind.new_slot("alpha2")
    argv = kind.create_argv("alpha2")
    argv[argv.index("--name") + 1] = "alpha"
    p = kind.ctok(*argv, "--auth-file", kind.ws.path("alpha.pin"))
    error_line(p, "alpha")
    assert kind.ws.config.read_bytes() == before


def test_token_create_with_a_wrong_code_for_an_existing_slot_or_keystore_fails(kind):
    tok = kind.create("alpha")
    kind.ws.add_key(tok, "k1", "ec:P-256", cert=False)
    wrong = kind.ws.write("wrong.pin", WRONG_PIN)
    argv = kind.create_argv("alpha")
    argv[argv.index("--name") + 1] = "again"
    before = kind.storage_digest()
    p = kind.ctok(*argv, "--auth-file", wrong)
    line = error_line(p, "wrong authentication code")
    if kind.kind == "pkcs11":
        assert "CKR_PIN_INCORRECT" in line
    assert kind.storage_digest() == before
    assert kind.entry("again") is None
    kind.assert_no_secret()


def test_token_create_with_auth_env_records_the_variable_not_the_code(kind):
    kind.new_slot("envtok")
    p = kind.ctok(*kind.create_argv("envtok"), "--auth-env", "CLI_TOKEN_CODE",
                  env={"CLI_TOKEN_CODE": PIN})
    assert_ok(p)
    assert kind.entry("envtok")["auth"] == {"env": "CLI_TOKEN_CODE"}
    assert PIN not in kind.ws.config.read_text()
    assert_ok(kind.ctok("key", "generate", "envtok", "k1", "ec:P-256",
                        env={"CLI_TOKEN_CODE": PIN}))


def test_token_create_prompts_twice_with_repeat_authentication_code(kind):
    kind.new_slot("typed")
    code, out, prompts = kind.tty(kind.create_argv("typed"), [PIN, PIN])
    assert code == 0, out
    assert len(prompts) == 2, out
    assert "Repeat Authentication Code" in prompts[1], prompts
    assert "Created token 'typed'" in out
    assert PIN not in out, "the typed code was echoed"
    assert kind.entry("typed")["auth"] == {"prompt": True}
    assert kind.can_login("typed", PIN)


def test_token_create_with_a_mismatched_repeated_code_fails_and_creates_nothing(kind):
    kind.new_slot("typed")
    before = kind.storage_digest() if kind.ws.config.exists() else None
    code, out, prompts = kind.tty(kind.create_argv("typed"), [PIN, NEW_PIN])
    assert code == 1, out
    assert len(prompts) == 2, out
    assert "does not match" in out, out
    assert PIN not in out and NEW_PIN not in out
    assert not kind.ws.config.exists() or kind.entry("typed") is None
    if before is not None:
        assert kind.storage_digest() == before
    if kind.kind == "pkcs12":
        assert not kind.ws.path("typed.p12").exists()


def test_token_create_without_terminal_or_auth_option_fails_clearly(kind):
    kind.new_slot("typed")
    p = kind.no_tty(*kind.create_argv("typed"))
    error_line(p, "no terminal", "--auth-file")
    assert not kind.ws.config.exists() or kind.entry("typed") is None


# ------------------------------------------------------------------ modify


def test_token_modify_sets_and_clears_each_flag(kind):
    kind.create("tok")
    p = assert_ok(kind.ctok("token", "modify", "tok", "--allow-export", "--explicit-ecc",
                            "--audit-file", kind.ws.path("audit.log"), "--audit-use",
                            "--permissions", "view,use,keytest"))
    assert "Token 'tok' modified" in p.stdout
    e = kind.entry("tok")
    assert e["allow_export"] is True and e["explicit_ecc"] is True and e["audit_use"] is True
    assert e["audit_file"] == str(kind.ws.path("audit.log"))
    assert e["permissions"] == ["view", "use", "keytest"]
    shown = json.loads(assert_ok(kind.ctok("token", "show", "tok", "--json")).stdout)
    assert shown["permissions"] == ["view", "use", "keytest"]
    kind.set_permissions(["view", "modify"])
    assert_ok(kind.ctok("token", "modify", "tok", "--no-allow-export", "--no-explicit-ecc",
                        "--no-audit-use"))
    e = kind.entry("tok")
    assert e["allow_export"] is False and e["explicit_ecc"] is False and e["audit_use"] is False
    listed = json.loads(assert_ok(kind.ctok("token", "list", "--json")).stdout)
    assert listed[0]["allow_export"] is False and listed[0]["explicit_ecc"] is False


def test_token_modify_auth_source(kind):
    tok = kind.create("tok")
    assert_ok(kind.ctok("token", "modify", "tok", "--auth-env", "TOK_CODE"))
    assert kind.entry("tok")["auth"] == {"env": "TOK_CODE"}
    assert_ok(kind.ctok("key", "generate", "tok", "k1", "ec:P-256", env={"TOK_CODE": PIN}))
    assert_ok(kind.ctok("token", "modify", "tok", "--auth-prompt"))
    assert kind.entry("tok")["auth"] == {"prompt": True}
    assert_ok(kind.ctok("token", "modify", "tok", "--auth-file", tok.pin_file))
    assert kind.entry("tok")["auth"] == {"file": str(tok.pin_file)}
    assert "passed" in assert_ok(kind.ctok("key", "test", "tok", "k1")).stdout


def test_token_modify_rename_keeps_id_and_keys(kind):
    tok = kind.with_key("tok", "k1")
    assert_ok(kind.ctok("token", "modify", "tok", "--name", "renamed"))
    assert kind.entry("tok") is None and kind.entry("renamed")["id"] == tok.id
    assert [k["alias"] for k in kind.keys("renamed")] == ["k1"]
    error_line(kind.ctok("token", "show", "tok"), "unknown token", "tok")


def test_token_modify_rename_to_a_name_in_use_is_refused_and_config_stays_usable(kind):
    kind.create("alpha")
    kind.create("beta")
    before = kind.ws.config.read_bytes()
    p = kind.ctok("token", "modify", "alpha", "--name", "beta")
    assert p.returncode == 1, "renaming onto an existing token was accepted\n" + describe(p)
    assert kind.ws.config.read_bytes() == before
    assert_ok(kind.ctok("token", "list"))


def test_token_modify_with_an_unknown_rule_is_refused_naming_it(kind):
    kind.create("tok")
    before = kind.ws.config.read_bytes()
    error_line(kind.ctok("token", "modify", "tok", "--permissions", "view,frobnicate"),
               "frobnicate")
    assert kind.ws.config.read_bytes() == before


def test_token_modify_with_nothing_to_change_fails(kind):
    kind.create("tok")
    before = kind.ws.config.read_bytes()
    p = kind.ctok("token", "modify", "tok")
    assert p.returncode in (1, 2), describe(p)
    assert "nothing to change" in p.stderr
    assert kind.ws.config.read_bytes() == before


# ------------------------------------------------------------------ delete


def test_token_delete_removes_the_entry_and_leaves_keys_in_place(kind):
    tok = kind.with_key("tok", "k1")
    kind.create("other")
    p = assert_ok(kind.ctok("token", "delete", "tok"))
    assert "Token 'tok' removed" in p.stdout and "left as it is" in p.stdout
    assert kind.entry("tok") is None and kind.entry("other") is not None
    error_line(kind.ctok("key", "list", "tok"), "unknown token", "tok")
    # the keystore / slot still has the key: a new token of it sees it
    if kind.kind == "pkcs12":
        assert tok.keystore.exists()
    argv = kind.create_argv("tok")
    assert_ok(kind.ctok(*argv, "--auth-file", tok.pin_file))
    assert [k["alias"] for k in kind.keys("tok")] == ["k1"]
    assert kind.entry("tok")["id"] != tok.id


# ------------------------------------------------------------------ unknown token


TOKEN_COMMANDS = [
    ["token", "show", "nosuch"], ["token", "modify", "nosuch", "--allow-export"],
    ["token", "delete", "nosuch"], ["token", "activate", "nosuch", "--auth-file", "@pin"],
    ["token", "deactivate", "nosuch"], ["key", "generate", "nosuch", "k", "ec:P-256"],
    ["key", "list", "nosuch"], ["key", "test", "nosuch", "k"], ["key", "remove", "nosuch", "k"],
    ["cert", "import", "nosuch", "c", "@cert"], ["cert", "list", "nosuch"],
    ["cert", "export", "nosuch", "c"], ["ref", "nosuch", "k"],
    ["pin", "change", "nosuch", "--auth-file", "@pin", "--new-auth-file", "@pin"],
    ["secret", "encrypt", "--token", "nosuch", "--auth-file", "@pin"],
]


@pytest.mark.parametrize("argv", TOKEN_COMMANDS, ids=["-".join(a[:2]) for a in TOKEN_COMMANDS])
def test_unknown_token_is_a_one_line_error_naming_it(ws, argv):
    tok = ws.create_token("tok")
    ws.add_key(tok, "k", "ec:P-256")
    sub = {"@pin": str(tok.pin_file), "@cert": str(tok.cert("k"))}
    before = ws.config.read_bytes()
    p = ws.ctok(*[sub.get(a, a) for a in argv])
    error_line(p, "unknown token", "nosuch")
    assert ws.config.read_bytes() == before


# ------------------------------------------------------------------ slots (pkcs11)


def test_slots_of_a_configured_token_is_its_backends_discovery(build, tmp_path):
    """`ctok slots --token T`: what the token's backend offers (a pkcs11 token: the slots of
    its library); a type without discovery says so; --token with a type's options is a usage
    error."""
    k = Kind("pkcs11", tmp_path, build)
    k.create("hsm")
    slots = json.loads(assert_ok(k.ctok("slots", "--token", "hsm", "--json")).stdout)
    assert k.labels["hsm"] in [s["token_label"] for s in slots], slots
    p = k.ctok("slots", "--token", "hsm", "--library", "x")
    assert p.returncode == 2 and "not both" in p.stderr, describe(p)
    k.ws.create_token("soft")
    line = error_line(k.ctok("slots", "--token", "soft"), "soft")
    assert "pkcs12 tokens offer no discovery" in line


def test_slots_lists_the_slot_in_human_and_json_output(build, tmp_path):
    k = Kind("pkcs11", tmp_path, build)
    label = k.new_slot("tok")
    from p11fixtures import SOFTHSM_LIB

    p = assert_ok(k.ctok("slots", "--library", SOFTHSM_LIB))
    # the table for people: a column per field of the JSON, headed by its name
    assert re.match(r"^ID\s+INDEX\s+DESCRIPTION\s+TOKEN LABEL", p.stdout), describe(p)
    assert label in p.stdout
    slots = json.loads(assert_ok(k.ctok("slots", "--library", SOFTHSM_LIB, "--json")).stdout)
    mine = [s for s in slots if s["token_label"] == label]
    assert len(mine) == 1, slots
    s = mine[0]
    assert isinstance(s["id"], int) and isinstance(s["index"], int)
    assert "login-required" in s["flags"]
    # the slot can be named by id and by index as well as by label
    for ref_type, ref in (("id", s["id"]), ("index", s["index"])):
        name = "by-%s" % ref_type
        k.ws.write("%s.pin" % name, PIN)
        assert_ok(k.ctok("token", "create", "--type", "pkcs11", "--name", name, "--library",
                         SOFTHSM_LIB, "--ref-type", ref_type, "--ref", ref, "--auth-file",
                         k.ws.path("%s.pin" % name)))
        assert_ok(k.ctok("token", "activate", name, "--auth-file", k.ws.path("%s.pin" % name)))


def test_slots_of_a_missing_library_is_a_one_line_error(ws):
    error_line(ws.ctok("slots", "--library", ws.path("no-such-module.so")), "no-such-module")


# ------------------------------------------------------------------ global options


def test_global_json_and_config_options_stand_before_the_command(kind):
    kind.create("alpha")
    cfg = kind.ws.config
    env = {"CTOK_CONFIG": kind.ws.path("elsewhere.json")}
    a = assert_ok(kind.ctok("--config", cfg, "--json", "token", "list", env=env))
    b = assert_ok(kind.ctok("token", "list", "--json"))
    assert json.loads(a.stdout) == json.loads(b.stdout)
    c = assert_ok(kind.ctok("--json", "token", "show", "alpha"))
    assert json.loads(c.stdout)["name"] == "alpha"


def test_pkcs11_library_registered_with_p11_kit_is_found_by_its_name(build, tmp_path):
    """Seed 000: the PKCS#11 library is one of those registered with p11-kit (here SoftHSM's
    /usr/share/p11-kit/modules/softhsm2.module) or a path."""
    from pathlib import Path

    if not Path("/usr/share/p11-kit/modules/softhsm2.module").exists():
        pytest.skip("softhsm2 is not registered with p11-kit")
    k = Kind("pkcs11", tmp_path, build)
    label = k.new_slot("reg")
    slots = k.ctok("slots", "--library", "softhsm2", "--json")
    assert_ok(slots)
    assert label in [s["token_label"] for s in json.loads(slots.stdout)]
    pin = k.ws.write("reg.pin", PIN)
    assert_ok(k.ctok("token", "create", "--type", "pkcs11", "--name", "reg", "--library",
                     "softhsm2", "--ref-type", "label", "--ref", label, "--auth-file", pin))
    assert_ok(k.ctok("key", "generate", "reg", "k1", "ec:P-256"))


def test_pkcs11_token_create_for_a_label_no_slot_has_fails_naming_it(build, tmp_path):
    from p11fixtures import SOFTHSM_LIB

    k = Kind("pkcs11", tmp_path, build)
    k.new_slot("real")
    pin = k.ws.write("x.pin", PIN)
    line = error_line(k.ctok("token", "create", "--type", "pkcs11", "--name", "x", "--library",
                             SOFTHSM_LIB, "--ref-type", "label", "--ref", "no-such-label",
                             "--auth-file", pin), "no-such-label")
    assert "slots" in line
    p = k.ctok("token", "create", "--type", "pkcs11", "--name", "x", "--library", SOFTHSM_LIB,
               "--ref-type", "slot-name", "--ref", "1", "--auth-file", pin)
    assert p.returncode in (1, 2) and "ref_type" in p.stderr.replace("ref-type", "ref_type"), \
        describe(p)
    assert not k.ws.config.exists() or k.entry("x") is None
    # a serial no slot's token has: named as such
    p = k.ctok("token", "create", "--type", "pkcs11", "--name", "x", "--library", SOFTHSM_LIB,
               "--ref-type", "serial", "--ref", "no-such-serial", "--auth-file", pin)
    assert p.returncode == 1 and "token serial 'no-such-serial'" in p.stderr, describe(p)


@pytest.mark.parametrize("kind_name,drop", [("pkcs12", "--keystore"), ("pkcs11", "--library"),
                                            ("pkcs11", "--ref")])
def test_token_create_without_its_location_is_a_usage_error(build, tmp_path, kind_name, drop):
    k = Kind(kind_name, tmp_path, build)
    argv = k.create_argv("x")
    i = argv.index(drop)
    del argv[i:i + 2]
    p = k.ctok(*argv, "--auth-file", k.ws.write("x.pin", PIN))
    assert p.returncode == 2, describe(p)
    assert drop in p.stderr, describe(p)
    assert not k.ws.config.exists()


@pytest.mark.parametrize("kind_name,foreign,own", [("pkcs12", "--library", "--keystore"),
                                                  ("pkcs11", "--keystore", "--ref-type")])
def test_token_create_with_another_types_option_names_the_types_own_options(build, tmp_path,
                                                                           kind_name, foreign,
                                                                           own):
    """The options of `token create` are the type's tool fields: one of another type is a
    usage error that lists this type's options, and nothing is created."""
    k = Kind(kind_name, tmp_path, build)
    p = k.ctok(*k.create_argv("x"), foreign, "/x", "--auth-file", k.ws.write("x.pin", PIN))
    assert p.returncode == 2, describe(p)
    line = p.stderr.strip()
    assert "a %s token has no option %s" % (kind_name, foreign) in line, describe(p)
    assert own in line.split("its options:")[1], describe(p)
    assert not k.ws.config.exists()


def test_token_modify_takes_only_options_of_the_tokens_type(ws):
    tok = ws.create_token("tok")
    before = ws.config.read_bytes()
    p = ws.ctok("token", "modify", "tok", "--ref", "other")
    assert p.returncode == 2 and "a pkcs12 token has no option --ref" in p.stderr, describe(p)
    assert ws.config.read_bytes() == before
    moved = ws.path("moved.p12")
    tok.keystore.rename(moved)
    assert_ok(ws.ctok("token", "modify", "tok", "--keystore", str(moved)))
    assert json.loads(ws.config.read_text())["tokens"][0]["keystore"] == str(moved)


def test_token_list_tells_where_a_pkcs11_token_is(build, tmp_path):
    """A user reading `token list` sees each token's location: the keystore of a pkcs12
    token, the library and slot of a pkcs11 token (human and --json)."""
    k = Kind("pkcs11", tmp_path, build)
    k.create("hsm")
    label = k.labels["hsm"]
    p = assert_ok(k.ctok("token", "list"))
    row = [l for l in p.stdout.splitlines() if l.startswith("hsm ")]
    assert row and label in row[0], "no slot reference in the row of a pkcs11 token\n" + \
        describe(p)
    listed = json.loads(assert_ok(k.ctok("token", "list", "--json")).stdout)
    assert listed[0].get("ref") == label and listed[0].get("ref_type") == "label", listed
    assert listed[0].get("library", "").endswith("libsofthsm2.so"), listed
