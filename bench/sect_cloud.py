"""bench/run.py's kms and akv sections: signing through the AWS KMS and the Azure Key Vault
emulators (tests/), ctok against a bare libcurl loop sending the same request; what ctok adds
per signature is ctok p50 - bare p50 (run.py's docstring says what each measures)."""

import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import (CLOUD_ADDED_P50_US, RunFailed, fmt_cmd, parse_ops, progress, rule, run, span,
                      write_private)


# key name -> (KMS key spec, ctok-bench-sign --alg, KMS SigningAlgorithm, description)
KMS_KEYS = {
    "bench-ec": ("ECC_NIST_P256", "ecdsa", "ECDSA_SHA_256", "P-256"),
    "bench-rsa": ("RSA_2048", "rsa-pkcs1", "RSASSA_PKCS1_V1_5_SHA_256", "RSA-2048"),
}
KMS_EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                            "kms_emulator.py")
# key name -> (akv_emulator --key KTY:SIZE|CRV, ctok-bench-sign --alg, Key Vault alg, description)
AKV_KEYS = {
    "bench-ec": ("EC:P-256", "ecdsa", "ES256", "P-256"),
    "bench-rsa": ("RSA:2048", "rsa-pkcs1", "RS256", "RSA-2048"),
}
AKV_EMULATOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                            "akv_emulator.py")


# ---- AWS KMS ---------------------------------------------------------------------------------

def start_emulator(cmd, port_file, what, env):
    """Starts a cloud emulator standalone (it stops by itself after --max-seconds; the caller
    stops it sooner) and returns (process, the JSON of its port file)."""
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RunFailed(f"the {what} emulator did not start:\n" +
                            proc.communicate()[1].decode(errors="replace")[-2000:])
        time.sleep(0.1)
    time.sleep(0.1)  # the file is written whole, but let the writer close it
    with open(port_file) as f:
        return proc, json.load(f)


def stop_emulator(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def kms_fixtures(args, tmp, env, build):
    """The emulator (standalone, stopped by the caller) with the bench keys and a throwaway
    credential, and an awskms token on it. Returns (process, info, env, env_extra, akid,
    secret file)."""
    kdir = os.path.join(tmp, "kms")
    os.mkdir(kdir, 0o700)
    akid = "AKIA" + os.urandom(8).hex().upper()
    secret = os.urandom(24).hex()
    secret_file = os.path.join(kdir, "secret")
    write_private(secret_file, secret + "\n")
    port_file = os.path.join(kdir, "port.json")
    cmd = [sys.executable, KMS_EMULATOR, "--workdir", kdir, "--credential", f"{akid}:{secret}",
           "--port-file", port_file, "--max-seconds", "300"]
    for alias, (spec, *_rest) in KMS_KEYS.items():
        cmd += ["--key", f"{spec}:{alias}"]
    proc, info = start_emulator(cmd, port_file, "KMS", env)
    config = os.path.join(tmp, "kms-tokens.json")
    write_private(config, json.dumps({"tokens": [{
        "name": "kms", "type": "awskms", "region": info["region"], "auth_method": "keys",
        "access_key_id": akid, "endpoint": info["url"], "ca_file": info["ca_file"],
        "auth": {"file": secret_file}}]}, indent=2))
    env_extra = {"CTOK_CONFIG": config}
    return proc, info, dict(env, **env_extra), env_extra, akid, secret_file


def akv_fixtures(args, tmp, env, build):
    """The Key Vault + Azure AD emulator (standalone, stopped by the caller) with the bench keys
    and a throwaway app registration (client secret), and an azurekv token on it. Returns
    (process, info, env, env_extra, client id, secret file)."""
    adir = os.path.join(tmp, "akv")
    os.mkdir(adir, 0o700)
    client_id = str(uuid_from(os.urandom(16)))
    secret = os.urandom(24).hex()
    secret_file = os.path.join(adir, "secret")
    write_private(secret_file, secret + "\n")
    client_file = os.path.join(adir, "clients")
    write_private(client_file, f"{client_id}:{secret}\n")  # a file: no secret in argv
    port_file = os.path.join(adir, "port.json")
    cmd = [sys.executable, AKV_EMULATOR, "--workdir", adir, "--client-file", client_file,
           "--port-file", port_file, "--max-seconds", "300"]
    for alias, (spec, *_rest) in AKV_KEYS.items():
        cmd += ["--key", f"{alias}:{spec}"]
    proc, info = start_emulator(cmd, port_file, "Key Vault", env)
    config = os.path.join(tmp, "akv-tokens.json")
    write_private(config, json.dumps({"tokens": [{
        "name": "akv", "type": "azurekv", "vault_url": info["vault_url"],
        "tenant_id": info["tenant_id"], "client_id": client_id, "auth_method": "secret",
        "login_url": info["authority"], "ca_file": info["ca_file"],
        "auth": {"file": secret_file}}]}, indent=2))
    env_extra = {"CTOK_CONFIG": config}
    return proc, info, dict(env, **env_extra), env_extra, client_id, secret_file


def uuid_from(b):
    """A UUID-shaped client id (as Azure app registrations have) from 16 random bytes."""
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"


def parse_latency(cmd, out, env_extra):
    ops, _ = parse_ops(cmd, out, env_extra)
    fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
    if "p50_us" not in fields or "p99_us" not in fields:
        raise RunFailed(f"no p50_us/p99_us in output of:\n  {fmt_cmd(cmd, env_extra)}\n{out}")
    return ops, float(fields["p50_us"]), float(fields["p99_us"])


def cloud_rounds(args, section, env, env_extra, desc, cloud_alg, n, cmds):
    """Interleaved rounds of the bare loop and ctok-bench-sign --latency (cmds: side -> argv)
    for one key and thread count; the row of medians with added_p50_us = ctok - bare."""
    sides = ["bare"] if args.file_only else ["bare", "ctok"]
    runs = {s: [] for s in sides}
    for r in range(args.cloud_rounds):
        for side in sides:
            got = parse_latency(cmds[side], run(cmds[side], env, env_extra), env_extra)
            runs[side].append(got)
            if args.verbose:
                print(f"  {section} {cloud_alg:9} t={n} round {r + 1} {side:5} {got[0]:8.1f} "
                      f"sig/s p50 {got[1]:8.1f} us p99 {got[2]:8.1f} us", flush=True)
        line = "  ".join(f"{s} {runs[s][-1][0]:.0f}/s p50 {runs[s][-1][1]:.0f} us" for s in sides)
        if "ctok" in runs:
            line += f"  added {runs['ctok'][-1][1] - runs['bare'][-1][1]:.0f} us"
        progress(section, f"{desc} {cloud_alg} {n} thr  round {r + 1}/{args.cloud_rounds}  "
                          f"{line}")
    row = {"key": desc, "alg": cloud_alg, "threads": n, "runs": runs}
    for side in sides:
        for i, what in enumerate(("ops", "p50_us", "p99_us")):
            row[f"{side}_{what}"] = statistics.median(x[i] for x in runs[side])
    if "ctok" in runs:
        row["added_p50_us"] = row["ctok_p50_us"] - row["bare_p50_us"]
        # the spread: the range of the per-round differences
        row["added_p50_spread"] = span([c[1] - b[1] for b, c in zip(runs["bare"],
                                                                    runs["ctok"])])
    return row


def ctok_latency_cmd(args, bench, build, uri, alg, n):
    return [bench, "--key", uri, "--alg", alg, "--threads", str(n), "--seconds",
            str(args.cloud_seconds), "--latency", "--provider-path", build, "--provider", "ctok",
            "--provider", "default"]


def cloud_section(args, section, keys, token, started, bare_args, bench, build, results):
    """One cloud section: for each bench key and thread count, interleaved rounds of the bare
    loop (argv from bare_args(alias, cloud alg)) and ctok on token; the emulator of started
    (process, env, env_extra) stopped after, whatever happens."""
    proc, env, env_extra = started
    try:
        for alias, (_spec, alg, cloud_alg, desc) in keys.items():
            uri = f"ctok:token={token};object={alias};type=private"
            for n in args.cloud_thread_list:
                cmds = {"bare": bare_args(alias, cloud_alg) +
                        ["--threads", str(n), "--seconds", str(args.cloud_seconds)],
                        "ctok": ctok_latency_cmd(args, bench, build, uri, alg, n)}
                results[section].append(cloud_rounds(args, section, env, env_extra, desc,
                                                     cloud_alg, n, cmds))
    finally:
        stop_emulator(proc)


def kms_section(args, tmp, env, build, bench, bare, results):
    proc, info, env, env_extra, akid, secret_file = kms_fixtures(args, tmp, env, build)
    cloud_section(args, "kms", KMS_KEYS, "kms", (proc, env, env_extra), lambda alias, alg: [
        bare, "--url", info["url"], "--ca-file", info["ca_file"], "--region", info["region"],
        "--akid", akid, "--secret-file", secret_file, "--key-id", info["keys"][alias], "--alg",
        alg], bench, build, results)


def akv_section(args, tmp, env, build, bench, bare, results):
    proc, info, env, env_extra, client_id, secret_file = akv_fixtures(args, tmp, env, build)
    cloud_section(args, "akv", AKV_KEYS, "akv", (proc, env, env_extra), lambda alias, alg: [
        bare, "--vault-url", info["vault_url"], "--authority", info["authority"], "--tenant",
        info["tenant_id"], "--client-id", client_id, "--secret-file", secret_file, "--ca-file",
        info["ca_file"], "--key", alias, "--alg", alg], bench, build, results)


def cloud_report(title, rows):
    print(title)
    hdr = f"{'key':8} {'alg':26} {'thr':>3} {'ctok sig/s':>10} {'bare sig/s':>10} " \
          f"{'ctok p50':>9} {'bare p50':>9} {'ctok p99':>9} {'bare p99':>9} {'added':>8} " \
          f"{'added spread':>14}"
    rule(hdr)
    for r in rows:
        line = f"{r['key']:8} {r['alg']:26} {r['threads']:>3} "
        if "ctok_ops" in r:
            line += f"{r['ctok_ops']:10.1f} {r['bare_ops']:10.1f} {r['ctok_p50_us']:9.1f} " \
                    f"{r['bare_p50_us']:9.1f} {r['ctok_p99_us']:9.1f} {r['bare_p99_us']:9.1f} " \
                    f"{r['added_p50_us']:8.1f} {fmt_us_span(r['added_p50_spread']):>14}  " + \
                    ("MISSED" if r["added_p50_us"] > CLOUD_ADDED_P50_US else "ok")
        else:
            line += f"{'':10} {r['bare_ops']:10.1f} {'':9} {r['bare_p50_us']:9.1f} {'':9} " \
                    f"{r['bare_p99_us']:9.1f}"
        print(line)


def fmt_us_span(lo_hi):
    """A range of µs differences, which may be negative: "-20 to 140"."""
    return f"{lo_hi[0]:.0f} to {lo_hi[1]:.0f}"


def kms_report(args, results):
    cloud_report(
        f"\nAWS KMS signing through the emulator (tests/kms_emulator.py): ctok (ctok-bench-sign, "
        f"a ctok: URI\nto a KMS key) vs the bare libcurl loop sending the same SigV4-signed Sign "
        f"request over a\nkept-alive connection (ctok-bench-kms-bare); medians of "
        f"{args.cloud_rounds} interleaved rounds x {args.cloud_seconds:g} s;\nthe emulator "
        f"dominates latency, so added = ctok p50 - bare p50 (target <= "
        f"{CLOUD_ADDED_P50_US:.0f} us)\n", results["kms"])


def akv_report(args, results):
    cloud_report(
        f"\nAzure Key Vault signing through the emulator (tests/akv_emulator.py): ctok "
        f"(ctok-bench-sign, a\nctok: URI to a vault key) vs the bare libcurl loop sending the "
        f"same sign request with a\nbearer token over a kept-alive connection "
        f"(ctok-bench-akv-bare); medians of {args.cloud_rounds}\ninterleaved rounds x "
        f"{args.cloud_seconds:g} s; added = ctok p50 - bare p50 (target <= "
        f"{CLOUD_ADDED_P50_US:.0f} us)\n", results["akv"])
