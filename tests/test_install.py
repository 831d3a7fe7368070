"""An admin installs ctok from the tree: `cmake --install build --prefix P` puts every file
under P (ctok.so into OpenSSL's own modules directory only for the system prefix), the man
pages render and document every command of `ctok --help`, bash completes commands, each
command's options and the names of the tokens in the config in force, and `make uninstall`
removes every file the install wrote."""

import os
import re
import shutil
import subprocess

import pytest

from ctoktest import OPENSSL, REPO, assert_ok, describe, run

# cmake, make (and the compiler a configure runs) and groff are host tools that never load ctok:
# in a sanitizer run they go without the preloaded runtime, which breaks gcc's test compile.
HOST_ENV = {k: v for k, v in os.environ.items()
            if k != "LD_PRELOAD" and not re.match(r"[A-Z]+SAN_OPTIONS$", k)}

EXPECTED = ("bin/ctok", "share/man/man1/ctok.1", "share/man/man7/ctok-provider.7",
            "share/bash-completion/completions/ctok", "share/ctok/ctok.cnf",
            "share/ctok/ctok-debian.cnf", "share/ctok/ctok.module")


def cmake_install(build, prefix):
    """`cmake --install build --prefix prefix`; the files it wrote (its install_manifest.txt).
    The build's own manifest (a real `make install`'s, for `make uninstall`) is kept."""
    manifest = build / "install_manifest.txt"
    saved = manifest.read_bytes() if manifest.exists() else None
    try:
        p = subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix)],
                           capture_output=True, text=True, timeout=120, env=HOST_ENV)
        assert p.returncode == 0, describe(p)
        listed = manifest.read_text().split()
    finally:
        if saved is None:
            manifest.unlink(missing_ok=True)
        else:
            manifest.write_bytes(saved)
    return listed


def files_under(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(scope="module")
def installed(build, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("prefix")
    return prefix, cmake_install(build, prefix)


def modules_dir(prefix):
    found = [os.path.dirname(f) for f in files_under(prefix) if f.endswith("/ctok.so")]
    assert len(found) == 1, files_under(prefix)
    return found[0]


def test_install_puts_every_file_under_the_prefix_and_lists_each_in_the_manifest(installed):
    prefix, listed = installed
    outside = [f for f in listed if not f.startswith(str(prefix) + "/")]
    assert not outside, "installed outside %s: %s" % (prefix, outside)
    assert sorted(listed) == files_under(prefix)
    for rel in EXPECTED:
        assert (prefix / rel).is_file(), "%s not installed: %s" % (rel, listed)
    assert modules_dir(prefix).endswith("/ossl-modules")


def test_installed_tool_and_module_run_from_the_prefix(installed, ws):
    prefix, _ = installed
    p = assert_ok(run([prefix / "bin/ctok", "--version"], ws.env()))
    assert p.stdout.startswith("ctok "), describe(p)
    p = assert_ok(run([OPENSSL, "list", "-providers", "-provider-path", modules_dir(prefix),
                       "-provider", "ctok"], ws.env()))
    assert re.search(r"^\s+ctok$", p.stdout, re.M), describe(p)


def test_installed_pkcs11_module_loads_from_the_prefix_and_the_module_file_names_it(installed, ws):
    prefix, _ = installed
    found = [f for f in files_under(prefix) if f.endswith("/ctok-p11.so")]
    assert found == [str(prefix / "lib/pkcs11/ctok-p11.so")], files_under(prefix)
    # (pkcs11-tool -I exits 1 with "No slots.": the workspace has no token)
    p = run(["pkcs11-tool", "--module", found[0], "-I"], ws.env())
    assert re.search(r"^Cryptoki version 3\.0$", p.stdout, re.M), describe(p)
    assert re.search(r"^Manufacturer\s+ctok$", p.stdout, re.M), describe(p)
    # p11-kit's module file (pkcs11.conf(5)): the installed module, and not critical
    fields = dict(re.findall(r"^([a-z-]+):\s*(.*)$", (prefix / "share/ctok/ctok.module").read_text(),
                             re.M))
    assert fields == {"module": found[0], "critical": "no"}, fields


def configure(tmp_path, *args):
    return subprocess.run(["cmake", "-S", str(REPO), "-B", str(tmp_path / "cfg"), *args],
                          capture_output=True, text=True, timeout=120, env=HOST_ENV)


def configured_modules_dir(tmp_path, *args):
    p = configure(tmp_path, "-DCTOK_MAN=OFF", *args)
    assert p.returncode == 0, describe(p)
    m = re.search(r"ctok\.so installs into (\S+) \(CTOK_OPENSSL_MODULES_DIR\)", p.stdout)
    assert m, describe(p)
    return m.group(1)


def test_openssl_modules_directory_only_for_the_system_prefix_or_when_named(tmp_path):
    system = subprocess.run(["pkg-config", "--variable=modulesdir", "libcrypto"],
                            capture_output=True, text=True, timeout=30, env=HOST_ENV).stdout.strip()
    assert system.startswith("/usr/"), system
    assert configured_modules_dir(tmp_path, "-DCMAKE_INSTALL_PREFIX=/usr") == system[5:]
    other = configured_modules_dir(tmp_path, "-DCMAKE_INSTALL_PREFIX=/opt/ctok")
    assert not other.startswith("/") and other.endswith("/ossl-modules"), other
    assert other != system[5:] or system[5:] == "lib/ossl-modules"
    named = configured_modules_dir(tmp_path, "-DCTOK_OPENSSL_MODULES_DIR=%s" % system)
    assert named == system


def test_pkcs11_module_directory_is_p11_kits_for_the_system_prefix_or_when_named(tmp_path):
    system = subprocess.run(["pkg-config", "--variable=p11_module_path", "p11-kit-1"],
                            capture_output=True, text=True, timeout=30, env=HOST_ENV).stdout.strip()
    assert system.startswith("/usr/lib/"), system

    def configured(*args):
        p = configure(tmp_path, "-DCTOK_MAN=OFF", *args)
        assert p.returncode == 0, describe(p)
        m = re.search(r"ctok-p11\.so installs into (\S+) \(CTOK_PKCS11_MODULES_DIR\)", p.stdout)
        assert m, describe(p)
        return m.group(1)

    assert configured("-DCMAKE_INSTALL_PREFIX=/usr") == system[5:]
    other = configured("-DCMAKE_INSTALL_PREFIX=/opt/ctok", "-UCTOK_PKCS11_MODULES_DIR")
    assert other.endswith("/pkcs11") and not other.startswith("/"), other
    assert configured("-DCTOK_PKCS11_MODULES_DIR=/srv/p11") == "/srv/p11"


def test_make_install_installs_runtime_and_build_dependencies_only(tmp_path):
    p = subprocess.run(["make", "-n", "-C", str(REPO), "install", "BUILD=%s" % tmp_path],
                       capture_output=True, text=True, timeout=60, env=HOST_ENV)
    assert p.returncode == 0, describe(p)
    m = re.search(r"for p in ([^;]+); do dpkg-query", p.stdout)
    assert m, describe(p)
    packages = set(m.group(1).split())
    assert {"libssl3", "libcurl4", "libjansson4", "libp11-kit0", "cmake", "scdoc"} <= packages
    tools = {"nginx", "apache2-bin", "softhsm2", "opensc", "valgrind", "python3-pytest", "curl",
             "gnutls-bin", "clang", "p11-kit"}
    assert not packages & tools, "make install would install %s" % (packages & tools)
    assert "cmake --install %s" % tmp_path in p.stdout, describe(p)


# ---------------------------------------------------------------- man pages


def help_commands(ws):
    """Every command `ctok --help` names, as (group, verb or None), each group's verbs from
    `ctok GROUP --help`."""
    p = assert_ok(ws.ctok("--help"))
    words = []
    for line in p.stdout.splitlines():
        m = re.match(r"^  ([a-z]+)\b", line)
        if m and m.group(1) not in words:
            words.append(m.group(1))
    assert len(words) >= 8, describe(p)
    commands = []
    for w in words:
        g = ws.ctok(w, "--help")
        verbs = re.findall(r"^  ctok %s ([a-z]+)" % w, g.stdout, re.M)
        if g.stdout.startswith("usage:\n"):
            assert verbs, describe(g)
            commands += [(w, v) for v in verbs]
        else:
            assert_ok(g)
            commands.append((w, None))
    return commands


def test_a_build_without_scdoc_says_so_unless_the_man_pages_are_off(tmp_path):
    p = configure(tmp_path, "-DSCDOC=%s" % (tmp_path / "no-scdoc"))
    assert p.returncode != 0 and "scdoc not found" in p.stderr and "-DCTOK_MAN=OFF" in p.stderr, \
        describe(p)
    assert configure(tmp_path, "-DCTOK_MAN=OFF").returncode == 0


def test_man_page_documents_every_command_of_the_help(ws):
    source = (REPO / "docs/man/ctok.1.scd").read_text()
    commands = help_commands(ws)
    assert ("cert", "rename") in commands and ("doctor", None) in commands, commands
    missing = [c for c in commands
               if not re.search(r"^\*%s\*" % " ".join(w for w in c if w), source, re.M)]
    assert not missing, "commands without an entry in docs/man/ctok.1.scd: %s" % missing


@pytest.mark.parametrize("page,says", [
    ("man1/ctok.1", ("TOKEN COMMANDS", "key generate", "EXIT STATUS")),
    ("man7/ctok-provider.7", ("URIS", "KEY REFERENCES", "TOKEN TYPES", "OPENSSL.CNF",
                              "ctok doctor")),
])
def test_installed_man_pages_render_without_warnings(installed, page, says):
    prefix, _ = installed
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(prefix / "share/man" / page)],
                       capture_output=True, text=True, timeout=60, env=HOST_ENV)
    assert p.returncode == 0 and p.stderr == "", describe(p)
    text = re.sub(r".\x08", "", p.stdout)
    for s in says:
        assert s in text, "%s does not say %r" % (page, s)


# ---------------------------------------------------------------- bash completion

COMPLETE = r"""
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_ctok
printf '%s\n' "${COMPREPLY[@]}"
"""


def complete(prefix, env, *words):
    """What the installed completion offers for the last word of `ctok WORDS`, the installed
    tool first on PATH."""
    env = dict(env, PATH="%s:%s" % (prefix / "bin", env.get("PATH", "/usr/bin:/bin")))
    p = assert_ok(run(["bash", "--norc", "--noprofile", "-c", COMPLETE, "bash",
                       prefix / "share/bash-completion/completions/ctok", "ctok", *words], env,
                      timeout=30))
    return [w for w in p.stdout.split("\n") if w]


def test_completion_offers_every_command_and_each_groups_verbs(installed, ws):
    prefix, _ = installed
    commands = help_commands(ws)
    groups = sorted({g for g, _ in commands})
    assert sorted(complete(prefix, ws.env(), "")) == groups
    assert complete(prefix, ws.env(), "mec") == ["mechanisms"]
    for g in groups:
        verbs = sorted(v for gg, v in commands if gg == g and v)
        if verbs:
            assert sorted(complete(prefix, ws.env(), g, "")) == verbs, g


def test_completion_offers_each_option_of_the_help_and_only_options_ctok_takes(installed, ws):
    prefix, _ = installed
    for group, verb in help_commands(ws):
        cmd = [w for w in (group, verb) if w]
        offered = complete(prefix, ws.env(), *cmd, "--")
        text = ws.ctok(*cmd, "--help").stdout
        text = re.sub(r"\b(p11tool|pkcs11-tool) --?[\w-]+", "", text)  # other tools' options
        helped = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", text))
        missing = helped - set(offered)
        assert not missing, "'ctok %s --help' names %s, not completed" % (" ".join(cmd), missing)
        for opt in offered:
            p = ws.ctok(*cmd, opt, "x", env={"CTOK_CONFIG": ws.path("none.json")}, timeout=30)
            assert "takes no option" not in p.stderr and "never taken" not in p.stderr, \
                "completed %s for 'ctok %s': %s" % (opt, " ".join(cmd), describe(p))


def test_completion_offers_the_token_names_of_the_config_in_force(installed, ws):
    prefix, _ = installed
    ws.create_token("web-edge")
    ws.create_token("db-core")
    env = ws.env()
    assert complete(prefix, env, "key", "list", "we") == ["web-edge"]
    assert sorted(complete(prefix, env, "cert", "import", "")) == ["db-core", "web-edge"]
    assert complete(prefix, env, "secret", "encrypt", "--token", "d") == ["db-core"]
    # the line's --config wins over $CTOK_CONFIG, as it does for ctok itself
    elsewhere = dict(env, CTOK_CONFIG=str(ws.path("other.json")))
    assert complete(prefix, elsewhere, "key", "list", "") == []
    assert complete(prefix, elsewhere, "--config", ws.config, "token", "show", "db") == \
        ["db-core"]
    # readline's words for '--token=d' and '--config=FILE' ('=' breaks words)
    assert complete(prefix, env, "secret", "encrypt", "--token", "=", "d") == ["db-core"]
    assert sorted(complete(prefix, elsewhere, "--config", "=", ws.config, "key", "test", "")) == \
        ["db-core", "web-edge"]
    # past the token: the alias is not a token name
    assert complete(prefix, env, "key", "list", "web-edge", "") == []


# ---------------------------------------------------------------- uninstall


def test_make_uninstall_removes_every_file_the_install_wrote(build, tmp_path):
    prefix = tmp_path / "prefix"
    listed = cmake_install(build, prefix)
    assert files_under(prefix) == sorted(listed)
    fake_build = tmp_path / "build"
    fake_build.mkdir()
    (fake_build / "install_manifest.txt").write_text("\n".join(listed) + "\n")
    make = shutil.which("make")
    p = subprocess.run([make, "-s", "-C", str(REPO), "uninstall", "BUILD=%s" % fake_build],
                       capture_output=True, text=True, timeout=60, env=HOST_ENV)
    assert p.returncode == 0, describe(p)
    assert files_under(prefix) == [], "left after make uninstall: %s" % files_under(prefix)
    assert not (prefix / "share/ctok").exists()
    p = subprocess.run([make, "-s", "-C", str(REPO), "uninstall", "BUILD=%s" % tmp_path],
                       capture_output=True, text=True, timeout=60, env=HOST_ENV)
    assert p.returncode != 0 and "no install manifest" in p.stdout + p.stderr, describe(p)
