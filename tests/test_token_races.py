"""Issue 8, "tok->code / tok->active read without the token lock": worker threads make their
first use of a token at once (tests/token_threads.c: login, find, key handle, sign) and the
token layer, compiled with ThreadSanitizer for this test, reports no data race. The token
layer and the PKCS#11 backend read 'active' only through ctok_token_is_active (an atomic that
the token lock's holders write), never the field."""

import json
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from ctoktest import SANITIZE_RUNTIME
from test_cli_support import Kind

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(HERE, "token_threads.c")
THREADS, ROUNDS = 8, 10


def _store_sources(build):
    """The token layer's sources (and kms/, which its backend table names) with the flags CMake
    compiles them with."""
    cc = json.loads((build / "compile_commands.json").read_text())
    out = []
    for c in cc:
        # the token layer, the backends and the table of types (CMakeLists.txt)
        if not any("CMakeFiles/%s.dir/" % t in c["command"]
                   for t in ("ctok_token", "ctok_p11", "ctok_kms", "ctok_store")):
            continue
        args = shlex.split(c["command"])
        flags = [a for a in args if a.startswith(("-D", "-I")) or a.startswith("-std=")]
        out.append((c["file"], flags))
    return out


@pytest.fixture(scope="module")
def tsan_driver(tmp_path_factory, build):
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed")
    if SANITIZE_RUNTIME:
        pytest.skip("builds its own ThreadSanitizer copy of the token layer; not beside another "
                    "sanitizer's flags")
    srcs = _store_sources(build)
    assert len(srcs) > 10, "no ctok_store sources in compile_commands.json"
    root = tmp_path_factory.mktemp("tsan")

    def compile_one(item):
        src, flags = item
        obj = root / (os.path.basename(os.path.dirname(src)) + "_" +
                      os.path.basename(src) + ".o")
        p = subprocess.run(["clang", "-fsanitize=thread", "-O1", "-g", *flags, "-c", src,
                            "-o", str(obj)], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return str(obj)

    with ThreadPoolExecutor(2) as ex:
        objs = list(ex.map(compile_one, srcs))
    libs = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson", "p11-kit-1"],
                          capture_output=True, text=True, check=True).stdout.split()
    out = root / "token_threads"
    p = subprocess.run(["clang", "-fsanitize=thread", "-O1", "-g", "-I",
                        os.path.join(REPO, "store"), "-o", str(out), SRC, *objs, "-lcrypto",
                        *libs, "-lcurl", "-ldl", "-lpthread"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("kind", ("pkcs12", "pkcs11"))
def test_threads_first_use_of_a_token_has_no_data_race(tsan_driver, build, tmp_path, kind):
    k = Kind(kind, tmp_path, build)
    k.with_key("tok", "r1", "rsa:2048", cert=False)
    env = k.ws.env({"TSAN_OPTIONS": "halt_on_error=0 exitcode=66 report_signal_unsafe=0"})
    p = subprocess.run([str(tsan_driver), str(k.ws.config), "tok", "r1", str(THREADS),
                        str(ROUNDS)], env=env, capture_output=True, text=True, timeout=600)
    races = p.stderr.count("WARNING: ThreadSanitizer")
    assert races == 0, p.stderr[-6000:]
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    assert p.stdout.strip() == "ok=%d failed=0" % (THREADS * ROUNDS), p.stdout
