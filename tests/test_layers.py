"""The build keeps the layers apart (issue 9): the token layer links alone, with only the soft
backend in its table of types, and a backend cannot see the token layer's internals."""
import os
import subprocess

from ctoktest import describe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_token_layer_alone_serves_a_soft_token_and_knows_only_the_types_of_its_table(build,
                                                                                     tmp_path):
    # ctok-token-only links libctok_token.a and nothing else of ctok (CMakeLists.txt)
    p = subprocess.run([str(build / "ctok-token-only"), str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, describe(p)
    lines = dict(l.split(": ", 1) for l in p.stdout.splitlines())
    assert lines["types"] == "pkcs12", describe(p)
    assert lines["create pkcs12"] == "ok" and (tmp_path / "soft.p12").exists(), describe(p)
    # the type list of errors comes from the table, not from a string in the token layer
    assert "unknown type 'pkcs11' (known: pkcs12)" in lines["create pkcs11"], describe(p)
    assert lines["generate, sign, verify"] == "ok", describe(p)
    assert lines["r||s to DER"] == "ok", describe(p)


def test_a_backend_that_includes_the_token_layers_internals_does_not_compile(tmp_path):
    src = tmp_path / "rogue_backend.c"
    src.write_text('#include "internal.h"\nint rogue(ctok_token *t) { return t->active; }\n')
    flags = subprocess.run(["pkg-config", "--cflags", "jansson", "p11-kit-1"],
                           capture_output=True, text=True, check=True).stdout.split()
    p = subprocess.run(["gcc", "-c", "-I", os.path.join(REPO, "store"), *flags, str(src), "-o",
                        str(tmp_path / "rogue.o")], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0, describe(p)
    assert "a backend includes store/backend.h" in p.stderr, describe(p)
    # through backend.h a token is opaque: its fields cannot be touched
    src.write_text('#include "backend.h"\nint rogue(ctok_token *t) { return t->active; }\n')
    p = subprocess.run(["gcc", "-c", "-I", os.path.join(REPO, "store"), *flags, str(src), "-o",
                        str(tmp_path / "rogue.o")], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "incomplete" in p.stderr, describe(p)
