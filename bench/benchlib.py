"""What every section of bench/run.py (make bench) shares: the targets, the keys and the
SoftHSM token they are measured with, running a command (RunFailed with the exact command on
failure), the progress lines, spreads and verdicts, and the fixtures the sections sign with (PEM
keys, soft tokens, the same keys in a SoftHSM token, a ctok.cnf for this build).
Standard library only."""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

# The targets of issue 13 (see ../shared/BENCHMARKS.md)
THROUGHPUT_TARGET = 0.95  # soft token / OpenSSL's default provider, same key, ops/s
HSM_TARGET = 0.95  # ctok on SoftHSM / bare C_Sign (faster of token object, session copy)
STARTUP_HSM_TARGET = 1.5  # one-shot, SoftHSM key via ctok / the same key as a PEM file
STARTUP_OWN_P12_TARGET = 1.05  # one-shot, soft-token key / openssl reading the same .p12
IDLE_TARGET = 1.05  # one-shot, ctok loaded (by ctok.cnf, by -provider flags) but unused / plain
RSS_TARGET = 1.1  # peak RSS of a one-shot signature, ctok key / the same key as a PEM file
FLAT_TARGET = 0.05  # RSS after N signatures within ±5 % of RSS after the first K
TLS_CPU_TARGET = 1.05  # nginx CPU per handshake, soft-token key / the same key as a PEM file
TLS_HSM_CPU_TARGET = 1.10  # nginx CPU per handshake, SoftHSM key / the same key as a PEM file
IDLE_CPU_SHARE = 0.05  # "otherwise idle": others kept at most 5 % of the CPUs busy
CLOUD_ADDED_P50_US = 100.0  # at most this much added per cloud signature by ctok (p50)

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
HSM_TOKEN_LABEL = "bench"  # the SoftHSM token label
HSM_TOKEN_NAME = "hsm"  # the ctok token name
HSM_USER_PIN = "1234"
HSM_SO_PIN = "5678"
# key name -> ctok key spec; the alias is the key name (CKA_LABEL on the token)
HSM_KEYS = {"rsa": "rsa:2048", "ec": "ec:P-256"}

# key name -> genpkey options, alias in the keystore, token name, algorithms measured
KEYS = {
    "rsa": {
        "desc": "RSA-2048",
        "genpkey": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        "alias": "bench-rsa2048",
        "token": "bench-rsa",
        "token_id": "bench-0001",
        "algs": ["rsa-pkcs1", "rsa-pss"],
    },
    "ec": {
        "desc": "P-256",
        "genpkey": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "alias": "bench-p256",
        "token": "bench-ec",
        "token_id": "bench-0002",
        "algs": ["ecdsa"],
    },
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


class RunFailed(Exception):
    pass


# ---- progress and spreads --------------------------------------------------------------------

PROGRESS = {"t0": time.monotonic(), "quiet": False}


def progress(section, text):
    """One line per measurement as it finishes (stderr, flushed): the run takes minutes."""
    if not PROGRESS["quiet"]:
        print(f"[{time.monotonic() - PROGRESS['t0']:4.0f}s] [{section}] {text}", file=sys.stderr,
              flush=True)


def rule(hdr):
    """A report table's header line and the rule under it."""
    print(hdr)
    print("-" * len(hdr))


def paired(base, other):
    """Per-round ratios other/base of two interleaved series."""
    return [o / b for b, o in zip(base, other)]


def span(values):
    return min(values), max(values)


def rel_span(values):
    """A series' own spread: its lowest and highest value over its median."""
    m = statistics.median(values)
    return min(values) / m, max(values) / m


def fmt_span(lo_hi):
    return f"{lo_hi[0]:.2f}–{lo_hi[1]:.2f}"


def fmt_cmd(cmd, env_extra=None):
    pre = " ".join(f"{k}={v}" for k, v in (env_extra or {}).items())
    body = " ".join(a if a and all(c not in a for c in " ;'\"$&|<>") else "'" + a + "'" for a in cmd)
    return (pre + " " + body).strip()


def run(cmd, env, env_extra=None, capture=True):
    """Runs cmd; raises RunFailed with the exact command and its stderr on failure."""
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RunFailed(f"command failed (exit {p.returncode}):\n  {fmt_cmd(cmd, env_extra)}\n"
                        + p.stderr.decode(errors="replace").rstrip())
    return p.stdout.decode(errors="replace") if capture else ""


def write_private(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(path, 0o600)


def find_bench_bin(build, explicit, name="ctok-bench-sign"):
    if explicit:
        return os.path.abspath(explicit)
    for c in (os.path.join(build, "bench", name), os.path.join(build, name)):
        if os.access(c, os.X_OK):
            return c
    sys.exit(f"run.py: {name} not found under {build} (build it: cmake --build {build})")


def make_fixtures(tmp, openssl, env):
    """Keys, certificates, one PKCS#12 soft token per key, tokens.json. Returns dict per key."""
    fixtures = {}
    tokens = []
    for name, k in KEYS.items():
        key = os.path.join(tmp, f"{name}-key.pem")
        pub = os.path.join(tmp, f"{name}-pub.pem")
        cert = os.path.join(tmp, f"{name}-cert.pem")
        p12 = os.path.join(tmp, f"{name}.p12")
        pin = os.path.join(tmp, f"{name}.pin")
        write_private(pin, f"bench-{name}-{os.urandom(6).hex()}\n")
        run([openssl, "genpkey", *k["genpkey"], "-out", key], env)
        run([openssl, "pkey", "-in", key, "-pubout", "-out", pub], env)
        run([openssl, "req", "-new", "-x509", "-key", key, "-subj", f"/CN={k['alias']}",
             "-days", "30", "-sha256", "-out", cert], env)
        run([openssl, "pkcs12", "-export", "-inkey", key, "-in", cert, "-name", k["alias"],
             "-passout", f"file:{pin}", "-out", p12], env)
        os.chmod(p12, 0o600)
        tokens.append({"name": k["token"], "id": k["token_id"], "type": "pkcs12",
                       "keystore": p12, "auth": {"file": pin}})
        fixtures[name] = {"key": key, "pub": pub, "cert": cert, "p12": p12, "pin": pin,
                          "uri": f"ctok:token={k['token']};object={k['alias']};type=private"}
    config = os.path.join(tmp, "tokens.json")
    write_private(config, json.dumps({"tokens": tokens}, indent=2) + "\n")
    return fixtures, config


def parse_ops(cmd, out, env_extra):
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "ops_per_sec" not in fields or "sigs" not in fields:
        raise RunFailed(f"no ops_per_sec in output of:\n  {fmt_cmd(cmd, env_extra)}\n{out}")
    sigs = int(fields["sigs"])
    cpu_us = 1e6 * float(fields.get("cpu_s", "nan")) / sigs if sigs else float("nan")
    return float(fields["ops_per_sec"]), cpu_us


def bench_once(bench, key, alg, threads, seconds, providers, build, env, env_extra, extra=()):
    cmd = [bench, "--key", key, "--alg", alg, "--threads", str(threads),
           "--seconds", str(seconds), *extra]
    if build is not None:
        cmd += ["--provider-path", build]
    for p in providers:
        cmd += ["--provider", p]
    return parse_ops(cmd, run(cmd, env, env_extra), env_extra)


def missed(ratio, target, higher_is_better):
    return not (ratio >= target if higher_is_better else ratio <= target)


def verdict(ratio, target, higher_is_better):
    sign = ">=" if higher_is_better else "<="
    return f"{sign} {target:.2f}  " + ("MISSED" if missed(ratio, target, higher_is_better)
                                       else "ok")


# ---- fixtures the sections share -------------------------------------------------------------

class Fixtures:
    """The keys the soft, SoftHSM, one-shot and memory sections sign with, made once per run:
    a PEM file per key, a soft token (PKCS#12) holding it (config tokens.json), and the very
    same key imported into one SoftHSM token (config hsm-tokens.json): every ratio compares
    one key material."""

    def __init__(self, args, tmp, env, build):
        self.args, self.tmp, self.env, self.build = args, tmp, env, build
        self._soft = self._hsm = None

    def soft(self):
        """(per-key fixtures, soft tokens config)"""
        if self._soft is None:
            progress("setup", "keys, certificates and soft tokens")
            self._soft = make_fixtures(self.tmp, self.args.openssl, self.env)
        return self._soft

    def hsm(self):
        """(env, env_extra, pin file) of the SoftHSM token holding the same keys"""
        if self._hsm is None:
            keys, _ = self.soft()
            progress("setup", "SoftHSM token, the PEM keys imported into it")
            self._hsm = hsm_fixtures(self.args, self.tmp, self.env, self.build, keys)
        return self._hsm


def digest_file(tmp):
    """The 32 bytes every one-shot signature signs (a SHA-256 sized input)."""
    dgst = os.path.join(tmp, "dgst.bin")
    with open(dgst, "wb") as f:
        f.write(bytes(range(32)))
    return dgst


def check_same_key(openssl, fx, uri, prov, dgst, tmp, env, env_extra):
    """ctok signs with uri through the CLI and the signature verifies with the PEM key's public
    half: the ctok side and the file side of a ratio sign with the same key."""
    sig = os.path.join(tmp, "check.sig")
    run([openssl, "pkeyutl", *prov, "-sign", "-in", dgst, "-inkey", uri,
         "-pkeyopt", "digest:sha256", "-out", sig], env, env_extra)
    run([openssl, "pkeyutl", "-verify", "-pubin", "-inkey", fx["pub"], "-in", dgst,
         "-sigfile", sig, "-pkeyopt", "digest:sha256"], env, env_extra)


def ctok_cnf(build, config, path):
    """The repository's openssl.cnf.d/ctok.cnf pointing at this build and config."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openssl.cnf.d",
                       "ctok.cnf")
    with open(src) as f:
        text = f.read()
    text, n1 = re.subn(r"(?m)^module\s*=.*$", f"module = {os.path.join(build, 'ctok.so')}", text)
    # the shipped file sets no ctok-config (its commented line is the place for one)
    text, n2 = re.subn(r"(?m)^#?\s*ctok-config\s*=.*$", f"ctok-config = {config}", text)
    if n1 != 1 or n2 != 1:
        raise RunFailed(f"{src} has no 'module =' and 'ctok-config =' lines to rewrite")
    write_private(path, text)
    return path


# ---- the SoftHSM token holding the same keys -------------------------------------------------

def hsm_uri(name):
    return f"ctok:token={HSM_TOKEN_NAME};object={name};type=private"


def hsm_fixtures(args, tmp, env, build, keys):
    """A SoftHSM token in tmp holding the PEM keys of keys (make_fixtures), imported with
    softhsm2-util (label = the key name), and a ctok pkcs11 token on it.
    Returns (env, env_extra, pin file) for the runs."""
    softhsm_util = shutil.which("softhsm2-util")
    if softhsm_util is None:
        raise RunFailed("softhsm2-util not found (Debian: apt-get install softhsm2)")
    if not os.path.exists(args.softhsm_module):
        raise RunFailed(f"{args.softhsm_module} not found (Debian: apt-get install softhsm2)")
    tool = os.path.join(build, "ctok")
    if not os.access(tool, os.X_OK):
        raise RunFailed(f"{tool} (the ctok tool) not found (build it: cmake --build {build})")
    tokendir = os.path.join(tmp, "tokens")
    os.mkdir(tokendir, 0o700)
    conf = os.path.join(tmp, "softhsm2.conf")
    write_private(conf, f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n"
                        f"log.level = ERROR\n")
    config = os.path.join(tmp, "hsm-tokens.json")
    pin = os.path.join(tmp, "hsm.pin")
    write_private(pin, HSM_USER_PIN + "\n")
    env = dict(env, SOFTHSM2_CONF=conf, CTOK_CONFIG=config)
    env_extra = {"SOFTHSM2_CONF": conf, "CTOK_CONFIG": config}
    run([softhsm_util, "--init-token", "--free", "--label", HSM_TOKEN_LABEL,
         "--pin", HSM_USER_PIN, "--so-pin", HSM_SO_PIN], env, env_extra)
    for i, (name, fx) in enumerate(keys.items()):
        p8 = os.path.join(tmp, f"{name}.p8")  # softhsm2-util imports PKCS#8 only
        run([args.openssl, "pkcs8", "-topk8", "-nocrypt", "-in", fx["key"], "-out", p8], env,
            env_extra)
        run([softhsm_util, "--import", p8, "--token", HSM_TOKEN_LABEL, "--label", name,
             "--id", f"{i + 1:02x}", "--pin", HSM_USER_PIN], env, env_extra)
        os.unlink(p8)
    run([tool, "--config", config, "token", "create", "--type", "pkcs11", "--name",
         HSM_TOKEN_NAME, "--library", args.softhsm_module, "--ref-type", "label", "--ref",
         HSM_TOKEN_LABEL, "--auth-file", pin], env, env_extra)
    ctok_prov = ["-provider-path", build, "-provider", "ctok", "-provider", "default"]
    dgst = digest_file(tmp)
    for name, fx in keys.items():
        check_same_key(args.openssl, fx, hsm_uri(name), ctok_prov, dgst, tmp, env, env_extra)
    return env, env_extra, pin
