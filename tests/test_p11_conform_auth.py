"""Issue 11, items 7, 8 and 11: an eID card's signature key that needs its PIN for every
signature (CKA_ALWAYS_AUTHENTICATE, made by pkcs11-tool --always-auth), ctok's own terminal
prompt for applications that give OpenSSL no UI, and the opt-in PIN cache across fork().

The card is two SoftHSM tokens the shim shows as one card with two PINs (CTOK_SHIM_MULTIPIN);
each half is its own ctok token ('ident', 'sign'). The shim's call log (CTOK_SHIM_LOG_DETAIL)
is what the tests count: `user=CKU_CONTEXT_SPECIFIC` on each context-specific C_Login."""

from pathlib import Path

import pytest

from ctoktest import (
    OPENSSL,
    TlsServer,
    assert_fails_with,
    assert_handshake,
    assert_no_crash,
    pkcs11_tool_public_der,
    assert_ok,
    assert_verified,
    describe,
    digest_file,
    register_secret,
    run,
    run_with_tty,
    tls_client,
)
from p11conform import PROVIDER_SETS, ossl
from p11fixtures import (
    EID_IDENT,
    EID_SIGN,
    P11Workspace,
    ShimLog,
    SoftHsm,
    copy_config,
    require_pkcs11_tools,
    require_shim,
    same_token_in,
    sign_loop,
    sign_loop_binary,
)

IDENT_PIN = register_secret("ident-1111")
SIGN_PIN = register_secret("sign-246810")
WRONG_PIN = register_secret("wrong-999999")
SIGN_KEY = "ctok:token=sign;object=sign-key;type=private"
IDENT_KEY = "ctok:token=ident;object=ident-key;type=private"


class Card:
    """SoftHSM tokens eid-ident / eid-sign shown by the shim as one two-PIN card. Keys made by
    pkcs11-tool: 'ident-key' (P-256, id 01) on the identification half, 'sign-key' (P-256,
    id 02, --always-auth) on the signature half. ctok tokens 'ident' and 'sign' (auth files)."""

    def __init__(self, root: Path, build):
        require_pkcs11_tools()
        self.shim = require_shim()
        self.root = root
        self.hsm = SoftHsm(root / "softhsm")
        self.hsm.init_token("eid-ident", IDENT_PIN)
        self.hsm.init_token("eid-sign", SIGN_PIN)
        for label, pin, key, kid, extra in (("eid-ident", IDENT_PIN, "ident-key", "01", ()),
                                            ("eid-sign", SIGN_PIN, "sign-key", "02",
                                             ("--always-auth",))):
            assert_ok(self.hsm.tool("--token-label", label, "--login", "--pin", pin,
                                    "--keypairgen", "--key-type", "EC:prime256v1", "--id", kid,
                                    "--label", key, *extra))
        self.ws = P11Workspace(root, build, self.hsm,
                               fixed_env={"CTOK_SHIM_MULTIPIN": "eid-ident,eid-sign"})
        self.ident = self.ws.create_p11_token("ident", self.shim, "label", EID_IDENT,
                                              pin=IDENT_PIN)
        self.sign = self.ws.create_p11_token("sign", self.shim, "label", EID_SIGN, pin=SIGN_PIN)
        # an RSA decryption key of the signature half, also --always-auth
        assert_ok(self.hsm.tool("--token-label", "eid-sign", "--login", "--pin", SIGN_PIN,
                                "--keypairgen", "--key-type", "rsa:2048", "--id", "03",
                                "--label", "sign-rsa", "--always-auth"))
        self.sign_pub = self.public_key("eid-sign", "02")
        self.rsa_pub = self.public_key("eid-sign", "03")

    def public_key(self, label, kid):
        """The key's public half as PEM, read by pkcs11-tool (no ctok, no PIN)."""
        der = self.root / ("%s-%s.pub.der" % (label, kid))
        pkcs11_tool_public_der(lambda *a: self.hsm.tool("--token-label", label, *a), kid, der)
        pem = self.root / ("%s-%s.pub.pem" % (label, kid))
        assert_ok(run([OPENSSL, "pkey", "-pubin", "-inform", "DER", "-in", str(der), "-out",
                       str(pem)], self.ws.env(config=False)))
        return pem

    def verify(self, dg, sig):
        return self.ws.ossl("pkeyutl", "-verify", "-pubin", "-inkey", self.sign_pub, "-in", dg,
                            "-sigfile", sig, "-pkeyopt", "digest:sha256", providers=None)


@pytest.fixture(scope="module")
def card(tmp_path_factory, build):
    return Card(tmp_path_factory.mktemp("p11auth"), build)


@pytest.fixture
def log(tmp_path):
    return ShimLog(tmp_path / "shim.log")


@pytest.fixture(scope="module")
def loop_bin(tmp_path_factory):
    return sign_loop_binary(tmp_path_factory.mktemp("loop"))


def loop_argv(card, binary, *args):
    """p11_sign_loop with ctok from the build folder: OPTIONS MODE URI ..."""
    return [binary, "--provider-path", card.ws.build, *args]


def context_logins(log, token=EID_SIGN):
    return [c for c in log.calls("C_Login") if c.get("user") == "CKU_CONTEXT_SPECIFIC"
            and c.get("token") == token]


def no_identification_login(log):
    return [c for c in log.calls("C_Login") if c.get("token") == EID_IDENT] == []


def sign(card, pset, uri, env, ws=None):
    ws = ws or card.ws
    _, dg = digest_file(ws)
    sig = ws.path("sig-%s.bin" % pset)
    p = ossl(ws, pset, "pkeyutl", "-sign", "-inkey", uri, "-in", dg, "-out", sig, "-pkeyopt",
             "digest:sha256", env=env)
    return p, sig, dg


# ---------------------------------------------------------------- item 7


def test_always_authenticate_key_is_made_as_the_card_has_it(card):
    objs = card.hsm.objects("eid-sign", "privkey", pin=SIGN_PIN)
    assert sorted(o.get("label") for o in objs) == ["sign-key", "sign-rsa"], objs
    assert all("always authenticate" in o["access"] for o in objs), objs


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_signature_key_signs_with_one_context_login_on_the_signature_half(card, log, pset):
    p, sig, dg = sign(card, pset, SIGN_KEY, log.env())
    assert_ok(p)
    assert_verified(card.verify(dg, sig))
    ctx = context_logins(log)
    assert [c["rv"] for c in ctx] == ["CKR_OK"], log.text()
    assert len(log.calls("C_Login", user="CKU_CONTEXT_SPECIFIC")) == 1, log.text()
    # the context login follows this process's C_SignInit on the signature half
    assert no_identification_login(log), log.text()


def test_n_signatures_in_one_process_make_n_context_logins(card, log, loop_bin):
    p, kv = sign_loop(card.ws, loop_bin, "sign", SIGN_KEY, "1", "5", env=log.env())
    assert p.returncode == 0, describe(p)
    assert kv.get("ok") == "5", describe(p)
    ctx = context_logins(log)
    assert len(ctx) == 5 and all(c["rv"] == "CKR_OK" for c in ctx), log.text()
    # one user login for the whole process, and never the identification half
    assert len([c for c in log.calls("C_Login") if c.get("user") == "CKU_USER"]) == 1, log.text()
    assert no_identification_login(log), log.text()


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_decryption_with_an_always_authenticate_key_logs_in_once(card, log, pset, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("for the signature half only\n")
    enc = tmp_path / "secret.enc"
    assert_ok(card.ws.ossl("pkeyutl", "-encrypt", "-pubin", "-inkey", card.rsa_pub, "-in", secret,
                           "-out", enc, providers=None))
    out = tmp_path / "secret.dec"
    p = ossl(card.ws, pset, "pkeyutl", "-decrypt", "-inkey",
             "ctok:token=sign;object=sign-rsa;type=private", "-in", enc, "-out", out,
             env=log.env())
    assert_ok(p)
    assert out.read_text() == secret.read_text()
    assert [c["rv"] for c in context_logins(log)] == ["CKR_OK"], log.text()
    assert no_identification_login(log), log.text()


def test_an_ordinary_key_on_the_same_card_makes_no_context_login(card, log):
    p, _, _ = sign(card, "ctok", IDENT_KEY, log.env())
    assert_ok(p)
    assert log.calls("C_Login", user="CKU_CONTEXT_SPECIFIC") == [], log.text()


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_a_wrong_identification_pin_changes_nothing_for_the_signature_key(card, log, pset):
    bad = card.ws.write("wrong-ident.pin", WRONG_PIN)
    view = card.ws.view("wrong-ident-%s.json" % pset,
                        copy_config(card.ws, ident={"auth": {"file": str(bad)}}))
    p, sig, dg = sign(card, pset, SIGN_KEY, log.env(), ws=view)
    assert_ok(p)
    assert_verified(card.verify(dg, sig))
    assert [c["rv"] for c in context_logins(log)] == ["CKR_OK"], log.text()
    assert no_identification_login(log), log.text()


def test_a_wrong_signature_pin_for_the_context_login_names_token_key_and_signature_pin(card, log):
    """Activated with the right PIN from the URI; the auth file read anew for the signature
    holds a wrong one: one rejected context login, and an error that says what happened."""
    bad = card.ws.write("wrong-sign.pin", WRONG_PIN)
    view = card.ws.view("wrong-sign.json", copy_config(card.ws, sign={"auth": {"file": str(bad)}}))
    p, _, _ = sign(card, "ctok", SIGN_KEY + "?pin-value=" + SIGN_PIN, log.env(), ws=view)
    assert_fails_with(p, "token 'sign'", "key 'sign-key'", "signature PIN", "CKR_PIN_INCORRECT")
    ctx = context_logins(log)
    assert [c["rv"] for c in ctx] == ["CKR_PIN_INCORRECT"], log.text()


def test_a_rejected_signature_pin_is_not_sent_again_by_the_next_signature(card, log, loop_bin):
    """Smart cards lock after a few wrong tries: three signatures in one process send the
    wrong signature PIN once."""
    bad = card.ws.write("wrong-sign3.pin", WRONG_PIN)
    view = card.ws.view("wrong-sign3.json",
                        copy_config(card.ws, sign={"auth": {"file": str(bad)}}))
    p = run(loop_argv(card, loop_bin, "sign", SIGN_KEY + "?pin-value=" + SIGN_PIN, "1", "3"),
            view.env(log.env()))
    assert_no_crash(p)
    assert "ok=0 failed=3" in p.stdout, describe(p)
    assert "does not send it again" in p.stderr, describe(p)
    assert [c["rv"] for c in context_logins(log)] == ["CKR_PIN_INCORRECT"], log.text()


def test_the_auth_file_gone_at_signing_time_fails_clearly(card, log, loop_bin):
    pin = card.ws.write("going.pin", SIGN_PIN)
    view = card.ws.view("going.json", copy_config(card.ws, sign={"auth": {"file": str(pin)}}))
    p = run(loop_argv(card, loop_bin, "--remove", pin, "sign", SIGN_KEY, "1", "1"),
            view.env(log.env()))
    assert_no_crash(p)
    assert p.returncode == 1, describe(p)
    assert "ok=0 failed=1" in p.stdout, describe(p)
    for phrase in ("token 'sign'", "key 'sign-key'", "signature PIN", str(pin)):
        assert phrase in p.stderr, describe(p)
    assert log.calls("C_Login", user="CKU_CONTEXT_SPECIFIC") == [], log.text()


@pytest.mark.parametrize("pset", PROVIDER_SETS)
def test_tls_server_with_the_signature_key_logs_in_once_per_handshake(card, log, pset, tmp_path):
    cert = tmp_path / "server.pem"
    assert_ok(ossl(card.ws, pset, "req", "-new", "-x509", "-key", SIGN_KEY, "-subj",
                   "/CN=localhost", "-days", "1", "-out", cert))
    server_log = ShimLog(tmp_path / "server.log")
    if pset == "ctok":
        server = TlsServer(card.ws, SIGN_KEY, cert, "-tls1_3", env=server_log.env())
    else:
        env = server_log.env()
        env["OPENSSL_CONF"] = str(card.ws.three_providers_cnf("base"))
        server = TlsServer(card.ws, SIGN_KEY, cert, "-tls1_3", providers=None, env=env)
    server.wait_ready()
    client = tls_client(card.ws, server.port, cert, providers=None)
    assert_handshake(client, server)
    ctx = context_logins(server_log)
    assert [c["rv"] for c in ctx] == ["CKR_OK"], server_log.text()
    assert no_identification_login(server_log), server_log.text()


# ---------------------------------------------------------------- item 8


def prompt_view(card, name):
    return card.ws.view(name, copy_config(card.ws, sign={"auth": {"prompt": True}},
                                          ident={"auth": {"prompt": True}}))


def test_an_application_without_ui_gets_ctoks_terminal_prompt(card, log, loop_bin):
    """The program passes no UI: ctok asks on the terminal, naming the token label and the ctok
    token. The identification key: one prompt for the login, then signatures without one."""
    view = prompt_view(card, "noui-ident.json")
    code, out, prompts = run_with_tty(
        loop_argv(card, loop_bin, "--ui", "none", "sign", IDENT_KEY, "1", "2"),
        view.env(log.env()), answers=[IDENT_PIN])
    assert code == 0, out
    assert "ok=2 failed=0" in out, out
    assert prompts and "Enter PIN for %s (ctok token 'ident'):" % EID_IDENT in prompts[0], out
    assert len(prompts) == 1, out
    assert IDENT_PIN not in out, "the PIN was echoed:\n" + out
    assert [(c["rv"], c.get("user")) for c in log.calls("C_Login")] == [("CKR_OK", "CKU_USER")]


def test_a_prompted_signature_pin_is_asked_for_each_signature(card, log, loop_bin):
    """A PKCS#11 token keeps no prompted code: each signature with the always-authenticate key
    asks for the signature PIN again (the application's callback is gone by then)."""
    view = prompt_view(card, "noui-sign.json")
    code, out, prompts = run_with_tty(
        loop_argv(card, loop_bin, "--ui", "none", "sign", SIGN_KEY, "1", "2"),
        view.env(log.env()), answers=[SIGN_PIN] * 3)
    assert code == 0, out
    assert "ok=2 failed=0" in out, out
    assert len(prompts) == 3 and all(EID_SIGN in pr for pr in prompts), out
    assert SIGN_PIN not in out, "the PIN was echoed:\n" + out
    assert [c["rv"] for c in context_logins(log)] == ["CKR_OK", "CKR_OK"], log.text()


def test_a_mistyped_signature_pin_fails_that_signature_only(card, log, loop_bin):
    """The second answer is wrong: that signature fails naming the signature PIN, its begun
    operation is ended, and the next signature on the same pooled session works."""
    view = prompt_view(card, "noui-mistyped.json")
    code, out, prompts = run_with_tty(
        loop_argv(card, loop_bin, "--ui", "none", "sign", SIGN_KEY, "1", "2"),
        view.env(log.env()), answers=[SIGN_PIN, WRONG_PIN, SIGN_PIN])
    assert code == 1, out
    assert "ok=1 failed=1" in out, out
    assert "signature PIN" in out and "CKR_PIN_INCORRECT" in out, out
    assert len(prompts) == 3, out
    assert [c["rv"] for c in context_logins(log)] == ["CKR_PIN_INCORRECT", "CKR_OK"], log.text()


def test_a_pin_value_serves_the_context_logins_of_a_prompt_token(card, log, loop_bin):
    """The code given in the URI is kept while active (as for a reconnect): each signature's
    context login uses it and nobody is asked, even with no terminal."""
    view = prompt_view(card, "pin-value.json")
    p = run(["setsid", "-w", *loop_argv(card, loop_bin, "--ui", "none", "sign",
                                        SIGN_KEY + "?pin-value=" + SIGN_PIN, "1", "3")],
            view.env(log.env()))
    assert p.returncode == 0, describe(p)
    assert "ok=3 failed=0" in p.stdout, describe(p)
    assert [c["rv"] for c in context_logins(log)] == ["CKR_OK"] * 3, log.text()


def test_without_a_terminal_a_prompt_token_fails_with_one_clear_error(card, log, loop_bin):
    view = prompt_view(card, "noui-notty.json")
    # setsid: no controlling terminal, as a daemon
    p = run(["setsid", "-w", *loop_argv(card, loop_bin, "--ui", "none", "sign", IDENT_KEY, "1",
                                        "1")], view.env(log.env()))
    assert_no_crash(p)
    assert p.returncode == 1, describe(p)
    assert_fails_with(p, "token 'ident': its auth is prompt and there is no terminal to ask on")
    assert log.calls("C_Login") == [], log.text()


def test_an_application_prompt_is_used_not_ctoks(card, log):
    """openssl passes its UI: the code given with -passin is used, nobody is asked."""
    view = prompt_view(card, "passin.json")
    _, dg = digest_file(view)
    p = view.ossl("pkeyutl", "-sign", "-inkey", IDENT_KEY, "-in", dg, "-out",
                  view.path("passin.sig"), "-pkeyopt", "digest:sha256", "-passin",
                  "pass:" + IDENT_PIN, env=log.env())
    assert_ok(p)
    assert [c["rv"] for c in log.calls("C_Login")] == ["CKR_OK"], log.text()


# ---------------------------------------------------------------- item 11


@pytest.mark.parametrize("cache", [False, True])
def test_pin_cache_across_fork_is_opt_in(card, log, loop_bin, cache):
    """The code comes from the application's prompt (-passin through a UI callback). A forked
    child's module initializes again: without the cache the child must be activated again;
    with "pin_cache_fork" it logs in again with the kept code."""
    ident = {"auth": {"prompt": True}}
    if cache:
        ident["pin_cache_fork"] = True
    view = card.ws.view("fork-%s.json" % cache, copy_config(card.ws, ident=ident))
    p, kv = sign_loop(view, loop_bin, "fork", IDENT_KEY, "2", passin=IDENT_PIN, env=log.env())
    assert_no_crash(p)
    user = [c for c in log.calls("C_Login") if c.get("user") == "CKU_USER"]
    if cache:
        assert p.returncode == 0, describe(p)
        assert kv.get("child_ok") == "2", describe(p)
        assert len({c["pid"] for c in user}) == 2 and all(c["rv"] == "CKR_OK" for c in user), \
            log.text()
    else:
        assert p.returncode == 1, describe(p)
        assert kv.get("child_exit") not in (None, "0"), describe(p)
        assert "must be activated again" in p.stderr, describe(p)
        assert len(user) == 1, log.text()


def test_pin_cache_fork_is_set_and_cleared_by_the_tool(card):
    ws = card.ws.view("tool-flag.json", copy_config(card.ws))
    assert_ok(ws.ctok("token", "modify", "ident", "--pin-cache-fork"))
    assert ws.token_entry("ident").get("pin_cache_fork") is True
    assert_ok(ws.ctok("token", "modify", "ident", "--no-pin-cache-fork"))
    assert ws.token_entry("ident").get("pin_cache_fork") is False
    assert same_token_in(ws, card.ident).name == "ident"
