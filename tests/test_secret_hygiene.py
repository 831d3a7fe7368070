"""Secret hygiene (issue 8): with CTOK_DEBUG=1, no PIN, auth code, PUK or master key appears in
any stderr, error string, audit line or trace, wherever the code came from (auth file, URI,
stored under the master key, PUK file) and whether it was right or wrong.

Every process the suite runs is searched for the codes it knows (ctoktest.run); the tests here
take the auth paths on purpose, with tracing on, and first check that the trace is there at
all, so that "no code in the output" is not true merely because nothing was printed."""

import re

import pytest

from ctoktest import (
    assert_fails_with,
    assert_ok,
    ctok_said,
    register_secret,
    secrets_in,
    sign_digest,
    stored_auth,
)
from p11fixtures import SO_PIN, fresh_hsm  # noqa: F401  (fixture)

DEBUG = {"CTOK_DEBUG": "1"}
CODE = register_secret("hygiene-code-7310")
WRONG = register_secret("hygiene-wrong-2287")
IN_URI = register_secret("hygiene-uri-code-5521")
NEW_PIN = register_secret("hygiene-new-pin-6604")
TRACE = re.compile(r"ctok(\[\d+\])?: ")


def clean(p, *codes, env=None, traced=True):
    """p traced (with CTOK_DEBUG=1; the tool traces PKCS#11 calls, not soft-token ones) and
    what ctok said showed none of codes, nor any code the suite knows."""
    out = ctok_said(p)
    if traced:
        assert TRACE.search(out), "no ctok trace at all: the check would prove nothing\n" + out
    for c in codes:
        assert c not in out, "%r appears in the output:\n%s" % (c, out)
    assert not secrets_in(out, env), out
    return p


@pytest.fixture
def soft(make_token):
    return make_token("soft", {"k": "ec:P-256"}, pin=CODE)


def test_signing_with_a_soft_token_traces_no_auth_code(ws, soft):
    p, _, _ = sign_digest(ws, soft.key_uri("k"), env=DEBUG)
    clean(assert_ok(p), CODE)


def test_a_wrong_auth_code_is_named_as_wrong_but_never_shown(ws, soft):
    soft.pin_file.write_text(WRONG)
    p, _, _ = sign_digest(ws, soft.key_uri("k"), env=DEBUG)
    clean(assert_fails_with(p, "wrong authentication code", "soft"), CODE, WRONG)


def test_a_pin_value_in_the_query_of_a_uri_is_never_shown(ws, soft):
    p, _, _ = sign_digest(ws, soft.uri(object="missing", type="private",
                                       query="pin-value=" + IN_URI), env=DEBUG)
    clean(assert_fails_with(p), IN_URI, CODE)


def test_a_query_attribute_without_equals_sign_is_not_echoed(ws, soft):
    p, _, _ = sign_digest(ws, soft.key_uri("k") + "?pin-value" + IN_URI, env=DEBUG)
    clean(assert_fails_with(p), IN_URI)


def test_a_pin_value_in_the_path_of_a_pkcs11_uri_is_never_shown(ws, soft):
    p = ws.ossl("storeutl", "-keys", "pkcs11:token=soft;pin-value=%s;id=%%zz" % IN_URI,
                env=DEBUG)
    clean(assert_fails_with(p), IN_URI)


def test_activation_with_a_stored_code_shows_neither_code_nor_master_key(ws, soft):
    """`token activate --remember` stores the code under the master key; later processes
    decrypt it. Neither the tool nor openssl shows the code or the key, in hex or base64."""
    audit = ws.path("audit.jsonl")
    assert_ok(ws.ctok("token", "modify", "soft", "--audit-file", audit, "--audit-use"))
    clean(assert_ok(ws.ctok("token", "activate", "soft", "--auth-file", soft.pin_file,
                            "--remember", env=DEBUG)), CODE, env=ws.env(), traced=False)
    soft.pin_file.unlink()
    p, _, _ = sign_digest(ws, soft.key_uri("k"), env=DEBUG)
    clean(assert_ok(p), CODE, env=ws.env())
    text = audit.read_text()
    assert '"activate"' in text, "no activation in the audit file:\n" + text
    assert not secrets_in(text, ws.env()) and CODE not in text, text


def test_a_stored_code_that_does_not_decrypt_shows_no_key_or_blob(ws, soft):
    key = bytes(range(32))
    ws.write("master.key", key)
    blob = stored_auth(bytes(32), soft.id, CODE)  # sealed under another key
    ws.set_token_fields(soft, auth={"stored": blob})
    p, _, _ = sign_digest(ws, soft.key_uri("k"), env=DEBUG)
    clean(assert_fails_with(p), CODE, key.hex(), blob, env=ws.env())


def test_login_to_an_hsm_and_a_wrong_pin_there_trace_no_pin(fresh_hsm):  # noqa: F811
    ws = fresh_hsm
    ws.hsm.init_token("hygiene", CODE)
    tok = ws.create_p11_token("hsm", ref="hygiene", pin=CODE)
    ws.generate(tok, "k", "ec:P-256")
    p, _, _ = sign_digest(ws, tok.key_uri("k"), env=DEBUG)
    clean(assert_ok(p), CODE, SO_PIN)
    tok.pin_file.write_text(WRONG)
    p, _, _ = sign_digest(ws, tok.key_uri("k"), env=DEBUG)
    clean(assert_fails_with(p, "hsm"), CODE, WRONG, SO_PIN)


def test_pin_unlock_traces_neither_puk_nor_new_pin(fresh_hsm):  # noqa: F811
    ws = fresh_hsm
    ws.hsm.init_token("hygiene", CODE)
    tok = ws.create_p11_token("hsm", ref="hygiene", pin=CODE)
    puk, new = ws.write("puk", SO_PIN), ws.write("new.pin", NEW_PIN)
    p = ws.ctok("pin", "unlock", tok.name, "--puk-file", puk, "--auth-file", new, env=DEBUG)
    clean(assert_ok(p), SO_PIN, NEW_PIN, CODE)
    assert ws.hsm.can_login("hygiene", NEW_PIN), "the unlock did not set the new PIN"
