"""Issue 5: each token obeys EJBCA's crypto token authorization rules ("permissions": view,
use, activate, deactivate, modify, delete, keygen, keyremove, keytest). The tool refuses an
operation the token does not permit with one line naming the rule and changes nothing; the
provider refuses 'use' (signing, decryption) and 'view' (listing); a config naming an
unknown rule is an error that names it."""

import json

import pytest

from ctoktest import (
    CTOK_FIRST,
    assert_fails_with,
    assert_ok,
    assert_verified,
    count_items,
    describe,
    sign_digest,
    verify_digest,
)
from test_cli_support import NEW_PIN, RULES, Kind, error_line


@pytest.fixture(scope="module", params=("pkcs12", "pkcs11"))
def guarded(request, tmp_path_factory, build):
    """One token 'tok' with key k1 (and its certificate) per type; tests set its
    permissions and the fixture puts them back."""
    k = Kind(request.param, tmp_path_factory.mktemp("perm-%s" % request.param), build)
    k.tok = k.with_key("tok", "k1", "ec:P-256")
    k.ws.write("new.pin", NEW_PIN)
    k.ws.write("other.pem", k.ws.path("tok-k1.pem").read_bytes())
    return k


@pytest.fixture
def perm(guarded):
    yield guarded
    conf = guarded.ws.load_config()
    for t in conf["tokens"]:
        t.pop("permissions", None)
    guarded.ws.save_config(conf)


# rule -> the commands it guards ("@x" is a file of the workspace)
GUARDED = [
    ("view", ["token", "show", "tok"]),
    ("view", ["token", "show", "tok", "--json"]),
    ("view", ["key", "list", "tok"]),
    ("view", ["key", "list", "tok", "--json"]),
    ("view", ["cert", "list", "tok"]),
    ("view", ["cert", "list", "tok", "--json"]),
    ("view", ["cert", "export", "tok", "k1"]),
    ("activate", ["token", "activate", "tok", "--auth-file", "@tok.pin"]),
    ("activate", ["token", "activate", "tok", "--auth-file", "@tok.pin", "--remember"]),
    ("deactivate", ["token", "deactivate", "tok"]),
    ("modify", ["token", "modify", "tok", "--allow-export"]),
    ("modify", ["cert", "import", "tok", "other", "@other.pem"]),
    ("modify", ["pin", "change", "tok", "--auth-file", "@tok.pin", "--new-auth-file",
                "@new.pin"]),
    ("delete", ["token", "delete", "tok"]),
    ("keygen", ["key", "generate", "tok", "k2", "ec:P-256"]),
    ("keyremove", ["key", "remove", "tok", "k1"]),
    ("keytest", ["key", "test", "tok", "k1"]),
]


@pytest.mark.parametrize("rule,argv", GUARDED,
                         ids=["%s:%s" % (r, "-".join(a[:2] + a[3:4])) for r, a in GUARDED])
def test_tool_refuses_a_command_whose_rule_is_not_permitted(perm, rule, argv):
    perm.set_permissions([r for r in RULES if r != rule])
    before = perm.storage_digest()
    args = [str(perm.ws.path(a[1:])) if a.startswith("@") else a for a in argv]
    p = perm.ctok(*args)
    line = error_line(p, "rule '%s' is not permitted" % rule)
    assert "tok" in line, line
    assert p.stdout == "", describe(p)
    assert perm.storage_digest() == before
    perm.assert_no_secret()


@pytest.mark.parametrize("rule,argv", [g for g in GUARDED if g[0] not in ("delete",)],
                         ids=["%s:%s" % (r, "-".join(a[:2] + a[3:4]))
                              for r, a in GUARDED if r != "delete"])
def test_only_that_rule_is_enough_for_the_command(perm, rule, argv):
    """The same command with permissions [rule] alone (and view, which the tool needs to
    find keys) is not refused for a rule."""
    perm.set_permissions(sorted({rule, "view"}))
    args = [str(perm.ws.path(a[1:])) if a.startswith("@") else a for a in argv]
    if argv[:2] == ["pin", "change"]:
        args[-1] = args[-3]  # change the code to itself: the fixture stays usable
    if argv[:2] == ["key", "remove"]:
        perm.set_permissions(["view", "keygen", "keyremove", "modify"])
        assert_ok(perm.ctok("key", "generate", "tok", "gone", "ec:P-256"))
        args[-1] = "gone"
    if argv[:2] == ["cert", "import"]:
        args[3] = "other-%d" % len(perm.outputs)
    if argv[:2] == ["key", "generate"]:
        args[3] = "k2-%d" % len(perm.outputs)
    p = perm.ctok(*args)
    assert "not permitted" not in p.stderr, describe(p)
    assert_ok(p)
    if argv[:2] == ["token", "deactivate"] or "--remember" in argv:
        perm.set_fields("tok", auth={"file": str(perm.tok.pin_file)})


def test_token_delete_permitted_by_delete_rule(build, tmp_path):
    k = Kind("pkcs12", tmp_path, build)
    k.create("tok")
    k.set_permissions(["delete"])
    assert_ok(k.ctok("token", "delete", "tok"))
    assert k.entry("tok") is None


def test_token_list_leaves_out_tokens_the_user_may_not_view(perm):
    perm.set_permissions([r for r in RULES if r != "view"])
    p = assert_ok(perm.ctok("token", "list", "--json"))
    assert [t["name"] for t in json.loads(p.stdout)] == []
    assert "tok" not in assert_ok(perm.ctok("token", "list")).stdout.split()


def test_modify_can_lock_the_tool_out_of_further_modification(perm):
    assert_ok(perm.ctok("token", "modify", "tok", "--permissions", "view,use"))
    assert perm.entry("tok")["permissions"] == ["view", "use"]
    error_line(perm.ctok("token", "modify", "tok", "--permissions", "view,use,modify"),
               "rule 'modify' is not permitted")


# ------------------------------------------------------------------ the provider


def test_openssl_cannot_sign_with_a_token_that_does_not_permit_use(perm):
    perm.set_permissions([r for r in RULES if r != "use"])
    p, _, _ = sign_digest(perm.ws, perm.tok.key_uri("k1"))
    assert_fails_with(p, "rule 'use' is not permitted")
    perm.assert_no_secret()
    # the certificate, which is public, is still there
    c = assert_ok(perm.ossl("storeutl", "-certs", perm.tok.uri()))
    assert count_items(c.stdout, "Certificate") == len(perm.certs()) >= 1, describe(c)


def test_openssl_signs_again_once_use_is_permitted(perm):
    perm.set_permissions(["view", "use"])
    p, sig, dg = sign_digest(perm.ws, perm.tok.key_uri("k1"))
    assert_ok(p)
    assert_verified(verify_digest(perm.ws, perm.tok.cert("k1"), dg, sig))


def test_openssl_signs_with_a_token_that_permits_use_but_not_view(perm):
    """'view' is EJBCA's right to look at a token (listing); an application that names a key
    and may use it signs with it."""
    perm.set_permissions(["use"])
    p, sig, dg = sign_digest(perm.ws, perm.tok.key_uri("k1"))
    assert_ok(p)
    assert_verified(verify_digest(perm.ws, perm.tok.cert("k1"), dg, sig))


def test_storeutl_of_a_token_that_does_not_permit_view_lists_nothing(perm):
    perm.set_permissions([r for r in RULES if r != "view"])
    p = perm.ossl("storeutl", perm.tok.uri(), providers=CTOK_FIRST)
    assert "rule 'view' is not permitted" in p.stderr, describe(p)
    assert count_items(p.stdout, "Certificate") == 0 and "BEGIN" not in p.stdout, describe(p)


def test_storeutl_over_all_tokens_skips_a_token_that_does_not_permit_view(perm):
    other = perm.create("visible-%d" % len(perm.outputs))
    perm.ws.add_key(other, "v1", "ec:P-256")
    perm.set_permissions([r for r in RULES if r != "view"])
    try:
        p = assert_ok(perm.ossl("storeutl", "-certs", "ctok:"))
        assert count_items(p.stdout, "Certificate") == 1, describe(p)
        assert _subjects(p) == ["CN=v1"], describe(p)
    finally:
        assert_ok(perm.ctok("token", "delete", other.name))


def _subjects(p):
    from cryptography import x509

    from ctoktest import pem_blocks

    return [x509.load_pem_x509_certificate(b.encode()).subject.rfc4514_string()
            for b in pem_blocks(p.stdout, "CERTIFICATE")]


# ------------------------------------------------------------------ unknown rules


def test_unknown_rule_in_the_config_is_an_error_naming_it(perm):
    perm.set_permissions(["view", "launch-missiles"])
    for argv in (["token", "list"], ["key", "list", "tok"], ["token", "show", "tok"]):
        line = error_line(perm.ctok(*argv), "configuration error", "launch-missiles")
        assert "tok" in line
    p, _, _ = sign_digest(perm.ws, perm.tok.key_uri("k1"))
    assert_fails_with(p, "launch-missiles")


def test_empty_permissions_refuse_everything(perm):
    perm.set_permissions([])
    error_line(perm.ctok("key", "list", "tok"), "rule 'view' is not permitted")
    error_line(perm.ctok("key", "test", "tok", "k1"), "rule 'keytest' is not permitted")
    p, _, _ = sign_digest(perm.ws, perm.tok.key_uri("k1"))
    assert_fails_with(p, "not permitted")


def test_permission_errors_are_the_same_for_both_token_types(build, tmp_path):
    lines = {}
    for t in ("pkcs12", "pkcs11"):
        k = Kind(t, tmp_path / t, build)
        k.create("tok")
        k.set_permissions(["view"])
        lines[t] = error_line(k.ctok("key", "generate", "tok", "k", "ec:P-256"),
                              "rule 'keygen' is not permitted")
    assert lines["pkcs12"] == lines["pkcs11"]
