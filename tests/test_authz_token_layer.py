"""Issue 8, "Authorization in the token layer": the crypto token rules are enforced by the
token layer itself, so a front door that checks nothing (tests/authz_token.c calls the token
API directly) is refused all the same, with one line naming the token, the rule and the
operation, and nothing changes. The same driver with the rule permitted succeeds: the refusal
is the rule's, not some other failure."""

import os
import subprocess

import pytest

from ctoktest import PIN, compile_store_driver, describe
from test_cli_support import RULES, Kind

SRC = os.path.join(os.path.dirname(__file__), "authz_token.c")


@pytest.fixture(scope="module")
def driver(tmp_path_factory, build):
    return compile_store_driver(build, SRC, tmp_path_factory.mktemp("authz") / "authz_token")


@pytest.fixture(scope="module", params=("pkcs12", "pkcs11"))
def guarded(request, tmp_path_factory, build):
    """Token 'tok' with an EC key k1 (certificate imported) and an RSA key r1."""
    k = Kind(request.param, tmp_path_factory.mktemp("authz-%s" % request.param), build)
    k.tok = k.with_key("tok", "k1", "ec:P-256")
    k.ws.add_key(k.tok, "r1", "rsa:2048", cert=False)
    return k


@pytest.fixture
def perm(guarded):
    conf = guarded.ws.load_config()
    yield guarded
    guarded.ws.save_config(conf)


def call(k, driver, *args, token="tok"):
    argv = [str(driver), str(k.ws.config), token, *[str(a) for a in args]]
    return subprocess.run(argv, env=k.ws.env(), capture_output=True, text=True, timeout=60)


# rule -> driver operations the token layer must refuse without it ("@x": a workspace file)
OPERATIONS = [
    ("view", ["view"]),
    ("view", ["show"]),
    ("use", ["sign", "k1"]),
    ("use", ["decrypt", "r1"]),
    ("use", ["derive", "k1"]),
    ("activate", ["activate", "@tok.pin"]),
    ("deactivate", ["deactivate"]),
    ("deactivate", ["forget"]),
    ("modify", ["modify"]),
    ("modify", ["modify-as-activate"]),
    ("modify", ["put-cert", "extra", "@tok-k1.pem"]),
    ("modify", ["change-code", "@tok.pin"]),
    ("modify", ["replace-cert", "k1", "@tok-k1.pem"]),
    ("modify", ["remove-cert", "k1-copy"]),
    ("modify", ["rename-cert", "k1", "k1-renamed"]),
    ("modify", ["rename-key", "r1", "r1-renamed"]),
    ("delete", ["delete"]),
    ("delete", ["delete-as-modify"]),
    ("keygen", ["keygen", "k-new"]),
    ("keyremove", ["keyremove", "k1"]),
    ("keytest", ["keytest", "k1"]),
]
IDS = ["%s:%s" % (r, a[0]) for r, a in OPERATIONS]


def args_of(k, argv):
    return [k.ws.path(a[1:]) if a.startswith("@") else a for a in argv]


@pytest.mark.parametrize("rule,argv", OPERATIONS, ids=IDS)
def test_token_layer_refuses_an_operation_whose_rule_is_off(perm, driver, rule, argv):
    perm.set_permissions([r for r in RULES if r != rule])
    before = perm.storage_digest()
    p = call(perm, driver, *args_of(perm, argv))
    assert p.returncode == 1 and p.stdout.strip() == "refused", describe(p)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    refusal = [ln for ln in lines if "rule '%s' is not permitted" % rule in ln]
    assert len(refusal) == 1, describe(p)
    assert refusal[0].startswith("error: operation not permitted: token 'tok'"), refusal[0]
    assert refusal[0].endswith(")"), refusal[0]  # the operation is named
    if argv[0] in ("sign", "decrypt", "derive", "keytest", "keygen", "keyremove", "put-cert",
                   "replace-cert", "remove-cert", "rename-cert", "rename-key"):
        assert "object '%s'" % argv[1] in refusal[0], refusal[0]
    assert perm.storage_digest() == before
    assert PIN not in p.stderr + p.stdout


ALONE = [(o, i) for o, i in zip(OPERATIONS, IDS) if "-as-" not in i and o[0] != "delete"]


@pytest.mark.parametrize("rule,argv", [o for o, _ in ALONE], ids=[i for _, i in ALONE])
def test_token_layer_allows_the_operation_with_that_rule_alone(perm, driver, rule, argv):
    perm.set_permissions([rule])
    if argv[0] == "keyremove":
        perm.set_permissions(["keygen", "keyremove"])
        assert call(perm, driver, "keygen", "gone").returncode == 0
        argv = ["keyremove", "gone"]
    if argv[0] == "keygen":
        argv = ["keygen", "k-%d" % len(perm.outputs)]
        perm.outputs.append(argv[1])
    if argv[0] == "put-cert":
        argv = ["put-cert", "extra-%d" % len(perm.outputs), argv[2]]
        perm.outputs.append(argv[1])
    if argv[0] == "remove-cert":
        assert call(perm, driver, *args_of(perm, ["put-cert", argv[1], "@tok-k1.pem"])).returncode \
            == 0
    p = call(perm, driver, *args_of(perm, argv))
    assert p.returncode == 0 and p.stdout.strip() == "ok", describe(p)
    assert "not permitted" not in p.stderr, describe(p)


def test_a_config_edit_naming_another_rule_still_needs_modify(perm, driver):
    """A front door that says 'activate' for an edit that changes more than the auth source
    is refused unless 'modify' is permitted too."""
    perm.set_permissions(["activate"])
    p = call(perm, driver, "modify-as-activate")
    assert p.returncode == 1 and "rule 'modify' is not permitted" in p.stderr, describe(p)
    perm.set_permissions(["activate", "modify"])
    p = call(perm, driver, "modify-as-activate")
    assert p.returncode == 0, describe(p)
    assert perm.entry("tok")["explicit_ecc"] is True


def test_a_config_edit_that_deletes_needs_delete_whatever_rule_is_named(build, driver, tmp_path):
    k = Kind("pkcs12", tmp_path, build)
    k.create("victim")
    k.set_permissions(["modify"], name="victim")
    p = call(k, driver, "delete-as-modify", token="victim")
    assert p.returncode == 1 and "rule 'delete' is not permitted" in p.stderr, describe(p)
    assert k.entry("victim") is not None
    k.set_permissions(["delete"], name="victim")
    p = call(k, driver, "delete", token="victim")
    assert p.returncode == 0, describe(p)
    assert k.entry("victim") is None
