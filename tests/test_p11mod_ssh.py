"""OpenSSH authenticates with a token key through ctok-p11.so (issue 14): a private sshd on
127.0.0.1 (its own config, port, host key and authorized keys, bounded in time), and either
`ssh -I ctok-p11.so` in batch mode or an ssh-agent that loaded the module with `ssh-add -s`.

`ssh -I` works because a token whose code its configuration names needs no login: OpenSSH
9.2 opens a token that says CKF_LOGIN_REQUIRED with no PIN and, in batch mode, gives up ("pin
required") before any C_Login, whatever it says of a protected authentication path. The
module activates such a token with its configured code on first need, as the provider does; a
token whose code is typed still requires login (the agent, given the PIN, logs in)."""

import os
import pwd
import time
from pathlib import Path

import pytest

from ctoktest import OPENSSL, SANITIZE_RUNTIME, assert_ok, describe, free_port, run
from kmsfixtures import awskms_token, kms_emu  # noqa: F401 (fixture)
from p11modtest import MODULE, Daemon, make_face, require_module, wait_listening

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


def ssh_logs_in(env, port, sshd, keytype, *how):
    """ssh in batch mode (how: where its keys come from) runs a command on sshd at port, which
    accepted a key of keytype."""
    p = run(["ssh", "-F", "none", "-p", str(port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", *how,
             "-o", "ConnectTimeout=20", "%s@127.0.0.1" % pwd.getpwuid(os.geteuid()).pw_name,
             "echo", "in-by-token-key"], env, timeout=40)
    assert p.returncode == 0 and "in-by-token-key" in p.stdout, describe(p) + sshd.text()
    assert "Accepted publickey" in sshd.text() and keytype in sshd.text(), sshd.text()


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
        ssh_logs_in(env, port, sshd, keytype, "-o", "IdentityAgent=%s" % sock)
    finally:
        agent.stop()
        sshd.stop()


def ssh_with_module(env, pub_pem, keytype, d: Path):
    """`ssh -I ctok-p11.so` in batch mode to a private sshd that accepts only the key whose
    public key is pub_pem (the module shows the others too: sshd refuses them)."""
    require_sshd()
    d.mkdir(mode=0o700)
    keys = assert_ok(run(["ssh-keygen", "-D", str(MODULE)], env)).stdout.splitlines()
    want = assert_ok(run(["ssh-keygen", "-i", "-m", "PKCS8", "-f", str(pub_pem)],
                         env)).stdout.split()[1]
    authorized = d / "authorized_keys"
    authorized.write_text("".join(k + "\n" for k in keys if k.split()[1] == want))
    assert authorized.read_text(), keys
    port = free_port()
    sshd = Daemon([str(SSHD), "-D", "-e", "-f", str(sshd_config(d, port, authorized))], env,
                  d / "sshd.log")
    try:
        assert wait_listening(port, sshd.proc), sshd.text()
        ssh_logs_in(env, port, sshd, keytype, "-o", "IdentityAgent=none", "-I", str(MODULE))
    finally:
        sshd.stop()


@pytest.mark.skipif(bool(SANITIZE_RUNTIME), reason="ssh-pkcs11-helper cannot load a sanitizer "
                    "build of ctok-p11.so (tests/test_p11mod_ssh.py)")
@pytest.mark.parametrize("alias,keytype", [("rsa", "RSA"), ("ec", "ECDSA")])
def test_ssh_I_logs_in_with_a_soft_or_hsm_token_key(face, tmp_path, alias, keytype):
    ssh_with_module(face.env(), face.pubkey(alias), keytype, tmp_path / "ssh")


@pytest.mark.skipif(bool(SANITIZE_RUNTIME), reason="ssh-pkcs11-helper cannot load a sanitizer "
                    "build of ctok-p11.so (tests/test_p11mod_ssh.py)")
@pytest.mark.parametrize("spec,keytype", [("RSA_2048", "RSA"), ("ECC_NIST_P256", "ECDSA")])
def test_ssh_I_logs_in_with_a_kms_key(ws, kms_emu, tmp_path, spec, keytype):  # noqa: F811
    require_module()
    awskms_token(ws, kms_emu)
    key_id = kms_emu.create_key(spec, alias="alias/ssh-%s-%s" % (spec.lower(), tmp_path.name))
    der = tmp_path / "kms.der"
    der.write_bytes(kms_emu.public_key_der(key_id))
    pem = tmp_path / "kms.pem"
    assert_ok(run([OPENSSL, "pkey", "-pubin", "-inform", "DER", "-in", str(der), "-out",
                   str(pem)], ws.env(config=False)))
    ssh_with_module(ws.env(), pem, keytype, tmp_path / "ssh")
