"""Fixtures of the ctok acceptance suite: the built module and tool, workspaces with
their own tokens.json, and real soft (PKCS#12) tokens with keys and self-signed
certificates made the way a user makes them (ctok key generate, openssl req -x509 with
the token key, ctok cert import)."""

import subprocess

import pytest

from ctoktest import BUILD, REPO, OPENSSL, REPORT_DIR, SANITIZE_RUNTIME, Workspace, new_reports

# Every key type the soft token supports, with the alias the shared token uses.
KEY_SPECS = {
    "rsa2048": "rsa:2048",
    "rsa3072": "rsa:3072",
    "rsa4096": "rsa:4096",
    "p256": "ec:P-256",
    "p384": "ec:P-384",
    "p521": "ec:P-521",
    "ed25519": "ed25519",
}


@pytest.fixture(scope="session")
def build():
    """build/ctok.so and build/ctok; built with CMake when they are missing."""
    so, tool = BUILD / "ctok.so", BUILD / "ctok"
    if not (so.exists() and tool.exists()):
        if not (REPO / "CMakeLists.txt").exists():
            pytest.fail("no build at %s and no CMakeLists.txt to build one" % BUILD)
        for argv in (
            ["cmake", "-S", str(REPO), "-B", str(BUILD)],
            ["cmake", "--build", str(BUILD), "-j2"],
        ):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if p.returncode != 0:
                pytest.fail("build failed: %s\n%s\n%s" % (" ".join(argv), p.stdout[-3000:],
                                                         p.stderr[-3000:]))
    assert so.exists() and tool.exists(), "build produced no ctok.so / ctok in %s" % BUILD
    assert OPENSSL, "no openssl binary"
    return BUILD


@pytest.fixture
def ws(tmp_path, build):
    """A fresh workspace: its own tokens.json, keystores and files."""
    return Workspace(tmp_path, build)


@pytest.fixture
def make_token(ws):
    """make_token(name, {alias: spec}, ...) -> Token with those keys, each with a
    self-signed certificate imported under the key's alias."""

    def make(name="soft1", keys=None, certs=True, **kw):
        tok = ws.create_token(name, **kw)
        for alias, spec in (keys or {}).items():
            ws.add_key(tok, alias, spec, cert=certs)
        return tok

    return make


@pytest.fixture(scope="session")
def shared_ws(tmp_path_factory, build):
    return Workspace(tmp_path_factory.mktemp("shared"), build)


@pytest.fixture(scope="session")
def signer(shared_ws):
    """One token with every key type (aliases of KEY_SPECS), each with its certificate.
    Tests must not modify it."""
    tok = shared_ws.create_token("signer")
    for alias, spec in KEY_SPECS.items():
        shared_ws.add_key(tok, alias, spec)
    return tok


@pytest.fixture(scope="session")
def data_file(shared_ws):
    p = shared_ws.path("message.txt")
    p.write_bytes(b"The quick brown fox signs over the lazy token.\n" * 20)
    return p


# Tests that start valgrind themselves (outside ctoktest.run, which skips any): valgrind cannot
# run a program with the sanitizer runtime preloaded and instrumented modules.
RUN_VALGRIND_THEMSELVES = ("test_no_leaks_or_memory_errors_while_reconnecting",)


def pytest_collection_modifyitems(config, items):
    if SANITIZE_RUNTIME:
        skip = pytest.mark.skip(reason="runs valgrind, which cannot run a sanitizer build")
        for item in items:
            if item.originalname in RUN_VALGRIND_THEMSELVES:
                item.add_marker(skip)


_reported = set()


def _take_reports():
    reports = new_reports(_reported)
    _reported.update(reports)
    return "\n".join("=== %s ===\n%s" % (f.name, t[-6000:]) for f, t in reports.items())


@pytest.fixture(autouse=True)
def no_sanitizer_report():
    """In a checked run (ctoktest.REPORT_DIR: make test-sanitize / test-tsan / test-valgrind)
    a test fails when any process started since the last check (its own, or a session
    fixture's set up for it) wrote an ASan, UBSan, LSan, TSan or valgrind report, whatever the
    test expected of that process's exit code."""
    yield
    if REPORT_DIR is not None:
        found = _take_reports()
        if found:
            pytest.fail("sanitizer/valgrind report(s):\n" + found, pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """Reports written after the last test (session fixtures' teardown) fail the run too."""
    if REPORT_DIR is not None:
        found = _take_reports()
        if found:
            print("\nsanitizer/valgrind report(s) after the last test:\n" + found)
            session.exitstatus = 1
