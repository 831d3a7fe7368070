"""An admin searches tokens with `openssl storeutl -subject / -issuer -serial / -alias /
-fingerprint` on `ctok:` and `pkcs11:` URIs and gets only the matching objects, exactly the
certificates OpenSSL itself finds in a file holding the same certificates.

The reference is OpenSSL's own: OpenSSL 3.0's file: store answers -subject only for a hashed
directory (`openssl rehash`) and refuses every criterion on a single file ("search only
supported for directories"), so -subject is compared with the file store searching such a
directory, and the other criteria with what `openssl x509` says of each certificate of the
PEM file. Each token holds the same story: keys web, mail and web2, certificates from two
CAs where web and web2 share a subject and a serial number (different issuers), and a second
certificate for key web with its own label."""

import re
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ctoktest import (
    PROVIDER_ORDERS,
    assert_ok,
    count_items,
    describe,
    pem_blocks,
    public_der,
)
from p11fixtures import (
    SOFTHSM_LIB,
    P11Workspace,
    ShimLog,
    SoftHsm,
    copy_config,
    logins,
    require_pkcs11_tools,
    require_shim,
    same_token_in,
)

HSM_LABEL = "ctok-search"
# alias -> (key alias, subject, CA, serial)
CERTS = {
    "web": ("web", "/CN=web", "ca1", 0x1001),
    "mail": ("mail", "/CN=mail", "ca1", 0x1002),
    "web2": ("web2", "/CN=web", "ca2", 0x1001),
    "web-role": ("web", "/CN=web role", "ca2", 0x2001),
}
KEYS = {"web": "ec:P-256", "mail": "rsa:2048", "web2": "ec:P-256"}
ODD_LABEL = "ops; key/1 é%"  # a key without certificate, whose label needs percent-encoding


class Searched:
    def __init__(self, ws, tok, pem, hashed_dir):
        self.ws, self.tok, self.pem, self.dir = ws, tok, pem, hashed_dir


def plain(ws, cmd, *args):
    return assert_ok(ws.ossl(cmd, *args, providers=None))


def make_ca(ws, name):
    key, cert = ws.path("%s.key" % name), ws.path("%s.pem" % name)
    plain(ws, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", key, "-out", cert, "-subj", "/CN=%s" % name.upper(), "-days", "30")
    return key, cert


def fill(ws, tok, cas):
    """The keys and certificates of the story on tok; the PEM file and hashed directory of
    its certificates."""
    for alias, spec in KEYS.items():
        ws.generate(tok, alias, spec)
    ws.generate(tok, ODD_LABEL, "ec:P-256")
    files = []
    for alias, (key, subject, ca, serial) in CERTS.items():
        csr = ws.path("%s-%s.csr" % (tok.name, alias))
        out = ws.path("%s-%s.pem" % (tok.name, alias))
        assert_ok(ws.ossl("req", "-new", "-key", tok.key_uri(key), "-subj", subject, "-out", csr))
        plain(ws, "x509", "-req", "-in", csr, "-CA", cas[ca][1], "-CAkey", cas[ca][0],
              "-set_serial", str(serial), "-days", "30", "-out", out)
        ws.import_cert(tok, alias, out)
        files.append(out)
    pem = ws.path("%s-all.pem" % tok.name)
    pem.write_text("".join(f.read_text() for f in files))
    hashed = ws.path("%s-hashed" % tok.name)
    hashed.mkdir()
    for f in files:
        shutil.copy(f, hashed / f.name)
    plain(ws, "rehash", hashed)
    return pem, hashed


@pytest.fixture(scope="module")
def world(tmp_path_factory, build):
    require_pkcs11_tools()
    root = tmp_path_factory.mktemp("search")
    hsm = SoftHsm(root / "softhsm")
    hsm.init_token(HSM_LABEL)
    ws = P11Workspace(root, build, hsm)
    cas = {n: make_ca(ws, n) for n in ("ca1", "ca2")}
    soft = ws.create_token("soft")
    p11 = ws.create_p11_token("hsm", SOFTHSM_LIB, "label", HSM_LABEL)
    tokens = {}
    for tok in (soft, p11):
        tokens[tok.name] = Searched(ws, tok, *fill(ws, tok, cas))
    shim_ws = ws.view("shim.json", copy_config(ws, hsm={"library": str(require_shim())}))
    tokens["shim"] = Searched(shim_ws, same_token_in(shim_ws, p11), tokens["hsm"].pem,
                              tokens["hsm"].dir)
    return tokens


def certs_in(text):
    return [x509.load_pem_x509_certificate(b.encode()) for b in pem_blocks(text, "CERTIFICATE")]


def ident(c):
    """What the comparison looks at: subject, issuer and serial of a certificate."""
    return (c.subject.rfc4514_string(), c.issuer.rfc4514_string(), c.serial_number)


def pem_certs(s):
    return certs_in(s.pem.read_text())


def storeutl(s, uri, *criterion, env=None):
    return assert_ok(s.ws.ossl("storeutl", *criterion, uri, env=env))


def found_certs(p):
    return sorted(ident(c) for c in certs_in(p.stdout))


def x509_says(s, cert, *what):
    """`openssl x509 -noout <what>` on one certificate of the PEM file."""
    f = s.ws.path("one.pem")
    f.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return plain(s.ws, "x509", "-in", f, "-noout", "-nameopt", "compat", *what).stdout.strip()


def reference(s, *criterion):
    """The certificates of the PEM file that OpenSSL finds for the criterion."""
    certs = pem_certs(s)
    opt = criterion[0]
    if opt == "-subject":
        # the file store itself, searching the hashed directory of the same certificates
        p = plain(s.ws, "storeutl", "-noout", "-subject", criterion[1], s.dir)
        names = re.findall(r"^\d+: Name: (.*)$", p.stdout, re.M)
        hits = [x509.load_pem_x509_certificate(open(n, "rb").read()) for n in names]
    elif opt == "-issuer":
        serial = int(criterion[3], 0)
        hits = [c for c in certs
                if x509_says(s, c, "-issuer") == "issuer=" + criterion[1]
                and int(x509_says(s, c, "-serial").split("=")[1], 16) == serial]
    elif opt.startswith("-sha"):
        want = criterion[2].upper()
        hits = [c for c in certs
                if x509_says(s, c, "-fingerprint", opt).split("=")[1].replace(":", "") == want]
    else:
        raise AssertionError(criterion)
    return sorted(ident(c) for c in hits)


def fingerprint(s, alias, md):
    """The certificate's fingerprint as cryptography computes it, in hex."""
    _, subject, ca, serial = CERTS[alias]
    c = next(c for c in pem_certs(s)
             if ident(c) == (subject[1:], "CN=" + ca.upper(), serial))
    return c.fingerprint({"-sha1": hashes.SHA1(), "-sha256": hashes.SHA256()}[md]).hex()


def keys_of(p):
    """The public keys storeutl printed, as DER."""
    return sorted(public_der(serialization.load_pem_public_key(b.encode()))
                  for b in pem_blocks(p.stdout, "PUBLIC KEY"))


TOKENS = ["soft", "hsm"]


def uris(s):
    """The token URI listing everything, and for the SoftHSM token its pkcs11: URI too."""
    out = [s.tok.uri()]
    if s.tok.name != "soft":
        out.append("pkcs11:token=%s" % HSM_LABEL)
    return out


CRITERIA = [
    ("-subject", "/CN=web"),
    ("-subject", "/CN=mail"),
    ("-subject", "/CN=web role"),
    ("-issuer", "/CN=CA1", "-serial", "0x1001"),
    ("-issuer", "/CN=CA2", "-serial", "4097"),
    ("-issuer", "/CN=CA2", "-serial", "0x2001"),
]


@pytest.mark.parametrize("kind", TOKENS)
@pytest.mark.parametrize("criterion", CRITERIA, ids=lambda c: " ".join(c))
def test_certificates_found_are_those_openssl_finds_in_the_file(world, kind, criterion):
    s = world[kind]
    expected = reference(s, *criterion)
    assert expected, "the reference found nothing for %s" % (criterion,)
    for uri in uris(s):
        p = storeutl(s, uri, "-certs", *criterion)
        assert found_certs(p) == expected, describe(p)
        assert count_items(p.stdout, "Certificate") == len(expected), describe(p)


@pytest.mark.parametrize("kind", TOKENS)
@pytest.mark.parametrize("md", ["-sha1", "-sha256"])
@pytest.mark.parametrize("alias", ["web", "mail"])
def test_fingerprint_finds_exactly_that_certificate(world, kind, md, alias):
    s = world[kind]
    fp = fingerprint(s, alias, md)
    expected = reference(s, md, "-fingerprint", fp)
    assert len(expected) == 1
    for uri in uris(s):
        p = storeutl(s, uri, md, "-fingerprint", fp)
        assert found_certs(p) == expected, describe(p)
        assert "Total found: 1" in p.stdout, describe(p)


@pytest.mark.parametrize("kind", TOKENS)
def test_issuer_and_serial_return_no_keys(world, kind):
    s = world[kind]
    p = storeutl(s, s.tok.uri(), "-issuer", "/CN=CA1", "-serial", "0x1001")
    assert count_items(p.stdout, "Certificate") == 1, describe(p)
    assert "Total found: 1" in p.stdout, describe(p)


@pytest.mark.parametrize("kind", TOKENS)
def test_subject_also_finds_the_keys_its_certificates_certify(world, kind):
    """-subject /CN=web: certificates web and web2, and their two keys; not key mail."""
    s = world[kind]
    certified = sorted(public_der(c.public_key()) for c in pem_certs(s)
                       if c.subject.rfc4514_string() == "CN=web")
    for uri in uris(s):
        p = storeutl(s, uri, "-subject", "/CN=web")
        assert count_items(p.stdout, "Certificate") == 2, describe(p)
        assert count_items(p.stdout, "Pkey") == 2, describe(p)
        assert keys_of(p) == certified, describe(p)
        p = storeutl(s, uri, "-keys", "-subject", "/CN=mail")
        assert count_items(p.stdout, "Pkey") == 1, describe(p)
        assert count_items(p.stdout, "Certificate") == 0, describe(p)


@pytest.mark.parametrize("kind", TOKENS)
def test_alias_matches_the_label_of_each_object(world, kind):
    s = world[kind]
    mail = [public_der(c.public_key()) for c in pem_certs(s)
            if c.subject.rfc4514_string() == "CN=mail"]
    for uri in uris(s):
        p = storeutl(s, uri, "-alias", "mail")
        assert [ident(c)[0] for c in certs_in(p.stdout)] == ["CN=mail"], describe(p)
        assert count_items(p.stdout, "Pkey") == 1, describe(p)
        assert set(keys_of(p)) == set(mail), describe(p)
        # the label of the second certificate of key web: that certificate, not the key
        p = storeutl(s, uri, "-alias", "web-role")
        assert found_certs(p) == [("CN=web role", "CN=CA2", 0x2001)], describe(p)
        assert "Total found: 1" in p.stdout, describe(p)


def test_a_uri_over_every_token_finds_the_certificates_of_each(world):
    s = world["soft"]
    p = storeutl(s, "ctok:", "-certs", "-subject", "/CN=web")
    assert found_certs(p) == sorted(reference(world["soft"], "-subject", "/CN=web") +
                                    reference(world["hsm"], "-subject", "/CN=web")), describe(p)


def test_a_narrower_uri_narrows_the_search(world):
    s = world["hsm"]
    p = storeutl(s, s.tok.uri(type="cert"), "-subject", "/CN=web")
    assert count_items(p.stdout, "Certificate") == 2, describe(p)
    assert "Total found: 2" in p.stdout, describe(p)
    p = storeutl(s, s.tok.uri(object="web2"), "-subject", "/CN=web")
    assert found_certs(p) == [("CN=web", "CN=CA2", 0x1001)], describe(p)
    assert count_items(p.stdout, "Pkey") == 1, describe(p)


@pytest.mark.parametrize("kind", TOKENS)
@pytest.mark.parametrize("criterion", [("-subject", "/CN=nobody"),
                                       ("-issuer", "/CN=CA1", "-serial", "0x2001"),
                                       ("-alias", "nobody"),
                                       ("-sha256", "-fingerprint", "00" * 32)],
                         ids=lambda c: " ".join(c))
def test_a_criterion_matching_nothing_is_answered_as_the_file_store_does(world, kind, criterion):
    s = world[kind]
    ref = s.ws.ossl("storeutl", "-noout", "-subject", "/CN=nobody", s.dir, providers=None)
    assert (ref.returncode, ref.stdout, ref.stderr) == (0, "Total found: 0\n", ""), describe(ref)
    for uri in uris(s):
        p = s.ws.ossl("storeutl", "-noout", *criterion, uri)
        assert (p.returncode, p.stdout, p.stderr) == (ref.returncode, ref.stdout,
                                                       ref.stderr), describe(p)


@pytest.mark.parametrize("criterion", [("-issuer", "/CN=CA1", "-serial", "0x1001"),
                                       ("-sha256", "-fingerprint", None),
                                       ("-subject", "/CN=nobody")],
                         ids=lambda c: c[0])
def test_a_search_for_public_certificates_does_not_log_in(world, tmp_path, criterion):
    s = world["shim"]
    if criterion[-1] is None:
        criterion = (criterion[0], criterion[1], fingerprint(s, "mail", "-sha256"))
    log = ShimLog(tmp_path / "shim.log")
    p = storeutl(s, s.tok.uri(), *criterion, env=log.env())
    assert log.entries(), "the shim logged nothing"
    assert logins(log) == [], log.text()
    if criterion[0] != "-subject":
        assert count_items(p.stdout, "Certificate") == 1, describe(p)


def test_a_subject_search_logs_in_only_for_the_keys_of_certificates_found(world, tmp_path):
    s = world["shim"]
    log = ShimLog(tmp_path / "shim.log")
    p = storeutl(s, s.tok.uri(), "-subject", "/CN=mail", env=log.env())
    assert count_items(p.stdout, "Pkey") == 1, describe(p)
    assert len(logins(log)) == 1, log.text()


# ---------------------------------------------------------------- storeutl -text on a key


def key_text(s, uri):
    p = storeutl(s, uri, "-keys", "-noout", "-text")
    m = re.search(r"^Private-Key: \(\d+ bit, on token '([^']*)', not exportable\)\n"
                  r"Type: (\S+)\nLabel: (.*)\nURI: (\S+)$", p.stdout, re.M)
    assert m, describe(p)
    token, typ, label, uri = m.groups()
    return (typ, token, label, uri), p


@pytest.mark.parametrize("kind", TOKENS)
@pytest.mark.parametrize("alias,ktype", [("web", "EC"), ("mail", "RSA")])
def test_text_on_a_key_prints_its_label_and_a_uri_that_names_it(world, kind, alias, ktype):
    s = world[kind]
    cert = next(c for c in pem_certs(s) if ident(c)[0] == CERTS[alias][1][1:])
    named_by = [s.tok.key_uri(alias)]
    if kind == "hsm":
        named_by.append("pkcs11:token=%s;object=%s;type=private" % (HSM_LABEL, alias))
    for uri in named_by:
        (typ, token, label, named), p = key_text(s, uri)
        assert (typ, token, label) == (ktype, s.tok.name, alias), describe(p)
        assert "Public-Key:" in p.stdout, describe(p)
        # the URI printed loads that very key: its public key is the certificate's
        p = storeutl(s, named, "-keys", "-text", "-noout")
        assert count_items(p.stdout, "Pkey") == 1, describe(p)
        out = s.ws.path("named-%s.pub.pem" % alias)
        assert_ok(s.ws.ossl("pkey", "-in", named, "-pubout", "-out", out))
        assert (public_der(serialization.load_pem_public_key(out.read_bytes())) ==
                public_der(cert.public_key()))


@pytest.mark.parametrize("providers", PROVIDER_ORDERS)
@pytest.mark.parametrize("alg", [("ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
                                 ("rsa", "-pkeyopt", "rsa_keygen_bits:2048")],
                         ids=lambda a: a[0])
def test_text_of_ordinary_keys_is_what_openssl_prints_without_ctok(world, providers, alg):
    """ctok's text encoder serves ctok's keys only: a file key prints as without ctok."""
    ws = world["soft"].ws
    key = ws.path("ordinary-%s.pem" % alg[0])
    if not key.exists():
        plain(ws, "genpkey", "-algorithm", *alg, "-out", key)
    for extra in ((), ("-pubout",)):
        mine = assert_ok(ws.ossl("pkey", "-in", key, "-text", "-noout", *extra,
                                 providers=providers))
        ref = plain(ws, "pkey", "-in", key, "-text", "-noout", *extra)
        assert mine.stdout == ref.stdout, describe(mine)


@pytest.mark.parametrize("providers", PROVIDER_ORDERS)
def test_text_of_a_key_generated_with_ctok_loaded_is_what_openssl_prints(world, providers):
    """A key generated while ctok is loaded may live in ctok's keymgmt as a pass-through
    key; its text is the default provider's, word for word."""
    ws = world["soft"].ws
    out = ws.path("generated-%s.pem" % providers)
    assert_ok(ws.ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-text", "-out", out, providers=providers))
    text = out.read_text().split("-----END PRIVATE KEY-----\n", 1)[1]
    ref = plain(ws, "pkey", "-in", out, "-text", "-noout")
    assert text == ref.stdout


@pytest.mark.parametrize("kind", TOKENS)
def test_the_uri_printed_for_a_label_that_needs_encoding_names_the_key(world, kind):
    s = world[kind]
    (typ, token, label, named), p = key_text(s, s.tok.key_uri(ODD_LABEL))
    assert label == ODD_LABEL, describe(p)
    assert ";" not in named.split("object=")[1].split(";")[0], named
    (_, _, again, _), p = key_text(s, named)
    assert again == ODD_LABEL, describe(p)
