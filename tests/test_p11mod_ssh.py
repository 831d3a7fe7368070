"""OpenSSH authenticates with a token key through ctok-p11.so (issue 14): a private sshd on
127.0.0.1 (its own config, port, host key and authorized keys, bounded in time) and an
ssh-agent that loaded the module with `ssh-add -s`, the PIN from an askpass program that
reads the token's auth file.

Why the agent and not `ssh -I`: OpenSSH 9.2's PKCS#11 helper opens a token that requires
login with an empty PIN and gives up ("pin required") before calling C_Login, whatever the
module says of a protected authentication path; `ssh-add -s` asks for the PIN and logs in."""

import os
import pwd
import time
from pathlib import Path

import pytest

from ctoktest import SANITIZE_RUNTIME, assert_ok, describe, free_port, run
from p11modtest import MODULE, Daemon, make_face, wait_listening

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(params=["soft", "hsm"])
def face(request, tmp_path_factory, build):
    return make_face(request.param, tmp_path_factory, build)


def wait_socket(path, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists():
            return True
        time.sleep(0.1)
    return False


def sshd_config(d: Path, port, authorized):
    host_key = d / "host_key"
    assert_ok(run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                  dict(os.environ)))
    cfg = d / "sshd_config"
    cfg.write_text("\n".join([
        "ListenAddress 127.0.0.1", "Port %d" % port, "HostKey %s" % host_key, "PidFile none",
        "AuthorizedKeysFile %s" % authorized, "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "LogLevel VERBOSE",
        "MaxStartups 4", "LoginGraceTime 20", ""]))
    return cfg


def require_sshd():
    if not SSHD.exists():
        pytest.fail("no sshd (apt-get install openssh-server)")
    # the privilege separation directory Debian's service makes when it starts
    if not Path("/run/sshd").is_dir():
        if os.geteuid() != 0:
            pytest.fail("sshd needs /run/sshd (made when Debian's ssh service starts)")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)


# ssh-agent starts ssh-pkcs11-helper with an environment of its own: without the sanitizer
# runtime preloaded, the helper cannot load an instrumented module ("agent refused operation").
@pytest.mark.skipif(bool(SANITIZE_RUNTIME), reason="ssh-pkcs11-helper cannot load a sanitizer "
                    "build of ctok-p11.so (tests/test_p11mod_ssh.py)")
@pytest.mark.parametrize("alias,keytype", [("rsa", "RSA"), ("ec", "ECDSA")])
def test_ssh_logs_in_with_the_token_key_through_the_agent(face, tmp_path, alias, keytype):
    require_sshd()
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    # only this key may log in: the others the agent offers are refused
    keys = assert_ok(run(["ssh-keygen", "-D", str(MODULE)], face.env())).stdout.splitlines()
    want = assert_ok(run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", str(face.pubkey(alias))],
                         face.env())).stdout.split()[1]
    authorized = d / "authorized_keys"
    authorized.write_text("".join(k + "\n" for k in keys if k.split()[1] == want))
    assert authorized.read_text(), keys
    port = free_port()
    sshd = Daemon([str(SSHD), "-D", "-e", "-f", str(sshd_config(d, port, authorized))],
                  face.env(), d / "sshd.log")
    sock = d / "agent.sock"
    agent = Daemon(["ssh-agent", "-D", "-a", str(sock), "-P", str(MODULE)], face.env(),
                   d / "agent.log")
    try:
        assert wait_listening(port, sshd.proc), sshd.text()
        assert wait_socket(sock, agent.proc), agent.text()
        askpass = d / "askpass"
        askpass.write_text("#!/bin/sh\nexec cat '%s'\n" % face.pin_file)
        askpass.chmod(0o700)
        env = face.env({"SSH_AUTH_SOCK": sock, "SSH_ASKPASS": askpass,
                        "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
        assert_ok(run(["ssh-add", "-s", str(MODULE)], env, input=""))
        listed = assert_ok(run(["ssh-add", "-l"], env)).stdout
        assert "(%s)" % keytype in listed, listed
        p = run(["ssh", "-F", "none", "-p", str(port), "-o", "BatchMode=yes",
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "IdentityAgent=%s" % sock, "-o", "ConnectTimeout=20",
                 "%s@127.0.0.1" % pwd.getpwuid(os.geteuid()).pw_name, "echo", "in-by-token-key"],
                env, timeout=40)
        assert p.returncode == 0 and "in-by-token-key" in p.stdout, describe(p) + sshd.text()
        assert "Accepted publickey" in sshd.text() and keytype in sshd.text(), sshd.text()
    finally:
        agent.stop()
        sshd.stop()
