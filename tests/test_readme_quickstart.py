"""The README's Quick Start, pasted into a fresh shell, works: this test extracts the block from
README.md and runs it verbatim with bash (HOME a new empty folder, the source tree as the
working directory, the build as the block builds it), then completes a TLS handshake with the
s_server the block ends with, so the Quick Start cannot rot. Only the port is replaced (a free
one, as parallel tests may hold 8443)."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ctoktest import free_port

ROOT = Path(__file__).resolve().parent.parent


def quick_start_block():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## Quick start\n+```sh\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no ```sh block under '## Quick start'"
    return m.group(1)


def test_quick_start_block_is_what_a_fresh_shell_needs():
    block = quick_start_block()
    # the folder the block writes into is made before anything is written there
    assert block.index("mkdir -p ~/ctok") < block.index("~/ctok/auth-code")
    assert "-accept 127.0.0.1:8443" in block


def test_quick_start_runs_verbatim_in_a_fresh_shell(tmp_path, build):
    if Path(build).resolve() != (ROOT / "build").resolve():
        pytest.skip("the Quick Start builds into ./build; CTOK_BUILD_DIR is elsewhere")
    port = free_port()
    block = quick_start_block().replace("127.0.0.1:8443", "127.0.0.1:%d" % port)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENSSL_", "CTOK_", "SOFTHSM"))}
    env["HOME"] = str(home)
    log = tmp_path / "quickstart.log"
    with open(log, "wb") as out:
        shell = subprocess.Popen(["bash", "-e", "-c", block], cwd=ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, stdin=subprocess.PIPE,
                                 start_new_session=True)
    try:
        deadline = time.monotonic() + 300  # the block's cmake --build may have work to do
        hello = None
        while time.monotonic() < deadline and shell.poll() is None:
            if "ACCEPT" in log.read_text(errors="replace"):
                hello = subprocess.run(
                    ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-servername",
                     "example", "-CAfile", str(home / "ctok" / "web.pem"), "-verify_return_error",
                     "-brief"],
                    input="", capture_output=True, text=True, timeout=30,
                    env={**env, "HOME": str(home)})
                break
            time.sleep(0.2)
        text = log.read_text(errors="replace")
        assert shell.poll() is None, "the block ended before its s_server ran:\n" + text
        assert hello is not None, "s_server did not start in time:\n" + text
        assert hello.returncode == 0 and "Verification: OK" in hello.stderr, \
            hello.stderr + "\n" + text
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGTERM)
        shell.wait(timeout=30)
    # what the block made lives under HOME: the source tree only has its build
    assert (home / "ctok" / "tokens.json").exists() and (home / "ctok" / "web.pem").exists()
    assert not (ROOT / "web.pem").exists()


def readme_synopsis():
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^## The ctok tool\n+```\n(.*?)^```", text, re.S | re.M)
    assert m, "README.md has no synopsis block under '## The ctok tool'"
    return m.group(1)


def tool_commands(ws):
    """Every command of the tool with the options its usage line names, from its own help."""
    top = ws.ctok("--help").stdout
    firsts = {l.split()[0] for l in top.splitlines() if re.match(r"^  [a-z]+ ", l)}
    commands = {}
    for word in sorted(firsts):
        p = ws.ctok(word, "--help")
        assert p.returncode == 0, p.stderr
        usages = re.findall(r"^  ctok (.*)$", p.stdout, re.M)  # a group: its commands
        if not usages:
            usages = [p.stdout.splitlines()[0].split("[--json] ", 1)[1]]
        for u in usages:
            words = re.match(r"^([a-z]+(?: [a-z]+)?)\b", u).group(1)
            if words.split()[0] != word:
                continue
            name = " ".join(w for w in words.split() if w.islower() and w != "x")
            commands[name] = set(re.findall(r"--[a-z-]+", u))
    return commands


def test_readme_synopsis_lists_every_command_with_its_options(ws):
    synopsis = readme_synopsis()
    commands = tool_commands(ws)
    assert {"token create", "token list", "key generate", "cert export", "ref", "slots",
            "mechanisms", "pin change", "secret encrypt"} <= set(commands), sorted(commands)
    for name, opts in commands.items():
        lines = [l for l in synopsis.splitlines() if re.match(r"^  %s\b" % re.escape(name), l)]
        assert lines, "README synopsis lacks '%s'" % name
        for opt in opts - {"--json"}:
            assert opt in synopsis, "README synopsis lacks %s of '%s'" % (opt, name)
